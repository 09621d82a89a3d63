"""When a lease is in force, and how its use adds up per hour. Pure: no asyncio, database, gRPC or protobuf.

A lease runs over a term [starts_at, ends_at). Within it, it is in force either the whole term (a one-off lease) or
in one window a day (recurring, `Daily`): from a local wall-clock time for a number of minutes, e.g. every evening
18:00-02:00 is `Daily(start_minute=18 * 60, duration_minutes=8 * 60)`.

Time zone: the wall clock is the lease's own `time_zone` (an IANA name such as "Asia/Shanghai"), chosen by the
parties when they agree the lease, because a site and a venue may sit in different zones and "the evening" is the
venue's evening. A window starts at its local start time and lasts `duration_minutes` of real time, so on a night the
clocks change it ends an hour earlier or later on the wall clock, and a start time the clocks skip is read with the
offset before the change (Python's fold=0). Windows that touch or overlap (a 24-hour window on a 23-hour day) are
merged, so no moment of a lease is counted twice.

Every instant is an aware datetime; every result is in UTC.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import zoneinfo
from collections.abc import Iterable, Sequence

UTC = dt.UTC
#: The longest term a lease may have: its windows are stored one row each (at most one a day).
MAX_TERM = dt.timedelta(days=366)
#: The longest period one use report covers (hour buckets).
MAX_REPORT = dt.timedelta(days=31)
#: Leases and reports end before this (the window arithmetic stays clear of datetime's year 9999).
LATEST = dt.datetime(9000, 1, 1, tzinfo=UTC)

Interval = tuple[dt.datetime, dt.datetime]


@dataclasses.dataclass(frozen=True, slots=True)
class Daily:
    """A window a day: from `start_minute` after local midnight, for `duration_minutes` (may pass midnight)."""

    start_minute: int
    duration_minutes: int

    def __post_init__(self) -> None:
        if not 0 <= self.start_minute < 24 * 60:
            raise ValueError("start_minute must be in 0..1439")
        if not 0 < self.duration_minutes <= 24 * 60:
            raise ValueError("duration_minutes must be in 1..1440")


def zone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA time zone `name`; ValueError when unknown."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def _aware(t: dt.datetime, what: str) -> None:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware")


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, non-empty, disjoint intervals covering the same instants (touching ones joined)."""
    out: list[Interval] = []
    for start, end in sorted(i for i in intervals if i[0] < i[1]):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def windows(
    starts_at: dt.datetime,
    ends_at: dt.datetime,
    daily: Daily | None,
    time_zone: str = "UTC",
    *,
    within: Interval | None = None,
) -> list[Interval]:
    """The lease's windows in force, clipped to its term (and to `within` when given): sorted, disjoint, in UTC."""
    _aware(starts_at, "starts_at")
    _aware(ends_at, "ends_at")
    lo, hi = starts_at.astimezone(UTC), ends_at.astimezone(UTC)
    if within is not None:
        _aware(within[0], "within")
        _aware(within[1], "within")
        lo, hi = max(lo, within[0].astimezone(UTC)), min(hi, within[1].astimezone(UTC))
    if lo >= hi:
        return []
    if daily is None:
        return [(lo, hi)]
    tz = zone(time_zone)
    length = dt.timedelta(minutes=daily.duration_minutes)
    hour, minute = divmod(daily.start_minute, 60)
    # A window that starts the local day before `lo` may still run into it.
    day = lo.astimezone(tz).date() - dt.timedelta(days=1)
    last = hi.astimezone(tz).date()
    raw: list[Interval] = []
    while day <= last:
        start = dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz).astimezone(UTC)
        raw.append((max(start, lo), min(start + length, hi)))
        day += dt.timedelta(days=1)
    return merge(raw)


def active_at(
    t: dt.datetime, starts_at: dt.datetime, ends_at: dt.datetime, daily: Daily | None, time_zone: str = "UTC"
) -> bool:
    """Whether the lease is in force at instant `t`."""
    _aware(t, "t")
    probe = (t, t + dt.timedelta(microseconds=1))
    return bool(windows(starts_at, ends_at, daily, time_zone, within=probe))


def hours(start: dt.datetime, end: dt.datetime, time_zone: str = "UTC") -> list[Interval]:
    """The hours of the wall clock of `time_zone` that [start, end) touches, each [hour start, next hour start) in
    UTC, the first and last cut to [start, end). An hour that an offset change of 30 minutes splits is cut where
    the local hour changes."""
    _aware(start, "start")
    _aware(end, "end")
    if start >= end:
        return []
    tz = zone(time_zone)
    out: list[Interval] = []
    local = start.astimezone(tz)
    t = start.astimezone(UTC) - dt.timedelta(
        minutes=local.minute, seconds=local.second, microseconds=local.microsecond
    )
    stop = end.astimezone(UTC)
    while t < stop:
        # The next local hour boundary: an hour on, then back to its whole hour (offsets of 30 or 45 minutes).
        nxt = t + dt.timedelta(hours=1)
        nl = nxt.astimezone(tz)
        nxt -= dt.timedelta(minutes=nl.minute, seconds=nl.second, microseconds=nl.microsecond)
        if nxt <= t:
            nxt = t + dt.timedelta(hours=1)
        out.append((max(t, start), min(nxt, stop)))
        t = nxt
    return out


def _overlap_s(a: Interval, b: Interval) -> float:
    return max(0.0, (min(a[1], b[1]) - max(a[0], b[0])).total_seconds())


@dataclasses.dataclass(frozen=True, slots=True)
class HourUse:
    """One hour: slot-seconds the lease(s) held in force (`leased`) and slot-seconds sessions used under them."""

    start: dt.datetime
    end: dt.datetime
    leased_slot_s: int
    used_slot_s: int


def use_per_hour(
    buckets: Sequence[Interval],
    leased: Sequence[tuple[Interval, int]],
    used: Sequence[tuple[Interval, int]],
) -> list[HourUse]:
    """Per hour bucket: leased = Σ slots × seconds of each lease window within the hour; used = Σ leased slots ×
    seconds of each session interval within the hour. The caller clips sessions to their lease's windows (`clip`).
    Seconds are rounded down per bucket, so a bucket never reports more than was held."""
    out = []
    for bucket in buckets:
        held = sum(slots * _overlap_s(w, bucket) for w, slots in leased)
        took = sum(slots * _overlap_s(s, bucket) for s, slots in used)
        out.append(HourUse(bucket[0], bucket[1], int(held), int(took)))
    return out


def clip(interval: Interval, windows_: Sequence[Interval]) -> list[Interval]:
    """The parts of `interval` inside any of `windows_` (sorted, disjoint)."""
    parts = [(max(interval[0], w[0]), min(interval[1], w[1])) for w in windows_]
    return [p for p in parts if p[0] < p[1]]


def peak_load(intervals: Sequence[tuple[Interval, int]]) -> int:
    """The most slots held at any one instant by intervals [start, end) holding `slots` each (0 when none)."""
    events: list[tuple[dt.datetime, int]] = []
    for (start, end), slots in intervals:
        if start < end:
            events += [(start, slots), (end, -slots)]
    # Ends sort before starts at the same instant: [a, b) and [b, c) never overlap.
    events.sort(key=lambda e: (e[0], e[1]))
    load = best = 0
    for _, delta in events:
        load += delta
        best = max(best, load)
    return best
