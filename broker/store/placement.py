"""What the scheduler reads before a round and writes after it."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

import asyncpg

from broker.store.database import transaction, translated
from broker.store.queries import Q


async def pending_batch(pool: asyncpg.Pool, limit: int) -> list[asyncpg.Record]:
    """The oldest PENDING sessions (at most `limit`), with how long each has waited by the database clock."""
    with translated():
        rows: list[asyncpg.Record] = await pool.fetch(Q["pending_batch"], limit)
    return rows


async def candidate_hosts(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """Every online host (drained ones too, so an unplaced request can be told why), with its price in force."""
    with translated():
        rows: list[asyncpg.Record] = await pool.fetch(Q["candidate_hosts"])
    return rows


async def hosts_by_id(pool: asyncpg.Pool, host_ids: Sequence[str]) -> list[asyncpg.Record]:
    """The given hosts, as `candidate_hosts` reads them (those no longer online are left out)."""
    with translated():
        rows: list[asyncpg.Record] = await pool.fetch(Q["hosts_by_id"], list(host_ids))
    return rows


async def venue_latency(pool: asyncpg.Pool, venue_ids: Sequence[str]) -> list[asyncpg.Record]:
    with translated():
        rows: list[asyncpg.Record] = await pool.fetch(Q["venue_latency"], list(venue_ids))
    return rows


async def venue_latency_stamps(pool: asyncpg.Pool, venue_ids: Sequence[str]) -> dict[str, object]:
    """When each venue's latency measurements last changed (venues without any are left out)."""
    with translated():
        rows = await pool.fetch(Q["venue_latency_stamps"], list(venue_ids))
    return {r["venue_id"]: r["measured_at"] for r in rows}


async def commit(
    pool: asyncpg.Pool,
    placements: Sequence[tuple[uuid.UUID, str, str, int, int]],
    leased: Mapping[uuid.UUID, tuple[str, int]] | None = None,
) -> list[uuid.UUID]:
    """Place a whole batch in one transaction: (session_id, host_id, site_id, latency_ms, price_micros) each.
    `leased` names the sessions placed under a lease: session_id -> (lease_id, slots the lease pays).

    Sessions no longer PENDING (ended meanwhile), and sessions whose host is no longer online or is drained or
    draining now, are skipped: the returned ids are the ones placed. If any host would go below zero free slots
    the database refuses the whole batch and FailedPrecondition is raised: nothing was placed, re-plan.
    """
    if not placements:
        return []
    cols = list(zip(*placements, strict=True))
    leased = leased or {}
    lease_ids = [leased[p[0]][0] if p[0] in leased else None for p in placements]
    lease_slots = [leased[p[0]][1] if p[0] in leased else 0 for p in placements]
    async with transaction(pool) as conn:
        rows = await conn.fetch(Q["commit_placements"], *[list(c) for c in cols], lease_ids, lease_slots)
    return [r["session_id"] for r in rows]


async def set_pending_reasons(pool: asyncpg.Pool, reasons: Sequence[tuple[uuid.UUID, str]]) -> None:
    """Record why each unplaced session still waits (only changed reasons are written, and notified)."""
    if not reasons:
        return
    async with transaction(pool) as conn:
        await conn.execute(Q["set_pending_reasons"], [s for s, _ in reasons], [r for _, r in reasons])
