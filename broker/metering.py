"""Prices with time-of-day bands, metering of slot time into ledger entries, SLA minutes and statements. Pure.

The model (README "Prices, metering and bills"):

* A price (per GPU class and site) is a base price per slot-hour plus up to `MAX_BANDS` time-of-day bands, each
  [start_minute, end_minute) of the day with its own price; a band with end <= start wraps midnight (18:00-02:00 is
  1080-120). Minutes of the day are counted in a fixed UTC offset set with the price (`utc_offset_minutes`: 480 for
  China; no daylight saving, so a band edge is one exact instant every day). Minutes outside every band cost the
  base price.
* A session's slot time runs from when it was placed (it holds its slots) to when it ended, in whole seconds (both
  ends truncated to the second). It is metered into entries that never cross a *natural boundary*: a whole UTC hour
  or a band edge. A running session's entry is written once its boundary has passed, an ended session's at once, and
  a price change closes the open entries of its site and class at that second. So the ledger does not depend on when
  the metering duty ran, and a statement of an hour-aligned period is exact to the second.
* An entry's amount is price x slots x seconds / 3600 micros, rounded down (under one micro per entry).
* A session's slots are metered in parts (`Metered.parts`): those a lease pays (`lease_slots`, basis `lease`, price
  0: the lease is paid at its agreed price off the ledger) and the rest (basis `on_demand`, the price in force). A
  session placed partly on a lease has two entries for each interval, and an SLA credit for each part at that
  part's price (0 on the leased slots, whose terms are the lease agreement's).
* SLA: each UTC minute of a STREAMING session is judged from the agent's stream stats of that minute (means of the
  heartbeats) and the seat's own (means of its reports): latency (RTT) over the zone's cap, or fps under
  `fps_floor_pct` of the tier's, by either side, flags it. A flagged minute
  gets a credit entry (negative amount) of `credit_pct` of that minute's charge, at the price in force in it. A
  minute without stats is not flagged (no evidence).
* A statement covers the entries that start in [start, end): usage, credits and the total, per site, GPU class,
  basis (on-demand or lease), price and currency; the totals are the sums of the lines, which are sums of the entries.
* Every amount carries the currency of the price it was charged at (ISO 4217, the price's own; CNY where a host has
  no price row but its declared one). Nothing converts between currencies: a statement whose lines are in more than
  one has a total per currency (`Statement.totals`), and its single totals are only defined when there is one.

Everything here takes time as an argument (aware datetimes, UTC) and integers for money.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cloudseat.errors import InvalidArgument

MINUTES_PER_DAY = 1440
MAX_BANDS = 24
MAX_PRICE_MICROS = 10**12
MIN_UTC_OFFSET, MAX_UTC_OFFSET = -720, 840
USAGE, CREDIT = "usage", "sla_credit"
# What every amount was in before prices had a currency (migration 0016), and what a host's declared price is in.
DEFAULT_CURRENCY = "CNY"
ON_DEMAND, LEASE = "on_demand", "lease"
_HOUR = dt.timedelta(hours=1)
_MINUTE = dt.timedelta(minutes=1)
_SECOND = dt.timedelta(seconds=1)


@dataclasses.dataclass(frozen=True, slots=True)
class Policy:
    """How often the leader meters, and the SLA's terms (BrokerConfig.metering)."""

    # The metering duty's period: it writes the entries whose boundary has passed and those of ended sessions.
    interval_s: float = 10.0
    # A minute is judged this long after it ends, so the heartbeats of that minute have arrived.
    sla_settle_s: float = 15.0
    # A flagged minute is credited this share (percent) of its charge.
    credit_pct: int = 100
    # fps below this share (percent) of the tier's fps flags a minute.
    fps_floor_pct: int = 90


@dataclasses.dataclass(frozen=True, slots=True)
class Band:
    start_minute: int
    end_minute: int
    price_micros: int

    def covers(self, minute: int) -> bool:
        if self.start_minute < self.end_minute:
            return self.start_minute <= minute < self.end_minute
        return minute >= self.start_minute or minute < self.end_minute


@dataclasses.dataclass(frozen=True, slots=True)
class Schedule:
    """A price per slot-hour: the base, and the bands of the day in a fixed UTC offset."""

    base_micros: int
    bands: tuple[Band, ...] = ()
    utc_offset_minutes: int = 0

    def _local_minute(self, at: dt.datetime) -> int:
        local = at.astimezone(dt.UTC) + dt.timedelta(minutes=self.utc_offset_minutes)
        return local.hour * 60 + local.minute

    def price_at(self, at: dt.datetime) -> int:
        """The price in force at `at`."""
        minute = self._local_minute(at)
        for band in self.bands:
            if band.covers(minute):
                return band.price_micros
        return self.base_micros

    def next_edge(self, at: dt.datetime) -> dt.datetime | None:
        """The first band edge strictly after `at` (None without bands)."""
        if not self.bands:
            return None
        edges = sorted({b.start_minute % MINUTES_PER_DAY for b in self.bands} | {
            b.end_minute % MINUTES_PER_DAY for b in self.bands
        })  # fmt: skip
        at = at.astimezone(dt.UTC)
        local = at + dt.timedelta(minutes=self.utc_offset_minutes)
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        for day in (0, 1):
            for m in edges:
                edge_local = midnight + dt.timedelta(days=day, minutes=m)
                edge = edge_local - dt.timedelta(minutes=self.utc_offset_minutes)
                if edge > at:
                    return edge
        raise AssertionError("a band edge within two days")  # pragma: no cover

    def bands_list(self) -> list[list[int]]:
        """The bands as stored (jsonb [[start_minute, end_minute, price_micros], ...])."""
        return [[b.start_minute, b.end_minute, b.price_micros] for b in self.bands]

    @classmethod
    def from_row(cls, base_micros: int, bands: Any, utc_offset_minutes: int) -> Schedule:
        """From the database's columns (bands: jsonb [[start, end, price], ...], as text or decoded)."""
        raw = json.loads(bands) if isinstance(bands, str) else (bands or [])
        return cls(base_micros, tuple(Band(int(s), int(e), int(p)) for s, e, p in raw), utc_offset_minutes)


def parse_bands(
    bands: Sequence[tuple[int, int, int]], utc_offset_minutes: int, field: str = "bands"
) -> tuple[Band, ...]:
    """Checked bands from (start_minute, end_minute, price) triples; InvalidArgument names the field."""
    if not MIN_UTC_OFFSET <= utc_offset_minutes <= MAX_UTC_OFFSET:
        raise InvalidArgument("utc_offset_minutes", f"must be between {MIN_UTC_OFFSET} and {MAX_UTC_OFFSET}")
    if len(bands) > MAX_BANDS:
        raise InvalidArgument(field, f"at most {MAX_BANDS} bands")
    out: list[Band] = []
    taken = [False] * MINUTES_PER_DAY
    for i, (start, end, price) in enumerate(bands):
        here = f"{field}[{i}]"
        if not 0 <= start < MINUTES_PER_DAY:
            raise InvalidArgument(f"{here}.start_minute", f"must be between 0 and {MINUTES_PER_DAY - 1}")
        if not 0 <= end <= MINUTES_PER_DAY:
            raise InvalidArgument(f"{here}.end_minute", f"must be between 0 and {MINUTES_PER_DAY}")
        if end == start:
            raise InvalidArgument(f"{here}.end_minute", "must differ from start_minute (a band of no time)")
        if not 0 <= price <= MAX_PRICE_MICROS:
            raise InvalidArgument(
                f"{here}.price_micros_per_slot_hour", f"must be between 0 and {MAX_PRICE_MICROS}"
            )
        band = Band(start, end % MINUTES_PER_DAY, price)
        for m in range(MINUTES_PER_DAY):
            if band.covers(m):
                if taken[m]:
                    raise InvalidArgument(here, "overlaps an earlier band")
                taken[m] = True
        out.append(band)
    return tuple(out)


def local_time(at: dt.datetime, time_zone: str) -> dt.datetime:
    """`at` on the wall clock of `time_zone` (an IANA name, e.g. a venue's)."""
    return at.astimezone(zoneinfo.ZoneInfo(time_zone))


def local_date(at: dt.datetime, time_zone: str) -> dt.date:
    """The calendar day `at` falls on in `time_zone`."""
    return local_time(at, time_zone).date()


def local_day(day: dt.date, time_zone: str) -> tuple[dt.datetime, dt.datetime]:
    """The UTC instants [start, end) of a calendar day in `time_zone`: 23 or 25 hours on the days its clocks
    change. A midnight inside a gap (a zone that springs forward at 00:00) reads, with fold 0, at the offset before
    the change: the instant the gap ends, the first that shows that day; a repeated midnight is its first."""
    zone = zoneinfo.ZoneInfo(time_zone)

    def start(d: dt.date) -> dt.datetime:
        return dt.datetime.combine(d, dt.time(), zone).astimezone(dt.UTC)

    return start(day), start(day + dt.timedelta(days=1))


def floor_second(at: dt.datetime) -> dt.datetime:
    return at.replace(microsecond=0)


def floor_minute(at: dt.datetime) -> dt.datetime:
    return at.replace(second=0, microsecond=0)


def next_boundary(at: dt.datetime, schedule: Schedule) -> dt.datetime:
    """The first natural boundary (a whole UTC hour or a band edge) strictly after `at`."""
    hour = at.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0) + _HOUR
    edge = schedule.next_edge(at)
    return hour if edge is None else min(hour, edge)


@dataclasses.dataclass(frozen=True, slots=True)
class Piece:
    start: dt.datetime
    end: dt.datetime
    price_micros: int

    @property
    def seconds(self) -> int:
        return int((self.end - self.start) // _SECOND)


def split(start: dt.datetime, end: dt.datetime, schedule: Schedule) -> list[Piece]:
    """[start, end) cut at every natural boundary, each piece with the price in force in it."""
    pieces: list[Piece] = []
    at = start
    while at < end:
        stop = min(end, next_boundary(at, schedule))
        pieces.append(Piece(at, stop, schedule.price_at(at)))
        at = stop
    return pieces


def charge(price_micros: int, slots: int, seconds: int) -> int:
    """What `slots` slots for `seconds` cost at `price_micros` per slot-hour, rounded down to a micro."""
    return price_micros * slots * seconds // 3600


def credit(price_micros: int, slots: int, seconds: int, pct: int) -> int:
    """The (negative) credit of `pct` percent of that charge, rounded toward zero."""
    return -(price_micros * slots * seconds * pct // 360_000)


@dataclasses.dataclass(frozen=True, slots=True)
class Part:
    """Some of a session's slots, paid one way: `lease` (lease_id set; the lease pays them, so their entries cost
    0) or `on_demand` (the price in force). Each part is metered into entries of its own."""

    basis: str
    lease_id: str | None
    slots: int


@dataclasses.dataclass(frozen=True, slots=True)
class Metered:
    """A session as the meter sees it: who pays whom, for what, and how far it is metered."""

    session_id: str
    venue_id: str
    provider_id: str
    host_id: str
    site_id: str
    gpu_class: str
    slots: int
    lease_id: str | None  # the lease that pays `lease_slots` of its slots (None: all on demand)
    lease_slots: int  # 0 without a lease, else 1..slots (sessions.lease_slots)
    placed_at: dt.datetime  # whole second
    ended_at: dt.datetime | None  # whole second; None while it runs
    usage_until: dt.datetime | None  # metered up to here (None: from placed_at)
    sla_until: dt.datetime | None  # judged up to here
    schedule: Schedule
    latency_cap_ms: int = 0
    tier_fps: int = 0
    currency: str = DEFAULT_CURRENCY  # the price's (ISO 4217)

    def __post_init__(self) -> None:
        # The database's check session_lease_slots, so a part never has no slots.
        if (self.lease_id is None) != (self.lease_slots == 0) or not 0 <= self.lease_slots <= self.slots:
            raise ValueError(f"lease_slots {self.lease_slots} of {self.slots} with lease {self.lease_id!r}")

    @property
    def parts(self) -> tuple[Part, ...]:
        """How its slots are paid: the leased ones by the lease, the rest on demand (one part or two)."""
        leased = (Part(LEASE, self.lease_id, self.lease_slots),) if self.lease_id is not None else ()
        rest = self.slots - self.lease_slots
        return leased + ((Part(ON_DEMAND, None, rest),) if rest else ())


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    session_id: str
    venue_id: str
    provider_id: str
    host_id: str
    site_id: str
    gpu_class: str
    slots: int
    kind: str
    basis: str
    lease_id: str | None
    price_micros: int
    start: dt.datetime
    end: dt.datetime
    seconds: int
    amount_micros: int
    currency: str = DEFAULT_CURRENCY


def _entry(
    m: Metered, part: Part, kind: str, price: int, start: dt.datetime, end: dt.datetime, amount: int
) -> Entry:
    return Entry(
        m.session_id, m.venue_id, m.provider_id, m.host_id, m.site_id, m.gpu_class, part.slots, kind, part.basis,
        part.lease_id, price, start, end, int((end - start) // _SECOND), amount, m.currency,
    )  # fmt: skip


def _price(m: Metered, part: Part, at: dt.datetime) -> int:
    # Leased slots are paid for by the lease itself (its agreed price, off the ledger); their entries cost nothing.
    return 0 if part.basis == LEASE else m.schedule.price_at(at)


def usage(m: Metered, now: dt.datetime, *, force: bool = False) -> tuple[list[Entry], dt.datetime]:
    """The usage entries due at `now`, and how far the session is then metered.

    An ended session is metered to its end; a running one to the last natural boundary passed (or to `now`, whole
    second, with `force`: a price change closes the open entry at that second)."""
    start = m.usage_until or m.placed_at
    if m.ended_at is not None:
        stop = m.ended_at
    elif force:
        stop = max(start, floor_second(now))
    else:
        stop = _last_boundary(start, now, m.schedule)
    entries = []
    for p in split(start, stop, m.schedule):
        for part in m.parts:
            price = _price(m, part, p.start)
            entries.append(
                _entry(m, part, USAGE, price, p.start, p.end, charge(price, part.slots, p.seconds))
            )
    return entries, max(start, stop)


@dataclasses.dataclass(frozen=True, slots=True)
class MinuteStats:
    """A session's stream in one UTC minute: the means of the agent's heartbeats' stats and of the seat's own
    reports (SessionService.ReportStreamStats); None where that side sent none (the seat's RTT: none it knew)."""

    rtt_ms: float | None
    fps: float | None
    seat_rtt_ms: float | None = None
    seat_fps: float | None = None


def minute_flagged(stats: MinuteStats | None, latency_cap_ms: int, tier_fps: int, fps_floor_pct: int) -> bool:
    """Whether the minute fell below the zone's promise: latency over the cap, or fps under the tier's floor, by the
    agent's means OR the seat's. Either side's evidence is enough: the agent sees the host's encoder and its RTCP
    round trip, the seat what the patron saw. Latency is the network round trip (the cap is a venue-to-site RTT
    promise), never the stamp latencies, which include encoding, decoding and display."""
    if stats is None:
        return False
    rtts = [r for r in (stats.rtt_ms, stats.seat_rtt_ms) if r is not None]
    fpss = [f for f in (stats.fps, stats.seat_fps) if f is not None]
    return any(r > latency_cap_ms for r in rtts) or any(f * 100 < tier_fps * fps_floor_pct for f in fpss)


def _last_boundary(start: dt.datetime, limit: dt.datetime, schedule: Schedule) -> dt.datetime:
    """The last natural boundary after `start` and at or before `limit` (`start` when none)."""
    at = start
    while (b := next_boundary(at, schedule)) <= limit:
        at = b
    return at


def sla_judge_until(m: Metered, now: dt.datetime, settle_s: float) -> dt.datetime:
    """How far the SLA is judged at `now`: a running session to the last natural boundary settled (so a running
    session is visited once per boundary, not every minute), an ended one to its end once that has settled."""
    start = m.sla_until or m.placed_at
    settled = now - dt.timedelta(seconds=settle_s)
    if m.ended_at is not None and m.ended_at <= settled:
        return max(start, m.ended_at)
    limit = settled if m.ended_at is None else min(settled, m.ended_at)
    return _last_boundary(start, limit, m.schedule)


def sla_credits(
    m: Metered, stats: Mapping[dt.datetime, MinuteStats], now: dt.datetime, policy: Policy
) -> tuple[list[Entry], dt.datetime]:
    """Credit entries for the flagged minutes judged at `now` (stats by the minute's start), and the new cursor."""
    start = m.sla_until or m.placed_at
    until = sla_judge_until(m, now, policy.sla_settle_s)
    entries = []
    at = start
    while at < until:
        minute = floor_minute(at)
        stop = min(until, minute + _MINUTE)
        if minute_flagged(stats.get(minute), m.latency_cap_ms, m.tier_fps, policy.fps_floor_pct):
            # Each part at its own price, as its usage is billed: the leased slots' credit is 0 (their SLA is the
            # lease agreement's, like their price); the entry still records the flagged seconds on them.
            seconds = int((stop - at) // _SECOND)
            for part in m.parts:
                price = _price(m, part, at)
                amount = credit(price, part.slots, seconds, policy.credit_pct)
                entries.append(_entry(m, part, CREDIT, price, at, stop, amount))
        at = stop
    return entries, until


def done(m: Metered, usage_until: dt.datetime, sla_until: dt.datetime) -> bool:
    """Whether nothing more will be written for the session."""
    return m.ended_at is not None and usage_until >= m.ended_at and sla_until >= m.ended_at


def next_due(m: Metered, usage_until: dt.datetime, sla_until: dt.datetime, policy: Policy) -> dt.datetime:
    """When the session next has something to write (its next boundary, or the next minute to judge)."""
    settle = dt.timedelta(seconds=policy.sla_settle_s)
    if m.ended_at is not None:
        return m.ended_at + settle
    return next_boundary(min(usage_until, sla_until), m.schedule) + settle


# -- statements --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Line:
    """One line of a statement: the entries of a site, GPU class, basis, price and currency."""

    site_id: str
    gpu_class: str
    basis: str
    price_micros: int
    currency: str = DEFAULT_CURRENCY
    entries: int = 0
    seconds: int = 0
    slot_seconds: int = 0
    usage_micros: int = 0
    credited_seconds: int = 0
    credit_micros: int = 0

    @property
    def total_micros(self) -> int:
        return self.usage_micros + self.credit_micros


@dataclasses.dataclass(frozen=True, slots=True)
class Total:
    """A statement's sums in one currency."""

    currency: str
    usage_micros: int = 0
    credit_micros: int = 0

    @property
    def total_micros(self) -> int:
        return self.usage_micros + self.credit_micros


@dataclasses.dataclass(frozen=True, slots=True)
class Statement:
    start: dt.datetime
    end: dt.datetime
    lines: tuple[Line, ...]
    venue_id: str | None = None
    provider_id: str | None = None

    @property
    def currencies(self) -> tuple[str, ...]:
        """The currencies of its lines, sorted (none for an empty statement)."""
        return tuple(sorted({line.currency for line in self.lines}))

    @property
    def totals(self) -> tuple[Total, ...]:
        """Usage, credits and total per currency, sorted by currency: amounts in different currencies are never
        added together."""
        out = []
        for currency in self.currencies:
            mine = [line for line in self.lines if line.currency == currency]
            out.append(
                Total(currency, sum(x.usage_micros for x in mine), sum(x.credit_micros for x in mine))
            )
        return tuple(out)

    @property
    def usage_micros(self) -> int:
        """The sum of the lines' usage: meaningful when they share one currency (see `totals`)."""
        return sum(line.usage_micros for line in self.lines)

    @property
    def credit_micros(self) -> int:
        return sum(line.credit_micros for line in self.lines)

    @property
    def total_micros(self) -> int:
        return self.usage_micros + self.credit_micros

    @property
    def seconds(self) -> int:
        return sum(line.seconds for line in self.lines)

    @property
    def credited_seconds(self) -> int:
        return sum(line.credited_seconds for line in self.lines)

    @property
    def entries(self) -> int:
        return sum(line.entries for line in self.lines)


def lines_of(entries: Iterable[Entry]) -> tuple[Line, ...]:
    """The statement lines of these entries (what the database's GROUP BY computes, for tests and accruals)."""
    acc: dict[tuple[str, str, str, int, str], Line] = {}
    for e in entries:
        key = (e.site_id, e.gpu_class, e.basis, e.price_micros, e.currency)
        line = acc.get(key) or Line(*key)
        if e.kind == USAGE:
            line = dataclasses.replace(
                line, entries=line.entries + 1, seconds=line.seconds + e.seconds,
                slot_seconds=line.slot_seconds + e.seconds * e.slots, usage_micros=line.usage_micros + e.amount_micros,
            )  # fmt: skip
        else:
            line = dataclasses.replace(
                line, entries=line.entries + 1, credited_seconds=line.credited_seconds + e.seconds,
                credit_micros=line.credit_micros + e.amount_micros,
            )  # fmt: skip
        acc[key] = line
    return tuple(acc[k] for k in sorted(acc))


def statement(
    entries: Iterable[Entry],
    start: dt.datetime,
    end: dt.datetime,
    *,
    venue_id: str | None = None,
    provider_id: str | None = None,
) -> Statement:
    """The statement of the entries that start in [start, end), of one venue or provider (or all)."""
    chosen = [
        e for e in entries
        if start <= e.start < end
        and (venue_id is None or e.venue_id == venue_id)
        and (provider_id is None or e.provider_id == provider_id)
    ]  # fmt: skip
    return Statement(start, end, lines_of(chosen), venue_id, provider_id)
