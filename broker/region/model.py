"""A region file read into frozen values. Pure: no asyncio, database, gRPC or protobuf.

`parse(document)` takes what `yaml.safe_load` returned and either returns a `Region` or raises InvalidArgument whose
field is the path of the offending value in the file, e.g. `venues[1].zones[0].cap_ms: must be between 1 and 500`.
Every mapping's keys are checked: a key this module does not know (a typo) is refused with its path, so a file never
means less than it says. The checks are the servicers' own (cloudseat.validate, broker.metering, broker.leasing), with
the file's paths as field names; what can only be checked against the database (a site named by a latency that is
not in the file) is checked by broker.region.plan.

The file's shape (docs/examples/region.yaml is a commented example):

    providers: [{id, name, sites: [{id, place, region, hosts, host_prefix, prices: [{gpu_class, currency,
                 per_slot_hour, utc_offset, bands: [{from, to, per_slot_hour}]}]}]}]
    games:     [{id, name, version, image_size_bytes, image_ref}]
    venues:    [{id, name, time_zone, zones: [{id, tier, cap_ms, playout, seats}], latency_ms: {SITE: MS},
                 leases: [{id, site, gpu_class, slots, starts_at, ends_at | days, daily: {from, to}, time_zone,
                           per_slot_hour, note}]}]

Money is written in currency units as text or a number ("4.50"), held as integer micros; times of day as quoted
"HH:MM" (YAML 1.1 reads an unquoted 18:00 as the number 1080).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import re
from collections.abc import Mapping, Sequence
from typing import Any

from cloudseat import validate as v
from cloudseat.errors import InvalidArgument

from broker import leasing, metering, tiers

# Bounds the servicers use (VenueService.PutZone, ReportLatency; LeaseService.CreateLease).
CAP_MS = (1, 500)
RTT_MS = (0, 10_000)
LEASE_SLOTS = (1, 100_000)
# A zone's playout mode by the API's names (PlayoutMode less PLAYOUT_MODE_; zones.playout's check, migration 0020).
# Written out here because this module imports no protobuf; tests/unit/test_region_model.py holds it to the proto's.
PLAYOUT_MODES = ("AUTO", "LOW_LATENCY", "SMOOTH")
# A region file is written by hand: these keep a mistake (a range of a million seats) from becoming a huge write.
MAX_SEATS_PER_VENUE = 10_000
MAX_ITEMS = 10_000

_CURRENCY = re.compile(r"[A-Z]{3}")
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})")
_OFFSET = re.compile(r"([+-])(\d{2}):(\d{2})")
_SEAT_RANGE = re.compile(r"(?P<prefix>[A-Za-z0-9._:-]*?)(?P<lo>\d+)\.\.(?P=prefix)(?P<hi>\d+)")
_MICROS = decimal.Decimal(1_000_000)


@dataclasses.dataclass(frozen=True, slots=True)
class Price:
    path: str
    gpu_class: str
    currency: str
    base_micros: int
    bands: tuple[metering.Band, ...]
    utc_offset_minutes: int


@dataclasses.dataclass(frozen=True, slots=True)
class Site:
    path: str
    site_id: str
    provider_id: str
    place: str
    region: str
    hosts: tuple[str, ...]
    host_prefixes: tuple[str, ...]
    prices: tuple[Price, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Provider:
    path: str
    provider_id: str
    name: str
    sites: tuple[Site, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Game:
    path: str
    game_id: str
    name: str
    version: str  # '' : keep the catalogue's current one ('1' for a new game)
    image_size_bytes: int
    image_ref: str
    image_digest: str


@dataclasses.dataclass(frozen=True, slots=True)
class Seat:
    path: str
    seat_id: str
    zone_id: str


@dataclasses.dataclass(frozen=True, slots=True)
class Zone:
    path: str
    zone_id: str
    tier: tiers.Tier
    cap_ms: int
    playout: str | None = None  # one of PLAYOUT_MODES; None (the key left out): keep the zone's (AUTO for a new one)


@dataclasses.dataclass(frozen=True, slots=True)
class Latency:
    path: str
    site_id: str
    rtt_ms: int


@dataclasses.dataclass(frozen=True, slots=True)
class Lease:
    """A lease of a site's slots; `starts_at` None means "from when it is made", and the term is `ends_at` or
    `days` long (exactly one of them)."""

    path: str
    lease_id: str
    venue_id: str
    site_id: str
    gpu_class: str
    slots: int
    starts_at: dt.datetime | None
    ends_at: dt.datetime | None
    days: int | None
    daily: leasing.Daily | None
    time_zone: str
    price_micros: int
    note: str


@dataclasses.dataclass(frozen=True, slots=True)
class Venue:
    path: str
    venue_id: str
    name: str
    time_zone: str
    zones: tuple[Zone, ...]
    seats: tuple[Seat, ...]
    latencies: tuple[Latency, ...]
    leases: tuple[Lease, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Region:
    providers: tuple[Provider, ...]
    games: tuple[Game, ...]
    venues: tuple[Venue, ...]

    @property
    def sites(self) -> tuple[Site, ...]:
        return tuple(s for p in self.providers for s in p.sites)


# -- reading ---------------------------------------------------------------------------------------------------


class _Node:
    """A mapping of the file at `path`: typed reads whose complaints name the path, and the keys it may hold."""

    def __init__(self, value: object, path: str, allowed: Sequence[str]) -> None:
        if not isinstance(value, Mapping):
            raise InvalidArgument(
                path or "(the file)", f"must be a mapping of keys to values, not {_kind(value)}"
            )
        for key in value:
            if not isinstance(key, str) or key not in allowed:
                raise InvalidArgument(
                    _join(path, str(key)), f"unknown key (known here: {', '.join(allowed)})"
                )
        self.value: Mapping[str, Any] = value
        self.path = path

    def at(self, key: str) -> str:
        return _join(self.path, key)

    def has(self, key: str) -> bool:
        return self.value.get(key) is not None

    def text(self, key: str, *, required: bool = False, max_len: int = 200) -> str:
        value = self.value.get(key)
        if value is None:
            if required:
                raise InvalidArgument(self.at(key), "is required")
            return ""
        if not isinstance(value, str):
            raise InvalidArgument(self.at(key), f"must be text, not {_kind(value)} (put it in quotes)")
        return v.text(value, self.at(key), max_len=max_len, required=required)

    def ident(self, key: str, *, required: bool = True) -> str:
        value = self.value.get(key)
        if value is None:
            if required:
                raise InvalidArgument(self.at(key), "is required")
            return ""
        if not isinstance(value, str):
            raise InvalidArgument(self.at(key), f"must be text, not {_kind(value)} (put it in quotes)")
        return v.ident(value, self.at(key))

    def integer(self, key: str, lo: int, hi: int, default: int | None = None) -> int:
        value = self.value.get(key)
        if value is None:
            if default is None:
                raise InvalidArgument(self.at(key), "is required")
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidArgument(self.at(key), f"must be a whole number, not {_kind(value)}")
        return _bounded(value, self.at(key), lo, hi)

    def items(self, key: str) -> list[tuple[str, Any]]:
        """The list under `key` ([] when absent), each with its path."""
        value = self.value.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise InvalidArgument(self.at(key), f"must be a list, not {_kind(value)}")
        if len(value) > MAX_ITEMS:
            raise InvalidArgument(self.at(key), f"must hold at most {MAX_ITEMS} entries")
        return [(f"{self.at(key)}[{i}]", item) for i, item in enumerate(value)]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    return {
        bool: "true/false",
        int: "a number",
        float: "a number",
        str: "text",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)


def _bounded(value: int, path: str, lo: int, hi: int) -> int:
    if value < lo:
        raise InvalidArgument(path, f"must be at least {lo}")
    if value > hi:
        raise InvalidArgument(path, f"must be at most {hi}")
    return value


def money(value: object, path: str) -> int:
    """An amount in currency units ("4.50", 4.5, 4) as integer micros, at most six decimals."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidArgument(path, f'must be an amount such as "4.50", not {_kind(value)}')
    try:
        amount = decimal.Decimal(str(value).strip())
    except decimal.InvalidOperation:
        raise InvalidArgument(path, f'{value!r} is not an amount such as "4.50"') from None
    if not amount.is_finite():
        raise InvalidArgument(path, "must be a finite amount")
    micros = amount * _MICROS
    if micros != micros.to_integral_value():
        raise InvalidArgument(path, "must have at most six decimals")
    return _bounded(int(micros), path, 0, metering.MAX_PRICE_MICROS)


def clock_minute(value: object, path: str, *, end: bool = False) -> int:
    """A quoted time of day "HH:MM" as minutes after midnight (with `end`, "24:00" is allowed)."""
    if not isinstance(value, str):
        raise InvalidArgument(
            path,
            f'must be a time of day in quotes such as "18:00", not {_kind(value)} '
            "(YAML reads an unquoted 18:00 as a number)",
        )
    m = _CLOCK.fullmatch(value.strip())
    if m is None or int(m[2]) > 59 or int(m[1]) > 24 or (int(m[1]) == 24 and (not end or int(m[2]) != 0)):
        raise InvalidArgument(
            path, f"{value!r} is not a time of day HH:MM (00:00 to 23:59{', or 24:00' if end else ''})"
        )
    return int(m[1]) * 60 + int(m[2])


def utc_offset(value: object, path: str) -> int:
    """ "+08:00" as minutes east of UTC."""
    if not isinstance(value, str) or (m := _OFFSET.fullmatch(value.strip())) is None or int(m[3]) > 59:
        raise InvalidArgument(path, 'must be a UTC offset in quotes such as "+08:00"')
    minutes = (int(m[2]) * 60 + int(m[3])) * (1 if m[1] == "+" else -1)
    if not metering.MIN_UTC_OFFSET <= minutes <= metering.MAX_UTC_OFFSET:
        raise InvalidArgument(path, "must be between -12:00 and +14:00")
    return minutes


def time_zone(value: object, path: str) -> str:
    if value is None:
        return "UTC"
    if not isinstance(value, str) or not value:
        raise InvalidArgument(path, "must be an IANA time zone name such as 'Asia/Shanghai'")
    return v.time_zone(value, path)


def instant(value: object, path: str, tz: str) -> dt.datetime:
    """A moment: an ISO 8601 time with its UTC offset, or a date (midnight in `tz`). YAML may have read either
    into a datetime or a date already."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise InvalidArgument(path, f"{value!r} is not a date or an ISO 8601 time") from None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidArgument(path, "must give its UTC offset, e.g. 2026-12-01T18:00:00+08:00")
        at = value.astimezone(dt.UTC)
    elif isinstance(value, dt.date):
        at = dt.datetime(value.year, value.month, value.day, tzinfo=leasing.zone(tz)).astimezone(dt.UTC)
    else:
        raise InvalidArgument(path, f"must be a date or an ISO 8601 time, not {_kind(value)}")
    if not dt.datetime(1970, 1, 1, tzinfo=dt.UTC) <= at < leasing.LATEST:
        raise InvalidArgument(path, f"must be between 1970 and {leasing.LATEST.year}")
    return at


def seat_ids(value: object, path: str) -> list[tuple[str, str]]:
    """A zone's seats: a list of seat ids, each an id or a numbered range "seat-01..seat-08" (the width of the
    first number kept); each with its path."""
    if not isinstance(value, list):
        raise InvalidArgument(path, f"must be a list of seat ids, not {_kind(value)}")
    out: list[tuple[str, str]] = []
    for i, item in enumerate(value):
        here = f"{path}[{i}]"
        if not isinstance(item, str):
            raise InvalidArgument(
                here, f'must be a seat id or a range such as "seat-01..seat-08", not {_kind(item)}'
            )
        m = _SEAT_RANGE.fullmatch(item.strip())
        if m is None:
            out.append((here, v.ident(item, here)))
            continue
        lo, hi = int(m["lo"]), int(m["hi"])
        if hi < lo:
            raise InvalidArgument(here, "a range must run upwards, e.g. seat-01..seat-08")
        if hi - lo >= MAX_SEATS_PER_VENUE:
            raise InvalidArgument(here, f"a range may hold at most {MAX_SEATS_PER_VENUE} seats")
        width = len(m["lo"])
        for n in range(lo, hi + 1):
            out.append((here, v.ident(f"{m['prefix']}{n:0{width}d}", here)))
    return out


# -- the document ----------------------------------------------------------------------------------------------


def parse(document: object) -> Region:
    """The region a file declares, every value checked; InvalidArgument naming the first bad value's path."""
    if document is None:
        raise InvalidArgument("(the file)", "is empty; declare providers, games or venues")
    root = _Node(document, "", ("providers", "games", "venues"))
    providers = tuple(_provider(_Node(p, path, _PROVIDER_KEYS)) for path, p in root.items("providers"))
    games = tuple(_game(_Node(g, path, _GAME_KEYS)) for path, g in root.items("games"))
    venues = tuple(_venue(_Node(x, path, _VENUE_KEYS)) for path, x in root.items("venues"))
    region = Region(providers, games, venues)
    _unique(region)
    return region


_PROVIDER_KEYS = ("id", "name", "sites")
_SITE_KEYS = ("id", "place", "region", "hosts", "host_prefix", "prices")
_PRICE_KEYS = ("gpu_class", "currency", "per_slot_hour", "utc_offset", "bands")
_BAND_KEYS = ("from", "to", "per_slot_hour")
_GAME_KEYS = ("id", "name", "version", "image_size_bytes", "image_ref")
_VENUE_KEYS = ("id", "name", "time_zone", "zones", "latency_ms", "leases")
_ZONE_KEYS = ("id", "tier", "cap_ms", "playout", "seats")
_LEASE_KEYS = (
    "id",
    "site",
    "gpu_class",
    "slots",
    "starts_at",
    "ends_at",
    "days",
    "daily",
    "time_zone",
    "per_slot_hour",
    "note",
)
_DAILY_KEYS = ("from", "to")


def _provider(node: _Node) -> Provider:
    provider_id = node.ident("id")
    sites = tuple(_site(_Node(s, path, _SITE_KEYS), provider_id) for path, s in node.items("sites"))
    return Provider(node.path, provider_id, node.text("name", required=True), sites)


def _site(node: _Node, provider_id: str) -> Site:
    site_id = node.ident("id")
    hosts: list[str] = []
    for path, h in node.items("hosts"):
        if not isinstance(h, str):
            raise InvalidArgument(path, f"must be a host id, not {_kind(h)}")
        hosts.append(v.ident(h, path))
    prefixes: tuple[str, ...] = ()
    if node.has("host_prefix"):
        prefix = node.ident("host_prefix")
        if len(prefix) < 3:
            raise InvalidArgument(node.at("host_prefix"), "must be at least 3 characters")
        prefixes = (prefix,)
    prices = tuple(_price(_Node(p, path, _PRICE_KEYS)) for path, p in node.items("prices"))
    return Site(
        node.path,
        site_id,
        provider_id,
        node.text("place", required=True),
        node.text("region", max_len=64),
        tuple(dict.fromkeys(hosts)),
        prefixes,
        prices,
    )


def _price(node: _Node) -> Price:
    gpu_class = node.ident("gpu_class")
    currency = node.value.get("currency", "CNY")
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        raise InvalidArgument(node.at("currency"), "must be an ISO 4217 code of three capitals such as CNY")
    if not node.has("per_slot_hour"):
        raise InvalidArgument(node.at("per_slot_hour"), "is required")
    base = money(node.value["per_slot_hour"], node.at("per_slot_hour"))
    offset = utc_offset(node.value["utc_offset"], node.at("utc_offset")) if node.has("utc_offset") else 0
    triples: list[tuple[int, int, int]] = []
    bands = node.items("bands")
    if len(bands) > metering.MAX_BANDS:
        raise InvalidArgument(node.at("bands"), f"at most {metering.MAX_BANDS} bands")
    for path, b in bands:
        band = _Node(b, path, _BAND_KEYS)
        for key in _BAND_KEYS:
            if not band.has(key):
                raise InvalidArgument(band.at(key), "is required")
        start = clock_minute(band.value["from"], band.at("from"))
        end = clock_minute(band.value["to"], band.at("to"), end=True)
        if end % metering.MINUTES_PER_DAY == start:
            raise InvalidArgument(band.at("to"), "must differ from 'from' (a band of no time)")
        triples.append((start, end, money(band.value["per_slot_hour"], band.at("per_slot_hour"))))
    # The overlap rule is the servicer's (SetPrice): its error names bands[i] under this path.
    parsed = metering.parse_bands(triples, offset, field=node.at("bands"))
    return Price(node.path, gpu_class, currency, base, parsed, offset)


def _game(node: _Node) -> Game:
    game_id = node.ident("id")
    version = node.value.get("version")
    if isinstance(version, int) and not isinstance(version, bool):
        version = str(version)  # `version: 2` reads as a number
    if version is not None and not isinstance(version, str):
        raise InvalidArgument(node.at("version"), f'must be a version id such as "2", not {_kind(version)}')
    version = v.ident(version or "", node.at("version"), required=False)
    ref = node.text("image_ref", max_len=255)
    digest = ref.rpartition("@sha256:")[2] if "@sha256:" in ref else ""
    ref, digest = v.registry_image(ref, digest, node.at("image_ref"))
    return Game(
        node.path,
        game_id,
        node.text("name", required=True),
        version,
        node.integer("image_size_bytes", 0, 2**63 - 1, default=0),
        ref,
        digest,
    )


def _venue(node: _Node) -> Venue:
    venue_id = node.ident("id")
    tz = time_zone(node.value.get("time_zone"), node.at("time_zone"))
    zones: list[Zone] = []
    seats: list[Seat] = []
    for path, z in node.items("zones"):
        zone_node = _Node(z, path, _ZONE_KEYS)
        zone_id = zone_node.ident("id")
        tier_text = zone_node.value.get("tier")
        if not isinstance(tier_text, str) or tier_text not in {t.value for t in tiers.Tier}:
            raise InvalidArgument(
                zone_node.at("tier"), "must be one of " + ", ".join(t.value for t in tiers.Tier)
            )
        cap = zone_node.integer("cap_ms", *CAP_MS)
        playout = None
        if zone_node.has("playout"):
            playout = zone_node.value["playout"]
            if not isinstance(playout, str) or playout not in PLAYOUT_MODES:
                raise InvalidArgument(zone_node.at("playout"), "must be one of " + ", ".join(PLAYOUT_MODES))
        zones.append(Zone(path, zone_id, tiers.Tier(tier_text), cap, playout))
        if zone_node.has("seats"):
            seats += [
                Seat(p, s, zone_id) for p, s in seat_ids(zone_node.value["seats"], zone_node.at("seats"))
            ]
    if len(seats) > MAX_SEATS_PER_VENUE:
        raise InvalidArgument(node.at("zones"), f"a venue may declare at most {MAX_SEATS_PER_VENUE} seats")
    latencies: list[Latency] = []
    if node.has("latency_ms"):
        raw = node.value["latency_ms"]
        if not isinstance(raw, Mapping):
            raise InvalidArgument(
                node.at("latency_ms"), f"must map site ids to milliseconds, not {_kind(raw)}"
            )
        for site_id, ms in raw.items():
            path = _join(node.at("latency_ms"), str(site_id))
            if not isinstance(site_id, str):
                raise InvalidArgument(path, "the key must be a site id")
            v.ident(site_id, path)
            if isinstance(ms, bool) or not isinstance(ms, int):
                raise InvalidArgument(path, f"must be a whole number of milliseconds, not {_kind(ms)}")
            latencies.append(Latency(path, site_id, _bounded(ms, path, *RTT_MS)))
    leases = tuple(_lease(_Node(x, path, _LEASE_KEYS), venue_id, tz) for path, x in node.items("leases"))
    return Venue(
        node.path,
        venue_id,
        node.text("name", required=True),
        tz,
        tuple(zones),
        tuple(seats),
        tuple(latencies),
        leases,
    )


def _lease(node: _Node, venue_id: str, venue_tz: str) -> Lease:
    lease_id = node.ident("id")
    tz = time_zone(node.value.get("time_zone"), node.at("time_zone")) if node.has("time_zone") else venue_tz
    starts_at = instant(node.value["starts_at"], node.at("starts_at"), tz) if node.has("starts_at") else None
    ends_at = instant(node.value["ends_at"], node.at("ends_at"), tz) if node.has("ends_at") else None
    days = node.integer("days", 1, leasing.MAX_TERM.days) if node.has("days") else None
    if (ends_at is None) == (days is None):
        raise InvalidArgument(node.at("ends_at"), "give exactly one of ends_at and days")
    if ends_at is not None:
        if starts_at is None:
            raise InvalidArgument(node.at("starts_at"), "is required with ends_at (or give days instead)")
        v.period(
            starts_at,
            ends_at,
            max_days=leasing.MAX_TERM.days,
            fields=(node.at("starts_at"), node.at("ends_at")),
            too_long=f"the term may be at most {leasing.MAX_TERM.days} days",
        )
    daily = None
    if node.has("daily"):
        d = _Node(node.value["daily"], node.at("daily"), _DAILY_KEYS)
        for key in _DAILY_KEYS:
            if not d.has(key):
                raise InvalidArgument(d.at(key), "is required")
        start = clock_minute(d.value["from"], d.at("from"))
        end = clock_minute(d.value["to"], d.at("to"), end=True)
        duration = (end - start) % metering.MINUTES_PER_DAY or metering.MINUTES_PER_DAY
        daily = leasing.Daily(start, duration)
    if not node.has("per_slot_hour"):
        raise InvalidArgument(node.at("per_slot_hour"), "is required")
    return Lease(
        node.path,
        lease_id,
        venue_id,
        node.ident("site"),
        node.ident("gpu_class"),
        node.integer("slots", *LEASE_SLOTS),
        starts_at,
        ends_at,
        days,
        daily,
        tz,
        money(node.value["per_slot_hour"], node.at("per_slot_hour")),
        node.text("note"),
    )


def _unique(region: Region) -> None:
    """Ids are declared once: providers, sites, games, venues and leases in the region; price classes per site;
    zones and seats per venue; latencies per venue and site (a mapping cannot repeat a key)."""

    def once(items: Sequence[tuple[str, str]], what: str) -> None:
        seen: dict[str, str] = {}
        for path, key in items:
            if key in seen:
                raise InvalidArgument(path, f"{what} {key!r} is declared twice (first at {seen[key]})")
            seen[key] = path

    once([(_join(p.path, "id"), p.provider_id) for p in region.providers], "provider")
    once([(_join(s.path, "id"), s.site_id) for s in region.sites], "site")
    for s in region.sites:
        once([(_join(p.path, "gpu_class"), p.gpu_class) for p in s.prices], "a price for GPU class")
    once([(_join(g.path, "id"), g.game_id) for g in region.games], "game")
    once([(_join(x.path, "id"), x.venue_id) for x in region.venues], "venue")
    once([(_join(le.path, "id"), le.lease_id) for x in region.venues for le in x.leases], "lease")
    once([(f"{s.path}.hosts", h) for s in region.sites for h in s.hosts], "host")
    once([(f"{s.path}.host_prefix", h) for s in region.sites for h in s.host_prefixes], "host prefix")
    for x in region.venues:
        once([(_join(z.path, "id"), z.zone_id) for z in x.zones], "zone")
        once([(s.path, s.seat_id) for s in x.seats], "seat")
