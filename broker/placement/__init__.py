"""Placement of seat sessions onto GPU hosts: a pure core (no I/O, no clock, no asyncio/grpc/protobuf).

Pipeline: a `Problem` (one batch) -> `engine.solve` -> a `Solution` whose every unplaced request has a
`PendingReason`. `greedy`, `flow` and `exact` are the individual solvers, each with its own `solve(problem)`;
`validate_solution` checks any answer against the hard constraints. docs/placement.md has the cost model.
"""

from __future__ import annotations

from broker.placement import engine, exact, flow, greedy
from broker.placement.engine import solve
from broker.placement.frame import reserve_leases
from broker.placement.model import (
    UNREACHABLE_MS,
    GameImage,
    Host,
    LatencyMatrix,
    LatencyPolicy,
    Lease,
    Params,
    PendingReason,
    Problem,
    Request,
    RequestId,
    Solution,
)
from broker.placement.reasons import pending_reason
from broker.placement.validate import evaluate, placement_cost, validate_solution

__all__ = [
    "UNREACHABLE_MS",
    "GameImage",
    "Host",
    "LatencyMatrix",
    "LatencyPolicy",
    "Lease",
    "Params",
    "PendingReason",
    "Problem",
    "Request",
    "RequestId",
    "Solution",
    "engine",
    "evaluate",
    "exact",
    "flow",
    "greedy",
    "pending_reason",
    "placement_cost",
    "reserve_leases",
    "solve",
    "validate_solution",
]
