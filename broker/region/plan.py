"""What applying a region file does to what the database holds: one step per declared object. Pure.

`plan(region, held)` compares each object of the file with the database's (`Held`, read by broker.region.store in
the applying transaction) and says, object by object, whether it is created, changed (which fields, from what to
what) or left as it is. What "changed" means per kind:

* provider: its name; site: its place and region (a site never moves to another provider: refused);
* host enrolment: the site a host id (or prefix) is enrolled in; an id or prefix another provider enrolled or runs
  is refused;
* price: the base, the bands, the UTC offset or the currency (a change meters the running sessions at the old price
  first, as SetPrice does);
* game: the name, the image size, the version (left out: the catalogue's current one is kept), the image;
* venue: the name and the time zone; zone: tier, latency cap and playout mode (a zone whose playout is left out of
  the file keeps its mode: no change); seat: its zone (a move);
* latency: the round trip (a seat's later report overwrites it, and the next apply writes the file's back);
* lease: a lease is an agreement and never changes: one that differs from the file is refused (cancel it and
  declare a new id), one that matches is left. A lease the site's hosts cannot hold yet (they have not joined) is
  deferred by the store, not refused: apply again once they have.

Apply never deletes. An object in the database that the file does not mention is left exactly as it is; there is no
prune, on purpose: a region file need not be complete (a venue may keep seats it added through the API), and a
missing line in a file should never end a venue's sessions.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Mapping
from typing import Any

from cloudseat.errors import InvalidArgument

from broker import metering
from broker.region import model


class Verdict(enum.StrEnum):
    CREATE = "create"
    CHANGE = "change"
    SAME = "unchanged"


@dataclasses.dataclass(frozen=True, slots=True)
class SiteRow:
    provider_id: str
    place: str
    region: str


@dataclasses.dataclass(frozen=True, slots=True)
class PriceRow:
    base_micros: int
    bands: tuple[metering.Band, ...]
    utc_offset_minutes: int
    currency: str


@dataclasses.dataclass(frozen=True, slots=True)
class GameRow:
    name: str
    version: str
    image_size_bytes: int
    image_ref: str


@dataclasses.dataclass(frozen=True, slots=True)
class VenueRow:
    name: str
    time_zone: str


@dataclasses.dataclass(frozen=True, slots=True)
class LeaseRow:
    venue_id: str
    site_id: str
    gpu_class: str
    slots: int
    starts_at: dt.datetime
    ends_at: dt.datetime
    daily: tuple[int, int] | None
    time_zone: str
    price_micros: int
    note: str
    cancelled: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Held:
    """What the database holds of the objects a file names (read in the applying transaction)."""

    providers: Mapping[str, str] = dataclasses.field(default_factory=dict)  # id -> name
    sites: Mapping[str, SiteRow] = dataclasses.field(default_factory=dict)
    prices: Mapping[tuple[str, str], PriceRow] = dataclasses.field(default_factory=dict)  # (site, class)
    # Host id or prefix -> (provider, site) it is enrolled in; host id -> the provider a registered host is bound to.
    enrolled_hosts: Mapping[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
    enrolled_prefixes: Mapping[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
    bound_hosts: Mapping[str, str] = dataclasses.field(default_factory=dict)
    games: Mapping[str, GameRow] = dataclasses.field(default_factory=dict)
    venues: Mapping[str, VenueRow] = dataclasses.field(default_factory=dict)
    zones: Mapping[tuple[str, str], tuple[str, int, str]] = dataclasses.field(
        default_factory=dict
    )  # -> (tier, cap, playout)
    seats: Mapping[tuple[str, str], str] = dataclasses.field(default_factory=dict)  # (venue, seat) -> zone
    latencies: Mapping[tuple[str, str], int] = dataclasses.field(default_factory=dict)  # (venue, site) -> ms
    leases: Mapping[str, LeaseRow] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    """One object of the file and what applying does to it. `kind` and `key` name it ("seat", "cafe/seat-01");
    `changes` say what moves ("tier: 720P60 -> 1080P60"); `item` is the file's object, `extra` what the store needs
    beyond it (a lease's provider)."""

    kind: str
    key: str
    path: str
    verdict: Verdict
    item: Any
    changes: tuple[str, ...] = ()
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _compare(pairs: list[tuple[str, Any, Any]]) -> tuple[str, ...]:
    """ "field: held -> file" for each pair that differs."""
    return tuple(f"{name}: {_show(old)} -> {_show(new)}" for name, old, new in pairs if old != new)


def _show(value: Any) -> str:
    if isinstance(value, tuple) and value and isinstance(value[0], metering.Band):
        return (
            "["
            + ", ".join(
                f"{_hhmm(b.start_minute)}-{_hhmm(b.end_minute)} {_amount(b.price_micros)}" for b in value
            )
            + "]"
        )
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _amount(micros: int) -> str:
    return f"{micros / 1_000_000:.6f}".rstrip("0").rstrip(".")


@dataclasses.dataclass(frozen=True, slots=True)
class _Money:
    """An amount as the file writes it (3.8), compared by its micros."""

    micros: int

    def __str__(self) -> str:
        return _amount(self.micros)


def _step(
    kind: str, key: str, path: str, item: Any, held: bool, changes: tuple[str, ...] = (), **extra: Any
) -> Step:
    verdict = Verdict.CREATE if not held else (Verdict.CHANGE if changes else Verdict.SAME)
    return Step(kind, key, path, verdict, item, changes if held else (), extra)


def plan(region: model.Region, held: Held) -> list[Step]:
    """The steps of applying `region` over `held`, in the order they are written (each after what it refers to);
    InvalidArgument naming the path of anything the database's state refuses."""
    steps: list[Step] = []
    for p in region.providers:
        name = held.providers.get(p.provider_id)
        steps.append(
            _step("provider", p.provider_id, p.path, p, name is not None, _compare([("name", name, p.name)]))
        )
    for s in region.sites:
        row = held.sites.get(s.site_id)
        if row is not None and row.provider_id != s.provider_id:
            raise InvalidArgument(
                f"{s.path}.id",
                f"site {s.site_id!r} belongs to provider {row.provider_id!r}; a site does not move between providers",
            )
        steps.append(
            _step(
                "site",
                s.site_id,
                s.path,
                s,
                row is not None,
                _compare([("place", row.place, s.place), ("region", row.region, s.region)]) if row else (),
            )
        )
    for s in region.sites:
        steps += _enrolments(s, held)
    for s in region.sites:
        for price in s.prices:
            old = held.prices.get((s.site_id, price.gpu_class))
            changes = (
                _compare(
                    [
                        ("per_slot_hour", _Money(old.base_micros), _Money(price.base_micros)),
                        ("bands", old.bands, price.bands),
                        ("utc_offset_minutes", old.utc_offset_minutes, price.utc_offset_minutes),
                        ("currency", old.currency, price.currency),
                    ]
                )
                if old
                else ()
            )
            steps.append(
                _step(
                    "price",
                    f"{s.site_id}/{price.gpu_class}",
                    price.path,
                    price,
                    old is not None,
                    changes,
                    site_id=s.site_id,
                )
            )
    for g in region.games:
        old_game = held.games.get(g.game_id)
        changes = ()
        if old_game is not None:
            changes = _compare(
                [
                    ("name", old_game.name, g.name),
                    ("image_size_bytes", old_game.image_size_bytes, g.image_size_bytes),
                    ("version", old_game.version, g.version or old_game.version),
                    (
                        "image_ref",
                        old_game.image_ref,
                        g.image_ref
                        if (g.image_ref or (g.version and g.version != old_game.version))
                        else old_game.image_ref,
                    ),
                ]
            )
        steps.append(_step("game", g.game_id, g.path, g, old_game is not None, changes))
    declared_sites = {s.site_id: s.provider_id for s in region.sites}
    for x in region.venues:
        old_venue = held.venues.get(x.venue_id)
        steps.append(
            _step(
                "venue",
                x.venue_id,
                x.path,
                x,
                old_venue is not None,
                _compare([("name", old_venue.name, x.name), ("time_zone", old_venue.time_zone, x.time_zone)])
                if old_venue
                else (),
            )
        )
        for z in x.zones:
            old_zone = held.zones.get((x.venue_id, z.zone_id))
            changes = (
                _compare(
                    [
                        ("tier", old_zone[0], z.tier.value),
                        ("cap_ms", old_zone[1], z.cap_ms),
                        ("playout", old_zone[2], z.playout or old_zone[2]),
                    ]
                )
                if old_zone
                else ()
            )
            steps.append(
                _step(
                    "zone",
                    f"{x.venue_id}/{z.zone_id}",
                    z.path,
                    z,
                    old_zone is not None,
                    changes,
                    venue_id=x.venue_id,
                )
            )
        for seat in x.seats:
            old_seat_zone = held.seats.get((x.venue_id, seat.seat_id))
            changes = _compare([("zone", old_seat_zone, seat.zone_id)])
            steps.append(
                _step(
                    "seat",
                    f"{x.venue_id}/{seat.seat_id}",
                    seat.path,
                    seat,
                    old_seat_zone is not None,
                    changes,
                    venue_id=x.venue_id,
                )
            )
        for lat in x.latencies:
            if lat.site_id not in declared_sites and lat.site_id not in held.sites:
                raise InvalidArgument(lat.path, f"no site {lat.site_id!r} in the file or the database")
            old_ms = held.latencies.get((x.venue_id, lat.site_id))
            steps.append(
                _step(
                    "latency",
                    f"{x.venue_id}->{lat.site_id}",
                    lat.path,
                    lat,
                    old_ms is not None,
                    _compare([("rtt_ms", old_ms, lat.rtt_ms)]),
                    venue_id=x.venue_id,
                )
            )
        for lease in x.leases:
            steps.append(_lease_step(lease, held, declared_sites))
    return steps


def _enrolments(s: model.Site, held: Held) -> list[Step]:
    out: list[Step] = []
    for kind, ids, enrolled in (
        ("host", s.hosts, held.enrolled_hosts),
        ("host prefix", s.host_prefixes, held.enrolled_prefixes),
    ):
        for host in ids:
            path = f"{s.path}.{'hosts' if kind == 'host' else 'host_prefix'}"
            old = enrolled.get(host)
            bound = held.bound_hosts.get(host) if kind == "host" else None
            if (old is not None and old[0] != s.provider_id) or (
                bound is not None and bound != s.provider_id
            ):
                raise InvalidArgument(path, f"{kind} {host!r} is enrolled or run by another provider")
            changes = _compare([("site", old[1], s.site_id)]) if old else ()
            out.append(
                _step(
                    "enrolment",
                    f"{s.site_id}:{host}{'*' if kind != 'host' else ''}",
                    path,
                    host,
                    old is not None,
                    changes,
                    site_id=s.site_id,
                    provider_id=s.provider_id,
                    prefix=kind != "host",
                )
            )
    return out


def _lease_step(lease: model.Lease, held: Held, declared_sites: Mapping[str, str]) -> Step:
    old = held.leases.get(lease.lease_id)
    provider_id = declared_sites.get(lease.site_id) or (
        held.sites[lease.site_id].provider_id if lease.site_id in held.sites else None
    )
    if provider_id is None:
        raise InvalidArgument(f"{lease.path}.site", f"no site {lease.site_id!r} in the file or the database")
    key = lease.lease_id
    if old is None:
        return _step("lease", key, lease.path, lease, False, provider_id=provider_id)
    if old.cancelled:
        raise InvalidArgument(
            f"{lease.path}.id",
            f"lease {key!r} was cancelled; a lease id is never used again: declare a new id",
        )
    daily = (lease.daily.start_minute, lease.daily.duration_minutes) if lease.daily else None
    term_ok = (
        old.ends_at - old.starts_at == dt.timedelta(days=lease.days)
        if lease.days is not None
        else old.ends_at == lease.ends_at
    )
    differs = _compare(
        [
            ("venue", old.venue_id, lease.venue_id),
            ("site", old.site_id, lease.site_id),
            ("gpu_class", old.gpu_class, lease.gpu_class),
            ("slots", old.slots, lease.slots),
            ("starts_at", old.starts_at, lease.starts_at or old.starts_at),
            ("daily", old.daily, daily),
            ("time_zone", old.time_zone, lease.time_zone),
            ("per_slot_hour", _Money(old.price_micros), _Money(lease.price_micros)),
            ("note", old.note, lease.note),
        ]
    )
    if not term_ok:
        differs += (f"term: {old.starts_at.isoformat()} to {old.ends_at.isoformat()} differs from the file",)
    if differs:
        raise InvalidArgument(
            f"{lease.path}.id",
            f"lease {key!r} exists and a lease never changes ({'; '.join(differs)}): cancel it and declare a new id",
        )
    return _step("lease", key, lease.path, lease, True, provider_id=provider_id)
