"""Placement knows the bytes: a cold start costs what the host still lacks of the game's current version."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable

import pytest

from broker.placement import Params, Problem, Solution, engine, evaluate, exact, flow, validate_solution
from broker.placement.coldstart import GRADES, cold_costs, cold_start_micros, graded
from broker.placement.host_table import host_columns
from broker.placement.model import GameImage
from tests.unit.test_placement_cases import GIB, host, request

OPTIMAL: list[Callable[[Problem], Solution]] = [flow.solve, exact.solve, engine.solve]
#: arena v3 is 40 GiB; v2 lacks 1 GiB of it, v1 lacks 12 GiB, and v0 is too old to have been compared.
ARENA = {"arena": GameImage("3", 40 * GIB, {"2": 1 * GIB, "1": 12 * GIB})}
GRADE = Params().cold_start_penalty_micros // GRADES  # 25,000 with the defaults


def test_the_cost_is_per_gib_lacking_rounded_up_to_a_grade_and_at_most_the_flat_penalty() -> None:
    params = Params()  # 10,000 µ per GiB, flat penalty 400,000, grades of 25,000
    assert graded(params, 0) == 0
    assert graded(params, 1) == GRADE  # any fetch at all is at least one grade
    assert graded(params, 2 * GIB) == GRADE  # 20,000 -> 25,000
    assert graded(params, 12 * GIB) == 5 * GRADE  # 120,000 -> 125,000
    assert graded(params, 40 * GIB) == 400_000
    assert graded(params, 500 * GIB) == 400_000  # never above the flat penalty
    assert graded(dataclasses.replace(params, cold_start_penalty_micros=0), 40 * GIB) == 0


def test_a_host_holding_an_older_version_lacks_only_what_the_current_one_added() -> None:
    params = Params()

    def cost(games: frozenset[str], held: set[str], images: dict[str, GameImage] = ARENA) -> int:
        return cold_start_micros(params, images, "arena", games, frozenset(held))

    assert cost(frozenset({"arena"}), set()) == 0  # warm, as the database derives it
    assert cost(frozenset(), {"arena@3"}) == 0  # holds the current version
    assert cost(frozenset(), {"arena@2"}) == GRADE  # 1 GiB
    assert cost(frozenset(), {"arena@1"}) == 5 * GRADE  # 12 GiB
    assert cost(frozenset(), {"arena@1", "arena@2"}) == GRADE  # the closest version counts
    assert cost(frozenset(), {"arena@0"}) == 400_000  # never compared: the whole image
    assert cost(frozenset(), {"lol@3"}) == 400_000  # another game's image is no help
    assert cost(frozenset(), set(), {}) == 400_000  # image unknown: the flat penalty
    assert cost(frozenset(), {"arena@2"}, {"arena": GameImage("3", 0, {"2": 5})}) == 400_000  # size unknown
    small = {"arena": GameImage("3", 4 * GIB, {})}
    assert cost(frozenset(), set(), small) == 2 * GRADE  # a small game costs less than a big one


def test_the_frame_s_costs_per_holding_equal_the_plain_definition() -> None:
    params = Params(cold_start_micros_per_gib=30_000)
    images = {**ARENA, "lol": GameImage("7", 2 * GIB, {"6": 0}), "tiny": GameImage("1", 0, {})}
    games = ["arena", "lol", "tiny", "cs2"]
    held_choices = ["arena@1", "arena@2", "arena@3", "lol@6", "lol@5", "tiny@1", "cs2@1"]
    holdings = [
        (frozenset(warm), frozenset(held))
        for warm in ([], ["cs2"], ["lol", "arena"])
        for n in range(3)
        for held in itertools.combinations(held_choices, n)
    ]
    index = {g: j for j, g in enumerate(games)}
    table = cold_costs(params, images, holdings, index)
    for h, (warm, held) in enumerate(holdings):
        for game, j in index.items():
            assert table[h, j] == cold_start_micros(params, images, game, warm, held), (warm, held, game)


def test_hosts_holding_the_same_versions_pool_together() -> None:
    a = dataclasses.replace(host("a", games=()), images=frozenset({"arena@2"}))
    b = dataclasses.replace(host("b", games=()), images=frozenset({"arena@2"}))
    c = dataclasses.replace(host("c", games=()), images=frozenset({"arena@1"}))
    cols = host_columns([a, b, c])
    assert cols.games[0] == cols.games[1] != cols.games[2]


@pytest.mark.parametrize("solve", OPTIMAL)
def test_a_host_holding_v1_beats_a_cold_host_for_v2(solve: Callable[[Problem], Solution]) -> None:
    # The cold host is 0.2 units cheaper; fetching all 40 GiB (0.4 units) is dearer than that, fetching the 1 GiB
    # v3 added to v2 (0.025 units) is not.
    near_v2 = dataclasses.replace(host("holds-v2", games=(), price=1_700_000), images=frozenset({"arena@2"}))
    cold = host("cold", games=(), price=1_500_000)
    problem = Problem([request("r0", game="arena")], [cold, near_v2], {("v0", "s0"): 5}, images=ARENA)
    solution = solve(problem)
    assert solution.assignments == {"r0": "holds-v2"}
    assert solution.cost_micros == 1_700_000 + 20_000 * 5 + GRADE
    assert validate_solution(problem, solution) == []
    # Without the image's sizes the same hosts are equally cold, and the cheaper one wins.
    flat = dataclasses.replace(problem, images={})
    assert solve(flat).assignments == {"r0": "cold"}


def test_the_flow_fills_the_cheapest_grades_of_one_pool_first_and_is_exact() -> None:
    # One site, one price, one class: five holdings in one bucket, five grades (0, 1, 5 grades, flat, flat).
    holdings = [("warm", {"arena@3"}), ("v2", {"arena@2"}), ("v1", {"arena@1"}), ("v0", {"arena@0"}), ("none", set())]
    hosts = [
        dataclasses.replace(host(f"{name}-{i}", games=(), free=1, total=2), images=frozenset(held))
        for name, held in holdings
        for i in range(2)
    ]
    latency = {("v0", "s0"): 5}
    for n in range(1, 11):
        requests = [request(f"r{i}", game="arena", arrival=i) for i in range(n)]
        problem = Problem(requests, hosts, latency, images=ARENA)
        by_flow, by_exact = flow.solve(problem), exact.solve(problem)
        assert by_exact.proven_optimal
        assert by_flow.cost_micros == by_exact.cost_micros == evaluate(problem, by_flow)
        assert validate_solution(problem, by_flow) == []
        taken = sorted(h.split("-")[0] for h in by_flow.assignments.values())
        order = ["warm", "warm", "v2", "v2", "v1", "v1"]
        if n <= len(order):
            assert taken == sorted(order[:n])
        # the earliest request gets the cheapest unit
        if n >= 3:
            assert by_flow.assignments["r0"].startswith("warm")
