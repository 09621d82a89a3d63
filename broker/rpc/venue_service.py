"""VenueService: venues, zones, seats, latency reports and the live seat view."""

from __future__ import annotations

import asyncpg
from cloudseat import errors
from cloudseat import validate as v
from cloudseat.v1 import venue_pb2, venue_pb2_grpc
from grpc import aio

from broker import auth, patron_time
from broker.rpc import convert
from broker.store import patron_time as patron_time_store
from broker.store import venues as venue_store

_MAX_SAMPLES = 1000


class VenueService(venue_pb2_grpc.VenueServiceServicer):
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def CreateVenue(
        self, request: venue_pb2.CreateVenueRequest, context: aio.ServicerContext
    ) -> venue_pb2.Venue:
        venue_id = v.ident(request.venue_id, "venue_id")
        name = v.text(request.name, "name", required=True)
        time_zone = v.time_zone(request.time_zone)
        auth.caller().require_operator("venue_id")
        row = await venue_store.create_venue(self._pool, venue_id, name, time_zone)
        return convert.venue(row, [], [])

    async def GetVenue(
        self, request: venue_pb2.GetVenueRequest, context: aio.ServicerContext
    ) -> venue_pb2.Venue:
        venue_id = v.ident(request.venue_id, "venue_id")
        auth.caller().require_venue(venue_id)
        row, zones, latencies = await venue_store.get_venue(self._pool, venue_id)
        return convert.venue(row, zones, latencies)

    async def PutZone(
        self, request: venue_pb2.PutZoneRequest, context: aio.ServicerContext
    ) -> venue_pb2.Zone:
        venue_id = v.ident(request.venue_id, "venue_id")
        auth.caller().require_venue(venue_id)
        zone_id = v.ident(request.zone_id, "zone_id")
        tier = convert.tier(request.tier, "tier")
        cap = v.int_range(request.latency_cap_ms, "latency_cap_ms", 1, 500)
        playout = convert.playout(request.playout, "playout")
        row = await venue_store.put_zone(self._pool, venue_id, zone_id, tier.value, cap, playout)
        return convert.zone(row)

    async def PutSeat(
        self, request: venue_pb2.PutSeatRequest, context: aio.ServicerContext
    ) -> venue_pb2.Seat:
        venue_id = v.ident(request.venue_id, "venue_id")
        auth.caller().require_venue(venue_id)
        seat_id = v.ident(request.seat_id, "seat_id")
        zone_id = v.ident(request.zone_id, "zone_id")
        row = await venue_store.put_seat(self._pool, venue_id, seat_id, zone_id)
        return convert.seat(row)

    async def ReportLatency(
        self, request: venue_pb2.ReportLatencyRequest, context: aio.ServicerContext
    ) -> venue_pb2.ReportLatencyResponse:
        venue_id = v.ident(request.venue_id, "venue_id")
        auth.caller().require_venue(venue_id)
        if not request.samples:
            raise errors.InvalidArgument("samples", "must hold at least one sample")
        if len(request.samples) > _MAX_SAMPLES:
            raise errors.InvalidArgument("samples", f"must hold at most {_MAX_SAMPLES} samples")
        samples: list[tuple[str, int]] = []
        seen: set[str] = set()
        for i, s in enumerate(request.samples):
            site_id = v.ident(s.site_id, f"samples[{i}].site_id")
            if site_id in seen:
                raise errors.InvalidArgument(
                    f"samples[{i}].site_id", "appears twice; send one sample per site"
                )
            seen.add(site_id)
            samples.append((site_id, v.int_range(s.rtt_ms, f"samples[{i}].rtt_ms", 0, 10_000)))
        accepted = await venue_store.report_latency(self._pool, venue_id, samples)
        return venue_pb2.ReportLatencyResponse(accepted=accepted)

    async def ListSeats(
        self, request: venue_pb2.ListSeatsRequest, context: aio.ServicerContext
    ) -> venue_pb2.ListSeatsResponse:
        venue_id = v.ident(request.venue_id, "venue_id")
        auth.caller().require_venue(venue_id)
        rows = await venue_store.list_seats(self._pool, venue_id)
        return venue_pb2.ListSeatsResponse(
            seats=[
                venue_pb2.SeatStatus(
                    seat=convert.seat(r), session=convert.session(r["session"]) if r["session"] else None
                )
                for r in rows
            ]
        )

    async def ListSessions(
        self, request: venue_pb2.ListSessionsRequest, context: aio.ServicerContext
    ) -> venue_pb2.ListSessionsResponse:
        venue_id = v.ident(request.venue_id, "venue_id")
        auth.caller().require_venue(venue_id)
        limit = v.int_range(request.limit or 100, "limit", 1, 1000)
        rows = await venue_store.list_sessions(self._pool, venue_id, request.live_only, limit)
        return venue_pb2.ListSessionsResponse(sessions=[convert.session(r) for r in rows])

    async def AddTime(
        self, request: venue_pb2.AddTimeRequest, context: aio.ServicerContext
    ) -> venue_pb2.AddTimeResponse:
        venue_id = v.ident(request.venue_id, "venue_id")
        session_id = v.session_id(request.session_id)
        seconds = v.int_range(request.seconds, "seconds", 1, patron_time.MAX_ADD_S)
        auth.caller().require_venue(venue_id)
        row, left_s = await patron_time_store.add_time(self._pool, venue_id, session_id, seconds)
        response = venue_pb2.AddTimeResponse(session=convert.session(row))
        if left_s is not None:
            response.time_left_s = patron_time.read(left_s, patron_time.PatronTimeConfig()).time_left_s
        return response
