"""Multi-slot requests on what the one-slot flow left, by a min-cost flow over a relaxation
(broker/placement/kslot.py): when it answers, the answer is valid and as cheap as CP-SAT's proven optimum on
the same capacity (the plain model, a boolean per request and host). Real OR-Tools throughout."""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from broker.placement import Problem, exact, flow, kslot
from broker.placement.frame import build_frame
from broker.placement.outcome import Capacity, Outcome, outcome_cost, to_solution
from tests.unit.test_placement_cases import host, problems, request
from tests.unit.test_placement_properties import _check_hard_constraints

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _both(problem: Problem) -> tuple[bool, int, int, Outcome, object]:
    """The one-slot requests by flow, then the multi-slot ones by kslot and, apart, by CP-SAT (per host)."""
    frame = build_frame(problem)
    everyone = np.arange(frame.n_requests, dtype=np.int64)
    single, multi = everyone[frame.req_slots == 1], everyone[frame.req_slots > 1]
    cap = Capacity.initial(frame)
    base = Outcome.empty(frame.n_requests)
    flow.place(frame, single, cap, base)
    ours, our_cap = base.copy(), cap.copy()
    answered = kslot.place(frame, multi, our_cap, ours)
    theirs = base.copy()
    status = exact.place(frame, multi, cap.copy(), theirs, time_limit_s=30, per_host=True)
    assert status.proven_optimal
    if not answered:
        # nothing changed
        assert (ours.host == base.host).all() and (our_cap.open == cap.open).all()
    return answered, outcome_cost(frame, ours), outcome_cost(frame, theirs), ours, frame


def _check(problem: Problem) -> bool:
    answered, ours, optimum, out, frame = _both(problem)
    if answered:
        _check_hard_constraints(problem, to_solution(frame, out, "kslot", proven_optimal=True))  # type: ignore[arg-type]
        assert ours == optimum
    return answered


@PROPERTY
@given(problems(multi=True, max_requests=10, max_hosts=8))
def test_when_it_answers_it_is_valid_and_optimal(problem: Problem) -> None:
    event("answered" if _check(problem) else "left to CP-SAT")


@PROPERTY
@given(problems(multi=True, max_requests=12, max_hosts=4), st.lists(st.integers(1, 4), min_size=4, max_size=4))
def test_on_pools_of_identical_hosts(problem: Problem, copies: list[int]) -> None:
    """Sub-pools of several hosts: sessions of several sizes packed onto them."""
    hosts = [
        dataclasses.replace(h, id=f"{h.id}-{j}") for h, n in zip(problem.hosts, copies, strict=False) for j in range(n)
    ]
    event("answered" if _check(dataclasses.replace(problem, hosts=hosts)) else "left to CP-SAT")


def test_sizes_that_compete_for_one_host_are_not_all_sent_there() -> None:
    """One 4-slot host near, and a 4-slot and two 2-slot sessions that all want it: the slots it has in all bind,
    not only its places per size. The 4-slot session is placed (cheapest in all) and the answer is optimal."""
    hosts = [host("near", "s0", free=4, total=4, price=1_000_000), host("far", "s1", free=8, total=8)]
    requests = [request("four", slots=4), request("two-a", slots=2), request("two-b", slots=2)]
    problem = Problem(requests, hosts, {("v0", "s0"): 2, ("v0", "s1"): 20})
    assert _check(problem)


def test_an_odd_slot_left_beside_even_sessions_is_not_counted() -> None:
    """A near host with 5 free slots, the only one within a 4-slot session's target, and a 2-slot session that
    may also go far: in slots, the relaxation put the 4-slot session there and half the 2-slot one in the fifth
    slot, which no answer can do, and left the batch to CP-SAT. In units of 2 slots (the sizes' greatest common
    divisor) the host holds 2 units, so the answer is a real one, and optimal."""
    hosts = [host("near", "s0", free=5, total=8, price=1_000_000), host("far", "s1", free=8, total=8)]
    requests = [request("four", slots=4, target=5), request("two", slots=2)]
    problem = Problem(requests, hosts, {("v0", "s0"): 2, ("v0", "s1"): 20})
    assert _check(problem)
