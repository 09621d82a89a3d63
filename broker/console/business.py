"""The business side the consoles show — lease use, today's cost, statements, revenue — from the store modules that
own it (broker.store.leases, broker.store.metering), shaped as {"available": true, "summary": {...}, "rows": [...]}
for the page's generic section renderer, plus machine-readable figures (`totals`) for live updates. Nothing is
computed twice here: statements and costs are the metering module's own sums of its ledger.

Every amount is shown with its currency (the price's, ISO 4217) and never added to one in another: a venue billed
in two currencies sees a total per currency. A venue's days ("today", a statement's from and to, lease hours) are
its own time zone's (venues.time_zone); a provider's month is UTC's (a provider has no time zone of its own).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg

from broker import metering
from broker.console import queries as q
from broker.store import leases as lease_store
from broker.store import metering as metering_store


def _money(micros: int, currency: str) -> str:
    """"1,234.50 CNY": two decimals (what every ISO 4217 currency the pilots use has) and the code."""
    return f"{micros / 1_000_000:,.2f} {currency}"


def _midnight(now: dt.datetime) -> dt.datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def _line_row(line: metering.Line) -> dict[str, Any]:
    def money(micros: int) -> str:
        return _money(micros, line.currency)

    return {
        "site": line.site_id,
        "gpu_class": line.gpu_class,
        "basis": line.basis,
        "currency": line.currency,
        "price_per_slot_hour": money(line.price_micros),
        "slot_hours": f"{line.slot_seconds / 3600:.2f}",
        "usage": money(line.usage_micros),
        "credited_minutes": f"{line.credited_seconds / 60:.1f}",
        "credit": money(line.credit_micros),
        "total": money(line.total_micros),
    }


def _per_currency(summary: dict[str, Any], name: str, amounts: dict[str, int]) -> None:
    """`name: 12.00 CNY`, one entry per currency (`name (USD)` for the others when there are several)."""
    if not amounts:
        summary[name] = "—"
    for i, (currency, micros) in enumerate(sorted(amounts.items())):
        summary[name if i == 0 else f"{name} ({currency})"] = _money(micros, currency)


def _statement(s: metering.Statement, period: str) -> dict[str, Any]:
    summary: dict[str, Any] = {"period": period}
    totals = s.totals
    _per_currency(summary, "usage", {t.currency: t.usage_micros for t in totals})
    _per_currency(summary, "credits", {t.currency: t.credit_micros for t in totals})
    _per_currency(summary, "total", {t.currency: t.total_micros for t in totals})
    return {
        "available": True,
        "summary": summary,
        "totals": [
            {
                "currency": t.currency,
                "usage_micros": t.usage_micros,
                "credit_micros": t.credit_micros,
                "total_micros": t.total_micros,
            }
            for t in totals
        ],
        "rows": [_line_row(line) for line in s.lines],
    }


async def venue_time_zone(pool: asyncpg.Pool, venue_id: str) -> str:
    """The venue's IANA time zone (UTC for a venue that is not there: its reads answer NotFound themselves)."""
    rows = await q.venues(pool, venue_id)
    return str(rows[0]["time_zone"]) if rows else "UTC"


async def lease_use(pool: asyncpg.Pool, venue_id: str) -> dict[str, Any]:
    """Today's (the venue's day) use of the venue's leases, per hour of its clock: slot-hours leased and used."""
    now = dt.datetime.now(dt.UTC)
    time_zone = await venue_time_zone(pool, venue_id)
    active = await lease_store.list_leases(pool, venue_id, None, True)
    ids = await lease_store.venue_lease_ids(pool, venue_id)
    start, _ = metering.local_day(metering.local_date(now, time_zone), time_zone)
    hours = await lease_store.use_per_hour(pool, ids, start, now, time_zone) if ids and now > start else []
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
                # The hours are UTC instants; the label is the venue's wall clock.
                "hour": f"{metering.local_time(h.start, time_zone):%H:%M} ({time_zone})",
                "slot_hours_leased": f"{h.leased_slot_s / 3600:.2f}",
                "slot_hours_used": f"{h.used_slot_s / 3600:.2f}",
                "use": f"{100 * h.used_slot_s / h.leased_slot_s:.1f}%" if h.leased_slot_s else "—",
            }
            for h in hours
            if h.leased_slot_s or h.used_slot_s
        ],
    }


async def cost_today(pool: asyncpg.Pool, venue_id: str) -> dict[str, Any]:
    """Today so far, in the venue's time zone, per currency: what the ledger holds and what sessions have run up
    that it does not hold yet (running ones, and ended ones the metering duty has not written). Its total is what
    the statement of today will say once the duty has written (within a round of a session's end)."""
    time_zone = await venue_time_zone(pool, venue_id)
    now = dt.datetime.now(dt.UTC)
    today = await metering_store.cost_today(pool, venue_id=venue_id, time_zone=time_zone, now=now)
    day = metering.local_date(now, time_zone)
    out = _statement(today.billed, f"{day.isoformat()} ({time_zone}) so far")
    totals = today.totals
    summary: dict[str, Any] = {"day": f"{day.isoformat()} ({time_zone})"}
    _per_currency(summary, "billed", {c: b for c, (b, _) in totals.items()})
    _per_currency(summary, "running_sessions", {c: r for c, (_, r) in totals.items()})
    _per_currency(summary, "total", {c: b + r for c, (b, r) in totals.items()})
    out["summary"] = summary
    out["time_zone"] = time_zone
    out["day"] = day.isoformat()
    out["totals"] = [
        {"currency": c, "billed_micros": b, "running_micros": r, "total_micros": b + r}
        for c, (b, r) in totals.items()
    ]
    return out


async def venue_statement(pool: asyncpg.Pool, venue_id: str, start: dt.date, end: dt.date) -> dict[str, Any]:
    """The venue's statement for its days [start, end), in its own time zone."""
    time_zone = await venue_time_zone(pool, venue_id)
    s = await metering_store.statement(
        pool,
        venue_id=venue_id,
        start=metering.local_day(start, time_zone)[0],
        end=metering.local_day(end, time_zone)[0],
    )
    out = _statement(s, f"{start.isoformat()} to {end.isoformat()} ({time_zone})")
    out["time_zone"] = time_zone
    return out


async def revenue(pool: asyncpg.Pool, provider_id: str) -> dict[str, Any]:
    """The provider's revenue this month (UTC) so far, per site and GPU class (lines of both bases summed)."""
    now = dt.datetime.now(dt.UTC)
    s = await metering_store.statement(
        pool, provider_id=provider_id, start=_midnight(now).replace(day=1), end=now
    )
    by: dict[tuple[str, str, str], list[int]] = {}
    for line in s.lines:
        acc = by.setdefault((line.site_id, line.gpu_class, line.currency), [0, 0, 0])
        acc[0] += line.slot_seconds
        acc[1] += line.usage_micros
        acc[2] += line.credit_micros
    summary: dict[str, Any] = {"period": f"{s.start.date().isoformat()} to now (UTC)"}
    _per_currency(summary, "revenue", {t.currency: t.total_micros for t in s.totals})
    return {
        "available": True,
        "summary": summary,
        "totals": [{"currency": t.currency, "total_micros": t.total_micros} for t in s.totals],
        "rows": [
            {
                "site": site,
                "gpu_class": gpu_class,
                "currency": currency,
                "slot_hours": f"{slot_s / 3600:.2f}",
                "usage": _money(usage, currency),
                "credits": _money(credit, currency),
                "revenue": _money(usage + credit, currency),
            }
            for (site, gpu_class, currency), (slot_s, usage, credit) in sorted(by.items())
        ],
    }


async def metered_seconds(pool: asyncpg.Pool) -> float | None:
    """Slot-seconds of usage in the ledger, region-wide."""
    return await q.metered_seconds(pool)
