"""The README's "bring it up" command: the broker in dev mode seeds a demo cafe and fleet and starts local agents,
the demo seat's kiosk and (with --play) the Python client, so a session is placed and streamed with nothing else to
set up."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
import sys
from pathlib import Path

import aiohttp
import pytest
from cloudseat.client import BrokerClient
from cloudseat.tls import client_credentials
from cloudseat.v1 import common_pb2, fleet_pb2, venue_pb2

pytestmark = pytest.mark.slow


async def test_dev_brings_up_broker_agents_and_a_playable_cafe(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CLOUDSEAT_DATABASE_URL")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "broker", "dev", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path),
        "--log-format", "json", "--agents", "2", "--agent-listen", "127.0.0.1:0",
        "--kiosk", "127.0.0.1:0", "--play", "headless", "--http-listen", "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE, stderr=None, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        port = kiosk_url = console_url = seat_tokens = None
        async with asyncio.timeout(60):
            while port is None or kiosk_url is None or console_url is None or seat_tokens is None:
                line = (await proc.stdout.readline()).decode()
                assert line, "the broker exited before it was up"
                if m := re.search(r"Seat tokens, one file per seat of demo-cafe .*: (\S+)$", line.rstrip("\n")):
                    seat_tokens = Path(m.group(1))
                if m := re.search(r"cloudseat broker is up on 127\.0\.0\.1:(\d+)", line):
                    port = int(m.group(1))
                if m := re.search(r"Play in a browser: (http://\S+)", line):
                    kiosk_url = m.group(1)
                if m := re.search(r"Consoles on (https://\S+)", line):
                    console_url = m.group(1)
        # The kiosk page is served, and knows its seat and the games.
        async with aiohttp.ClientSession() as http:
            async with http.get(kiosk_url) as page:
                assert page.status == 200 and "text/html" in page.headers["Content-Type"]
            async with http.get(kiosk_url.rstrip("/") + "/api/seat") as seat:
                info = await seat.json()
        assert info["seat_id"] == "seat-01" and "demo" in [g["game_id"] for g in info["games"]]
        # The consoles are served too, over TLS with the broker's certificate (HSTS), their API behind the tokens
        # the banner points to.
        trust = ssl.create_default_context(cafile=tmp_path / "credentials" / "ca.pem")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust)) as http:
            async with http.get(f"{console_url}api/whoami") as who:
                assert who.status == 401 and who.headers["Strict-Transport-Security"].startswith("max-age=")
            async with http.get(f"{console_url}metrics") as metrics:
                assert metrics.status == 200 and "cloudseat_sessions" in await metrics.text()
        # A token file per demo seat, private, where the banner says; the kiosk and the client started with it.
        assert seat_tokens == tmp_path / "tokens" / "demo-cafe"
        assert sorted(p.name for p in seat_tokens.iterdir()) == [f"seat-{i:02d}.token" for i in range(1, 9)]
        assert all(p.stat().st_mode & 0o777 == 0o600 for p in seat_tokens.iterdir())
        # Secure by default: the local system made a development CA, certificates and tokens in its data folder.
        creds = tmp_path / "credentials"
        operator = (creds / "tokens" / "operator.token").read_text().strip()
        async with BrokerClient(
            f"127.0.0.1:{port}", token=operator, credentials=client_credentials(creds / "ca.pem")
        ) as c:
            async with asyncio.timeout(30):
                while True:
                    hosts = (await c.fleet.ListHosts(fleet_pb2.ListHostsRequest())).hosts
                    if sum(h.status == fleet_pb2.HOST_STATUS_ONLINE for h in hosts) == 2:
                        break
                    await asyncio.sleep(0.2)
            assert {h.site_id for h in hosts} == {"site-a", "site-b"}
            started = await c.start_session("demo-cafe", "seat-01", "demo")
            ready = await c.wait_for(started.session.session_id, common_pb2.SESSION_STATE_READY, timeout_s=20)
            assert (
                ready.state == common_pb2.SESSION_STATE_READY and ready.site_id == "site-a"
            )  # the nearer site
            await c.end_session(started.session.session_id, started.session_token)
            # --play headless: the Python client plays seat-02.
            async with asyncio.timeout(60):
                while True:
                    listed = await c.venues.ListSessions(venue_pb2.ListSessionsRequest(venue_id="demo-cafe"))
                    if any(
                        x.seat_id == "seat-02" and x.state == common_pb2.SESSION_STATE_STREAMING
                        for x in listed.sessions
                    ):
                        break
                    await asyncio.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
