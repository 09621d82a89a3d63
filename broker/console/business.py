"""The business side the consoles show — lease use, today's cost, statements, revenue — from the store modules that
own it (broker.store.leases, broker.store.metering), shaped as {"available": true, "summary": {...}, "rows": [...]}
for the page's generic section renderer. Nothing is computed twice here: statements and costs are the metering
module's own sums of its ledger. Days are UTC days.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg

from broker import metering
from broker.console import queries as q
from broker.store import leases as lease_store
from broker.store import metering as metering_store


def _money(micros: int) -> str:
    return f"{micros / 1_000_000:,.2f}"


def _midnight(now: dt.datetime) -> dt.datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def _line_row(line: metering.Line) -> dict[str, Any]:
    return {
        "site": line.site_id,
        "gpu_class": line.gpu_class,
        "basis": line.basis,
        "price_per_slot_hour": _money(line.price_micros),
        "slot_hours": f"{line.slot_seconds / 3600:.2f}",
        "usage": _money(line.usage_micros),
        "credited_minutes": f"{line.credited_seconds / 60:.1f}",
        "credit": _money(line.credit_micros),
        "total": _money(line.total_micros),
    }


def _statement(s: metering.Statement) -> dict[str, Any]:
    return {
        "available": True,
        "summary": {
            "period": f"{s.start.isoformat()} to {s.end.isoformat()}",
            "usage": _money(s.usage_micros),
            "credits": _money(s.credit_micros),
            "total": _money(s.total_micros),
        },
        "rows": [_line_row(line) for line in s.lines],
    }


async def lease_use(pool: asyncpg.Pool, venue_id: str) -> dict[str, Any]:
    """Today's use of the venue's leases, per hour: slot-hours leased and used under them."""
    now = dt.datetime.now(dt.UTC)
    active = await lease_store.list_leases(pool, venue_id, None, True)
    ids = await lease_store.venue_lease_ids(pool, venue_id)
    start = _midnight(now)
    hours = await lease_store.use_per_hour(pool, ids, start, now, "UTC") if ids and now > start else []
    leased = sum(h.leased_slot_s for h in hours)
    used = sum(h.used_slot_s for h in hours)
    return {
        "available": True,
        "summary": {
            "leases_in_force": len(active),
            "slot_hours_leased_today": f"{leased / 3600:.2f}",
            "slot_hours_used_today": f"{used / 3600:.2f}",
            "use": f"{100 * used / leased:.1f}%" if leased else "—",
        },
        "rows": [
            {
                "hour_utc": h.start.strftime("%H:%M"),
                "slot_hours_leased": f"{h.leased_slot_s / 3600:.2f}",
                "slot_hours_used": f"{h.used_slot_s / 3600:.2f}",
                "use": f"{100 * h.used_slot_s / h.leased_slot_s:.1f}%" if h.leased_slot_s else "—",
            }
            for h in hours
            if h.leased_slot_s or h.used_slot_s
        ],
    }


async def cost_today(pool: asyncpg.Pool, venue_id: str) -> dict[str, Any]:
    """Today (UTC) so far: what the ledger holds and what running sessions have run up since their last entry."""
    today = await metering_store.cost_today(pool, venue_id=venue_id)
    out = _statement(today.billed)
    out["summary"] = {
        "billed": _money(today.billed.total_micros),
        "running_sessions": _money(today.running_micros),
        "total": _money(today.total_micros),
    }
    return out


async def venue_statement(pool: asyncpg.Pool, venue_id: str, start: dt.date, end: dt.date) -> dict[str, Any]:
    """The venue's statement for the UTC days [start, end)."""
    s = await metering_store.statement(
        pool,
        venue_id=venue_id,
        start=dt.datetime.combine(start, dt.time(), dt.UTC),
        end=dt.datetime.combine(end, dt.time(), dt.UTC),
    )
    return _statement(s)


async def revenue(pool: asyncpg.Pool, provider_id: str) -> dict[str, Any]:
    """The provider's revenue this month (UTC) so far, per site and GPU class (lines of both bases summed)."""
    now = dt.datetime.now(dt.UTC)
    s = await metering_store.statement(
        pool, provider_id=provider_id, start=_midnight(now).replace(day=1), end=now
    )
    by: dict[tuple[str, str], list[int]] = {}
    for line in s.lines:
        acc = by.setdefault((line.site_id, line.gpu_class), [0, 0, 0])
        acc[0] += line.slot_seconds
        acc[1] += line.usage_micros
        acc[2] += line.credit_micros
    return {
        "available": True,
        "summary": {
            "period": f"{s.start.date().isoformat()} to now (UTC)",
            "revenue": _money(s.total_micros),
        },
        "rows": [
            {
                "site": site,
                "gpu_class": gpu_class,
                "slot_hours": f"{slot_s / 3600:.2f}",
                "usage": _money(usage),
                "credits": _money(credit),
                "revenue": _money(usage + credit),
            }
            for (site, gpu_class), (slot_s, usage, credit) in sorted(by.items())
        ],
    }


async def metered_seconds(pool: asyncpg.Pool) -> float | None:
    """Slot-seconds of usage in the ledger, region-wide."""
    return await q.metered_seconds(pool)
