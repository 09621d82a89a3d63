"""The metering ledger: writing entries as sessions run and end, statements, and the stream stats the SLA judges.

`meter` is the leader's duty (broker.metering_duty): it writes what is due and moves each session's cursor with a
compare-and-set in the same transaction, so two writers (an old leader, a price change) never write a second twice;
the database refuses overlapping entries anyway (trigger ledger_no_overlap). broker.metering decides what to write.

For the consoles: `statement`, `ledger`, `running_accrual` and `cost_today`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
from cloudseat import errors

from broker import metering, tiers
from broker.store.database import required_value, transaction, translated
from broker.store.queries import Q

_BATCH = 500


def _metered(row: Mapping[str, Any]) -> metering.Metered:
    try:
        fps = tiers.SPECS[tiers.Tier(row["tier"])].fps
    except ValueError:
        fps = 0
    return metering.Metered(
        session_id=str(row["session_id"]),
        venue_id=row["venue_id"],
        provider_id=row["provider_id"],
        host_id=row["host_id"],
        site_id=row["site_id"],
        gpu_class=row["gpu_class"],
        slots=row["slots"],
        lease_id=row["lease_id"],
        lease_slots=row["lease_slots"],
        placed_at=row["placed_at"],
        ended_at=row["ended_at"],
        usage_until=row["usage_until"],
        sla_until=row["sla_until"],
        schedule=metering.Schedule.from_row(row["base_micros"], row["bands"], row["utc_offset_minutes"]),
        latency_cap_ms=row["latency_cap_ms"],
        tier_fps=fps,
        currency=row["currency"],
    )


async def _write(
    conn: asyncpg.Connection,
    moves: Sequence[tuple[metering.Metered, dt.datetime, dt.datetime, dt.datetime, bool]],
    entries: Sequence[metering.Entry],
) -> int:
    """Advance the cursors (compare-and-set), then append the entries of the sessions whose cursor moved."""
    if not moves:
        return 0
    rows = await conn.fetch(
        Q["metering_advance"],
        [uuid.UUID(m.session_id) for m, *_ in moves],
        [m.usage_until for m, *_ in moves],
        [m.sla_until for m, *_ in moves],
        [u for _, u, _, _, _ in moves],
        [s for _, _, s, _, _ in moves],
        [d for _, _, _, d, _ in moves],
        [f for *_, f in moves],
    )
    moved = {r["session_id"] for r in rows}
    chosen = [e for e in entries if e.session_id in moved]
    if chosen:
        await conn.execute(
            Q["ledger_append"],
            [uuid.UUID(e.session_id) for e in chosen],
            [e.venue_id for e in chosen],
            [e.provider_id for e in chosen],
            [e.host_id for e in chosen],
            [e.site_id for e in chosen],
            [e.gpu_class for e in chosen],
            [e.slots for e in chosen],
            [e.kind for e in chosen],
            [e.basis for e in chosen],
            [e.lease_id for e in chosen],
            [e.price_micros for e in chosen],
            [e.start for e in chosen],
            [e.end for e in chosen],
            [e.seconds for e in chosen],
            [e.amount_micros for e in chosen],
            [e.currency for e in chosen],
        )
    return len(chosen)


async def _stats(
    conn: asyncpg.Connection, sessions: Sequence[metering.Metered]
) -> dict[str, dict[dt.datetime, metering.MinuteStats]]:
    if not sessions:
        return {}
    since = min(m.sla_until or m.placed_at for m in sessions).replace(second=0, microsecond=0)
    rows = await conn.fetch(Q["stream_minutes_of"], [uuid.UUID(m.session_id) for m in sessions], since)
    out: dict[str, dict[dt.datetime, metering.MinuteStats]] = {}
    for r in rows:
        out.setdefault(r["session_id"], {})[r["minute"]] = metering.MinuteStats(
            r["rtt_ms"], r["fps"], r["seat_rtt_ms"], r["seat_fps"]
        )
    return out


async def meter(
    pool: asyncpg.Pool, policy: metering.Policy, *, now: dt.datetime | None = None, limit: int = _BATCH
) -> int:
    """Write the entries due by `now` (default: the database clock) for at most `limit` sessions, in one
    transaction; returns how many sessions it visited. The duty calls it until none is left."""
    async with transaction(pool) as conn:
        if now is None:
            now = await conn.fetchval(Q["metering_clock"])
        assert now is not None
        sessions = [_metered(r) for r in await conn.fetch(Q["metering_due"], now, limit)]
        stats = await _stats(conn, sessions)
        moves = []
        entries: list[metering.Entry] = []
        for m in sessions:
            used, usage_until = metering.usage(m, now)
            credits, sla_until = metering.sla_credits(m, stats.get(m.session_id, {}), now, policy)
            entries += used + credits
            moves.append(
                (
                    m,
                    usage_until,
                    sla_until,
                    metering.next_due(m, usage_until, sla_until, policy),
                    metering.done(m, usage_until, sla_until),
                )
            )
        await _write(conn, moves, entries)
        return len(sessions)


async def close_for_price_change(conn: asyncpg.Connection, site_id: str, gpu_class: str) -> int:
    """In a price change's transaction, before the price is written: meter the running sessions of that site and
    class up to this second at the price in force until now, so the new price applies from this second on."""
    now = await conn.fetchval(Q["metering_clock"])
    sessions = [_metered(r) for r in await conn.fetch(Q["metering_open_at_price"], site_id, gpu_class)]
    moves = []
    entries: list[metering.Entry] = []
    for m in sessions:
        used, usage_until = metering.usage(m, now, force=True)
        sla_until = m.sla_until or m.placed_at
        entries += used
        # Due again at once: the SLA cursor and the next boundary are the duty's to judge with the new price.
        moves.append((m, usage_until, sla_until, now, False))
    return await _write(conn, moves, entries)


def _valid_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


@dataclasses.dataclass(frozen=True, slots=True)
class StreamReport:
    """One session's stream stats as its host's agent reported them."""

    session_id: str
    host_id: str
    fps_sent: float
    bitrate_kbps: int
    rtt_ms: float
    loss_pct: float
    encode_ms: float

    def plausible(self) -> uuid.UUID | None:
        """The session id, when the figures are evidence the SLA may judge (finite and in range); else None."""
        figures = (self.fps_sent, self.rtt_ms, self.loss_pct, self.encode_ms)
        if not all(math.isfinite(x) for x in figures):
            return None
        if not (0 <= self.rtt_ms <= 60_000 and 0 <= self.fps_sent <= 1_000 and 0 <= self.loss_pct <= 100):
            return None
        if not (0 <= self.encode_ms <= 60_000 and 0 <= self.bitrate_kbps <= 10_000_000):
            return None
        return _valid_uuid(self.session_id)


async def record_stream_reports(pool: asyncpg.Pool, reports: Sequence[StreamReport]) -> None:
    """Agents' stream stats: each session's latest (session_stream_stats, what GetSession and the consoles show) and
    a sample in the session's current minute for the SLA (database clock), in one transaction. A report that is not
    plausible, or about a session not on the reporting host, is dropped: the SLA judges evidence, and an agent
    speaks only for its own host."""
    clean = [(sid, r) for r in reports if (sid := r.plausible()) is not None]
    if not clean:
        return
    latest = dict(clean)  # a session reported twice since the last write shows its later report
    async with transaction(pool) as conn:
        await conn.execute(
            Q["stream_stats_set"],
            list(latest),
            [r.host_id for r in latest.values()],
            [r.fps_sent for r in latest.values()],
            [r.bitrate_kbps for r in latest.values()],
            [r.rtt_ms for r in latest.values()],
            [r.loss_pct for r in latest.values()],
            [r.encode_ms for r in latest.values()],
        )
        await conn.execute(
            Q["stream_minutes_add"],
            [sid for sid, _ in clean],
            [r.rtt_ms for _, r in clean],
            [r.fps_sent for _, r in clean],
            [r.host_id for _, r in clean],
        )


async def stream_stats(
    pool: asyncpg.Pool, session_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, asyncpg.Record]:
    """The latest stream stats the agents reported for these sessions (those without any are left out)."""
    if not session_ids:
        return {}
    with translated():
        rows = await pool.fetch(Q["stream_stats_of"], list(session_ids))
    return {r["session_id"]: r for r in rows}


async def record_seat_samples(
    pool: asyncpg.Pool, session_id: uuid.UUID, samples: Sequence[tuple[dt.datetime, float, float | None]]
) -> int:
    """Add a seat's own samples (at, fps, rtt ms or None), already validated, to the minutes they were taken in, in
    one statement, if the session is STREAMING; how many minutes were written (0: it no longer streams)."""
    if not samples:
        return 0
    with translated():
        rows = await pool.fetch(
            Q["stream_minutes_add_seat"],
            session_id,
            [at for at, _, _ in samples],
            [fps for _, fps, _ in samples],
            [rtt for _, _, rtt in samples],
        )
    return len(rows)


# -- reading: statements, the ledger, today's cost ----------------------------------------------------------------


def _line(row: Mapping[str, Any]) -> metering.Line:
    return metering.Line(
        site_id=row["site_id"],
        gpu_class=row["gpu_class"],
        basis=row["basis"],
        price_micros=row["price_micros"],
        currency=row["currency"],
        entries=row["entries"],
        seconds=row["seconds"],
        slot_seconds=row["slot_seconds"],
        usage_micros=row["usage_micros"],
        credited_seconds=row["credited_seconds"],
        credit_micros=row["credit_micros"],
    )


async def _require_tenant(pool: asyncpg.Pool, venue_id: str | None, provider_id: str | None) -> None:
    if venue_id is not None:
        await required_value(
            pool, "metering_venue_exists", venue_id, missing=errors.NotFound.of("venue_id", "venue", venue_id)
        )
    if provider_id is not None:
        await required_value(
            pool,
            "metering_provider_exists",
            provider_id,
            missing=errors.NotFound.of("provider_id", "provider", provider_id),
        )


async def statement(
    pool: asyncpg.Pool,
    *,
    venue_id: str | None = None,
    provider_id: str | None = None,
    start: dt.datetime,
    end: dt.datetime,
) -> metering.Statement:
    """The statement of a venue and/or a provider (neither: everyone) for the entries that start in [start, end):
    lines per site, GPU class, basis and price; totals are the lines' sums (integer micros). NotFound for an
    unknown venue or provider."""
    with translated():
        await _require_tenant(pool, venue_id, provider_id)
        rows = await pool.fetch(Q["statement_lines"], venue_id, provider_id, start, end)
    return metering.Statement(start, end, tuple(_line(r) for r in rows), venue_id, provider_id)


async def ledger(
    pool: asyncpg.Pool,
    *,
    venue_id: str | None = None,
    provider_id: str | None = None,
    start: dt.datetime,
    end: dt.datetime,
    after_entry: int = 0,
    limit: int = 1000,
) -> list[asyncpg.Record]:
    """The ledger entries that start in [start, end), in entry order after `after_entry`, at most `limit`."""
    with translated():
        await _require_tenant(pool, venue_id, provider_id)
        rows: list[asyncpg.Record] = await pool.fetch(
            Q["ledger_page"], venue_id, provider_id, start, end, after_entry, limit
        )
    return rows


async def running_accrual(
    pool: asyncpg.Pool,
    *,
    venue_id: str | None = None,
    provider_id: str | None = None,
    since: dt.datetime | None = None,
) -> dict[str, int]:
    """What the sessions of a venue and/or provider have run up since their last ledger entry, in micros at the
    prices in force, per currency: those running, and those ended whose last entries the duty has not written yet
    (it writes them at the next boundary, or within a round of their end). With `since`, only what would be entries
    starting at or after it, as a statement from `since` will count them."""
    with translated():
        async with pool.acquire() as conn:
            now = await conn.fetchval(Q["metering_clock"])
            rows = await conn.fetch(Q["metering_live"], venue_id, provider_id)
    total: dict[str, int] = {}
    for r in rows:
        entries, _ = metering.usage(_metered(r), now, force=True)
        for e in entries:
            if since is None or e.start >= since:
                total[e.currency] = total.get(e.currency, 0) + e.amount_micros
    return total


@dataclasses.dataclass(frozen=True, slots=True)
class TodayCost:
    """Today so far (the local day of a time zone): what the ledger holds, and what sessions have run up that is not
    in it yet, per currency."""

    billed: metering.Statement
    running: Mapping[str, int]
    time_zone: str

    @property
    def totals(self) -> dict[str, tuple[int, int]]:
        """Per currency, sorted: (billed, running) micros."""
        billed = {t.currency: t.total_micros for t in self.billed.totals}
        return {c: (billed.get(c, 0), self.running.get(c, 0)) for c in sorted({*billed, *self.running})}


async def cost_today(
    pool: asyncpg.Pool,
    *,
    venue_id: str | None = None,
    provider_id: str | None = None,
    time_zone: str = "UTC",
    now: dt.datetime | None = None,
) -> TodayCost:
    """A venue's cost (or a provider's revenue) since midnight in `time_zone` (an IANA name: the venue's)."""
    now = now or dt.datetime.now(dt.UTC)
    midnight, _ = metering.local_day(metering.local_date(now, time_zone), time_zone)
    billed = await statement(pool, venue_id=venue_id, provider_id=provider_id, start=midnight, end=now)
    running = await running_accrual(pool, venue_id=venue_id, provider_id=provider_id, since=midnight)
    return TodayCost(billed, running, time_zone)
