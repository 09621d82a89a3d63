"""A zone's playout mode, from PutZone to the packets a seat receives (issue 18).

PutZone sets it (validated, the field named, nothing written on a refusal) and GetVenue shows it; a session takes its
zone's mode when it starts and keeps it; the start command carries it to the real agent program, whose media session
writes it into the playout-delay header extension of every video packet, read by a real aiortc seat in a process of
its own (tests.integration.playout_seat). Mode AUTO on a lossy link: seat_link/test_playout_link.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from cloudseat.client import BrokerClient
from cloudseat.v1 import common_pb2, session_pb2, venue_pb2

from broker.server import Broker
from tests.integration import playout_seat
from tests.integration.conftest import Launch

S = common_pb2.SessionState


def _zone(playout: int = common_pb2.PLAYOUT_MODE_UNSPECIFIED, **fields: Any) -> venue_pb2.PutZoneRequest:
    base: dict[str, Any] = {
        "venue_id": "cafe", "zone_id": "std", "tier": common_pb2.TIER_720P30, "latency_cap_ms": 30,
    }  # fmt: skip
    return venue_pb2.PutZoneRequest(**{**base, **fields}, playout=playout)


async def _zones(client: BrokerClient) -> dict[str, venue_pb2.Zone]:
    venue = await client.venues.GetVenue(venue_pb2.GetVenueRequest(venue_id="cafe"))
    return {z.zone_id: z for z in venue.zones}


async def test_put_zone_sets_keeps_and_refuses_the_playout_mode(world: BrokerClient) -> None:
    assert (await _zones(world))["std"].playout == common_pb2.PLAYOUT_MODE_AUTO  # a zone made before: AUTO

    smooth = await world.venues.PutZone(_zone(common_pb2.PLAYOUT_MODE_SMOOTH))
    assert smooth.playout == common_pb2.PLAYOUT_MODE_SMOOTH
    # Unset keeps it, whatever else changes.
    kept = await world.venues.PutZone(_zone(latency_cap_ms=40))
    assert (kept.playout, kept.latency_cap_ms) == (common_pb2.PLAYOUT_MODE_SMOOTH, 40)
    fresh = await world.venues.PutZone(_zone(zone_id="vip"))
    assert fresh.playout == common_pb2.PLAYOUT_MODE_AUTO
    low = await world.venues.PutZone(_zone(common_pb2.PLAYOUT_MODE_LOW_LATENCY, zone_id="vip"))
    assert low.playout == common_pb2.PLAYOUT_MODE_LOW_LATENCY

    # An unknown mode is refused naming the field, and nothing of the request is written.
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await world.venues.PutZone(_zone(7, latency_cap_ms=99))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (e.value.details() or "").startswith("playout: ")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await world.venues.PutZone(_zone(7, zone_id="new"))
    zones = await _zones(world)
    assert (zones["std"].playout, zones["std"].latency_cap_ms) == (common_pb2.PLAYOUT_MODE_SMOOTH, 40)
    assert zones["vip"].playout == common_pb2.PLAYOUT_MODE_LOW_LATENCY and "new" not in zones


def _credentials(started: session_pb2.StartSessionResponse) -> tuple[str, str]:
    return started.session.session_id, started.session_token


async def test_a_zones_mode_reaches_the_agents_packets_and_a_running_session_keeps_its_own(
    world: BrokerClient, launch: Launch, broker: Broker, tmp_path: Path
) -> None:
    await world.venues.PutZone(_zone(common_pb2.PLAYOUT_MODE_LOW_LATENCY))
    await launch()
    target = f"127.0.0.1:{broker.port}"
    low = await world.start_session("cafe", "s1", "demo")
    await world.wait_for(low.session.session_id, S.SESSION_STATE_READY, timeout_s=30)
    async with playout_seat.run(target, *_credentials(low), tmp_path / "seat-low.log") as seat:
        await seat.until(playout_seat.receiving, 30)
        # Every packet of a few reports' worth says zero, whatever the (clean) link's reports say.
        for _ in range(4):
            line = await seat.until(playout_seat.receiving, 10)
            assert set(line["delays"]) == {playout_seat.ZERO}, line

        # The zone changes: the running session keeps the mode it started with, the next one takes the new mode.
        await world.venues.PutZone(_zone(common_pb2.PLAYOUT_MODE_SMOOTH))
        smooth = await world.start_session("cafe", "s2", "demo")
        await world.wait_for(smooth.session.session_id, S.SESSION_STATE_READY, timeout_s=30)
        async with playout_seat.run(target, *_credentials(smooth), tmp_path / "seat-smooth.log") as other:
            await other.until(playout_seat.receiving, 30)
            for _ in range(3):
                line = await other.until(playout_seat.receiving, 10)
                assert set(line["delays"]) == {playout_seat.ADAPTIVE}, line
        line = await seat.until(playout_seat.receiving, 10)
        assert set(line["delays"]) == {playout_seat.ZERO}, line

    for started in (low, smooth):  # the agent has two slots
        await world.end_session(started.session.session_id, started.session_token)

    # A seat's own mode (the kiosk page's ?playout=, in its offer) goes over its zone's, for its connection.
    own = await world.start_session("cafe", "s3", "demo")
    await world.wait_for(own.session.session_id, S.SESSION_STATE_READY, timeout_s=30)
    log = tmp_path / "seat-own.log"
    async with playout_seat.run(target, *_credentials(own), log, mode="LOW_LATENCY") as seat:
        await seat.until(playout_seat.receiving, 30)
        for _ in range(3):
            line = await seat.until(playout_seat.receiving, 10)
            assert set(line["delays"]) == {playout_seat.ZERO}, line  # the zone says SMOOTH now
    await world.end_session(own.session.session_id, own.session_token)
