"""Venues, their zones and seats, and the latency they measure to each site."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
from cloudseat import errors

from broker.store import audit
from broker.store.database import required_row, required_value, transaction, translated
from broker.store.queries import Q


async def create_venue(pool: asyncpg.Pool, venue_id: str, name: str, time_zone: str = "UTC") -> asyncpg.Record:
    """Create a venue keeping its days in `time_zone` (an IANA name, checked by the caller); AlreadyExists when the
    id is taken."""
    async with transaction(pool) as conn:
        return await create_venue_in(conn, venue_id, name, time_zone)


async def create_venue_in(conn: asyncpg.Connection, venue_id: str, name: str, time_zone: str) -> asyncpg.Record:
    """`create_venue` in the caller's transaction (broker.region applies a whole file in one)."""
    row: asyncpg.Record = await conn.fetchrow(Q["create_venue"], venue_id, name, time_zone)
    await audit.write(
        conn, "venue.create", f"venue:{venue_id}", tenant=f"venue:{venue_id}", name=name, time_zone=time_zone
    )
    return row


async def get_venue(
    pool: asyncpg.Pool, venue_id: str
) -> tuple[asyncpg.Record, list[asyncpg.Record], list[asyncpg.Record]]:
    """The venue, its zones and its latest latency per site."""
    with translated():
        async with pool.acquire() as conn:
            venue = await required_row(
                conn, "get_venue", venue_id, missing=errors.NotFound.of("venue_id", "venue", venue_id)
            )
            zones = await conn.fetch(Q["venue_zones"], venue_id)
            latencies = await conn.fetch(Q["venue_latencies"], venue_id)
    return venue, zones, latencies


async def put_zone(
    pool: asyncpg.Pool,
    venue_id: str,
    zone_id: str,
    tier: str,
    latency_cap_ms: int,
    playout: str | None = None,
) -> asyncpg.Record:
    """Create or update a zone of an existing venue. `playout` ("AUTO", "LOW_LATENCY" or "SMOOTH", checked by the
    caller and by the table) None keeps the zone's mode, AUTO for a new zone."""
    async with transaction(pool) as conn:
        return await put_zone_in(conn, venue_id, zone_id, tier, latency_cap_ms, playout)


async def put_zone_in(
    conn: asyncpg.Connection,
    venue_id: str,
    zone_id: str,
    tier: str,
    latency_cap_ms: int,
    playout: str | None = None,
) -> asyncpg.Record:
    """`put_zone` in the caller's transaction."""
    row: asyncpg.Record = await conn.fetchrow(Q["put_zone"], venue_id, zone_id, tier, latency_cap_ms, playout)
    await audit.write(
        conn,
        "zone.put",
        f"zone:{venue_id}/{zone_id}",
        tenant=f"venue:{venue_id}",
        tier=tier,
        latency_cap_ms=latency_cap_ms,
        playout=row["playout"],
    )
    return row


async def put_seat(pool: asyncpg.Pool, venue_id: str, seat_id: str, zone_id: str) -> asyncpg.Record:
    """Create a seat in a zone, or move it to another zone of the same venue."""
    async with transaction(pool) as conn:
        await required_value(
            conn, "venue_exists", venue_id, missing=errors.NotFound.of("venue_id", "venue", venue_id)
        )
        return await put_seat_in(conn, venue_id, seat_id, zone_id)


async def put_seat_in(conn: asyncpg.Connection, venue_id: str, seat_id: str, zone_id: str) -> asyncpg.Record:
    """`put_seat` in the caller's transaction, the venue known to exist."""
    row: asyncpg.Record = await conn.fetchrow(Q["put_seat"], venue_id, seat_id, zone_id)
    await audit.write(conn, "seat.put", f"seat:{venue_id}/{seat_id}", tenant=f"venue:{venue_id}", zone_id=zone_id)
    return row


async def report_latency(pool: asyncpg.Pool, venue_id: str, samples: Sequence[tuple[str, int]]) -> int:
    """Record the latest venue->site round trips; every site must exist, or nothing is written."""
    sites = [s for s, _ in samples]
    async with transaction(pool) as conn:
        await required_value(
            conn, "venue_exists", venue_id, missing=errors.NotFound.of("venue_id", "venue", venue_id)
        )
        unknown = await conn.fetch(Q["unknown_sites"], sites)
        if unknown:
            index = sites.index(unknown[0]["site_id"])
            raise errors.NotFound.of(f"samples[{index}].site_id", "site", unknown[0]["site_id"])
        await conn.execute(Q["report_latency"], venue_id, sites, [ms for _, ms in samples])
    return len(samples)


async def list_seats(pool: asyncpg.Pool, venue_id: str) -> list[asyncpg.Record]:
    """Every seat of the venue with its live session (a JSON object) or None."""
    with translated():
        async with pool.acquire() as conn:
            await required_value(
                conn, "venue_exists", venue_id, missing=errors.NotFound.of("venue_id", "venue", venue_id)
            )
            rows: list[asyncpg.Record] = await conn.fetch(Q["list_seats"], venue_id)
    return rows


async def list_sessions(
    pool: asyncpg.Pool, venue_id: str, live_only: bool, limit: int
) -> list[asyncpg.Record]:
    """The venue's sessions, newest first."""
    with translated():
        async with pool.acquire() as conn:
            await required_value(
                conn, "venue_exists", venue_id, missing=errors.NotFound.of("venue_id", "venue", venue_id)
            )
            rows: list[asyncpg.Record] = await conn.fetch(Q["list_sessions"], venue_id, live_only, limit)
    return rows
