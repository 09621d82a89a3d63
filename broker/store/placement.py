"""What the scheduler reads before a round and writes after it: the queries, and `PostgresSchedulerStore`, the
scheduler's store (broker.scheduler_store) over them."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from typing import TypeVar

import asyncpg
from cloudseat import errors

from broker import placement
from broker.scheduler_store import HostRow, LatencyRow, PendingRequest, Placement, PriceRow
from broker.store import leases
from broker.store.database import transaction, translated
from broker.store.queries import Q

# A session id as a uuid parameter takes it: uuid.UUID, or its text (asyncpg encodes either; the scheduler holds
# text, tests and tools hold what they read back).
_SessionId = TypeVar("_SessionId", uuid.UUID, str)


async def pending_batch(pool: asyncpg.Pool, limit: int) -> list[asyncpg.Record]:
    """The oldest PENDING sessions (at most `limit`), with how long each has waited by the database clock."""
    with translated():
        rows: list[asyncpg.Record] = await pool.fetch(Q["pending_batch"], limit)
    return rows


async def candidate_hosts(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """Every online host (drained ones too, so an unplaced request can be told why), with its declared price (the
    site's price in force is the scheduler's to work out: `PostgresSchedulerStore.prices`)."""
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
    placements: Sequence[tuple[_SessionId, str, str, int, int]],
    leased: Mapping[_SessionId, tuple[str, int]] | None = None,
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
    # One statement, so no BEGIN and COMMIT of its own: it commits as it returns, one round trip instead of three
    # (each waits for a core on a busy machine, and the round's placements are told only once it commits).
    with translated():
        rows = await pool.fetch(Q["commit_placements"], *[list(c) for c in cols], lease_ids, lease_slots)
    return [r["session_id"] for r in rows]


async def set_pending_reasons(pool: asyncpg.Pool, reasons: Sequence[tuple[uuid.UUID | str, str]]) -> None:
    """Record why each unplaced session still waits (only changed reasons are written, and notified)."""
    if not reasons:
        return
    async with transaction(pool) as conn:
        await conn.execute(Q["lock_sessions_then_hosts"], [s for s, _ in reasons], [])
        await conn.execute(Q["set_pending_reasons"], [s for s, _ in reasons], [r for _, r in reasons])


class PostgresSchedulerStore:
    """The scheduler's store on PostgreSQL: the functions above and store.leases.in_force, over one pool.

    Each method calls the function of its name. Session ids go in as the scheduler holds them, text (asyncpg encodes
    text for a uuid parameter); what comes back as uuid.UUID is turned to text here, and only here."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def pending_batch(self, limit: int) -> list[PendingRequest]:
        return [
            PendingRequest(
                session_id=str(r["session_id"]),
                venue_id=r["venue_id"],
                game_id=r["game_id"],
                latency_cap_ms=r["latency_cap_ms"],
                slots=r["slots"],
                resumed=r["resumed"],
                waited_ms=r["waited_ms"],
                pending_reason=r["pending_reason"] or "",
            )
            for r in await pending_batch(self._pool, limit)
        ]

    async def online_hosts(self) -> list[HostRow]:
        return _host_rows(await candidate_hosts(self._pool))

    async def hosts_by_id(self, host_ids: Sequence[str]) -> list[HostRow]:
        return _host_rows(await hosts_by_id(self._pool, host_ids))

    async def price_stamp(self) -> tuple[dt.datetime, object]:
        with translated():
            row = await self._pool.fetchrow(Q["price_stamp"])
        assert row is not None  # an aggregate answers one row
        return row["now"], (row["n"], row["updated_at"])

    async def prices(self) -> list[PriceRow]:
        with translated():
            rows = await self._pool.fetch(Q["prices"])
        return [PriceRow(*r) for r in rows]

    async def venue_latency_stamps(self, venue_ids: Sequence[str]) -> dict[str, object]:
        return await venue_latency_stamps(self._pool, venue_ids)

    async def venue_latency(self, venue_ids: Sequence[str]) -> list[LatencyRow]:
        return [
            LatencyRow(r["venue_id"], r["site_id"], r["rtt_ms"])
            for r in await venue_latency(self._pool, venue_ids)
        ]

    async def games_stamp(self) -> object:
        with translated():
            row = await self._pool.fetchrow(Q["games_stamp"])
        assert row is not None  # an aggregate answers one row
        return row["n"], row["updated_at"]

    async def game_images(self) -> dict[str, placement.GameImage]:
        with translated():
            rows = await self._pool.fetch(Q["game_images"])
        return {
            r["game_id"]: placement.GameImage(
                r["version"],
                r["image_size_bytes"],
                dict(zip(r["from_versions"], r["lacking_bytes"], strict=True)),
            )
            for r in rows
        }

    async def leases_in_force(self) -> list[placement.Lease]:
        return [
            placement.Lease(
                id=r["lease_id"],
                venue_id=r["venue_id"],
                gpu_class=r["gpu_class"],
                unused_slots=r["unused_slots"],
                site_id=r["site_id"],
            )
            for r in await leases.in_force(self._pool)
        ]

    async def commit(
        self, placements: Sequence[Placement], leased: Mapping[placement.RequestId, tuple[str, int]]
    ) -> list[placement.RequestId]:
        return [str(session_id) for session_id in await commit(self._pool, placements, leased)]

    async def set_pending_reasons(
        self, reasons: Mapping[placement.RequestId, placement.PendingReason]
    ) -> None:
        await set_pending_reasons(self._pool, [(rid, reason.value) for rid, reason in reasons.items()])


def _host_rows(rows: Sequence[asyncpg.Record]) -> list[HostRow]:
    """`HostRow`s of candidate_hosts or hosts_by_id rows. Built positionally, which costs what copying the values
    does (by name costs twice that, and a full read is 10,000 rows); so the columns are checked against the
    fields once per read."""
    if rows and tuple(rows[0].keys()) != HostRow._fields:
        raise errors.StoreError(f"host columns {tuple(rows[0].keys())} are not HostRow's {HostRow._fields}")
    return [HostRow(*r) for r in rows]
