"""broker.patron_time: time left, warnings once each, re-armed by added time, the time up, when to look again."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker import patron_time as pt

CFG = pt.PatronTimeConfig(warnings_s=(300.0, 60.0), grace_s=30.0)


def test_plenty_left_no_warning_and_wakes_at_the_first_threshold() -> None:
    r = pt.read(400.0, CFG)
    assert (r.time_left_s, r.warning_s, r.time_up, r.announced) == (400, None, False, frozenset())
    assert r.next_due_s == pytest.approx(100.0)


def test_each_warning_once_then_time_up_once() -> None:
    r = pt.read(299.5, CFG)
    assert r.warning_s == 300.0 and r.time_left_s == 300 and r.next_due_s == pytest.approx(239.5)
    r = pt.read(200.0, CFG, r.announced)
    assert r.warning_s is None
    r = pt.read(59.0, CFG, r.announced)
    assert r.warning_s == 60.0 and r.next_due_s == pytest.approx(59.0)
    r = pt.read(-1.0, CFG, r.announced)
    assert r.time_up and r.announce_time_up and r.warning_s is None
    assert r.time_left_s == 0 and r.grace_left_s == 29 and r.next_due_s == pytest.approx(29.0)
    r = pt.read(-2.0, CFG, r.announced)
    assert r.time_up and not r.announce_time_up
    r = pt.read(-31.0, CFG, r.announced)
    assert r.grace_left_s == 0 and r.next_due_s is None


def test_thresholds_crossed_together_give_the_most_urgent_once() -> None:
    r = pt.read(45.0, CFG)
    assert r.warning_s == 60.0 and r.announced == frozenset({300.0, 60.0})
    assert pt.read(44.0, CFG, r.announced).warning_s is None


def test_added_time_rearms_the_warnings_it_lifts_above() -> None:
    r = pt.read(-5.0, CFG, frozenset({300.0, 60.0}))
    assert r.announce_time_up
    r = pt.read(120.0, CFG, r.announced)  # the venue added time during the grace
    assert not r.time_up and r.warning_s is None and r.announced == frozenset({300.0})
    r = pt.read(60.0, CFG, r.announced)
    assert r.warning_s == 60.0


@given(st.floats(-100, 1000), st.sets(st.sampled_from([300.0, 60.0, pt.TIME_UP])))
def test_next_due_is_ahead_and_nothing_is_announced_twice(left: float, announced: set[float]) -> None:
    r = pt.read(left, CFG, frozenset(announced))
    assert r.next_due_s is None or r.next_due_s > 0
    if r.warning_s is not None:
        assert r.warning_s not in {t for t in announced if left <= t}
    again = pt.read(left, CFG, r.announced)
    assert again.warning_s is None and not again.announce_time_up


def test_texts() -> None:
    assert pt.warning_text(300) == "5 minutes left"
    assert pt.warning_text(60) == "1 minute left"
    assert pt.warning_text(2) == "2 seconds left"


def test_bad_config_refused() -> None:
    with pytest.raises(ValueError):
        pt.PatronTimeConfig(warnings_s=(0.0,))
    with pytest.raises(ValueError):
        pt.PatronTimeConfig(grace_s=-1)


def test_pure() -> None:
    code = (
        "import sys, broker.patron_time; "
        "bad = [m for m in ('asyncio', 'asyncpg', 'grpc') if m in sys.modules]; "
        "assert not bad and not any(m.endswith('_pb2') for m in sys.modules), bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

