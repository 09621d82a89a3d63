"""What the scheduler calls: the right solver for the batch, always a valid answer with reasons.

- Every request single-slot: the min-cost flow. It is exact, and fast enough for big batches.
- Multi-slot requests in a small batch (at most `exact_max_requests`): CP-SAT on the whole batch with the
  greedy answer as hint; whichever of the two is cheaper comes back, so it is never worse than greedy.
- Multi-slot requests in a big batch: first the split, the flow for the one-slot requests on the whole capacity,
  then the multi-slot ones on what is left: by a min-cost flow over a relaxation when its answer holds (kslot.py,
  exact), or each on its cheapest host when they don't compete, else CP-SAT on them alone (a few hundred booleans
  after pruning); the other order (multi-slot first) too when that answer is more
  than `TRY_OTHER_ORDER_PCT` above the split bound (`_bound`: the one-slot part alone, optimal, plus each multi-slot
  request alone) or a multi-slot request with room was left pending. It is proven optimal when it meets that bound.
  Then, when the split did not prove its answer and the time limit is at least `PATTERN_MIN_BUDGET_S` (or always
  with `prove=True`), the whole-batch pattern model (patterns.py) starts from it: it proves it optimal by its LP
  bound, or finds a cheaper answer by its MIP and proves that, within what is left of the time limit; else the
  split's answer stands, unproven. The benchmark reports every batch's gap to `lower_bound`,
  which includes the pattern model's LP bound.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from ortools.graph.python import min_cost_flow

from broker.placement import exact, flow, greedy, kslot, patterns, reasons
from broker.placement.frame import I64, Frame, build_frame
from broker.placement.greedy import arrival_order
from broker.placement.model import PendingReason, Problem, Solution
from broker.placement.outcome import (
    Capacity,
    Outcome,
    outcome_cost,
    placement_costs,
    reserved_left,
    to_solution,
)

#: Batches with multi-slot requests up to this size get a whole-batch CP-SAT solve.
EXACT_MAX_REQUESTS = 64
#: CP-SAT's time for the multi-slot requests of a big batch (at most the caller's time limit).
MULTI_TIME_LIMIT_S = 0.05
#: The other phase order is tried when the first answer may be this much (percent) above the optimum by the
#: batch's lower bound (`lower_bound`): the issue's target for the gap.
GAP_TARGET_PCT = 0.5
#: ... but only when the first answer is this much above the bound. The split bound prices each multi-slot request
#: alone, so it is loose: at GAP_TARGET_PCT the second order ran on 16 of 26 batches of the default trace (2%
#: multi-slot) and took the engine from 16,173 to 10,132 placements/s (greedy 12,518 in that run) for a mean gap of
#: 0.12% instead of 0.21%; the batches it is for (8% multi-slot on busy hosts) sit 3-4% above it.
TRY_OTHER_ORDER_PCT = 1.5
#: A big mixed batch the split did not prove goes to the whole-batch pattern model (patterns.py: 0.5-6 s on 1,000
#: requests over 10,000 hosts, proven optimal) with at least this budget (`time_limit_s`), or always with `prove`.
#: On the shared 2-core machine it took 0.5-10 s per batch, so within the default 1 s it mostly spent the budget for
#: nothing (p99 1.4-1.9 s per batch on the default trace); the scheduler's default keeps the split. (Up to issue
#: 19's third pass it also had to be 1.5% above the split bound: at 8% multi-slot that left the batches below it
#: unproven, 4 of 26, though the model proves them in ~1 s.)
PATTERN_MIN_BUDGET_S = 3.0


@dataclass(frozen=True, slots=True)
class Bound:
    """A lower bound on any answer of a batch: no answer that leaves `pending` requests pending (the fewest any can)
    places the others for less than `placement_micros`."""

    placement_micros: int
    pending: int


def lower_bound(problem: Problem, *, patterns_time_limit_s: float = 60.0) -> Bound:
    """A lower bound on the batch's optimum, the largest of three:

    - the one-slot requests placed optimally on the whole capacity (the flow, exact), plus each multi-slot request
      on its cheapest host as if alone. Every answer's one-slot part costs at least the first and leaves at least
      as many pending; each multi-slot request costs at least the second, or has no host in any answer;
    - every request placed by a min-cost flow in which a k-slot request is k one-slot units that may spread over
      hosts (`_spread_bound`): capacity is shared, so this one sees the requests compete;
    - the whole-batch pattern model's LP (`patterns.lp_bound`, column generation to the end): it keeps "k slots
      on one host", so it is tight (the MIP's optimum was at most 0.001% above it on the default region).

    An answer that leaves `pending` requests pending is within (its placement cost − placement_micros) /
    placement_micros of the optimum. Untimed work for the benchmark (the third takes a second or two per
    1,000-request batch)."""
    frame = build_frame(problem)
    everyone = np.arange(frame.n_requests, dtype=np.int64)
    single = everyone[frame.req_slots == 1]
    out = Outcome.empty(frame.n_requests)
    flow.place(frame, single, Capacity.initial(frame), out)
    split = _bound(frame, single, everyone[frame.req_slots > 1], out)
    pending_cost = split.pending * problem.params.stay_pending_cost_micros
    best = max(split.placement_micros, _spread_bound(frame) - pending_cost)
    if frame.req_slots.max(initial=1) > 1:
        lp = patterns.lp_bound(frame, patterns_time_limit_s)
        if lp is not None:
            best = max(best, lp - pending_cost)
    return Bound(best, split.pending)


def _spread_bound(frame: Frame) -> int:
    """The optimum of the batch with "k slots on one host" dropped: a lower bound on its objective.

    A k-slot request becomes k units; each unit costs the slot's price plus 1/k of the request's latency and
    cold-start terms (all costs times K, the least common multiple of the sizes, to stay integer), and 1/k of the
    pending cost if left out. Pools of hosts alike in site, class, price and what they hold take units up to their
    open slots; a lease's reserved slots in a pool take its venue's units for latency and cold start only. Any
    answer is a flow of this network at its own cost, so the network's minimum is at most the optimum. Each group
    keeps its cheapest pools until they hold every unit of the batch (the flow's exchange argument)."""
    n = frame.n_requests
    if n == 0:
        return 0
    params = frame.problem.params
    lam, pending = params.latency_weight_micros_per_ms, params.stay_pending_cost_micros
    k = frame.req_slots
    big_k = int(np.lcm.reduce(np.unique(k)))
    gkey = (
        (frame.req_venue * (len(frame.games) + 1) + frame.req_game) * (int(frame.req_target.max()) + 1)
        + frame.req_target
    ) * (int(k.max()) + 1) + k
    _, first, counts = np.unique(gkey, return_index=True, return_counts=True)
    g_venue, g_game, g_target, g_k = (
        frame.req_venue[first], frame.req_game[first], frame.req_target[first], k[first]
    )
    g_units = counts.astype(np.int64) * g_k
    g_scale = big_k // g_k
    units = int(g_units.sum())
    n_groups = first.size

    usable = np.nonzero(frame.host_usable)[0]
    _, price_rank = np.unique(frame.host_price[usable], return_inverse=True)
    pkey = (
        (frame.host_site[usable] * len(frame.classes) + frame.host_class[usable])
        * (int(price_rank.max(initial=0)) + 1)
        + price_rank.reshape(-1)
    ) * len(frame.gamesets) + frame.host_gs[usable]
    _, p_first, host_pool = np.unique(pkey, return_index=True, return_inverse=True)
    host_pool = host_pool.reshape(-1)
    n_pools = p_first.size
    rep = usable[p_first]
    p_site, p_price, p_gs = frame.host_site[rep], frame.host_price[rep], frame.host_gs[rep]
    p_open = np.bincount(host_pool, weights=frame.open[usable], minlength=n_pools).astype(np.int64)

    tails: list[I64] = []
    heads: list[I64] = []
    costs: list[I64] = []
    # group -> pool: each group's cheapest pools holding every unit of the batch
    if n_pools:
        lat = frame.lat[g_venue][:, p_site]
        per_unit = big_k * p_price[None, :] + g_scale[:, None] * (lam * lat + frame.cold[p_gs][:, g_game].T)
        ok = (lat <= g_target[:, None]) & (p_open[None, :] > 0)
        ranked = np.argsort(np.where(ok, per_unit, np.iinfo(np.int64).max), axis=1, kind="stable")
        held = np.cumsum(np.where(np.take_along_axis(ok, ranked, axis=1), p_open[ranked], 0), axis=1)
        before = held - np.where(np.take_along_axis(ok, ranked, axis=1), p_open[ranked], 0)
        keep = np.take_along_axis(ok, ranked, axis=1) & (before < units)
        gi, pos = np.nonzero(keep)
        pi = ranked[gi, pos]
        tails.append(gi)
        heads.append(n_groups + pi)
        costs.append(per_unit[gi, pi])
    # group -> lease part: a lease's reserved slots in one pool, its venue's units only
    base_part = n_groups + n_pools
    rows = np.nonzero((frame.res_count > 0) & frame.host_usable[frame.res_host])[0]
    n_parts = 0
    part_cap = np.zeros(0, dtype=np.int64)
    if rows.size and n_pools:
        pool_of_host = np.full(frame.n_hosts, -1, dtype=np.int64)
        pool_of_host[usable] = host_pool
        part_keys, row_part = np.unique(
            frame.res_lease[rows] * n_pools + pool_of_host[frame.res_host[rows]], return_inverse=True
        )
        n_parts = part_keys.size
        part_cap = np.bincount(row_part.reshape(-1), weights=frame.res_count[rows], minlength=n_parts).astype(
            np.int64
        )
        part_pool, part_venue = part_keys % n_pools, frame.lease_venue[part_keys // n_pools]
        gi, li = np.nonzero(g_venue[:, None] == part_venue[None, :])
        lat = frame.lat[g_venue[gi], p_site[part_pool[li]]]
        near = lat <= g_target[gi]
        gi, li, lat = gi[near], li[near], lat[near]
        tails.append(gi)
        heads.append(base_part + li)
        costs.append(g_scale[gi] * (lam * lat + frame.cold[p_gs[part_pool[li]], g_game[gi]]))
    sink = base_part + n_parts
    tails += [n_groups + np.arange(n_pools), base_part + np.arange(n_parts), np.arange(n_groups)]
    heads += [np.full(n_pools + n_parts + n_groups, sink, dtype=np.int64)]
    costs += [np.zeros(n_pools + n_parts, dtype=np.int64), g_scale * pending]
    tail = np.concatenate(tails).astype(np.int32)
    head = np.concatenate(heads).astype(np.int32)
    cost = np.concatenate(costs).astype(np.int64)
    n_options = tail.size - n_pools - n_parts - n_groups
    caps = np.concatenate(
        [g_units[tail[:n_options]], p_open, part_cap, g_units]
    ).astype(np.int64)
    solver = min_cost_flow.SimpleMinCostFlow()
    solver.add_arcs_with_capacity_and_unit_cost(tail, head, caps, cost)
    supplies = np.zeros(sink + 1, dtype=np.int64)
    supplies[:n_groups] = g_units
    supplies[sink] = -units
    solver.set_nodes_supplies(np.arange(sink + 1, dtype=np.int32), supplies)
    if solver.solve() != solver.OPTIMAL:
        raise RuntimeError("min-cost flow failed")  # the pending arcs make it always feasible
    return -(-int(solver.optimal_cost()) // big_k)


def _bound(frame: Frame, single: I64, multi: I64, out: Outcome) -> Bound:
    """`lower_bound`, where `out` has the one-slot requests placed by the flow on the whole capacity."""
    placed = single[out.host[single] >= 0]
    cost = int(placement_costs(frame, placed, out.host[placed], out.leased[placed]).sum())
    multi_cost, multi_pending = _multi_bound(frame, multi)
    return Bound(cost + multi_cost, int(single.size - placed.size) + multi_pending)


def _within(frame: Frame, out: Outcome, bound: Bound, pct: float) -> bool:
    """Whether `out` leaves as few pending as the bound and places them within `pct` percent of it."""
    placed = np.nonzero(out.host >= 0)[0]
    if frame.n_requests - placed.size != bound.pending:
        return False
    cost = int(placement_costs(frame, placed, out.host[placed], out.leased[placed]).sum())
    return 100 * (cost - bound.placement_micros) <= pct * bound.placement_micros


def solve(
    problem: Problem,
    time_limit_s: float = 1.0,
    *,
    exact_max_requests: int = EXACT_MAX_REQUESTS,
    workers: int = 1,
    prove: bool = False,
) -> Solution:
    """Place a batch (see the module docstring); `time_limit_s` bounds each CP-SAT solve and the pattern model's.

    A big mixed batch whose split answer is not proven goes to the pattern model when `time_limit_s` is at least
    `PATTERN_MIN_BUDGET_S`, or with `prove`; the whole solve keeps to `time_limit_s` (the pattern model gets what
    the split left of it)."""
    started = time.perf_counter()
    frame = build_frame(problem)
    everyone = np.arange(frame.n_requests, dtype=np.int64)
    multi = everyone[frame.req_slots > 1]
    single = everyone[frame.req_slots == 1]

    if multi.size == 0:
        out = Outcome.empty(frame.n_requests)
        flow.place(frame, everyone, Capacity.initial(frame), out)
        return to_solution(frame, out, "engine:flow", proven_optimal=True)

    if frame.n_requests <= exact_max_requests:
        base = Outcome.empty(frame.n_requests)
        greedy.place(frame, everyone, Capacity.initial(frame), base)
        out = Outcome.empty(frame.n_requests)
        status = exact.place(
            frame,
            everyone,
            Capacity.initial(frame),
            out,
            time_limit_s=time_limit_s,
            workers=workers,
            hint=base,
        )
        if not status.found or outcome_cost(frame, out) > outcome_cost(frame, base):
            return to_solution(frame, base, "engine:greedy", proven_optimal=False)
        return to_solution(frame, out, "engine:cp-sat", proven_optimal=status.proven_optimal)

    modelled = prove or time_limit_s >= PATTERN_MIN_BUDGET_S
    out, path, proven, _ = _split(frame, single, multi, time_limit_s, workers, quick=modelled)
    if proven:
        return to_solution(frame, out, path, proven_optimal=True)
    if not modelled:
        # With less time than the pattern model needs (0.5-6 s per 1,000-request batch here), it would only spend
        # the budget and return the split's answer (2% multi-slot sessions on the default trace: 0.06% above
        # the optimum on average).
        return to_solution(frame, out, path, proven_optimal=False)
    # The whole batch on the pattern model (patterns.py), from the split's answer: proves it optimal by the
    # model's LP bound, or finds a cheaper one by its MIP (and proves that), within what is left of the budget.
    left = time_limit_s - (time.perf_counter() - started)
    best, result = patterns.solve(frame, out, time_limit_s=max(left, 0.0))
    return to_solution(
        frame, best, "engine:patterns" if result.improved else path, proven_optimal=result.proven_optimal
    )


def _split(
    frame: Frame, single: I64, multi: I64, time_limit_s: float, workers: int, *, quick: bool = False
) -> tuple[Outcome, str, bool, Bound]:
    """The fast answer of a big mixed batch: the one-slot requests by flow, then the multi-slot ones on what is
    left (the other order too when that looks far from the bound); the answer, its path, whether it is proven
    optimal, and the split's lower bound.

    `quick` (the pattern model follows, and only needs an answer to start from): no CP-SAT and no second order;
    multi-slot requests that `kslot` and `_each_at_its_best` cannot place optimally go by greedy. At 8%
    multi-slot sessions CP-SAT in both orders was a quarter of a batch's time, and the model's MIP improved on
    its answer anyway."""
    # One-slot requests first, by flow on the whole capacity; then the multi-slot ones on what is left.
    cap = Capacity.initial(frame)
    out = Outcome.empty(frame.n_requests)
    flow.place(frame, single, cap, out)
    # No answer beats the one-slot part placed optimally on the whole capacity plus each multi-slot request alone.
    bound = _bound(frame, single, multi, out)
    _place_multi(frame, multi, cap, out, time_limit_s, workers, cp_sat=not quick)
    if _within(frame, out, bound, 0):
        # The one-slot part is optimal on the whole capacity and every multi-slot request got the cost it would
        # have had alone: no joint answer can beat either part, so this one is optimal.
        return out, "engine:flow+cp-sat", True, bound
    if quick:
        return out, "engine:flow+cp-sat", False, bound
    waiting = multi[out.host[multi] < 0]
    if PendingReason.QUEUED not in reasons.pending_reasons(frame, waiting) and _within(
        frame, out, bound, TRY_OTHER_ORDER_PCT
    ):
        # Everyone with room got a place, and the answer is within a few tenths of a percent of the lower bound:
        # the pattern model starts from it.
        return out, "engine:flow+cp-sat", False, bound
    # A multi-slot request that had room was left pending (one-slot requests filled its hosts), or the multi-slot
    # requests paid much more than alone (8% of a batch on busy hosts: +3-4% by the bound): try the other order,
    # multi-slot first, and keep the cheaper answer.
    cap2 = Capacity.initial(frame)
    out2 = Outcome.empty(frame.n_requests)
    multi_proven = _place_multi(frame, multi, cap2, out2, time_limit_s, workers)
    flow.place(frame, single, cap2, out2)
    if outcome_cost(frame, out2) <= outcome_cost(frame, out):
        # Multi-slot part optimal on the whole capacity, and the flow never ran out of a pool it used: optimal.
        proven = multi_proven and _left_slack(frame, cap2, out2, multi)
        return out2, "engine:cp-sat+flow", proven, bound
    return out, "engine:flow+cp-sat", False, bound


def _multi_bound(frame: Frame, multi: I64) -> tuple[int, int]:
    """A lower bound on the multi-slot requests' part of any answer: each one's cost if it were alone (placement
    cost, and how many have no host at all)."""
    params = frame.problem.params
    total = 0
    pending = 0
    if multi.size == 0:
        return total, pending
    # Only hosts with room for the smallest session, or holding reserved slots, can take one: a few thousand of
    # ten thousand, so each request looks at those alone.
    k_min = int(frame.req_slots[multi].min())
    has_res = np.zeros(frame.n_hosts, dtype=np.bool_)
    has_res[frame.res_host] = True
    hosts = np.nonzero(frame.host_usable & ((frame.open >= k_min) | has_res))[0]
    h_site, h_open, h_price, h_gs = (
        frame.host_site[hosts], frame.open[hosts], frame.host_price[hosts], frame.host_gs[hosts]
    )
    lessees = set(frame.lease_venue[frame.res_lease].tolist())
    for r in multi.tolist():
        venue, k = int(frame.req_venue[r]), int(frame.req_slots[r])
        lat = frame.lat[venue][h_site]
        if venue in lessees:
            own = reserved_left(frame.res_count, frame.lessee_rows(venue)[hosts])
            ok = np.nonzero((lat <= frame.req_target[r]) & (h_open + own >= k))[0]
            paid = k - np.minimum(own[ok], k)
        else:  # most venues hold no lease: open slots only, every slot paid
            ok = np.nonzero((lat <= frame.req_target[r]) & (h_open >= k))[0]
            paid = np.full(ok.size, k, dtype=np.int64)
        if ok.size == 0:
            pending += 1
            continue
        cost = (
            h_price[ok] * paid
            + params.latency_weight_micros_per_ms * lat[ok]
            + frame.cold[h_gs[ok], frame.req_game[r]]
        )
        total += int(cost.min())
    return total, pending


def _left_slack(frame: Frame, cap: Capacity, out: Outcome, multi: I64) -> bool:
    """Whether every flow pool (and lease part) that the placed multi-slot requests drew from still has a slot."""
    placed = multi[out.host[multi] >= 0]
    if placed.size == 0:
        return True
    hosts = out.host[placed]
    usable = np.nonzero(frame.host_usable)[0]
    _, price_rank = np.unique(frame.host_price[usable], return_inverse=True)
    key = np.full(frame.n_hosts, -1, dtype=np.int64)
    key[usable] = (
        (frame.host_site[usable] * len(frame.classes) + frame.host_class[usable])
        * (int(price_rank.max(initial=0)) + 1)
        + price_rank
    ) * len(frame.gamesets) + frame.host_gs[usable]
    on_demand = hosts[out.leased[placed] < frame.req_slots[placed]]
    for pool in np.unique(key[on_demand]).tolist():
        if int(cap.open[key == pool].sum()) == 0:
            return False
    for r, h in zip(
        placed[out.leased[placed] > 0].tolist(), hosts[out.leased[placed] > 0].tolist(), strict=True
    ):
        lease = out.lease[r]
        same_part = (frame.res_lease == lease) & (key[frame.res_host] == key[h])
        if int(cap.res_left[same_part].sum()) == 0:
            return False
    return True


def _place_multi(
    frame: Frame, multi: I64, cap: Capacity, out: Outcome, time_limit_s: float, workers: int, *, cp_sat: bool = True
) -> bool:
    """Multi-slot requests alone: by `kslot` (a min-cost flow, when its answer holds) or `_each_at_its_best`
    (exact, both), else CP-SAT with greedy's answer as hint, falling back to that answer (without `cp_sat`:
    greedy's answer).

    Returns whether the part placed was proven optimal (for these requests on this capacity).
    """
    if kslot.place(frame, multi, cap, out) or _each_at_its_best(frame, multi, cap, out):
        return True
    if not cp_sat:
        greedy.place(frame, multi, cap, out)
        return False
    # A real trade-off between a few requests: CP-SAT on them alone (a few hundred booleans after pruning),
    # hinted with greedy's answer and kept to a few ms: these are ~2% of a batch, and hosts of one pool are
    # interchangeable, so proving the optimum takes CP-SAT far longer than finding it.
    base = out.copy()
    base_cap = cap.copy()
    greedy.place(frame, multi, base_cap, base)
    trial = out.copy()
    trial_cap = cap.copy()
    status = exact.place(
        frame,
        multi,
        trial_cap,
        trial,
        time_limit_s=min(time_limit_s, MULTI_TIME_LIMIT_S),
        workers=workers,
        hint=base,
    )
    better = status.found and outcome_cost(frame, trial) <= outcome_cost(frame, base)
    chosen, chosen_cap = (trial, trial_cap) if better else (base, base_cap)
    out.host[multi] = chosen.host[multi]
    out.leased[multi] = chosen.leased[multi]
    out.lease[multi] = chosen.lease[multi]
    cap.open[:] = chosen_cap.open
    cap.res_left[:] = chosen_cap.res_left
    return better and status.proven_optimal


def _each_at_its_best(frame: Frame, multi: I64, cap: Capacity, out: Outcome) -> bool:
    """Place every multi-slot request on a host as cheap as its own best one, if they all fit that way.

    A few dozen k-slot sessions over thousands of hosts rarely compete for the same capacity; they often tie
    between hosts of one pool, so each (in arrival order) takes its cheapest host with room left. If every one
    of them still gets its unconstrained best cost, the group is optimal and CP-SAT is not needed. Otherwise
    nothing changes and False comes back.
    """
    params = frame.problem.params
    open_ = cap.open.copy()
    res_left = cap.res_left.copy()
    choice: list[tuple[int, int, int, int]] = []  # request, host, leased slots, reservation row
    for r in arrival_order(frame, multi).tolist():
        venue, k = int(frame.req_venue[r]), int(frame.req_slots[r])
        rows = frame.lessee_rows(venue)
        lat = frame.lat[venue][frame.host_site]
        near = frame.host_usable & (lat <= frame.req_target[r])
        cold = frame.cold[frame.host_gs, frame.req_game[r]]
        best = None
        for free, reserved in ((cap.open, cap.own_reserved(rows)), (open_, reserved_left(res_left, rows))):
            ok = np.nonzero(near & (free + reserved >= k))[0]
            if ok.size == 0:
                if best is not None:
                    return False  # it had room, but earlier ones took it
                break
            leased = np.minimum(reserved[ok], k)
            cost = (
                frame.host_price[ok] * (k - leased) + params.latency_weight_micros_per_ms * lat[ok] + cold[ok]
            )
            i = int(np.argmin(cost))
            if best is not None and cost[i] != best[0]:
                return False  # capacity it wanted went to an earlier one: a real trade-off, CP-SAT's job
            best = (int(cost[i]), int(ok[i]), int(leased[i]))
        if best is None:
            continue  # no host can take it, in any answer
        _, h, lv = best
        open_[h] -= k - lv
        if lv:
            res_left[int(rows[h])] -= lv
        choice.append((r, h, lv, int(rows[h])))
    for r, h, lv, row in choice:
        out.host[r] = h
        if lv:
            out.leased[r] = lv
            out.lease[r] = int(frame.res_lease[row])
    cap.open[:] = open_
    cap.res_left[:] = res_left
    return True
