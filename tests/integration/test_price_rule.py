"""The price rule is written twice: in Python (broker.metering.Schedule.price_at: the ledger's prices) and in SQL
(function price_in_force, migration 0007: the price in force that placement, GetHost and the consoles show). This
property holds them to one rule: for random schedules (a base price, non-overlapping bands, some wrapping midnight,
any UTC offset) and random instants, band edges exactly and just either side of them included, both give the same
price. Each example's instants go to PostgreSQL in one query.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable, Iterator, Sequence

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker import metering as m

UTC = dt.UTC
MAX_BANDS = 6
# Either side of an edge: the edge itself, a microsecond (the finest both sides hold), a second, the minute's end.
NEAR_EDGE = tuple(
    dt.timedelta(microseconds=us) for us in (0, -1, 1, -1_000_000, 1_000_000, 59_999_999, 60_000_000)
)
# Far enough from datetime's ends that a UTC offset never leaves its range.
EARLIEST, LATEST = dt.datetime(1970, 1, 2, tzinfo=UTC), dt.datetime(2199, 12, 30, tzinfo=UTC)

PricesInSql = Callable[[m.Schedule, Sequence[dt.datetime]], list[int]]

_QUERY = """
SELECT price_in_force($1, $2::jsonb, $3, u.t) AS price
FROM unnest($4::timestamptz[]) WITH ORDINALITY AS u(t, i)
ORDER BY u.i
"""

prices = st.integers(0, m.MAX_PRICE_MICROS)


@st.composite
def schedules(draw: st.DrawFn) -> m.Schedule:
    """A schedule as the broker takes one (through parse_bands): up to MAX_BANDS bands between distinct edges of
    the day, in any order; shifted by one edge, the last band runs from the last edge over midnight to the first
    (written as ending at 1440 when that edge is midnight); now and then one band of the whole day."""
    offset = draw(
        st.one_of(
            st.sampled_from([0, 480, -300, 330, 345, m.MIN_UTC_OFFSET, m.MAX_UTC_OFFSET]),
            st.integers(m.MIN_UTC_OFFSET, m.MAX_UTC_OFFSET),
        )
    )
    if draw(st.integers(0, 19)) == 0:
        raw = [(0, m.MINUTES_PER_DAY, draw(prices))]
    else:
        edges = sorted(draw(st.sets(st.integers(0, m.MINUTES_PER_DAY - 1), max_size=2 * MAX_BANDS)))
        if len(edges) >= 2 and draw(st.booleans()):
            edges = edges[1:] + edges[:1]
        raw = []
        for start, end in zip(edges[::2], edges[1::2], strict=False):
            if end == 0 and draw(st.booleans()):
                end = m.MINUTES_PER_DAY
            raw.append((start, end, draw(prices)))
        raw = draw(st.permutations(raw))
    return m.Schedule(draw(prices), m.parse_bands(raw, offset), offset)


@st.composite
def instants(draw: st.DrawFn, schedule: m.Schedule) -> list[dt.datetime]:
    """Every band edge and local midnight on a few days, each exactly and just either side; and random instants."""
    zone = dt.timezone(dt.timedelta(minutes=schedule.utc_offset_minutes))
    edges = {0} | {b.start_minute for b in schedule.bands} | {b.end_minute for b in schedule.bands}
    days = draw(st.lists(st.dates(EARLIEST.date(), LATEST.date()), min_size=1, max_size=3))
    out = [
        dt.datetime.combine(day, dt.time(), zone) + dt.timedelta(minutes=edge) + near
        for day in days
        for edge in sorted(edges)
        for near in NEAR_EDGE
    ]
    out += draw(
        st.lists(
            st.datetimes(EARLIEST.replace(tzinfo=None), LATEST.replace(tzinfo=None), timezones=st.just(UTC)),
            max_size=30,
        )
    )
    return [t.astimezone(UTC) for t in out]


@pytest.fixture
def prices_in_sql(db_url: str) -> Iterator[PricesInSql]:
    """price_in_force of the migrated schema, asked for many instants at once on one connection."""
    with asyncio.Runner() as runner:
        conn: asyncpg.Connection = runner.run(asyncpg.connect(db_url))

        def ask(schedule: m.Schedule, at: Sequence[dt.datetime]) -> list[int]:
            rows = runner.run(
                conn.fetch(
                    _QUERY,
                    schedule.base_micros,
                    json.dumps(schedule.bands_list()),
                    schedule.utc_offset_minutes,
                    list(at),
                )
            )
            return [r["price"] for r in rows]

        try:
            yield ask
        finally:
            runner.run(conn.close())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_sql_and_python_give_the_same_price_at_every_instant(
    prices_in_sql: PricesInSql, data: st.DataObject
) -> None:
    schedule = data.draw(schedules(), label="schedule")
    at = data.draw(instants(schedule), label="instants")
    in_sql = prices_in_sql(schedule, at)
    in_python = [schedule.price_at(t) for t in at]
    differ = [
        f"{t.isoformat()}: SQL {s}, Python {p}"
        for t, s, p in zip(at, in_sql, in_python, strict=True)
        if s != p
    ]
    assert not differ, f"{schedule}:\n" + "\n".join(differ[:10])
