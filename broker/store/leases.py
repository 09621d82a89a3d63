"""Venues' leases of capacity: create (never oversold), list, cancel, the leases in force for placement, and use.

The oversell rule lives in the database (migration 0006, trigger lease_windows_within_capacity); this module turns
its refusal into FailedPrecondition. A latency-bound lease is resolved here to one site: the nearest of the
provider's sites within the bound whose capacity takes the lease over all its windows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import Iterator, Sequence

import asyncpg
from cloudseat import errors

from broker import leasing
from broker.store import audit
from broker.store.database import required_row, required_value, transaction, translated
from broker.store.queries import Q


@dataclasses.dataclass(frozen=True, slots=True)
class LeaseSpec:
    """A lease as asked for (validated): exactly one of `site_id` and `max_latency_ms`."""

    lease_id: str
    provider_id: str
    venue_id: str
    gpu_class: str
    slots: int
    site_id: str | None
    max_latency_ms: int | None
    starts_at: dt.datetime
    ends_at: dt.datetime
    daily: leasing.Daily | None
    time_zone: str
    price_micros: int
    note: str = ""


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    """The lease tables' constraints as the caller's errors (anything else goes on to `translated`)."""
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "leases_pkey":
            raise errors.AlreadyExists("lease_id: a lease with this id exists") from exc
        raise
    except asyncpg.ForeignKeyViolationError as exc:
        if exc.constraint_name == "leases_venue_id_fkey":
            raise errors.NotFound("venue_id: no such venue") from exc
        if exc.constraint_name == "lease_site_of_provider":
            raise errors.NotFound("site_id: no such site of the provider") from exc
        raise


def _oversold(exc: BaseException) -> bool:
    return isinstance(exc, asyncpg.CheckViolationError) and exc.constraint_name == "lease_capacity"


async def site_provider(pool: asyncpg.Pool, site_id: str) -> str:
    """The provider of a site; NotFound (naming site_id) when there is no such site."""
    provider: str = await required_value(
        pool, "lease_site_provider", site_id, missing=errors.NotFound.of("site_id", "site", site_id)
    )
    return provider


async def create(pool: asyncpg.Pool, spec: LeaseSpec) -> asyncpg.Record:
    """Write the lease and its windows, audited; AlreadyExists, NotFound, InvalidArgument (a term in the past, no
    window) or FailedPrecondition (not enough slots at some moment) leave nothing written."""
    async with transaction(pool) as conn:
        return await create_in(conn, spec)


async def create_in(conn: asyncpg.Connection, spec: LeaseSpec) -> asyncpg.Record:
    """`create` in the caller's transaction (broker.region applies a whole file in one), asyncpg's errors left to
    the caller's `translated`. A FailedPrecondition (not enough slots) has written nothing of this lease and leaves
    the transaction usable."""
    windows = leasing.windows(spec.starts_at, spec.ends_at, spec.daily, spec.time_zone)
    if not windows:
        raise errors.InvalidArgument("daily", "the lease has no window within its term")
    lo = [w[0] for w in windows]
    hi = [w[1] for w in windows]
    now: dt.datetime = await conn.fetchval(Q["lease_now"])
    if spec.ends_at <= now:
        raise errors.InvalidArgument("ends_at", "is in the past")
    if spec.site_id is not None:
        sites = [spec.site_id]
    else:
        rows = await conn.fetch(
            Q["lease_candidate_sites"],
            spec.venue_id,
            spec.provider_id,
            spec.gpu_class,
            spec.max_latency_ms,
        )
        sites = [r["site_id"] for r in rows]
        if not sites:
            raise errors.FailedPrecondition(
                f"max_latency_ms: the venue has measured no site of provider {spec.provider_id!r} with "
                f"{spec.gpu_class} hosts within {spec.max_latency_ms} ms"
            )
        await conn.fetchval(Q["lease_lock_sites"], sites, spec.gpu_class)
    who = audit.actor()
    chosen = None
    for site_id in sites:
        try:
            async with conn.transaction():  # a savepoint: a site that lacks room is undone alone
                with _mapped():
                    await conn.execute(
                        Q["lease_insert"], spec.lease_id, spec.provider_id, spec.venue_id, site_id,
                        spec.gpu_class, spec.slots, spec.max_latency_ms, spec.starts_at, spec.ends_at,
                        spec.daily.start_minute if spec.daily else None,
                        spec.daily.duration_minutes if spec.daily else None,
                        spec.time_zone, spec.price_micros, spec.note, who.subject,
                    )  # fmt: skip
                    await conn.execute(
                        Q["lease_windows_insert"],
                        spec.lease_id,
                        site_id,
                        spec.gpu_class,
                        spec.slots,
                        lo,
                        hi,
                    )
            chosen = site_id
            break
        except asyncpg.CheckViolationError as exc:
            if not _oversold(exc):
                raise
    if chosen is None:
        where = f"site {spec.site_id!r}" if spec.site_id else f"any site within {spec.max_latency_ms} ms"
        raise errors.FailedPrecondition(
            f"slots: {spec.slots} slots of {spec.gpu_class} at {where} would oversell the provider's hosts "
            "at some moment of the lease's windows"
        )
    await audit.write(
        conn, "lease.create", f"lease:{spec.lease_id}",
        provider_id=spec.provider_id, venue_id=spec.venue_id, site_id=chosen, gpu_class=spec.gpu_class,
        slots=spec.slots, max_latency_ms=spec.max_latency_ms, starts_at=spec.starts_at.isoformat(),
        ends_at=spec.ends_at.isoformat(),
        daily=dataclasses.asdict(spec.daily) if spec.daily else None, time_zone=spec.time_zone,
        price_micros_per_slot_hour=spec.price_micros, windows=len(windows),
    )  # fmt: skip
    row: asyncpg.Record = await conn.fetchrow(Q["lease_get"], spec.lease_id)
    return row


async def get(pool: asyncpg.Pool, lease_id: str) -> asyncpg.Record:
    """A lease (lease_view); NotFound naming lease_id."""
    return await required_row(
        pool, "lease_get", lease_id, missing=errors.NotFound.of("lease_id", "lease", lease_id)
    )


async def list_leases(
    pool: asyncpg.Pool, venue_id: str | None, provider_id: str | None, active_only: bool
) -> list[asyncpg.Record]:
    with translated():
        rows: list[asyncpg.Record] = await pool.fetch(Q["lease_list"], venue_id, provider_id, active_only)
    return rows


async def cancel(pool: asyncpg.Pool, lease_id: str, reason: str) -> asyncpg.Record:
    """End the lease now (its coming windows dropped, the running one cut), audited; a no-op when cancelled."""
    async with transaction(pool) as conn:
        done = await conn.fetchval(Q["lease_cancel"], lease_id, audit.actor().subject)
        if done is not None:
            await conn.execute(Q["lease_windows_drop_coming"], lease_id)
            await conn.execute(Q["lease_windows_cut_running"], lease_id)
            await audit.write(conn, "lease.cancel", f"lease:{lease_id}", reason=reason)
        # No lease: the cancel above changed nothing, so leaving the transaction by raising undoes nothing.
        row = await required_row(
            conn, "lease_get", lease_id, missing=errors.NotFound.of("lease_id", "lease", lease_id)
        )
    return row


async def in_force(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """The leases with a window running now, and what each leaves unused (for the placement problem)."""
    with translated():
        rows: list[asyncpg.Record] = await pool.fetch(Q["active_leases"])
    return rows


async def venue_lease_ids(pool: asyncpg.Pool, venue_id: str) -> list[str]:
    with translated():
        rows = await pool.fetch(Q["lease_ids_of_venue"], venue_id)
    return [r["lease_id"] for r in rows]


async def use_per_hour(
    pool: asyncpg.Pool, lease_ids: Sequence[str], start: dt.datetime, end: dt.datetime, time_zone: str
) -> list[leasing.HourUse]:
    """Slot-seconds leased and used under `lease_ids` per hour of [start, end) (hours of `time_zone`)."""
    with translated():
        async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            windows = await conn.fetch(Q["lease_use_windows"], list(lease_ids), start, end)
            sessions = await conn.fetch(Q["lease_use_sessions"], list(lease_ids), start, end)
    by_lease: dict[str, list[leasing.Interval]] = {}
    for w in windows:
        by_lease.setdefault(w["lease_id"], []).append((w["lo"], w["hi"]))
    for spans in by_lease.values():
        spans.sort()
    leased = [((w["lo"], w["hi"]), int(w["slots"])) for w in windows]
    # A session counts under its lease only while a window of that lease runs.
    used = [
        (part, int(s["lease_slots"]))
        for s in sessions
        for part in leasing.clip((s["lo"], s["hi"]), by_lease.get(s["lease_id"], []))
    ]
    return leasing.use_per_hour(leasing.hours(start, end, time_zone), leased, used)
