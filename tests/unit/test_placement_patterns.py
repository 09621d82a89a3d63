"""The whole-batch pattern model (broker/placement/patterns.py): valid, never dearer than the answer it starts
from, its bound a true lower bound, and its proven optimum CP-SAT's (the plain model, a boolean per request and
host, as reference). Real OR-Tools (GLOP, HiGHS, CP-SAT) throughout."""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from broker.placement import Params, Problem, engine, exact, greedy, patterns, validate_solution
from broker.placement.frame import build_frame
from broker.placement.outcome import Capacity, Outcome, outcome_cost, to_solution
from tests.unit.test_placement_cases import host, problems, request
from tests.unit.test_placement_properties import _check_hard_constraints, _check_reasons

PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _greedy_outcome(problem: Problem) -> tuple[object, Outcome]:
    frame = build_frame(problem)
    out = Outcome.empty(frame.n_requests)
    greedy.place(frame, np.arange(frame.n_requests, dtype=np.int64), Capacity.initial(frame), out)
    return frame, out


def _full_lp(problem: Problem) -> int:
    """The pattern model's LP with every column in it (no column generation), rounded up to the cost quantum
    (every answer's cost is a multiple of it): the reference for the bound."""
    frame = build_frame(problem)
    cat = patterns._catalogue(frame, Capacity.initial(frame))
    cost, divisor = patterns._scaled(cat)
    cols = np.arange(cat.kind.size, dtype=np.int64)
    lp = patterns._solve_model(cat, cols, cost, integral=False, deadline=time.perf_counter() + 30)
    assert lp.ok
    return math.ceil(lp.objective - 1e-6) * divisor


# Found by Hypothesis in CI: HiGHS answered OPTIMAL under its cutoff with a bound half a unit above the optimum.
_BOUND_PAST_THE_CUTOFF = Problem(
    requests=[request("r0", cap=10, target=5), request("r1", cap=10, target=5, slots=2),
              request("r2", cap=10, target=5, slots=3)],
    hosts=[host("h1", free=3, total=3, price=1_000_000, games=()), host("h4", free=2, total=2, games=()),
           *(host(h, free=0, total=1, price=1_000_000, games=()) for h in ("h0", "h2", "h3", "h5", "h6", "h7"))],
    latency={("v0", "s0"): 1},
    params=Params(latency_weight_micros_per_ms=0, cold_start_penalty_micros=0),
)  # fmt: skip


@PROPERTY
@given(problems(multi=True, max_requests=10, max_hosts=8))
@example(_BOUND_PAST_THE_CUTOFF)
def test_pattern_model_is_valid_never_dearer_and_exact(problem: Problem) -> None:
    frame, start = _greedy_outcome(problem)
    best, result = patterns.solve(frame, start, time_limit_s=30)  # type: ignore[arg-type]
    solution = to_solution(frame, best, "patterns", proven_optimal=result.proven_optimal)  # type: ignore[arg-type]
    _check_hard_constraints(problem, solution)
    _check_reasons(problem, solution)
    assert solution.cost_micros <= outcome_cost(frame, start)  # type: ignore[arg-type]
    reference = exact.solve(problem, per_host=True, time_limit_s=30)
    assert reference.proven_optimal
    # the bound holds for the optimum, and with this much time the model proves it
    assert result.bound is not None and result.bound <= reference.cost_micros
    assert result.proven_optimal
    assert solution.cost_micros == reference.cost_micros


# Greedy starts on the cold host (1.4 units of 1,000,000 µ); the catalogue leaves it out as dominated, and the
# start's cost, off the columns' lattice, once read as proven optimal against the bound of 1 (found by Hypothesis).
_START_OFF_THE_LATTICE = Problem(
    requests=[request("r0", cap=10, target=5)],
    hosts=[host("h0", free=1, total=1, price=1_000_000, games=()), host("h1", free=0, total=1, price=1_000_000),
           host("h2", free=1, total=1, price=1_000_000, games=("lol",))],
    latency={("v0", "s0"): 1},
    params=Params(latency_weight_micros_per_ms=0, cold_start_penalty_micros=400_000),
)  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(multi=True, max_requests=12, max_hosts=4), st.lists(st.integers(1, 4), min_size=4, max_size=4))
@example(_START_OFF_THE_LATTICE, [1, 1, 1, 1])
def test_pattern_model_on_pools_of_identical_hosts(problem: Problem, copies: list[int]) -> None:
    """Where patterns matter: each host cloned into a pool of identical hosts."""
    hosts = [
        dataclasses.replace(h, id=f"{h.id}-{j}") for h, n in zip(problem.hosts, copies, strict=False) for j in range(n)
    ]
    pooled = dataclasses.replace(problem, hosts=hosts)
    frame, start = _greedy_outcome(pooled)
    best, result = patterns.solve(frame, start, time_limit_s=30)  # type: ignore[arg-type]
    solution = to_solution(frame, best, "patterns", proven_optimal=result.proven_optimal)  # type: ignore[arg-type]
    _check_hard_constraints(pooled, solution)
    reference = exact.solve(pooled, per_host=True, time_limit_s=30)
    assert reference.proven_optimal and result.proven_optimal
    assert solution.cost_micros == reference.cost_micros


@PROPERTY
@given(problems(multi=True, max_requests=10, max_hosts=8))
def test_column_generation_reaches_the_whole_models_lp(problem: Problem) -> None:
    """Pricing every column left out (with the dual extension for sub-pools not in the model yet) is right: the
    bound column generation stops at is the LP of the model with every column."""
    bound = patterns.lp_bound(build_frame(problem))
    assert bound is not None
    assert bound == _full_lp(problem)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(multi=True, max_requests=10, max_hosts=8))
def test_engine_big_batch_path_is_proven_optimal(problem: Problem) -> None:
    """The big-batch path (split, then the pattern model) proves its answers optimal, and they are."""
    split = engine.solve(problem, exact_max_requests=0, time_limit_s=30, prove=True)
    _check_hard_constraints(problem, split)
    _check_reasons(problem, split)
    reference = exact.solve(problem, per_host=True, time_limit_s=30)
    assert split.proven_optimal
    assert split.cost_micros == reference.cost_micros
    assert split.cost_micros <= greedy.solve(problem).cost_micros


def test_busy_small_hosts_near_the_venue_the_split_gets_wrong() -> None:
    """Issue 19's region in miniature: one-slot requests by flow take the near 2-slot hosts, leaving the 2-slot
    sessions to go far; the whole-batch model places them together and proves it."""
    hosts = [
        host("near-a", "s0", free=2, total=2, price=1_000_000),
        host("near-b", "s0", free=2, total=2, price=1_000_000),
        host("near-1", "s0", free=1, total=1, price=1_050_000),
        host("near-1b", "s0", free=1, total=1, price=1_050_000),
        host("far", "s1", free=4, total=4, price=1_000_000),
    ]
    requests = [request("one-a", arrival=0), request("one-b", arrival=0)]
    requests += [request(f"two-{i}", arrival=1, slots=2) for i in range(2)]
    problem = Problem(requests, hosts, {("v0", "s0"): 2, ("v0", "s1"): 28})
    solution = engine.solve(problem, exact_max_requests=0, time_limit_s=30)
    reference = exact.solve(problem, per_host=True, time_limit_s=30)
    assert validate_solution(problem, solution) == []
    assert solution.proven_optimal
    assert solution.cost_micros == reference.cost_micros
    assert {solution.assignments["two-0"], solution.assignments["two-1"]} == {"near-a", "near-b"}
    assert {solution.assignments["one-a"], solution.assignments["one-b"]} == {"near-1", "near-1b"}
