"""Properties of every solver over random small instances (Hypothesis, real OR-Tools).

Hard constraints are checked by `validate_solution` and, independently, by the plain loops below; the pending
reasons by a reference implementation written from the enum's description.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.placement import (
    PendingReason,
    Problem,
    Solution,
    engine,
    evaluate,
    exact,
    flow,
    greedy,
    reserve_leases,
    validate_solution,
)
from tests.unit.test_placement_cases import problems

# CP-SAT runs in most examples; keep the counts moderate so the module stays well under a minute on 2 cores.
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_hard_constraints(problem: Problem, solution: Solution) -> None:
    """The hard constraints, from the problem's objects alone."""
    assert validate_solution(problem, solution) == []
    hosts = {h.id: h for h in problem.hosts}
    requests = {r.id: r for r in problem.requests}
    assert set(solution.assignments) | set(solution.unplaced) == set(requests)
    assert not set(solution.assignments) & set(solution.unplaced)
    used: Counter[str] = Counter()
    for rid, hid in solution.assignments.items():
        r, h = requests[rid], hosts[hid]
        assert h.online and not h.drained
        assert problem.latency[(r.venue_id, h.site_id)] <= r.target_ms <= r.cap_ms
        used[hid] += r.slots  # the whole session on this one host
    for hid, slots in used.items():
        assert slots <= hosts[hid].free_slots
    # leased slots only to the lessee, and never more than reserved on a host
    reserved = reserve_leases(problem)
    leases = {lease.id: lease for lease in problem.leases}
    on_lease: Counter[tuple[str, str]] = Counter()
    for rid, lid in solution.lease_use.items():
        assert leases[lid].venue_id == requests[rid].venue_id
        on_lease[(lid, solution.assignments[rid])] += solution.lease_slots[rid]
    for (lid, hid), slots in on_lease.items():
        assert slots <= reserved[lid][hid]
    # other venues only on slots nobody reserved
    for hid in used:
        others = sum(
            r.slots - solution.lease_slots.get(rid, 0)
            for rid, r in requests.items()
            if solution.assignments.get(rid) == hid
        )
        held = sum(by_host.get(hid, 0) for by_host in reserved.values())
        assert others <= hosts[hid].free_slots - held
    assert solution.cost_micros == evaluate(problem, solution)


def _check_lease_used_first(problem: Problem, solution: Solution) -> None:
    """A lessee paying on-demand on a host leaves none of its own reserved slots there unused."""
    reserved = reserve_leases(problem)
    venue_of = {lease.id: lease.venue_id for lease in problem.leases}
    left: Counter[tuple[str, str]] = Counter()  # (venue, host) -> reserved slots not used
    for lid, by_host in reserved.items():
        for hid, slots in by_host.items():
            left[(venue_of[lid], hid)] += slots
    for rid, lid in solution.lease_use.items():
        left[(venue_of[lid], solution.assignments[rid])] -= solution.lease_slots[rid]
    for r in problem.requests:
        hid = solution.assignments.get(r.id)
        if hid is not None and solution.lease_slots.get(r.id, 0) < r.slots:
            assert left[(r.venue_id, hid)] == 0, f"{r.id} paid on {hid} with its lease's slots unused there"


def _expected_reason(problem: Problem, rid: str) -> PendingReason:
    """Reference for PendingReason, written from the enum's description with plain loops."""
    r = next(r for r in problem.requests if r.id == rid)
    reserved = reserve_leases(problem)
    venue_of = {lease.id: lease.venue_id for lease in problem.leases}
    held: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for lid, by_host in reserved.items():
        for hid, slots in by_host.items():
            held[hid] += slots
            if venue_of[lid] == r.venue_id:
                own[hid] += slots
    # Every measured site counts, also one with no hosts (then it is a capacity problem, not one of reach).
    sites_within_cap = {
        site for (venue, site), ms in problem.latency.items() if venue == r.venue_id and ms <= r.cap_ms
    }
    if not sites_within_cap:
        return PendingReason.NO_SITE_WITHIN_CAP
    within = [h for h in problem.hosts if h.site_id in sites_within_cap]
    usable_room = [
        h for h in within if h.online and not h.drained and h.free_slots - held[h.id] + own[h.id] >= r.slots
    ]
    if not usable_room:
        if any(h.free_slots >= r.slots for h in within if not (h.online and not h.drained)):
            return PendingReason.CANDIDATES_DRAINED
        return PendingReason.NO_CAPACITY_WITHIN_CAP
    if all(problem.latency[(r.venue_id, h.site_id)] > r.target_ms for h in usable_room):
        return PendingReason.WAITING_FOR_LOOSER_CAP
    return PendingReason.QUEUED


def _check_reasons(problem: Problem, solution: Solution) -> None:
    for rid, reason in solution.unplaced.items():
        assert reason is _expected_reason(problem, rid), rid


@PROPERTY
@given(problems())
def test_single_slot_solvers_are_valid_and_the_flow_is_optimal(problem: Problem) -> None:
    by_flow = flow.solve(problem)
    by_exact = exact.solve(problem)
    by_greedy = greedy.solve(problem)
    by_engine = engine.solve(problem)
    for solution in (by_flow, by_exact, by_greedy, by_engine):
        _check_hard_constraints(problem, solution)
        _check_reasons(problem, solution)
    for solution in (by_flow, by_exact, by_engine):
        _check_lease_used_first(problem, solution)
    assert by_exact.proven_optimal
    assert by_flow.cost_micros == by_exact.cost_micros
    assert by_engine.cost_micros == by_exact.cost_micros
    assert by_engine.cost_micros <= by_greedy.cost_micros
    # placing is always preferred: nobody the optimum could seat stays pending
    assert len(by_flow.unplaced) == len(by_exact.unplaced)


@PROPERTY
@given(problems(multi=True))
def test_multi_slot_batches(problem: Problem) -> None:
    by_greedy = greedy.solve(problem)
    by_engine = engine.solve(problem)
    by_exact = exact.solve(problem)
    for solution in (by_greedy, by_engine, by_exact):
        _check_hard_constraints(problem, solution)
        _check_reasons(problem, solution)
    _check_lease_used_first(problem, by_greedy)
    assert by_engine.cost_micros <= by_greedy.cost_micros
    assert by_exact.proven_optimal
    assert by_engine.cost_micros >= by_exact.cost_micros
    if by_engine.proven_optimal:
        assert by_engine.cost_micros == by_exact.cost_micros
    # the lower bound the engine's gap is measured against is one
    bound = engine.lower_bound(problem)
    assert bound.placement_micros + bound.pending * problem.params.stay_pending_cost_micros <= by_exact.cost_micros
    assert bound.pending <= len(by_exact.unplaced)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(multi=True, max_requests=10, max_hosts=8))
def test_engine_split_path_for_big_batches(problem: Problem) -> None:
    """The path big multi-slot batches take (CP-SAT for multi-slot, flow for the rest) stays valid, and its
    optimality claim is sound."""
    split = engine.solve(problem, exact_max_requests=0)
    _check_hard_constraints(problem, split)
    _check_reasons(problem, split)
    if split.proven_optimal:
        assert split.cost_micros == exact.solve(problem).cost_micros


@PROPERTY
@given(problems(multi=True))
def test_filling_patterns_find_the_same_optimum_as_a_boolean_per_host(problem: Problem) -> None:
    """k-slot sessions on hosts without a lease go by filling patterns of identical hosts (the configuration
    model); the plain model (a boolean per request and host) is the reference: both prove the same optimum."""
    by_patterns = exact.solve(problem)
    by_host = exact.solve(problem, per_host=True)
    for solution in (by_patterns, by_host):
        _check_hard_constraints(problem, solution)
        _check_reasons(problem, solution)
    assert by_patterns.proven_optimal and by_host.proven_optimal
    assert by_patterns.cost_micros == by_host.cost_micros


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(multi=True, max_requests=12, max_hosts=4), st.lists(st.integers(1, 4), min_size=4, max_size=4))
def test_filling_patterns_on_pools_of_identical_hosts(problem: Problem, copies: list[int]) -> None:
    """The same, where patterns matter: each host cloned into a pool of identical hosts."""
    hosts = [
        dataclasses.replace(h, id=f"{h.id}-{j}") for h, n in zip(problem.hosts, copies, strict=False) for j in range(n)
    ]
    pooled = dataclasses.replace(problem, hosts=hosts)
    by_patterns = exact.solve(pooled)
    by_host = exact.solve(pooled, per_host=True)
    for solution in (by_patterns, by_host):
        _check_hard_constraints(pooled, solution)
    assert by_patterns.proven_optimal and by_host.proven_optimal
    assert by_patterns.cost_micros == by_host.cost_micros
