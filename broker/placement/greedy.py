"""The baseline every benchmark reports against: nearest, then cheapest, first fit, in arrival order.

It ignores price beyond the tie-break, cached games and what a lease saves; it still obeys every hard
constraint, lease exclusivity included, and when the host it picks holds the requester's own lease it draws
the leased slots first.
"""

from __future__ import annotations

import numpy as np

from broker.placement.frame import I64, Frame, build_frame
from broker.placement.model import Problem, Solution
from broker.placement.outcome import Capacity, Outcome, to_solution


def arrival_order(frame: Frame, reqs: I64) -> I64:
    """`reqs` sorted by arrival, then request id."""
    ids = [frame.problem.requests[r].id for r in reqs.tolist()]
    id_rank = np.empty(len(ids), dtype=np.int64)
    id_rank[sorted(range(len(ids)), key=ids.__getitem__)] = np.arange(len(ids))
    return reqs[np.lexsort((id_rank, frame.req_arrival[reqs]))]


def place(frame: Frame, reqs: I64, cap: Capacity, out: Outcome) -> None:
    """First fit for `reqs` in arrival order, updating `cap` and `out` in place."""
    if reqs.size == 0:
        return
    hosts = frame.problem.hosts
    usable = frame.host_usable
    never = np.iinfo(np.int64).max
    # "nearest, then cheapest" as one integer key per host; ties after that go to the lowest host id
    lat_cap = int(frame.req_target[reqs].max()) + 1  # latencies past every target are never chosen
    price_span = int(frame.host_price.max()) + 1 if frame.n_hosts else 1
    for r in arrival_order(frame, reqs).tolist():
        venue = int(frame.req_venue[r])
        k = int(frame.req_slots[r])
        lat = frame.lat[venue]
        site_ok = lat <= frame.req_target[r]
        if not site_ok.any():
            continue
        rows = frame.lessee_rows(venue)
        own = cap.own_reserved(rows)
        fits = usable & site_ok[frame.host_site] & (cap.open + own >= k)
        key = np.where(fits, np.minimum(lat, lat_cap)[frame.host_site] * price_span + frame.host_price, never)
        h = int(key.argmin())
        if key[h] == never:
            continue
        tied = np.nonzero(key == key[h])[0]
        if tied.size > 1:
            h = min(tied.tolist(), key=lambda i: hosts[i].id)
        leased = min(k, int(own[h]))
        cap.open[h] -= k - leased
        out.host[r] = h
        if leased:
            row = int(rows[h])
            cap.res_left[row] -= leased
            out.leased[r] = leased
            out.lease[r] = int(frame.res_lease[row])


def solve(problem: Problem) -> Solution:
    """Place a batch the greedy way (see the module docstring)."""
    frame = build_frame(problem)
    out = Outcome.empty(frame.n_requests)
    place(frame, np.arange(frame.n_requests, dtype=np.int64), Capacity.initial(frame), out)
    return to_solution(frame, out, "greedy", proven_optimal=False)
