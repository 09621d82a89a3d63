"""Playout mode AUTO on a link that loses packets (issue 18): the agent asks the seat for zero delay while the link
delivers, for the receiver's own adaptive delay once the seat's receiver reports show loss, and for zero again when
the link has been clean for the agent's playout_clean_s (gpu_agent.media.playout_delay.PlayoutPolicy).

The loss is real: the agent and the seat (tests.integration.playout_seat, an aiortc receiver that reads the
extension from every packet) run in a network namespace of the test's own (faults.NetNS), where nftables drops a
share of the UDP packets at random on their way in (loadtest.stream_link.nft_rules, the benchmark's bad link). The
broker stays outside and is reached over a unix socket, which no packet filter touches. Needs root (or user
namespaces) and nft, which scripts/system-deps installs.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from cloudseat.client import BrokerClient
from cloudseat.v1 import common_pb2, venue_pb2

from loadtest import stream_link
from tests.integration import faults, playout_seat
from tests.integration.conftest import CONFIG

pytestmark = pytest.mark.slow
S = common_pb2.SessionState
LOSS_PCT = 5.0  # the video stream's receiver reports then say ~5%, ten times PlayoutPolicy's lossy threshold
LOSSY = 0.005  # PlayoutPolicy's default threshold


async def test_auto_asks_for_the_adaptive_delay_while_the_link_loses_packets_and_zero_when_clean(
    world: BrokerClient, socket_path: Path, tmp_path: Path, ns: faults.NetNS
) -> None:
    # A light stream (720p30) for a shared machine; the mode is the zone's default, AUTO.
    await world.venues.PutZone(
        venue_pb2.PutZoneRequest(venue_id="cafe", zone_id="std", tier=common_pb2.TIER_720P30, latency_cap_ms=30)
    )
    agent_toml = tmp_path / "agent.toml"
    agent_toml.write_text(
        CONFIG.format(host="agent-1", port=0).replace('"127.0.0.1:0"', f'"unix:{socket_path}"')
        + "playout_clean_s = 2\n"
    )
    with (tmp_path / "agent.log").open("wb") as agent_log:
        agent = await asyncio.create_subprocess_exec(
            *ns.prefix(), sys.executable, "-m", "gpu_agent", "run", "--config", str(agent_toml),
            "--log-format", "json", stdout=asyncio.subprocess.DEVNULL, stderr=agent_log,
        )  # fmt: skip
    try:
        started = await world.start_session("cafe", "s1", "demo")
        await world.wait_for(started.session.session_id, S.SESSION_STATE_READY, timeout_s=60)
        async with playout_seat.run(
            f"unix:{socket_path}", started.session.session_id, started.session_token, tmp_path / "seat.log",
            ns.prefix(),
        ) as seat:  # fmt: skip
            # A clean link: zero delay in every packet, and reports without loss.
            await seat.until(playout_seat.receiving, 30)
            for _ in range(4):
                line = await seat.until(playout_seat.receiving, 10)
                assert set(line["delays"]) == {playout_seat.ZERO} and line["rr_loss"] == 0, line

            # The link loses packets: once a report says so, the packets ask for the adaptive delay.
            await ns.run("nft", "-f", "-", stdin=stream_link.nft_rules(LOSS_PCT))
            first_lossy = len(seat.lines)
            await seat.until(playout_seat.only(playout_seat.ADAPTIVE), 60)
            lossy = seat.lines[first_lossy:]
            reported = next(i for i, line in enumerate(lossy) if line.get("rr_loss", 0) >= LOSSY)
            switched = next(i for i, line in enumerate(lossy) if playout_seat.ADAPTIVE in line.get("delays", {}))
            assert reported <= switched, lossy  # never the adaptive delay before a report showed the loss
            for _ in range(2):  # and it holds while the link loses
                line = await seat.until(playout_seat.receiving, 10)
                assert playout_seat.ZERO not in line["delays"], line

            # Clean again: after playout_clean_s without a lossy report, zero again.
            await ns.run("nft", "delete", "table", "inet", "cloudseat_link")
            await seat.until(playout_seat.only(playout_seat.ZERO), 60)
        await world.end_session(started.session.session_id, started.session_token)
    finally:
        if agent.returncode is None:
            agent.kill()
        await agent.wait()
    log = (tmp_path / "agent.log").read_text()
    assert '"playout delay"' in log and '"max_ms": 10000' in log, log[-3000:]
