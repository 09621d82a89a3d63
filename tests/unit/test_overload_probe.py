"""broker.overload.LoopProbe: only the broker's own lateness counts, not the time its loop waited for a core.

Fake clocks throughout: a probe's wall time, its thread's CPU time and its thread's time runnable without a core
(the kernel's run_delay) are set by the test, so no timing is asserted."""

from __future__ import annotations

import dataclasses

from broker.overload import PROBE_S, Admission, LoopProbe, Policy, thread_waited_s


@dataclasses.dataclass
class Clocks:
    wall: float = 100.0
    cpu: float = 5.0
    waited: float = 1.0


def _probe(clocks: Clocks, admission: Admission) -> LoopProbe:
    return LoopProbe(admission, clock=lambda: clocks.wall, cpu=lambda: clocks.cpu, waited=lambda: clocks.waited)


def _probes(
    probe: LoopProbe, clocks: Clocks, *, late_s: float, without_core_s: float, worked_s: float, n: int = 50
) -> None:
    """`n` probes, each woken `late_s` after its PROBE_S, `without_core_s` of that interval runnable without a core
    and `worked_s` of it on the CPU."""
    for _ in range(n):
        since = probe.mark()
        clocks.wall += PROBE_S + late_s
        clocks.waited += without_core_s
        clocks.cpu += worked_s
        probe.observe(since, PROBE_S)


def test_a_loop_late_only_for_want_of_a_core_sheds_nobody() -> None:
    # The machine, not the broker: every probe 80 ms late, all of it spent runnable without a core.
    clocks, admission = Clocks(), Admission(Policy(target_ms=20))
    _probes(_probe(clocks, admission), clocks, late_s=0.080, without_core_s=0.080, worked_s=0.001)
    assert admission.lag_ms < 1.0 and admission.shed_share == 0.0
    assert admission.waited_ms > 70.0  # recorded, not counted
    assert not admission.pressed
    # A lone tenant (its share of the recent calls 1, the heaviest's 1) goes in, whatever the draw.
    assert all(admission.admit_tenant(d / 100, 1.0, 1.0) for d in range(100))
    assert all(admission.admit(d / 100) for d in range(100))


def test_the_same_lateness_with_the_loop_on_its_core_is_the_brokers_own_and_sheds() -> None:
    # The broker: 80 ms late with a core all along (its callbacks queued behind each other).
    clocks, admission = Clocks(), Admission(Policy(target_ms=20))
    _probes(_probe(clocks, admission), clocks, late_s=0.080, without_core_s=0.0, worked_s=0.090)
    assert admission.lag_ms > 70.0 and admission.shed_share == 1.0
    assert not any(admission.admit(d / 100) for d in range(100))


def test_only_the_part_of_the_lateness_without_a_core_is_taken_off() -> None:
    clocks, admission = Clocks(), Admission(Policy(target_ms=20))
    _probes(_probe(clocks, admission), clocks, late_s=0.060, without_core_s=0.030, worked_s=0.040)
    assert 29.0 < admission.lag_ms < 31.0
    assert 0.45 < admission.shed_share < 0.55


def test_a_loop_starved_of_its_core_is_not_busy_though_it_never_rests_while_it_has_one() -> None:
    # Off its core 40 ms of every 50, working through what arrived meanwhile the other 10: its own work fills a fifth
    # of the time, not all of it, and nobody is shed for busyness, not even a tenant over its share.
    clocks, admission = Clocks(), Admission(Policy(target_ms=20, busy_target=0.8))
    _probes(_probe(clocks, admission), clocks, late_s=0.040, without_core_s=0.040, worked_s=0.010, n=200)
    assert admission.busy < 0.25 and admission.busy_share == 0.0 and not admission.pressed
    assert admission.admit_tenant(0.0, 10.0, 10.0)


def test_a_loop_that_works_all_the_time_sheds_only_the_tenants_over_their_share() -> None:
    clocks, admission = Clocks(), Admission(Policy(target_ms=20, busy_target=0.8))
    _probes(_probe(clocks, admission), clocks, late_s=0.001, without_core_s=0.0, worked_s=PROBE_S + 0.001, n=200)
    assert admission.busy > 0.95 and admission.busy_share > 0.75 and admission.shed_share == 0.0
    assert not admission.admit_tenant(0.5, 10.0, 10.0)
    assert all(admission.admit_tenant(d / 100, 1.0, 10.0) for d in range(100))
    assert all(admission.admit_tenant(d / 100, 1.0, 1.0) for d in range(100))


def test_a_wait_longer_than_the_interval_or_a_clock_going_back_is_bounded() -> None:
    clocks, admission = Clocks(), Admission(Policy(target_ms=20))
    probe = _probe(clocks, admission)
    since = probe.mark()
    clocks.wall += PROBE_S
    clocks.waited += 5.0  # more than the interval: counted as the whole of it
    probe.observe(since, PROBE_S)
    assert admission.lag_ms == 0.0
    since = probe.mark()
    clocks.waited -= 10.0  # a counter that went back: nothing taken off
    clocks.wall += PROBE_S + 0.050
    clocks.cpu += PROBE_S + 0.050
    probe.observe(since, PROBE_S)
    assert admission.lag_ms > 10.0


def test_the_kernels_count_of_time_without_a_core_is_read_for_this_thread() -> None:
    first = thread_waited_s()
    sum(range(100_000))
    assert first >= 0.0 and thread_waited_s() >= first
