"""What the kiosk browser tests share: a real agent process, a kiosk server, headless Chromium on its page.

Chromium is the distribution's (``/usr/bin/chromium``, installed by scripts/system-deps), launched by Playwright
through ``executable_path`` with the flags a seat uses (`thin_client.kiosk.CHROMIUM_FLAGS`); Playwright's own browser
download is never used. Where that binary is missing the browser tests fail: scripts/system-deps installs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

from cloudseat.client import BrokerClient
from cloudseat.v1 import common_pb2, fleet_pb2, venue_pb2

from loadtest.stream_browser import CHROMIUM, chromium, seat_page, wait_state
from thin_client.kiosk.server import Kiosk, KioskConfig
from thin_client.seat import SeatConfig

__all__ = ["CHROMIUM", "chromium", "seat_page", "wait_state"]

# The agent the browser plays: the demo game; codec "auto" answers Chromium's offer with H.264. Plaintext to the
# broker, which the tests run with authentication off (conftest.FAST).
AGENT_CONFIG = """
host_id = "{host}"
provider_id = "prov"
site_id = "site-near"
broker = "127.0.0.1:{port}"
slots = {slots}
gpu_class = "cpu"
price_micros_per_slot_hour = 1000000
games_cached = ["demo"]
media_addresses = ["127.0.0.1"]
codec = "{codec}"
drain_grace_s = 0
insecure = true
"""

VENUE, ZONE, SEAT = "cafe", "kiosk", "k1"


async def kiosk_seat(client: BrokerClient) -> None:
    """A seat of its own for the kiosk in the `world` venue, in a 720p30 zone: half the frames of the standard
    zone's 720p60, so the agent, Chromium and the test share two cores with room to spare."""
    await client.venues.PutZone(
        venue_pb2.PutZoneRequest(venue_id=VENUE, zone_id=ZONE, tier=common_pb2.TIER_720P30, latency_cap_ms=30)
    )
    await client.venues.PutSeat(venue_pb2.PutSeatRequest(venue_id=VENUE, seat_id=SEAT, zone_id=ZONE))


async def start_agent(
    tmp_path: Path, broker_port: int, host: str = "agent-1", *, codec: str = "auto", slots: int = 1
) -> asyncio.subprocess.Process:
    """`python -m gpu_agent run` with the demo game; its log goes to tmp_path/<host>.log."""
    path = tmp_path / f"{host}.toml"
    path.write_text(AGENT_CONFIG.format(host=host, port=broker_port, codec=codec, slots=slots))
    log = _log_file(tmp_path / f"{host}.log")
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gpu_agent", "run", "--config", str(path), "--log-format", "json",
            stdout=asyncio.subprocess.DEVNULL, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    finally:
        log.close()


def _log_file(path: Path) -> BinaryIO:
    return open(
        path, "ab"
    )  # the child gets its own copy of the descriptor; ours is closed once it has started


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


async def online(client: BrokerClient, host: str, *, epoch_above: int = 0, timeout_s: float = 30) -> int:
    """Wait until ``host`` is online with an epoch above ``epoch_above``; its epoch."""
    async with asyncio.timeout(timeout_s):
        while True:
            hosts = await client.fleet.ListHosts(fleet_pb2.ListHostsRequest())
            for h in hosts.hosts:
                if h.host_id == host and h.status == fleet_pb2.HOST_STATUS_ONLINE and h.epoch > epoch_above:
                    return int(h.epoch)
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def kiosk(broker: str, seat: str = SEAT, venue: str = VENUE, **kw: Any) -> AsyncIterator[Kiosk]:
    """A kiosk server in this process on 127.0.0.1 (a free port), ICE limited to 127.0.0.1."""
    cfg = KioskConfig(
        seat=SeatConfig(broker=broker, venue_id=venue, seat_id=seat, ice_addresses=("127.0.0.1",), **kw),
        listen="127.0.0.1:0",
    )
    async with Kiosk(cfg) as k:
        yield k
