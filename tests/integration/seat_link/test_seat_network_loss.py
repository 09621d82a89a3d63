"""A short network loss between seat and host: the stream comes back on the same session, without a new one.

The loss is real: the agent and the client run in a network namespace of the test's own (faults.NetNS), with its
own loopback, and an nftables rule in that namespace drops every UDP packet (all of WebRTC: ICE, DTLS, SRTP, SCTP)
for a few seconds. The broker stays outside and is reached over a unix socket, which no packet filter touches, so
only the media path fails, as when a seat's Wi-Fi or a switch drops out. Needs root (or user namespaces) and nft,
which scripts/system-deps installs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import sys
from pathlib import Path

import pytest
from cloudseat.client import BrokerClient
from cloudseat.v1 import common_pb2, session_pb2, venue_pb2

from tests.integration import faults
from tests.integration.conftest import CONFIG

pytestmark = pytest.mark.slow
DROP_S = 4.0


async def test_media_path_loss_recovers_on_the_same_session(
    world: BrokerClient, socket_path: Path, tmp_path: Path, ns: faults.NetNS
) -> None:
    agent_toml = tmp_path / "agent.toml"
    agent_toml.write_text(
        CONFIG.format(host="agent-1", port=0).replace('"127.0.0.1:0"', f'"unix:{socket_path}"')
    )
    out_json = tmp_path / "play.json"
    python = shlex.quote(sys.executable)
    script = (
        f"{python} -m gpu_agent run --config {shlex.quote(str(agent_toml))} --log-format json "
        f"> {shlex.quote(str(tmp_path / 'agent.log'))} 2>&1 & "
        f"exec {python} -m thin_client play --broker unix:{shlex.quote(str(socket_path))} "
        "--venue cafe --seat s1 --game demo --headless --ice-address 127.0.0.1 --stats-every 0.5 "
        f"--reconnect-after 1.5 --json {shlex.quote(str(out_json))}"
    )
    seat = await asyncio.create_subprocess_exec(
        *ns.prefix(),
        "sh",
        "-c",
        script,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert seat.stdout is not None
    seen: list[str] = []

    async def until(prefix: str, timeout_s: float) -> None:
        assert seat.stdout is not None
        async with asyncio.timeout(timeout_s):
            while True:
                line = (await seat.stdout.readline()).decode()
                assert line, "the client exited: " + "".join(seen)
                seen.append(line)
                if line.startswith(prefix):
                    return

    try:
        await until("playing demo", 60)
        await asyncio.sleep(1.0)
        # The seat's network drops every UDP packet for a few seconds.
        await ns.drop("meta l4proto udp")
        await until("no video for", 15)
        await asyncio.sleep(DROP_S)
        await ns.heal()
        await until("reconnected after", 30)
        await asyncio.sleep(1.0)
        seat.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(seat.communicate(), 30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(seat.pid, signal.SIGKILL)  # the agent in the namespace too
        await seat.wait()
    print("".join(seen))  # the patron's view of the loss, in the test log
    assert seat.returncode == 0, "".join(seen) + err.decode()

    result = json.loads(out_json.read_text())
    assert result["reconnects"] >= 1 and result["resumes"] == 0
    assert len(result["sessions"]) == 1, "the loss must not cost the patron their session"
    assert result["freezes"] >= 1  # the patron did see the picture stop
    only = result["sessions"][0]["session_id"]
    listed = await world.venues.ListSessions(venue_pb2.ListSessionsRequest(venue_id="cafe"))
    assert [s.session_id for s in listed.sessions] == [only]
    got = await world.sessions.GetSession(session_pb2.GetSessionRequest(session_id=only))
    assert got.session.end_reason == common_pb2.END_REASON_ENDED_BY_PATRON
