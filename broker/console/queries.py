"""The consoles' reads from the store (SQL in broker/store/sql/console.sql). Writes are not here: a drain from the
console calls the same store function FleetService does (broker.store.fleet.set_drained), so it audits and reaches
the agent the same way."""

from __future__ import annotations

import asyncpg

from broker.store.database import translated
from broker.store.queries import Q


async def venues(pool: asyncpg.Pool, venue_id: str | None) -> list[asyncpg.Record]:
    """Every venue, or the one given (a venue's token sees its own only)."""
    with translated():
        rows: list[asyncpg.Record] = await pool.fetch(Q["console_venues"], venue_id)
    return rows


async def providers(pool: asyncpg.Pool, provider_id: str | None) -> list[asyncpg.Record]:
    """Every provider, or the one given."""
    with translated():
        rows: list[asyncpg.Record] = await pool.fetch(Q["console_providers"], provider_id)
    return rows


async def seats(pool: asyncpg.Pool, venue_id: str, seat_id: str | None = None) -> list[asyncpg.Record]:
    """A venue's seats (or one seat) with their zone and live session (JSON, without its token)."""
    with translated():
        rows: list[asyncpg.Record] = await pool.fetch(Q["console_seats"], venue_id, seat_id)
    return rows


async def zone_service(pool: asyncpg.Pool, venue_id: str) -> list[asyncpg.Record]:
    """Per zone, today: sessions and seconds served, and those within the latency cap."""
    with translated():
        rows: list[asyncpg.Record] = await pool.fetch(Q["console_zone_service"], venue_id)
    return rows


async def provider_sites(pool: asyncpg.Pool, provider_id: str) -> list[asyncpg.Record]:
    """A provider's sites with their hosts counted and slots in use."""
    with translated():
        rows: list[asyncpg.Record] = await pool.fetch(Q["console_provider_sites"], provider_id)
    return rows


async def metrics_snapshot(pool: asyncpg.Pool) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
    """Region-wide, tenant-free counts: live sessions by state, hosts by status and drain."""
    with translated():
        async with pool.acquire() as conn:
            sessions: list[asyncpg.Record] = await conn.fetch(Q["console_metrics_sessions"])
            hosts: list[asyncpg.Record] = await conn.fetch(Q["console_metrics_hosts"])
    return sessions, hosts


async def metered_seconds(pool: asyncpg.Pool) -> float:
    """Slot-seconds of usage in the metering ledger, region-wide."""
    with translated():
        value: float = await pool.fetchval(Q["console_metered_seconds"])
    return value


async def region_sites(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """Every site with its provider, hosts counted and slots in use (the operator's region view)."""
    with translated():
        rows: list[asyncpg.Record] = await pool.fetch(Q["console_region_sites"])
    return rows


async def region_venues(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """Every venue now: seats, live sessions, waiting, served within their latency cap."""
    with translated():
        rows: list[asyncpg.Record] = await pool.fetch(Q["console_region_venues"])
    return rows
