"""A region file applied to PostgreSQL: in one transaction, through the same store functions (and audit rows) the
servicers use, or not at all.

The transaction takes an advisory lock (one apply at a time), reads what the database holds of the file's objects,
plans (broker.region.plan, pure) and writes every step that creates or changes something, in dependency order. Any
refusal (a plan's or the database's) undoes everything and is reported with the path of the object in the file. A
dry run does the same writes and rolls them back, so it finds exactly what a real run would, the database's own
refusals included.

No one else needs telling: every broker replica reads these tables when it needs them. The scheduler reads the
prices again when one is set (broker.scheduler.PriceCache, by the prices' updated_at, which the store's set_price
stamps), the latency matrix whenever a venue's measurements change (LatencyCache, by measured_at), the leases in
force every round; a session takes its zone's tier, cap and playout mode when it starts; an agent's enrolment is
read when it registers; the consoles read venues and prices per request.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import asyncpg
from cloudseat import errors

from broker import metering
from broker.region import model
from broker.region.plan import GameRow, Held, LeaseRow, PriceRow, SiteRow, Step, VenueRow, Verdict, plan
from broker.store import audit, fleet, games, leases, venues
from broker.store.database import translated
from broker.store.queries import Q


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """The steps of an apply, and the new leases the site's hosts could not hold yet (not written)."""

    steps: list[Step]
    deferred: dict[str, str]  # lease id -> why
    applied: bool  # False for a dry run


class _DryRun(Exception):
    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome


async def apply(pool: asyncpg.Pool, region: model.Region, *, dry_run: bool = False) -> Outcome:
    """Apply `region` in one transaction (rolled back for a dry run); InvalidArgument, NotFound, AlreadyExists...
    with the file's path of the object refused, and nothing written."""
    try:
        with translated():
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(Q["region_apply_lock"])
                steps = plan(region, await read_held(conn, region))
                deferred: dict[str, str] = {}
                for step in steps:
                    if step.verdict is not Verdict.SAME:
                        await _write(conn, step, deferred)
                await audit.write(
                    conn,
                    "region.apply",
                    "region",
                    created=sum(s.verdict is Verdict.CREATE for s in steps) - len(deferred),
                    changed=sum(s.verdict is Verdict.CHANGE for s in steps),
                    unchanged=sum(s.verdict is Verdict.SAME for s in steps),
                    deferred=sorted(deferred),
                )
                outcome = Outcome(steps, deferred, applied=not dry_run)
                if dry_run:
                    raise _DryRun(outcome)
    except _DryRun as rolled_back:
        return rolled_back.outcome
    return outcome


async def read_held(conn: asyncpg.Connection, region: model.Region) -> Held:
    """What the database holds of the objects `region` names."""
    site_ids = (
        [s.site_id for s in region.sites]
        + [le.site_id for x in region.venues for le in x.leases]
        + [lat.site_id for x in region.venues for lat in x.latencies]
    )
    venue_ids = [x.venue_id for x in region.venues]
    host_ids = [h for s in region.sites for h in s.hosts]
    fetch = conn.fetch
    return Held(
        providers={
            r["provider_id"]: r["name"]
            for r in await fetch(Q["region_providers"], [p.provider_id for p in region.providers])
        },
        sites={
            r["site_id"]: SiteRow(r["provider_id"], r["name"], r["region"])
            for r in await fetch(Q["region_sites"], site_ids)
        },
        prices={
            (r["site_id"], r["gpu_class"]): PriceRow(
                r["price_micros"],
                metering.Schedule.from_row(r["price_micros"], r["bands"], r["utc_offset_minutes"]).bands,
                r["utc_offset_minutes"],
                r["currency"],
            )
            for r in await fetch(Q["region_prices"], [s.site_id for s in region.sites])
        },
        enrolled_hosts={
            r["host_id"]: (r["provider_id"], r["site_id"])
            for r in await fetch(Q["region_enrolled_hosts"], host_ids)
        },
        enrolled_prefixes={
            r["host_prefix"]: (r["provider_id"], r["site_id"])
            for r in await fetch(
                Q["region_enrolled_prefixes"], [p for s in region.sites for p in s.host_prefixes]
            )
        },
        bound_hosts={r["host_id"]: r["provider_id"] for r in await fetch(Q["region_bound_hosts"], host_ids)},
        games={
            r["game_id"]: GameRow(r["name"], r["version"], r["image_size_bytes"], r["image_ref"])
            for r in await fetch(Q["region_games"], [g.game_id for g in region.games])
        },
        venues={r["venue_id"]: _venue_row(r) for r in await fetch(Q["region_venues"], venue_ids)},
        zones={
            (r["venue_id"], r["zone_id"]): (r["tier"], r["latency_cap_ms"], r["playout"])
            for r in await fetch(Q["region_zones"], venue_ids)
        },
        seats={
            (r["venue_id"], r["seat_id"]): r["zone_id"] for r in await fetch(Q["region_seats"], venue_ids)
        },
        latencies={
            (r["venue_id"], r["site_id"]): r["rtt_ms"] for r in await fetch(Q["region_latencies"], venue_ids)
        },
        leases={
            r["lease_id"]: _lease_row(r)
            for r in await fetch(Q["region_leases"], [le.lease_id for x in region.venues for le in x.leases])
        },
    )


def _venue_row(r: asyncpg.Record) -> VenueRow:
    return VenueRow(r["name"], r["time_zone"])


def _lease_row(r: asyncpg.Record) -> LeaseRow:
    daily = None
    if r["daily_start_minute"] is not None:
        daily = (r["daily_start_minute"], r["daily_duration_minutes"])
    return LeaseRow(
        r["venue_id"],
        r["site_id"],
        r["gpu_class"],
        r["slots"],
        r["starts_at"],
        r["ends_at"],
        daily,
        r["time_zone"],
        r["price_micros"],
        r["note"],
        r["cancelled"],
    )


async def _write(conn: asyncpg.Connection, step: Step, deferred: dict[str, str]) -> None:
    """One step's write, through the servicers' store functions; a refusal re-raised naming the step's path."""
    try:
        await _WRITERS[step.kind](conn, step, deferred)
    except errors.CloudseatError as exc:
        raise (
            type(exc)(f"{step.path}: {exc.message}")
            if not isinstance(exc, errors.InvalidArgument)
            else (
                errors.InvalidArgument(f"{step.path}.{exc.field}", exc.message.removeprefix(f"{exc.field}: "))
            )
        ) from exc
    except asyncpg.PostgresError as exc:
        # Translated here rather than by the transaction, so the message can say which object of the file it was.
        try:
            with translated():
                raise exc
        except errors.CloudseatError as mapped:
            raise type(mapped)(f"{step.path}: {mapped.message}") from exc


async def _provider(conn: asyncpg.Connection, step: Step, _: dict[str, str]) -> None:
    p: model.Provider = step.item
    if step.verdict is Verdict.CREATE:
        await fleet.create_provider_in(conn, p.provider_id, p.name)
        return
    await conn.execute(Q["region_update_provider"], p.provider_id, p.name)
    await audit.write(
        conn, "provider.update", f"provider:{p.provider_id}", tenant=f"provider:{p.provider_id}", name=p.name
    )


async def _site(conn: asyncpg.Connection, step: Step, _: dict[str, str]) -> None:
    s: model.Site = step.item
    if step.verdict is Verdict.CREATE:
        await fleet.create_site_in(conn, s.site_id, s.provider_id, s.place, s.region)
        return
    await conn.execute(Q["region_update_site"], s.site_id, s.place, s.region)
    await audit.write(
        conn,
        "site.update",
        f"site:{s.site_id}",
        tenant=f"provider:{s.provider_id}",
        name=s.place,
        region=s.region,
    )


async def _enrolment(conn: asyncpg.Connection, step: Step, _: dict[str, str]) -> None:
    x = step.extra
    try:
        if x["prefix"]:
            await fleet.enrol_hosts_in(conn, x["provider_id"], x["site_id"], "", [], step.item)
        else:
            await fleet.enrol_hosts_in(conn, x["provider_id"], x["site_id"], "", [step.item], "")
    except errors.AlreadyExists as exc:
        # The store names its own request's field (host_ids[0], host_prefix); the file's path says more.
        what = f"prefix {step.item!r} overlaps" if x["prefix"] else f"host id {step.item!r} is among"
        raise errors.AlreadyExists(f"{what} the host ids another provider enrolled or runs") from exc


async def _price(conn: asyncpg.Connection, step: Step, _: dict[str, str]) -> None:
    p: model.Price = step.item
    schedule = metering.Schedule(p.base_micros, p.bands, p.utc_offset_minutes)
    await fleet.set_price_in(conn, step.extra["site_id"], p.gpu_class, schedule, p.currency)


async def _game(conn: asyncpg.Connection, step: Step, _: dict[str, str]) -> None:
    g: model.Game = step.item
    await games.put_game_in(
        conn, g.game_id, g.name, g.image_size_bytes, g.version, (g.image_ref, g.image_digest, 0)
    )


async def _venue(conn: asyncpg.Connection, step: Step, _: dict[str, str]) -> None:
    x: model.Venue = step.item
    if step.verdict is Verdict.CREATE:
        await venues.create_venue_in(conn, x.venue_id, x.name, x.time_zone)
        return
    await conn.execute(Q["region_update_venue"], x.venue_id, x.name, x.time_zone)
    await audit.write(
        conn,
        "venue.update",
        f"venue:{x.venue_id}",
        tenant=f"venue:{x.venue_id}",
        name=x.name,
        time_zone=x.time_zone,
    )


async def _zone(conn: asyncpg.Connection, step: Step, _: dict[str, str]) -> None:
    z: model.Zone = step.item
    # playout None (left out of the file) keeps the zone's mode, AUTO for a new zone.
    await venues.put_zone_in(conn, step.extra["venue_id"], z.zone_id, z.tier.value, z.cap_ms, z.playout)


async def _seat(conn: asyncpg.Connection, step: Step, _: dict[str, str]) -> None:
    s: model.Seat = step.item
    await venues.put_seat_in(conn, step.extra["venue_id"], s.seat_id, s.zone_id)


async def _latency(conn: asyncpg.Connection, step: Step, _: dict[str, str]) -> None:
    lat: model.Latency = step.item
    venue_id = step.extra["venue_id"]
    await conn.execute(Q["report_latency"], venue_id, [lat.site_id], [lat.rtt_ms])
    await audit.write(
        conn,
        "venue.latency",
        f"venue:{venue_id}",
        tenant=f"venue:{venue_id}",
        site_id=lat.site_id,
        rtt_ms=lat.rtt_ms,
    )


async def _lease(conn: asyncpg.Connection, step: Step, deferred: dict[str, str]) -> None:
    le: model.Lease = step.item
    starts_at = le.starts_at or await conn.fetchval(Q["lease_now"])
    ends_at = le.ends_at or starts_at + dt.timedelta(days=le.days or 0)
    spec = leases.LeaseSpec(
        lease_id=le.lease_id,
        provider_id=step.extra["provider_id"],
        venue_id=le.venue_id,
        gpu_class=le.gpu_class,
        slots=le.slots,
        site_id=le.site_id,
        max_latency_ms=None,
        starts_at=starts_at,
        ends_at=ends_at,
        daily=le.daily,
        time_zone=le.time_zone,
        price_micros=le.price_micros,
        note=le.note,
    )
    try:
        await leases.create_in(conn, spec)
    except errors.FailedPrecondition:
        # The capacity a lease takes is the hosts that have joined the site; in a new region they join after it is
        # declared. Nothing of this lease was written; the next apply makes it.
        deferred[le.lease_id] = (
            f"site {le.site_id!r} has not {le.slots} {le.gpu_class} slot(s) to spare for it yet (hosts count once "
            "their agents have joined)"
        )


_WRITERS = {
    "provider": _provider,
    "site": _site,
    "enrolment": _enrolment,
    "price": _price,
    "game": _game,
    "venue": _venue,
    "zone": _zone,
    "seat": _seat,
    "latency": _latency,
    "lease": _lease,
}


# -- reading back (`cloudseat-broker get`) ----------------------------------------------------------------------

KINDS = ("venues", "seats", "sites", "hosts", "sessions", "games")


async def get(
    pool: asyncpg.Pool,
    kind: str,
    *,
    venue_id: str | None = None,
    all_sessions: bool = False,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """The rows of one kind, as plain dicts (JSON-ready but for datetimes)."""
    with translated():
        if kind == "seats":
            rows: Sequence[asyncpg.Record] = await pool.fetch(Q["region_get_seats"], venue_id)
        elif kind == "sessions":
            rows = await pool.fetch(Q["region_get_sessions"], not all_sessions, limit)
        else:
            rows = await pool.fetch(Q[f"region_get_{kind}"])
    return [_plain(dict(r)) for r in rows]


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in row.items():
        if isinstance(value, str) and key == "prices":
            value = json.loads(value)
        out[key] = value
    return out
