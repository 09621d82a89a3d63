"""The consoles' history rows (migration 0018, SQL in sql/history.sql): the sampler's writes and the charts' reads.
broker.history decides which minute to write and shapes what is read."""

from __future__ import annotations

import datetime as dt

import asyncpg

from broker import history
from broker.store.database import transaction, translated
from broker.store.queries import Q


async def clock(pool: asyncpg.Pool) -> dt.datetime:
    """The database's clock: history is sampled by it, as sessions are stamped by it."""
    with translated():
        now: dt.datetime = await pool.fetchval(Q["history_clock"])
    return now


async def sample(pool: asyncpg.Pool, start: dt.datetime, end: dt.datetime) -> tuple[int, int]:
    """Write minute [start, end) for every site and zone, once (a minute already written stays as it is), and delete
    the rows past the retention, in one transaction; the site and zone rows written."""
    async with transaction(pool) as conn:
        sites = await conn.execute(Q["history_sample_sites"], start)
        zones = await conn.execute(Q["history_sample_zones"], start, end)
        cutoff = history.forget_before(end)
        await conn.execute(Q["history_forget_sites"], cutoff)
        await conn.execute(Q["history_forget_zones"], cutoff)
    return int(sites.split()[-1]), int(zones.split()[-1])


async def sites(pool: asyncpg.Pool, provider_id: str | None, span: history.Span) -> list[asyncpg.Record]:
    """Sites' rows in the span's buckets: of one provider, or every provider (the region's operator)."""
    with translated():
        rows: list[asyncpg.Record] = await pool.fetch(
            Q["history_sites"], provider_id, span.start, span.end, span.bucket_s
        )
    return rows


async def zones(pool: asyncpg.Pool, venue_id: str | None, span: history.Span) -> list[asyncpg.Record]:
    """Zones' rows in the span's buckets: of one venue, or every venue (the region's operator)."""
    with translated():
        rows: list[asyncpg.Record] = await pool.fetch(
            Q["history_zones"], venue_id, span.start, span.end, span.bucket_s
        )
    return rows
