"""Bad input gets a clear status naming the field, and writes nothing."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import grpc
import pytest
from cloudseat.client import BrokerClient
from cloudseat.v1 import common_pb2, fleet_pb2, session_pb2, venue_pb2
from grpc import aio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.server import Broker

C = grpc.StatusCode
TABLES = (
    "providers",
    "sites",
    "games",
    "prices",
    "hosts",
    "venues",
    "zones",
    "seats",
    "venue_site_latency",
    "sessions",
    "session_transitions",
)
OFFER = common_pb2.SessionDescription(type="offer", sdp="v=0\r\n")
UNKNOWN_SID = str(uuid.UUID(int=7))


async def _counts(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}
    finally:
        await conn.close()


def _cases(c: BrokerClient) -> list[tuple[Any, Any, grpc.StatusCode, str]]:
    s, v, f = c.sessions, c.venues, c.fleet
    start = session_pb2.StartSessionRequest
    return [
        (
            s.StartSession,
            start(venue_id="cafe", seat_id="s1", game_id="demo"),
            C.INVALID_ARGUMENT,
            "request_id",
        ),
        (s.StartSession, start(request_id="r", seat_id="s1", game_id="demo"), C.INVALID_ARGUMENT, "venue_id"),
        (
            s.StartSession,
            start(request_id="r", venue_id="cafe", seat_id="s 1", game_id="demo"),
            C.INVALID_ARGUMENT,
            "seat_id",
        ),
        (
            s.StartSession,
            start(request_id="r", venue_id="cafe", seat_id="s1", game_id=""),
            C.INVALID_ARGUMENT,
            "game_id",
        ),
        (
            s.StartSession,
            start(request_id="r", venue_id="cafe", seat_id="s1", game_id="demo", slots=9),
            C.INVALID_ARGUMENT,
            "slots",
        ),
        (
            s.StartSession,
            start(request_id="r x", venue_id="cafe", seat_id="s1", game_id="demo"),
            C.INVALID_ARGUMENT,
            "request_id",
        ),
        (
            s.StartSession,
            start(request_id="r", venue_id="nope", seat_id="s1", game_id="demo"),
            C.NOT_FOUND,
            "venue_id",
        ),
        (
            s.StartSession,
            start(request_id="r", venue_id="cafe", seat_id="s9", game_id="demo"),
            C.NOT_FOUND,
            "seat_id",
        ),
        (
            s.StartSession,
            start(request_id="r", venue_id="cafe", seat_id="s1", game_id="nogame"),
            C.NOT_FOUND,
            "game_id",
        ),
        (s.GetSession, session_pb2.GetSessionRequest(session_id="x"), C.INVALID_ARGUMENT, "session_id"),
        (s.GetSession, session_pb2.GetSessionRequest(session_id=UNKNOWN_SID), C.NOT_FOUND, "session_id"),
        (
            s.EndSession,
            session_pb2.EndSessionRequest(session_id=UNKNOWN_SID),
            C.INVALID_ARGUMENT,
            "session_token",
        ),
        (
            s.EndSession,
            session_pb2.EndSessionRequest(session_id=UNKNOWN_SID, session_token="t"),
            C.NOT_FOUND,
            "session_id",
        ),
        (
            s.Negotiate,
            session_pb2.NegotiateRequest(session_id=UNKNOWN_SID, session_token="t"),
            C.INVALID_ARGUMENT,
            "offer",
        ),
        (
            s.Negotiate,
            session_pb2.NegotiateRequest(
                session_id=UNKNOWN_SID,
                session_token="t",
                offer=common_pb2.SessionDescription(type="offer", sdp="hello"),
            ),
            C.INVALID_ARGUMENT,
            "offer.sdp",
        ),
        (
            s.Negotiate,
            session_pb2.NegotiateRequest(session_id=UNKNOWN_SID, session_token="t", offer=OFFER),
            C.NOT_FOUND,
            "session_id",
        ),
        (
            v.CreateVenue,
            venue_pb2.CreateVenueRequest(venue_id="cafe", name="again"),
            C.ALREADY_EXISTS,
            "venue_id",
        ),
        (v.CreateVenue, venue_pb2.CreateVenueRequest(venue_id="new", name=""), C.INVALID_ARGUMENT, "name"),
        (
            v.CreateVenue,
            venue_pb2.CreateVenueRequest(venue_id="new", name="a\x00b"),
            C.INVALID_ARGUMENT,
            "name",
        ),
        (
            v.CreateVenue,
            venue_pb2.CreateVenueRequest(venue_id="new", name="New", time_zone="Mars/Olympus"),
            C.INVALID_ARGUMENT,
            "time_zone",
        ),
        (v.GetVenue, venue_pb2.GetVenueRequest(venue_id="nope"), C.NOT_FOUND, "venue_id"),
        (
            v.PutZone,
            venue_pb2.PutZoneRequest(venue_id="cafe", zone_id="z", latency_cap_ms=10),
            C.INVALID_ARGUMENT,
            "tier",
        ),
        (
            v.PutZone,
            venue_pb2.PutZoneRequest(venue_id="cafe", zone_id="z", tier=99, latency_cap_ms=10),
            C.INVALID_ARGUMENT,
            "tier",
        ),
        (
            v.PutZone,
            venue_pb2.PutZoneRequest(venue_id="cafe", zone_id="z", tier=2, latency_cap_ms=0),
            C.INVALID_ARGUMENT,
            "latency_cap_ms",
        ),
        (
            v.PutZone,
            venue_pb2.PutZoneRequest(venue_id="nope", zone_id="z", tier=2, latency_cap_ms=9),
            C.NOT_FOUND,
            "venue_id",
        ),
        (
            v.PutSeat,
            venue_pb2.PutSeatRequest(venue_id="cafe", seat_id="s9", zone_id="nozone"),
            C.NOT_FOUND,
            "zone_id",
        ),
        (
            v.PutSeat,
            venue_pb2.PutSeatRequest(venue_id="nope", seat_id="s9", zone_id="std"),
            C.NOT_FOUND,
            "venue_id",
        ),
        (v.ReportLatency, venue_pb2.ReportLatencyRequest(venue_id="cafe"), C.INVALID_ARGUMENT, "samples"),
        (
            v.ReportLatency,
            venue_pb2.ReportLatencyRequest(
                venue_id="cafe",
                samples=[
                    venue_pb2.LatencySample(site_id="site-near", rtt_ms=3),
                    venue_pb2.LatencySample(site_id="nosite", rtt_ms=3),
                ],
            ),
            C.NOT_FOUND,
            "samples[1].site_id",
        ),
        (
            v.ReportLatency,
            venue_pb2.ReportLatencyRequest(
                venue_id="cafe", samples=[venue_pb2.LatencySample(site_id="site-near", rtt_ms=10001)]
            ),
            C.INVALID_ARGUMENT,
            "samples[0].rtt_ms",
        ),
        (
            v.ListSessions,
            venue_pb2.ListSessionsRequest(venue_id="cafe", limit=5000),
            C.INVALID_ARGUMENT,
            "limit",
        ),
        (
            f.CreateProvider,
            fleet_pb2.CreateProviderRequest(provider_id="prov", name="again"),
            C.ALREADY_EXISTS,
            "provider_id",
        ),
        (
            f.CreateSite,
            fleet_pb2.CreateSiteRequest(site_id="new", provider_id="nope", name="n"),
            C.NOT_FOUND,
            "provider_id",
        ),
        (
            f.CreateSite,
            fleet_pb2.CreateSiteRequest(site_id="site-near", provider_id="prov", name="n"),
            C.ALREADY_EXISTS,
            "site_id",
        ),
        (
            f.SetPrice,
            fleet_pb2.SetPriceRequest(site_id="site-near", gpu_class="g", price_micros_per_slot_hour=-1),
            C.INVALID_ARGUMENT,
            "price",
        ),
        (
            f.SetPrice,
            fleet_pb2.SetPriceRequest(site_id="nosite", gpu_class="g", price_micros_per_slot_hour=1),
            C.NOT_FOUND,
            "site_id",
        ),
        (
            f.SetPrice,
            fleet_pb2.SetPriceRequest(
                site_id="site-near", gpu_class="g", price_micros_per_slot_hour=1, currency="yuan"
            ),
            C.INVALID_ARGUMENT,
            "currency",
        ),
        (
            f.PutGame,
            fleet_pb2.PutGameRequest(game_id="g", name="n", image_size_bytes=2**64 - 1),
            C.INVALID_ARGUMENT,
            "image_size_bytes",
        ),
        (f.DrainHost, fleet_pb2.DrainHostRequest(host_id="nohost"), C.NOT_FOUND, "host_id"),
        (f.GetHost, fleet_pb2.GetHostRequest(host_id=""), C.INVALID_ARGUMENT, "host_id"),
    ]


async def test_each_bad_request_names_its_field_and_writes_nothing(
    world: BrokerClient, broker: Broker
) -> None:
    before = await _counts(broker.database_url)
    for method, request, code, field in _cases(world):
        with pytest.raises(aio.AioRpcError) as e:
            await method(request)
        assert e.value.code() is code, (request, e.value.details())
        assert field in (e.value.details() or ""), (request, e.value.details())
    assert await _counts(broker.database_url) == before


async def test_watching_an_unknown_session(world: BrokerClient) -> None:
    with pytest.raises(aio.AioRpcError) as e:
        async for _ in world.watch(UNKNOWN_SID):
            pass
    assert e.value.code() is C.NOT_FOUND


async def test_random_field_values_never_answer_unknown_or_internal(
    world: BrokerClient, broker: Broker
) -> None:
    loop = asyncio.get_running_loop()
    text = st.one_of(st.text(max_size=80), st.sampled_from(["cafe", "s1", "demo", "", "x" * 65, "\x00", "é"]))
    seen: list[grpc.StatusCode] = []

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        request_id=text,
        venue=text,
        seat=text,
        game=text,
        patron=text,
        slots=st.integers(0, 2**32 - 1),
        sid=text,
        name=text,
        cap=st.integers(0, 2**32 - 1),
        tier=st.integers(0, 2**31 - 1),
    )
    def probe(
        request_id: str,
        venue: str,
        seat: str,
        game: str,
        patron: str,
        slots: int,
        sid: str,
        name: str,
        cap: int,
        tier: int,
    ) -> None:
        calls = [
            lambda: world.sessions.StartSession(
                session_pb2.StartSessionRequest(
                    request_id=request_id,
                    venue_id=venue,
                    seat_id=seat,
                    game_id=game,
                    patron_id=patron,
                    slots=slots,
                )
            ),
            lambda: world.sessions.GetSession(session_pb2.GetSessionRequest(session_id=sid)),
            lambda: world.sessions.EndSession(
                session_pb2.EndSessionRequest(session_id=sid, session_token=name)
            ),
            lambda: world.venues.CreateVenue(venue_pb2.CreateVenueRequest(venue_id=venue, name=name)),
            lambda: world.venues.PutZone(
                venue_pb2.PutZoneRequest(venue_id=venue, zone_id=seat, tier=tier, latency_cap_ms=cap)
            ),
            lambda: world.fleet.CreateSite(
                fleet_pb2.CreateSiteRequest(site_id=seat, provider_id=venue, name=name, region=game)
            ),
        ]
        for call in calls:
            try:
                asyncio.run_coroutine_threadsafe(_call(call), loop).result(timeout=10)
            except aio.AioRpcError as exc:
                seen.append(exc.code())
                assert exc.code() not in (C.UNKNOWN, C.INTERNAL), exc.details()

    await asyncio.to_thread(probe)
    assert seen  # the probe reached the broker
    health = await world.venues.GetVenue(venue_pb2.GetVenueRequest(venue_id="cafe"))
    assert health.venue_id == "cafe"  # and it still answers


async def _call(make: Any) -> Any:
    return await make()  # the call is made on the event loop's thread, as grpc.aio requires
