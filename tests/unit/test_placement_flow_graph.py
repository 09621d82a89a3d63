"""The one-slot flow's network after issue 19's fifth pass (broker/placement/flow.py): K and W nodes that reach one
pool are left out (their options go to the pool straight), and the flow is first solved with a trial pending cost
just above the dearest option, then again with the real one only if someone with an option was left pending. The
same for kslot's flow. Both must keep the optimum: Hypothesis holds the flow to CP-SAT's proven optimum on
batches of more requests than hosts' slots (so the trial falls back) and on pools of cloned hosts holding
different games (so buckets have one pool and several). Real OR-Tools throughout."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from broker.placement import Problem, exact, flow, kslot
from broker.placement.frame import I64
from tests.unit.test_placement_cases import host, problems, request
from tests.unit.test_placement_kslot import _check
from tests.unit.test_placement_properties import _check_hard_constraints

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@contextmanager
def _watching() -> Iterator[dict[str, int]]:
    """Count the flow's solves and the options that went to a pool straight, while the block runs."""
    seen = {"runs": 0, "direct": 0, "builds": 0}
    run, build = flow._Graph._run, flow._build

    def counted_run(graph: flow._Graph, pending: int) -> I64:
        seen["runs"] += 1
        return run(graph, pending)

    def counted_build(*args: I64 | int) -> flow._Graph:
        graph = build(*args)  # type: ignore[arg-type]
        seen["builds"] += 1
        seen["direct"] += graph.n_d_opt
        return graph

    flow._Graph._run = counted_run  # type: ignore[method-assign]
    flow._build = counted_build  # type: ignore[assignment]
    try:
        yield seen
    finally:
        flow._Graph._run = run  # type: ignore[method-assign]
        flow._build = build


def _flow_is_optimal(problem: Problem) -> None:
    with _watching() as seen:
        by_flow = flow.solve(problem)
    by_exact = exact.solve(problem)
    _check_hard_constraints(problem, by_flow)
    assert by_exact.proven_optimal
    assert by_flow.cost_micros == by_exact.cost_micros
    assert len(by_flow.unplaced) == len(by_exact.unplaced)
    if seen["builds"]:
        event("options straight to a pool" if seen["direct"] else "every option through a K/W node")
        event("solved again with the real pending cost" if seen["runs"] > seen["builds"] else "trial kept")


@PROPERTY
@given(problems(max_requests=16, max_hosts=5))
def test_more_requests_than_room(problem: Problem) -> None:
    """Up to 16 one-slot requests on up to 5 hosts of at most 4 slots: the trial often leaves someone pending."""
    _flow_is_optimal(problem)


@PROPERTY
@given(
    problems(max_requests=12, max_hosts=4),
    st.lists(st.integers(1, 3), min_size=4, max_size=4),
    st.lists(st.sampled_from([(), ("lol",), ("lol", "cs2")]), min_size=4, max_size=4),
)
def test_pools_of_cloned_hosts(problem: Problem, copies: list[int], holds: list[tuple[str, ...]]) -> None:
    """Each host cloned 1-3 times, the clones holding other games: buckets of one pool and of several."""
    hosts = [
        dataclasses.replace(h, id=f"{h.id}-{j}", games=frozenset(holds[j]) if j else h.games)
        for h, n in zip(problem.hosts, copies, strict=False)
        for j in range(n)
    ]
    _flow_is_optimal(dataclasses.replace(problem, hosts=hosts))


def test_kslot_solves_again_when_a_session_with_room_elsewhere_is_left_pending() -> None:
    """Two 4-slot sessions and one near 4-slot host: one session waits whatever the pending cost, so the trial
    leaves a class with an option pending and kslot solves again with the real cost; the answer is optimal."""
    hosts = [host("near", "s0", free=4, total=4)]
    requests = [request("a", slots=4), request("b", slots=4, arrival=1)]
    problem = Problem(requests, hosts, {("v0", "s0"): 2})
    solves = []
    original = kslot._solve

    def counted(*args: I64) -> I64:
        solves.append(1)
        return original(*args)

    kslot._solve = counted
    try:
        assert _check(problem)
    finally:
        kslot._solve = original
    assert len(solves) == 2
