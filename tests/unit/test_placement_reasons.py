"""Every PendingReason, by example, from every solver."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from broker.placement import (
    Lease,
    PendingReason,
    Problem,
    Solution,
    engine,
    exact,
    flow,
    greedy,
    pending_reason,
)
from tests.unit.test_placement_cases import host, request

SOLVERS: list[Callable[[Problem], Solution]] = [greedy.solve, flow.solve, exact.solve, engine.solve]


def _reason(problem: Problem, rid: str = "r0") -> set[PendingReason]:
    """The reason each solver gives for `rid` (they must agree)."""
    reasons = set()
    multi = any(r.slots > 1 for r in problem.requests)
    for solve in SOLVERS:
        if multi and solve is flow.solve:
            continue
        solution = solve(problem)
        assert rid not in solution.assignments
        reasons.add(solution.unplaced[rid])
    return reasons


def test_no_site_within_cap() -> None:
    problem = Problem([request("r0", cap=30)], [host("h0", "far")], {("v0", "far"): 45})
    assert _reason(problem) == {PendingReason.NO_SITE_WITHIN_CAP}


def test_no_latency_data_counts_as_no_site() -> None:
    problem = Problem([request("r0")], [host("h0", "s0")], {("other", "s0"): 5})
    assert _reason(problem) == {PendingReason.NO_SITE_WITHIN_CAP}


def test_no_capacity_within_cap() -> None:
    problem = Problem(
        [request("r0")], [host("h0", free=0), host("h1", "far")], {("v0", "s0"): 5, ("v0", "far"): 90}
    )
    assert _reason(problem) == {PendingReason.NO_CAPACITY_WITHIN_CAP}


def test_slots_reserved_for_another_venue_are_not_room() -> None:
    problem = Problem(
        [request("r0", "v0")],
        [host("h0", free=2)],
        {("v0", "s0"): 5, ("v1", "s0"): 5},
        leases=[Lease("L", "v1", "l4", 2, site_id="s0")],
    )
    assert _reason(problem) == {PendingReason.NO_CAPACITY_WITHIN_CAP}


@pytest.mark.parametrize("drained, online", [(True, True), (False, False)])
def test_candidates_drained_or_offline(drained: bool, online: bool) -> None:
    problem = Problem(
        [request("r0")], [host("h0", free=0), host("h1", drained=drained, online=online)], {("v0", "s0"): 5}
    )
    assert _reason(problem) == {PendingReason.CANDIDATES_DRAINED}


def test_multi_slot_needs_room_on_one_host() -> None:
    # two hosts with one free slot each: a 2-slot session fits nowhere, and the drained host has room
    problem = Problem(
        [request("r0", slots=2)],
        [host("h0", free=1), host("h1", free=1), host("h2", free=2, drained=True)],
        {("v0", "s0"): 5},
    )
    assert _reason(problem) == {PendingReason.CANDIDATES_DRAINED}


def test_waiting_for_looser_cap() -> None:
    problem = Problem([request("r0", cap=30, target=15)], [host("h0")], {("v0", "s0"): 20})
    assert _reason(problem) == {PendingReason.WAITING_FOR_LOOSER_CAP}


def test_queued_behind_requests_ahead() -> None:
    problem = Problem(
        [request("r0", arrival=5), request("r1", arrival=1)], [host("h0", free=1)], {("v0", "s0"): 5}
    )
    for solve in SOLVERS:
        solution = solve(problem)
        assert solution.assignments == {"r1": "h0"}  # the earlier request gets the slot
        assert solution.unplaced == {"r0": PendingReason.QUEUED}


def test_pending_reason_helper() -> None:
    problem = Problem([request("r0", cap=30, target=15)], [host("h0")], {("v0", "s0"): 20})
    assert pending_reason(problem, "r0") is PendingReason.WAITING_FOR_LOOSER_CAP
    with pytest.raises(KeyError):
        pending_reason(problem, "nope")


def test_a_measured_site_without_hosts_is_a_capacity_problem_not_a_reach_problem() -> None:
    from broker.placement import Host, LatencyMatrix, PendingReason, Problem, Request, pending_reason

    request = Request("r", "v", "g", cap_ms=30, target_ms=15, arrival_ms=0)
    far_host = Host("h", "far", "c", free_slots=1, total_slots=1, price_micros=1, games=frozenset())
    latency = {("v", "near"): 5, ("v", "far"): 90}
    for mapping in (latency, LatencyMatrix.from_mapping(latency)):
        assert (
            pending_reason(Problem([request], [far_host], mapping), "r")
            is PendingReason.NO_CAPACITY_WITHIN_CAP
        )
        assert pending_reason(Problem([request], [], mapping), "r") is PendingReason.NO_CAPACITY_WITHIN_CAP
    unmeasured = {("v", "far"): 90}
    assert pending_reason(Problem([request], [far_host], unmeasured), "r") is PendingReason.NO_SITE_WITHIN_CAP
