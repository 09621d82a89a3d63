"""broker.metering: prices in force at band edges, band splitting, SLA minutes, and statements that add up to the
ledger over random session histories (Hypothesis)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from fractions import Fraction

import pytest
from cloudseat.errors import InvalidArgument
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker import metering as m

UTC = dt.UTC
CST = 480  # China Standard Time, UTC+8
PEAK, BASE = 7_200_000, 3_600_000  # micros per slot-hour: 2000 and 1000 micros a second
# Peak 18:00-02:00 local (wraps midnight), a cheap morning 06:00-09:30.
SCHEDULE = m.Schedule(BASE, (m.Band(1080, 120, PEAK), m.Band(360, 570, 1_800_000)), CST)


def local(h: int, mi: int, s: int = 0, day: int = 1) -> dt.datetime:
    """A time of day in UTC+8, as the UTC instant."""
    return dt.datetime(2024, 5, day, h, mi, s, tzinfo=dt.timezone(dt.timedelta(minutes=CST))).astimezone(UTC)


def session(
    placed: dt.datetime,
    ended: dt.datetime | None,
    *,
    slots: int = 1,
    schedule: m.Schedule = SCHEDULE,
    **kw: object,
) -> m.Metered:
    fields: dict[str, object] = dict(
        session_id="s1", venue_id="cafe", provider_id="prov", host_id="h1", site_id="site", gpu_class="rtx",
        slots=slots, lease_id=None, lease_slots=0, placed_at=placed, ended_at=ended, usage_until=None, sla_until=None,
        schedule=schedule, latency_cap_ms=30, tier_fps=60,
    )  # fmt: skip
    fields.update(kw)
    return m.Metered(**fields)  # type: ignore[arg-type]


def test_price_in_force_at_the_band_edges() -> None:
    assert SCHEDULE.price_at(local(17, 59, 59)) == BASE
    assert SCHEDULE.price_at(local(18, 0, 0)) == PEAK
    assert SCHEDULE.price_at(local(23, 59, 59)) == PEAK
    assert SCHEDULE.price_at(local(0, 0, 0, day=2)) == PEAK  # the band wraps midnight
    assert SCHEDULE.price_at(local(1, 59, 59, day=2)) == PEAK
    assert SCHEDULE.price_at(local(2, 0, 0, day=2)) == BASE
    assert SCHEDULE.price_at(local(6, 0)) == 1_800_000
    assert SCHEDULE.price_at(local(9, 30)) == BASE
    assert m.Schedule(BASE).price_at(local(18, 0)) == BASE


def test_a_session_across_a_band_edge_is_billed_at_both_prices_to_the_second() -> None:
    s = session(local(17, 59, 30), local(18, 0, 45), slots=2)
    entries, until = m.usage(s, local(19, 0))
    assert until == s.ended_at
    assert [(e.start, e.end, e.seconds, e.price_micros) for e in entries] == [
        (local(17, 59, 30), local(18, 0), 30, BASE),
        (local(18, 0), local(18, 0, 45), 45, PEAK),
    ]
    # 2 slots: 30 s at 1000 micros/s, 45 s at 2000 micros/s.
    assert [e.amount_micros for e in entries] == [60_000, 180_000]


def test_a_running_session_is_metered_to_its_last_boundary_and_a_price_change_closes_at_the_second() -> None:
    s = session(local(16, 20, 10), None)
    entries, until = m.usage(s, local(17, 40))
    assert until == local(17, 0)  # 17:00 local is a whole UTC hour
    assert [(e.start, e.end) for e in entries] == [(local(16, 20, 10), local(17, 0))]
    s = dataclasses.replace(s, usage_until=until)
    assert m.usage(s, local(17, 59, 59)) == ([], until)
    forced, until = m.usage(s, local(17, 40, 5) + dt.timedelta(microseconds=900), force=True)
    assert [(e.start, e.end, e.seconds) for e in forced] == [(local(17, 0), local(17, 40, 5), 2405)]


def test_next_boundary_is_the_next_hour_or_band_edge() -> None:
    assert m.next_boundary(local(17, 20), SCHEDULE) == local(18, 0)
    assert m.next_boundary(local(9, 5), SCHEDULE) == local(9, 30)
    half = m.Schedule(BASE, (m.Band(30, 90, PEAK),), 0)
    at = dt.datetime(2024, 5, 1, 0, 10, tzinfo=UTC)
    assert m.next_boundary(at, half) == at.replace(minute=30)
    assert m.next_boundary(at.replace(minute=30), half) == at.replace(hour=1, minute=0)


@pytest.mark.parametrize(
    ("bands", "offset", "field"),
    [
        ([(0, 60, 1), (30, 90, 1)], 0, "bands[1]"),
        ([(1440, 10, 1)], 0, "bands[0].start_minute"),
        ([(10, 1441, 1)], 0, "bands[0].end_minute"),
        ([(10, 10, 1)], 0, "bands[0].end_minute"),
        ([(0, 1440, 1), (5, 6, 1)], 0, "bands[1]"),
        ([(1380, 60, 1), (30, 40, 1)], 0, "bands[1]"),  # overlaps the wrapped part
        ([(10, 20, -1)], 0, "bands[0].price_micros_per_slot_hour"),
        ([(10, 20, 10**12 + 1)], 0, "bands[0].price_micros_per_slot_hour"),
        ([], 841, "utc_offset_minutes"),
        ([(i, i + 1, 1) for i in range(25)], 0, "bands"),
    ],
)
def test_bad_bands_name_the_field(bands: list[tuple[int, int, int]], offset: int, field: str) -> None:
    with pytest.raises(InvalidArgument) as bad:
        m.parse_bands(bands, offset)
    assert bad.value.field == field


def test_bands_parse_and_wrap() -> None:
    assert m.parse_bands([(1080, 120, 5), (120, 1080, 1)], CST) == (
        m.Band(1080, 120, 5),
        m.Band(120, 1080, 1),
    )
    assert m.parse_bands([(0, 1440, 5)], 0) == (m.Band(0, 0, 5),)
    assert m.Band(0, 0, 5).covers(0) and m.Band(0, 0, 5).covers(1439)


def test_sla_minutes_are_flagged_from_the_streams_means() -> None:
    assert not m.minute_flagged(None, 30, 60, 90)
    assert not m.minute_flagged(m.MinuteStats(rtt_ms=30, fps=54), 30, 60, 90)
    assert m.minute_flagged(m.MinuteStats(rtt_ms=30.5, fps=60), 30, 60, 90)
    assert m.minute_flagged(m.MinuteStats(rtt_ms=5, fps=53.9), 30, 60, 90)


def test_a_minute_is_flagged_by_the_agents_means_or_the_seats() -> None:
    fine, cap, fps, floor = dict(rtt_ms=5.0, fps=60.0), 30, 60, 90
    assert not m.minute_flagged(m.MinuteStats(**fine, seat_rtt_ms=30, seat_fps=54), cap, fps, floor)
    # The agent saw a fine stream; the patron did not (fps, or the network round trip): flagged.
    assert m.minute_flagged(m.MinuteStats(**fine, seat_fps=20), cap, fps, floor)
    assert m.minute_flagged(m.MinuteStats(**fine, seat_rtt_ms=31, seat_fps=60), cap, fps, floor)
    # The seat saw a fine stream; the agent did not: flagged all the same.
    assert m.minute_flagged(m.MinuteStats(rtt_ms=80, fps=60, seat_rtt_ms=5, seat_fps=60), cap, fps, floor)
    # Only one side reported: judged on that side alone (a seat that knew no RTT is judged on its fps).
    assert m.minute_flagged(m.MinuteStats(None, None, seat_fps=53.9), cap, fps, floor)
    assert not m.minute_flagged(m.MinuteStats(None, None, seat_rtt_ms=None, seat_fps=60), cap, fps, floor)
    assert not m.minute_flagged(m.MinuteStats(None, None), cap, fps, floor)


def test_flagged_minutes_are_credited_at_the_configured_rate() -> None:
    s = session(local(17, 58, 30), local(18, 1, 10))
    bad = {local(17, 58): m.MinuteStats(50, 60), local(18, 0): m.MinuteStats(5, 20)}
    policy = m.Policy(sla_settle_s=15, credit_pct=50)
    # The end not settled yet: judged up to the last boundary settled (the band edge at 18:00).
    early, until = m.sla_credits(s, bad, local(18, 1, 20), policy)
    assert until == local(18, 0) and [c.end for c in early] == [local(17, 59)]
    credits, until = m.sla_credits(s, bad, local(18, 2), policy)
    assert until == s.ended_at
    assert [(c.kind, c.start, c.end, c.seconds, c.amount_micros) for c in credits] == [
        (m.CREDIT, local(17, 58, 30), local(17, 59), 30, -15_000),  # half of 30 s at 1000 micros/s
        (m.CREDIT, local(18, 0), local(18, 1), 60, -60_000),  # half of 60 s at 2000 micros/s
    ]


def test_leased_sessions_are_metered_at_no_charge() -> None:
    s = session(local(17, 0), local(17, 10), lease_id="L1", lease_slots=1)
    entries, _ = m.usage(s, local(18, 0))
    assert [(e.basis, e.lease_id, e.price_micros, e.amount_micros, e.seconds) for e in entries] == [
        (m.LEASE, "L1", 0, 0, 600)
    ]


def test_a_partly_leased_session_is_billed_on_demand_for_the_slots_the_lease_does_not_pay() -> None:
    # 3 slots, 1 of them leased, across the 18:00 band edge.
    s = session(local(17, 59, 30), local(18, 0, 45), slots=3, lease_id="L1", lease_slots=1)
    entries, _ = m.usage(s, local(19, 0))
    assert sorted(
        (e.start, e.basis, e.lease_id, e.slots, e.price_micros, e.amount_micros) for e in entries
    ) == [
        (local(17, 59, 30), m.LEASE, "L1", 1, 0, 0),
        (local(17, 59, 30), m.ON_DEMAND, None, 2, BASE, 60_000),  # 2 slots, 30 s at 1000 micros/s
        (local(18, 0), m.LEASE, "L1", 1, 0, 0),
        (local(18, 0), m.ON_DEMAND, None, 2, PEAK, 180_000),  # 2 slots, 45 s at 2000 micros/s
    ]
    # A flagged minute is credited on each part at its own price: nothing on the leased slot.
    bad = {local(18, 0): m.MinuteStats(50, 60)}
    credits, _ = m.sla_credits(s, bad, local(19, 0), m.Policy(sla_settle_s=15, credit_pct=100))
    assert sorted((c.basis, c.slots, c.seconds, c.amount_micros) for c in credits) == [
        (m.LEASE, 1, 45, 0),
        (m.ON_DEMAND, 2, 45, -180_000),
    ]
    # A lease's slots are 1..slots, and only with a lease (the database's session_lease_slots).
    for lease_id, lease_slots in (("L1", 0), ("L1", 4), (None, 1)):
        with pytest.raises(ValueError):
            session(local(17, 0), None, slots=3, lease_id=lease_id, lease_slots=lease_slots)


# -- property: statements equal ledger sums over random session histories ----------------------------------------

T0 = dt.datetime(2024, 5, 1, 0, 0, tzinfo=UTC)


@st.composite
def schedules(draw: st.DrawFn) -> m.Schedule:
    edges = sorted(draw(st.sets(st.integers(0, 1439), max_size=6)))
    bands = []
    for a, b in zip(edges[::2], edges[1::2], strict=False):
        bands.append(m.Band(a, b, draw(st.integers(0, 10**9))))
    if len(edges) % 2 == 1 and draw(st.booleans()) and (not bands or edges[-1] > bands[-1].end_minute):
        first = bands[0].start_minute if bands else edges[-1]
        if first != edges[-1]:
            bands.append(m.Band(edges[-1], first, draw(st.integers(0, 10**9))))  # wraps midnight
    offset = draw(st.sampled_from([0, 480, -300, 330, 840, -720]))
    m.parse_bands(
        [(b.start_minute, b.end_minute, b.price_micros) for b in bands], offset
    )  # valid by construction
    return m.Schedule(draw(st.integers(0, 10**9)), tuple(bands), offset)


@st.composite
def histories(
    draw: st.DrawFn,
) -> tuple[list[m.Metered], list[dt.datetime], dict[str, dict[dt.datetime, m.MinuteStats]]]:
    schedule = draw(schedules())
    sessions = []
    stats: dict[str, dict[dt.datetime, m.MinuteStats]] = {}
    for i in range(draw(st.integers(1, 6))):
        placed = T0 + dt.timedelta(seconds=draw(st.integers(0, 2 * 86_400)))
        length = draw(st.integers(0, 30 * 3600))
        sid = f"s{i}"
        slots = draw(st.integers(1, 8))
        lease_id = draw(st.sampled_from([None, None, "L1"]))
        # On a lease, wholly or partly (the lease pays 1..slots of its slots).
        lease_slots = 0 if lease_id is None else draw(st.integers(1, slots))
        sessions.append(
            session(
                placed, placed + dt.timedelta(seconds=length), slots=slots, schedule=schedule,
                session_id=sid, venue_id=draw(st.sampled_from(["cafe", "hotel"])),
                provider_id=draw(st.sampled_from(["p", "q"])), lease_id=lease_id, lease_slots=lease_slots,
            )
        )  # fmt: skip
        minutes = length // 60 + 1
        for k in draw(st.sets(st.integers(0, minutes), max_size=5)):
            minute = m.floor_minute(placed) + dt.timedelta(minutes=k)
            stats.setdefault(sid, {})[minute] = m.MinuteStats(draw(st.sampled_from([5.0, 80.0])), 60.0)
    runs = sorted(
        T0 + dt.timedelta(seconds=s) for s in draw(st.lists(st.integers(0, 4 * 86_400), max_size=12))
    )
    return sessions, runs, stats


def _meter(
    sessions: list[m.Metered], runs: list[dt.datetime], stats: dict[str, dict[dt.datetime, m.MinuteStats]]
) -> list[m.Entry]:
    """The duty over a history: every session metered at each run, then once long after everything ended."""
    policy = m.Policy(sla_settle_s=15, credit_pct=100)
    ledger: list[m.Entry] = []
    for s in sessions:
        for now in [*runs, T0 + dt.timedelta(days=30)]:
            used, usage_until = m.usage(s, now)
            credits, sla_until = m.sla_credits(s, stats.get(s.session_id, {}), now, policy)
            ledger += used + credits
            s = dataclasses.replace(s, usage_until=usage_until, sla_until=sla_until)
        assert m.done(s, s.usage_until or s.placed_at, s.sla_until or s.placed_at)
    return ledger


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories(), st.lists(st.integers(0, 4 * 86_400), max_size=5))
def test_statements_equal_ledger_sums_over_random_session_histories(
    history: tuple[list[m.Metered], list[dt.datetime], dict[str, dict[dt.datetime, m.MinuteStats]]],
    cuts: list[int],
) -> None:
    sessions, runs, stats = history
    ledger = _meter(sessions, runs, stats)
    # The ledger does not depend on when the duty ran.
    assert sorted(ledger, key=repr) == sorted(_meter(sessions, [], stats), key=repr)
    for s in sessions:
        assert s.ended_at is not None
        held = int((s.ended_at - s.placed_at).total_seconds())
        mine = [e for e in ledger if e.session_id == s.session_id]
        # The leased slots are billed as lease at no charge, the rest on demand at the price in force: each part
        # with its own slots, the two together the session's.
        part_slots = {m.LEASE: s.lease_slots, m.ON_DEMAND: s.slots - s.lease_slots}
        lease_of = {m.LEASE: s.lease_id, m.ON_DEMAND: None}
        assert {(e.basis, e.lease_id, e.slots) for e in mine} == (
            {(b, lease_of[b], n) for b, n in part_slots.items() if n} if held else set()
        )
        assert all(e.price_micros == 0 for e in mine if e.basis == m.LEASE)
        assert all(e.price_micros == s.schedule.price_at(e.start) for e in mine if e.basis == m.ON_DEMAND)
        assert sum(e.seconds * e.slots for e in mine if e.kind == m.USAGE) == held * s.slots
        for basis in (m.LEASE, m.ON_DEMAND):
            used = sorted((e for e in mine if e.kind == m.USAGE and e.basis == basis), key=lambda e: e.start)
            # Usage tiles each part's slot time exactly: no second twice, none missed; no entry crosses an hour.
            assert [e.start for e in used[1:]] == [e.end for e in used[:-1]]
            assert sum(e.seconds for e in used) == (held if part_slots[basis] else 0)
            assert all(e.end <= m.next_boundary(e.start, s.schedule) for e in used)
            # Each entry rounds down by under a micro.
            exact = sum(Fraction(e.price_micros * e.slots * e.seconds, 3600) for e in used)
            assert 0 <= exact - sum(e.amount_micros for e in used) < max(1, len(used))
            credits = [e for e in mine if e.kind == m.CREDIT and e.basis == basis]
            assert all(e.amount_micros <= 0 for e in credits)
            assert sum(-e.amount_micros for e in credits) <= sum(e.amount_micros for e in used) + len(credits)
    start, end = T0 - dt.timedelta(days=1), T0 + dt.timedelta(days=40)
    whole = m.statement(ledger, start, end)
    assert whole.total_micros == sum(e.amount_micros for e in ledger)
    assert whole.entries == len(ledger)
    assert whole.seconds == sum(e.seconds for e in ledger if e.kind == m.USAGE)
    # Periods that partition the time add up to the whole; so do the venues, and the providers.
    edges = [start, *sorted(T0 + dt.timedelta(seconds=c) for c in cuts), end]
    assert sum(m.statement(ledger, a, b).total_micros for a, b in itertools.pairwise(edges)) == (
        whole.total_micros
    )
    assert sum(m.statement(ledger, start, end, venue_id=v).total_micros for v in ("cafe", "hotel")) == (
        whole.total_micros
    )
    by_provider = [m.statement(ledger, start, end, provider_id=p) for p in ("p", "q")]
    assert sum(s.usage_micros for s in by_provider) == whole.usage_micros
    assert sum(s.credit_micros for s in by_provider) == whole.credit_micros
    # Lines are sums of the entries.
    for line in whole.lines:
        mine = [
            e for e in ledger if (e.site_id, e.gpu_class, e.basis, e.price_micros)
            == (line.site_id, line.gpu_class, line.basis, line.price_micros)
        ]  # fmt: skip
        assert line.total_micros == sum(e.amount_micros for e in mine)
        assert line.slot_seconds == sum(e.seconds * e.slots for e in mine if e.kind == m.USAGE)
        assert line.credited_seconds == sum(e.seconds for e in mine if e.kind == m.CREDIT)


# -- currencies and the venue's day (issue 17) ---------------------------------------------------------------------


def test_every_entry_carries_its_prices_currency_and_statements_total_each_currency_apart() -> None:
    usd = session(local(20, 0), local(20, 0, 36), currency="USD")
    cny = session(local(20, 0), local(20, 0, 18), session_id="s2", site_id="other")
    entries = m.usage(usd, local(21, 0))[0] + m.usage(cny, local(21, 0))[0]
    assert {e.currency for e in entries} == {"USD", "CNY"}
    st = m.statement(entries, local(0, 0), local(0, 0, day=2))
    assert [(line.site_id, line.currency) for line in st.lines] == [("other", "CNY"), ("site", "USD")]
    assert st.currencies == ("CNY", "USD")
    # 36 s and 18 s at 2000 micros a second (peak): never added together across currencies.
    assert [(t.currency, t.usage_micros, t.total_micros) for t in st.totals] == [
        ("CNY", 36_000, 36_000),
        ("USD", 72_000, 72_000),
    ]
    assert m.statement([], local(0, 0), local(0, 0, day=2)).totals == ()


def test_a_price_without_a_currency_is_in_cny() -> None:
    (entry,) = m.usage(session(local(20, 0), local(20, 1)), local(21, 0))[0]
    assert entry.currency == m.DEFAULT_CURRENCY == "CNY"


@pytest.mark.parametrize(
    ("zone", "day", "start", "hours"),
    [
        ("UTC", dt.date(2026, 12, 4), dt.datetime(2026, 12, 4, tzinfo=UTC), 24),
        # Midnight in Shanghai is 16:00 UTC the day before.
        ("Asia/Shanghai", dt.date(2026, 12, 4), dt.datetime(2026, 12, 3, 16, tzinfo=UTC), 24),
        # The clocks go forward (23 h) and back (25 h) in Berlin.
        ("Europe/Berlin", dt.date(2026, 3, 29), dt.datetime(2026, 3, 28, 23, tzinfo=UTC), 23),
        ("Europe/Berlin", dt.date(2026, 10, 25), dt.datetime(2026, 10, 24, 22, tzinfo=UTC), 25),
        # Sao Paulo once sprang forward at midnight: that day began at 01:00 local, when the gap ended.
        ("America/Sao_Paulo", dt.date(2018, 11, 4), dt.datetime(2018, 11, 4, 3, tzinfo=UTC), 23),
    ],
)
def test_a_venues_day_is_its_own_time_zones(zone: str, day: dt.date, start: dt.datetime, hours: int) -> None:
    lo, hi = m.local_day(day, zone)
    assert lo == start and hi - lo == dt.timedelta(hours=hours)
    assert m.local_date(lo, zone) == day and m.local_date(hi - dt.timedelta(seconds=1), zone) == day
    assert m.local_date(hi, zone) == day + dt.timedelta(days=1)
    # On the venue's wall clock the day starts at midnight (at 01:00 where midnight fell in a gap).
    wall = m.local_time(lo, zone)
    assert wall.date() == day and (wall.hour, wall.minute) == ((1, 0) if zone == "America/Sao_Paulo" else (0, 0))
