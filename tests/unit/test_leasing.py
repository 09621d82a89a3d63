"""broker.leasing: lease windows (one-off, daily across midnight, across clock changes), hours, use per hour."""

from __future__ import annotations

import datetime as dt
import itertools
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker import leasing
from broker.leasing import Daily

UTC = dt.UTC
SH = "Asia/Shanghai"  # UTC+8, no clock changes
EVENING = Daily(start_minute=18 * 60, duration_minutes=8 * 60)  # 18:00-02:00


def t(*args: int, tz: dt.tzinfo = UTC) -> dt.datetime:
    return dt.datetime(*args, tzinfo=tz).astimezone(UTC)


def local(*args: int, zone: str = SH) -> dt.datetime:
    return t(*args, tz=leasing.zone(zone))


def test_one_off_lease_is_its_term() -> None:
    start, end = t(2025, 1, 1, 10), t(2025, 1, 1, 12)
    assert leasing.windows(start, end, None) == [(start, end)]
    assert leasing.active_at(start, start, end, None)
    assert not leasing.active_at(end, start, end, None)  # [start, end)


def test_every_evening_runs_past_midnight_in_the_lease_time_zone() -> None:
    start, end = local(2025, 3, 1), local(2025, 3, 4)
    got = leasing.windows(start, end, EVENING, SH)
    assert got == [
        # the window that started the evening before the term is cut at its start
        (local(2025, 3, 1), local(2025, 3, 1, 2)),
        (local(2025, 3, 1, 18), local(2025, 3, 2, 2)),
        (local(2025, 3, 2, 18), local(2025, 3, 3, 2)),
        (local(2025, 3, 3, 18), local(2025, 3, 4)),
    ]
    assert leasing.active_at(local(2025, 3, 2, 1, 59), start, end, EVENING, SH)
    assert not leasing.active_at(local(2025, 3, 2, 2), start, end, EVENING, SH)
    assert not leasing.active_at(local(2025, 3, 2, 12), start, end, EVENING, SH)
    assert leasing.active_at(local(2025, 3, 2, 18), start, end, EVENING, SH)


def test_a_window_lasts_its_minutes_of_real_time_when_the_clocks_change() -> None:
    # Europe/Berlin springs forward at 02:00 on 30 March 2025: the evening window is still 8 real hours.
    zone = "Europe/Berlin"
    got = leasing.windows(local(2025, 3, 29, 12, zone=zone), local(2025, 3, 30, 12, zone=zone), EVENING, zone)
    assert got == [
        (local(2025, 3, 29, 18, zone=zone), local(2025, 3, 29, 18, zone=zone) + dt.timedelta(hours=8))
    ]
    assert got[0][1] == local(2025, 3, 30, 3, zone=zone)  # 03:00 on the wall clock that night


def test_whole_day_windows_on_a_short_day_merge_instead_of_counting_twice() -> None:
    zone = "Europe/Berlin"
    start, end = local(2025, 3, 28, zone=zone), local(2025, 4, 2, zone=zone)
    got = leasing.windows(start, end, Daily(0, 24 * 60), zone)
    assert got == [(start, end)]


def test_hours_follow_the_wall_clock_and_cut_to_the_period() -> None:
    got = leasing.hours(t(2025, 1, 1, 10, 30), t(2025, 1, 1, 12, 15))
    assert got == [
        (t(2025, 1, 1, 10, 30), t(2025, 1, 1, 11)),
        (t(2025, 1, 1, 11), t(2025, 1, 1, 12)),
        (t(2025, 1, 1, 12), t(2025, 1, 1, 12, 15)),
    ]
    # India is UTC+5:30: its hours start at half past the UTC hour.
    india = leasing.hours(t(2025, 1, 1, 0), t(2025, 1, 1, 2), "Asia/Kolkata")
    assert india[1] == (t(2025, 1, 1, 0, 30), t(2025, 1, 1, 1, 30))


def test_use_per_hour_counts_slot_seconds_within_each_hour() -> None:
    hours = leasing.hours(t(2025, 1, 1, 18), t(2025, 1, 1, 20))
    leased = [((t(2025, 1, 1, 18), t(2025, 1, 1, 20)), 4)]
    used = [((t(2025, 1, 1, 18, 30), t(2025, 1, 1, 19, 15)), 2)]
    got = leasing.use_per_hour(hours, leased, used)
    assert [(h.leased_slot_s, h.used_slot_s) for h in got] == [(4 * 3600, 2 * 1800), (4 * 3600, 2 * 900)]


def test_clip_keeps_a_session_to_its_lease_windows() -> None:
    windows = [(t(2025, 1, 1, 18), t(2025, 1, 2, 2))]
    assert leasing.clip((t(2025, 1, 2, 1), t(2025, 1, 2, 3)), windows) == [
        (t(2025, 1, 2, 1), t(2025, 1, 2, 2))
    ]
    assert leasing.clip((t(2025, 1, 2, 3), t(2025, 1, 2, 4)), windows) == []


def test_peak_load_does_not_count_touching_intervals_together() -> None:
    a = ((t(2025, 1, 1, 1), t(2025, 1, 1, 2)), 3)
    b = ((t(2025, 1, 1, 2), t(2025, 1, 1, 3)), 4)
    c = ((t(2025, 1, 1, 1, 30), t(2025, 1, 1, 2, 30)), 1)
    assert leasing.peak_load([a, b]) == 4
    assert leasing.peak_load([a, b, c]) == 5


def test_bad_daily_windows_and_zones_are_refused() -> None:
    with pytest.raises(ValueError, match="start_minute"):
        Daily(1440, 60)
    with pytest.raises(ValueError, match="duration_minutes"):
        Daily(0, 0)
    with pytest.raises(ValueError, match="time zone"):
        leasing.zone("Mars/Olympus")


# -- properties ----------------------------------------------------------------------------------------------

ZONES = st.sampled_from(
    ["UTC", SH, "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]
)
instants = st.datetimes(
    min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2030, 1, 1), timezones=st.just(UTC)
)
dailies = st.one_of(st.none(), st.builds(Daily, st.integers(0, 24 * 60 - 1), st.integers(1, 24 * 60)))


@st.composite
def terms(draw: st.DrawFn) -> tuple[dt.datetime, dt.datetime]:
    start = draw(instants)
    return start, start + dt.timedelta(minutes=draw(st.integers(1, 20 * 24 * 60)))


@settings(max_examples=300, deadline=None)
@given(terms(), dailies, ZONES, instants)
def test_windows_are_sorted_disjoint_within_the_term_and_agree_with_active_at(
    term: tuple[dt.datetime, dt.datetime], daily: Daily | None, zone: str, probe: dt.datetime
) -> None:
    start, end = term
    got = leasing.windows(start, end, daily, zone)
    for lo, hi in got:
        assert start <= lo < hi <= end
    for (_, hi), (lo, _) in itertools.pairwise(got):
        assert hi < lo  # disjoint, and touching ones merged
    inside = any(lo <= probe < hi for lo, hi in got)
    assert leasing.active_at(probe, start, end, daily, zone) == inside
    # A daily window is in force at most its length in any day-long stretch... give or take an hour of clock change.
    if daily is not None and got:
        per_day = sum((hi - lo).total_seconds() for lo, hi in got) / max(
            1.0, (end - start).total_seconds() / 86_400
        )
        assert per_day <= daily.duration_minutes * 60 * 2 + 3600


@settings(max_examples=200, deadline=None)
@given(terms(), dailies, ZONES, terms())
def test_windows_within_a_period_are_the_windows_cut_to_it(
    term: tuple[dt.datetime, dt.datetime],
    daily: Daily | None,
    zone: str,
    period: tuple[dt.datetime, dt.datetime],
) -> None:
    whole = leasing.windows(*term, daily, zone)
    cut = leasing.windows(*term, daily, zone, within=period)
    assert cut == leasing.merge(leasing.clip(period, whole))


@settings(max_examples=200, deadline=None)
@given(terms(), ZONES)
def test_hours_tile_the_period(period: tuple[dt.datetime, dt.datetime], zone: str) -> None:
    got = leasing.hours(*period, zone)
    assert got[0][0] == period[0] and got[-1][1] == period[1]
    for (_, hi), (lo, _) in itertools.pairwise(got):
        assert hi == lo
    for lo, hi in got:
        assert dt.timedelta(0) < hi - lo <= dt.timedelta(hours=1)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(terms(), st.integers(1, 5)), max_size=6),
    st.lists(st.tuples(terms(), st.integers(1, 3)), max_size=6),
    ZONES,
)
def test_use_per_hour_adds_up_to_the_totals(
    leased: list[tuple[tuple[dt.datetime, dt.datetime], int]],
    used: list[tuple[tuple[dt.datetime, dt.datetime], int]],
    zone: str,
) -> None:
    period = (t(2020, 1, 1), t(2030, 1, 1))
    lo = min([i[0][0] for i in leased + used], default=period[0])
    hi = min(
        lo + dt.timedelta(days=3), max([i[0][1] for i in leased + used], default=lo + dt.timedelta(hours=1))
    )
    buckets = leasing.hours(lo, hi, zone)
    got = leasing.use_per_hour(buckets, leased, used)

    def total(items: list[tuple[tuple[dt.datetime, dt.datetime], int]]) -> float:
        return sum(s * max(0.0, (min(b, hi) - max(a, lo)).total_seconds()) for (a, b), s in items)

    # Per-bucket rounding down loses under a second per bucket and interval.
    assert 0 <= total(leased) - sum(h.leased_slot_s for h in got) <= len(buckets) * (1 + len(leased))
    assert 0 <= total(used) - sum(h.used_slot_s for h in got) <= len(buckets) * (1 + len(used))


def test_leasing_is_pure() -> None:
    code = (
        "import sys, broker.leasing\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('asyncio', 'asyncpg', 'grpc') or m.endswith('_pb2')]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""
