"""The solvers by example: greedy's order, the cost model, leases, packing, fairness, multi-slot sessions."""

from __future__ import annotations

import pytest

from broker.placement import (
    Lease,
    Params,
    Problem,
    engine,
    evaluate,
    exact,
    flow,
    greedy,
    reserve_leases,
    validate_solution,
)
from tests.unit.test_placement_cases import host, request

OPTIMAL = [flow.solve, exact.solve, engine.solve]


def test_greedy_takes_nearest_then_cheapest_then_lowest_id() -> None:
    hosts = [
        host("h9", "near", price=2_000_000),
        host("h3", "near", price=1_000_000),
        host("h1", "near", price=1_000_000),
        host("h0", "far", price=500_000),
    ]
    problem = Problem([request("r0")], hosts, {("v0", "near"): 4, ("v0", "far"): 9})
    assert greedy.solve(problem).assignments == {"r0": "h1"}


def test_engine_trades_latency_for_price_and_warm_hosts() -> None:
    # near: 1.8 units, game not cached; far (6 ms more): 1.2 units, cached
    hosts = [host("near", "s-near", price=1_800_000, games=()), host("far", "s-far", price=1_200_000)]
    problem = Problem([request("r0")], hosts, {("v0", "s-near"): 3, ("v0", "s-far"): 9})
    assert greedy.solve(problem).assignments == {"r0": "near"}
    for solve in OPTIMAL:
        solution = solve(problem)
        assert solution.assignments == {"r0": "far"}
        assert solution.cost_micros == 1_200_000 + 20_000 * 9
        assert evaluate(problem, solution) == solution.cost_micros


def test_cold_start_penalty_applies_when_the_game_is_not_cached() -> None:
    problem = Problem([request("r0", game="cs2")], [host("h0", games=("lol",))], {("v0", "s0"): 5})
    solution = flow.solve(problem)
    assert solution.cost_micros == 1_500_000 + 20_000 * 5 + 400_000


def test_unplaced_requests_cost_the_pending_price() -> None:
    params = Params(stay_pending_cost_micros=7_000_000)
    problem = Problem([request("r0"), request("r1")], [host("h0", free=1)], {("v0", "s0"): 5}, params=params)
    for solve in [greedy.solve, *OPTIMAL]:
        assert solve(problem).cost_micros == 1_500_000 + 20_000 * 5 + 7_000_000


def test_leased_slots_are_free_to_the_lessee_and_used_first() -> None:
    hosts = [host("cheap", "s0", price=1_000_000), host("leased", "s1", price=2_000_000)]
    latency = {("v0", "s0"): 3, ("v0", "s1"): 5}
    problem = Problem([request("r0")], hosts, latency, leases=[Lease("L", "v0", "l4", 1, site_id="s1")])
    for solve in OPTIMAL:
        solution = solve(problem)
        assert solution.assignments == {"r0": "leased"}
        assert solution.lease_use == {"r0": "L"}
        assert solution.lease_slots == {"r0": 1}
        assert solution.cost_micros == 20_000 * 5
    # greedy goes nearest, and pays there: it does not chase the lease
    assert greedy.solve(problem).assignments == {"r0": "cheap"}


def test_greedy_uses_the_lease_on_the_host_it_picks() -> None:
    problem = Problem(
        [request("r0")], [host("h0")], {("v0", "s0"): 3}, leases=[Lease("L", "v0", "l4", 2, site_id="s0")]
    )
    solution = greedy.solve(problem)
    assert solution.lease_use == {"r0": "L"}
    assert solution.cost_micros == 20_000 * 3


def test_leased_slots_never_go_to_another_venue() -> None:
    problem = Problem(
        [request("r0", "v1")],
        [host("h0", free=2)],
        {("v0", "s0"): 3, ("v1", "s0"): 3},
        leases=[Lease("L", "v0", "l4", 2, site_id="s0")],
    )
    for solve in [greedy.solve, *OPTIMAL]:
        solution = solve(problem)
        assert solution.assignments == {}
        assert validate_solution(problem, solution) == []


def test_lessee_overflows_to_on_demand_at_the_normal_price() -> None:
    problem = Problem(
        [request("r0", arrival=0), request("r1", arrival=1)],
        [host("h0", free=2)],
        {("v0", "s0"): 3},
        leases=[Lease("L", "v0", "l4", 1, site_id="s0")],
    )
    for solve in OPTIMAL:
        solution = solve(problem)
        assert solution.assignments == {"r0": "h0", "r1": "h0"}
        assert solution.lease_use == {"r0": "L"}  # the earlier request gets the free (leased) slot
        assert solution.cost_micros == 2 * 20_000 * 3 + 1_500_000


def test_lease_reservation_rule() -> None:
    hosts = [
        host("idle", "s0", free=4, total=4),
        host("busy", "s0", free=1, total=4),
        host("mid", "s0", free=2, total=4),
        host("other-class", "s0", free=4, gpu="a16"),
        host("down", "s0", free=4, drained=True),
    ]
    problem = Problem([], hosts, {("v0", "s0"): 3}, leases=[Lease("L", "v0", "l4", 4, site_id="s0")])
    # most-used hosts first, only the lease's class, nothing on a drained host
    assert reserve_leases(problem) == {"L": {"busy": 1, "mid": 2, "idle": 1}}


def test_floating_lease_reserves_within_its_latency() -> None:
    hosts = [host("near", "s0", free=1), host("mid", "s1", free=4), host("far", "s2", free=4)]
    latency = {("v0", "s0"): 2, ("v0", "s1"): 6, ("v0", "s2"): 20}
    problem = Problem([], hosts, latency, leases=[Lease("L", "v0", "l4", 6, max_latency_ms=10)])
    assert reserve_leases(problem) == {"L": {"near": 1, "mid": 4}}


def test_packing_fills_partly_used_hosts_first() -> None:
    # identical hosts but for their load: most used first, so the idle one stays whole
    hosts = [host("idle", free=4, total=4), host("half", free=2, total=4), host("almost", free=1, total=4)]
    problem = Problem([request("r0", arrival=0), request("r1", arrival=1)], hosts, {("v0", "s0"): 3})
    for solve in OPTIMAL:
        solution = solve(problem)
        assert sorted(solution.assignments.values()) == ["almost", "half"]


def test_earliest_request_of_a_group_gets_the_cheapest_unit() -> None:
    hosts = [host("cheap", free=1, price=1_000_000), host("dear", "s1", free=1, price=2_000_000)]
    reqs = [request("late", arrival=50), request("early", arrival=10)]
    problem = Problem(reqs, hosts, {("v0", "s0"): 3, ("v0", "s1"): 3})
    for solve in OPTIMAL:
        assert solve(problem).assignments == {"early": "cheap", "late": "dear"}


def test_multi_slot_session_takes_all_its_slots_on_one_host() -> None:
    # three free slots in all, but only one host can take a 3-slot session
    hosts = [host("a", free=2, price=1_000_000), host("b", free=1, price=1_000_000), host("c", "s1", free=3)]
    problem = Problem([request("r0", slots=3)], hosts, {("v0", "s0"): 3, ("v0", "s1"): 8})
    for solve in [greedy.solve, exact.solve, engine.solve]:
        solution = solve(problem)
        assert solution.assignments == {"r0": "c"}
        assert solution.cost_micros == 3 * 1_500_000 + 20_000 * 8


def test_multi_slot_lessee_mixes_leased_and_on_demand_slots() -> None:
    problem = Problem(
        [request("r0", slots=3)],
        [host("h0")],
        {("v0", "s0"): 3},
        leases=[Lease("L", "v0", "l4", 2, site_id="s0")],
    )
    for solve in [greedy.solve, exact.solve, engine.solve]:
        solution = solve(problem)
        assert solution.lease_slots == {"r0": 2}
        assert solution.cost_micros == 1_500_000 + 20_000 * 3
        assert validate_solution(problem, solution) == []


def test_flow_refuses_multi_slot_batches() -> None:
    problem = Problem([request("r0", slots=2)], [host("h0")], {("v0", "s0"): 3})
    with pytest.raises(ValueError):
        flow.solve(problem)


def test_engine_paths() -> None:
    latency = {("v0", "s0"): 3}
    single = Problem([request(f"r{i}") for i in range(3)], [host("h0")], latency)
    assert engine.solve(single).solver == "engine:flow"
    assert engine.solve(single).proven_optimal
    mixed = Problem([request("r0"), request("r1", slots=2)], [host("h0")], latency)
    assert engine.solve(mixed).solver == "engine:cp-sat"
    big = engine.solve(mixed, exact_max_requests=1)
    assert big.solver == "engine:flow+cp-sat"
    assert big.assignments == {"r0": "h0", "r1": "h0"}
    assert big.proven_optimal  # each part at its best, and the flow had room left


def test_exact_reports_optimality() -> None:
    problem = Problem(
        [request("r0"), request("r1", slots=2)], [host("h0"), host("h1", "s0")], {("v0", "s0"): 3}
    )
    solution = exact.solve(problem)
    assert solution.proven_optimal
    assert validate_solution(problem, solution) == []


def test_validate_catches_broken_answers() -> None:
    problem = Problem(
        [request("r0", target=10), request("r1")],
        [host("h0", free=1), host("down", drained=True), host("far", "s1")],
        {("v0", "s0"): 3, ("v0", "s1"): 25},
    )
    good = flow.solve(problem)
    assert validate_solution(problem, good) == []
    bad = type(good)(assignments={"r0": "far", "r1": "down"}, unplaced={}, cost_micros=0)
    errors = "\n".join(validate_solution(problem, bad))
    assert "latency 25 ms above target 10 ms" in errors
    assert "drained" in errors
    over = type(good)(assignments={"r0": "h0", "r1": "h0"}, unplaced={}, cost_micros=0)
    assert any("2 slots placed, 1 free" in e for e in validate_solution(problem, over))
    missing = type(good)(assignments={}, unplaced={}, cost_micros=0)
    assert any("neither placed nor pending" in e for e in validate_solution(problem, missing))


def test_a_big_batch_tries_multi_slot_sessions_first_when_they_pay_much_more_than_alone() -> None:
    # The flow puts the one-slot request on the cheapest host, the only one near with room for the 2-slot
    # session, which then goes far and dear: far above the batch's lower bound (each part alone). So the engine
    # tries the other order too: the 2-slot session first, then the one-slot request beside it, a little dearer.
    hosts = [
        host("near-2", "s0", free=2, total=2, price=1_000_000),
        host("near-1", "s0", free=1, total=1, price=1_100_000),
        host("far-2", "s1", free=2, total=2, price=2_000_000),
    ]
    problem = Problem(
        [request("one", arrival=0), request("two", arrival=1, slots=2)],
        hosts,
        {("v0", "s0"): 5, ("v0", "s1"): 25},
    )
    split = engine.solve(problem, exact_max_requests=0)  # the big-batch path
    assert split.assignments == {"one": "near-1", "two": "near-2"}
    assert split.cost_micros == exact.solve(problem).cost_micros
    # Each part alone would cost 1.0 + 2.0 units (+ latency); with the 2-slot session spread over one-slot units
    # sharing the capacity, the bound sees the competition and meets the optimum: 1.1 + 2.0.
    bound = engine.lower_bound(problem)
    assert (bound.placement_micros, bound.pending) == (1_100_000 + 2 * 1_000_000 + 2 * 20_000 * 5, 0)
    assert bound.placement_micros == split.cost_micros
    assert split.solver == "engine:cp-sat+flow"
    assert validate_solution(problem, split) == []
