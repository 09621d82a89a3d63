"""broker.overload: refuse in proportion to how late the loop runs, and ask for a longer wait the later it is."""

from __future__ import annotations

from broker.overload import Admission, Policy


def _steady(admission: Admission, lag_ms: float, probes: int = 50) -> None:
    for _ in range(probes):
        admission.observe(lag_ms)


def test_a_loop_on_time_admits_everything() -> None:
    a = Admission(Policy(target_ms=20))
    _steady(a, 5)
    assert a.shed_share == 0 and all(a.admit(d / 100) for d in range(100))


def test_refusals_grow_with_the_overshoot_and_are_total_at_twice_the_target() -> None:
    a = Admission(Policy(target_ms=20))
    _steady(a, 30)
    assert 0.45 < a.shed_share < 0.55
    assert sum(not a.admit(d / 1000) for d in range(1000)) in range(450, 551)
    _steady(a, 40)
    assert a.shed_share > 0.99
    _steady(a, 500)
    assert a.shed_share == 1.0 and not a.admit(0.999)


def test_one_slow_callback_does_not_refuse_a_burst() -> None:
    a = Admission(Policy(target_ms=20, smoothing=5))
    _steady(a, 2)
    a.observe(60)  # one late probe
    assert a.shed_share < 0.5


def test_the_retry_hint_grows_with_the_overload_within_its_bounds() -> None:
    p = Policy(target_ms=20, retry_min_ms=100, retry_max_ms=5_000)
    calm, busy, swamped = Admission(p), Admission(p), Admission(p)
    _steady(calm, 0)
    _steady(busy, 30)
    _steady(swamped, 10_000)
    assert calm.retry_after_ms() == 100
    assert 100 < busy.retry_after_ms() < swamped.retry_after_ms() == 5_000


def test_negative_lateness_counts_as_none() -> None:
    a = Admission()
    _steady(a, -5)
    assert a.lag_ms == 0
