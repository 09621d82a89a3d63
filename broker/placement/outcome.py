"""What solvers produce internally (arrays over a frame) and how it becomes a `Solution`.

Solvers work in phases on a shared `Capacity` (the engine places multi-slot sessions, then the rest on what is
left), so capacity is a value they update rather than something re-derived from the problem.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from broker.placement import reasons
from broker.placement.frame import I64, Frame
from broker.placement.model import Solution


@dataclass(slots=True)
class Capacity:
    """Slots still available during a solve: open slots per host, reserved slots left per reservation row."""

    open: I64
    res_left: I64

    @classmethod
    def initial(cls, frame: Frame) -> Capacity:
        """The capacity before anything in the batch is placed."""
        return cls(frame.open.copy(), frame.res_count.copy())

    def copy(self) -> Capacity:
        """An independent copy (for trying one phase order against another)."""
        return Capacity(self.open.copy(), self.res_left.copy())

    def own_reserved(self, rows: I64) -> I64:
        """Reserved slots left for each entry of `rows` (reservation rows, -1 for none)."""
        return reserved_left(self.res_left, rows)


def reserved_left(res_left: I64, rows: I64) -> I64:
    """`res_left[rows]`, with 0 where a row is -1."""
    if res_left.size == 0:
        return np.zeros(rows.shape, dtype=np.int64)
    return np.where(rows >= 0, res_left[np.maximum(rows, 0)], 0)


@dataclass(slots=True)
class Outcome:
    """Per request (by position): host position or -1, slots drawn from a lease, the lease's position or -1."""

    host: I64
    leased: I64
    lease: I64

    @classmethod
    def empty(cls, n_requests: int) -> Outcome:
        """Nothing placed yet."""
        return cls(
            np.full(n_requests, -1, dtype=np.int64),
            np.zeros(n_requests, dtype=np.int64),
            np.full(n_requests, -1, dtype=np.int64),
        )

    def copy(self) -> Outcome:
        """An independent copy."""
        return Outcome(self.host.copy(), self.leased.copy(), self.lease.copy())


def placement_costs(frame: Frame, req: I64, host: I64, leased: I64) -> I64:
    """Objective terms of placing requests `req` on hosts `host` with `leased` slots paid by a lease."""
    params = frame.problem.params
    lat = frame.lat[frame.req_venue[req], frame.host_site[host]]
    paid = frame.req_slots[req] - leased
    return (
        frame.host_price[host] * paid
        + params.latency_weight_micros_per_ms * lat
        + frame.cold[frame.host_gs[host], frame.req_game[req]]
    )


def outcome_cost(frame: Frame, out: Outcome) -> int:
    """The objective value of an outcome."""
    placed = np.nonzero(out.host >= 0)[0]
    unplaced = frame.n_requests - placed.size
    total = int(placement_costs(frame, placed, out.host[placed], out.leased[placed]).sum())
    return total + unplaced * frame.problem.params.stay_pending_cost_micros


def to_solution(frame: Frame, out: Outcome, solver: str, proven_optimal: bool) -> Solution:
    """Turn an outcome into a `Solution`, with a pending reason for every unplaced request."""
    requests = frame.problem.requests
    leases = frame.problem.leases
    placed = np.nonzero(out.host >= 0)[0]
    unplaced = np.nonzero(out.host < 0)[0]
    hosts = frame.problem.hosts
    assignments = {
        requests[r].id: hosts[h].id for r, h in zip(placed.tolist(), out.host[placed].tolist(), strict=True)
    }
    on_lease = placed[out.leased[placed] > 0]
    lease_use = {requests[r].id: leases[int(out.lease[r])].id for r in on_lease.tolist()}
    lease_slots = {requests[r].id: int(out.leased[r]) for r in on_lease.tolist()}
    why = reasons.pending_reasons(frame, unplaced)
    return Solution(
        assignments=assignments,
        unplaced={requests[r].id: reason for r, reason in zip(unplaced.tolist(), why, strict=True)},
        cost_micros=outcome_cost(frame, out),
        lease_use=lease_use,
        lease_slots=lease_slots,
        solver=solver,
        proven_optimal=proven_optimal,
    )
