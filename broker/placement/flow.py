"""The engine's solver for single-slot requests: a min-cost flow over aggregated requests and host pools.

Graph (Firmament's aggregator idea: equivalent things share one node, so the graph grows with the variety of
the batch, not with its size):

    request group ──▶ K(bucket)                     ──▶ pool ──▶ sink    group: same venue, target, cold signature
        │       └──▶ W(bucket, signature, grade)    ──▶ pool             bucket: same site, GPU class, price
        │       └──▶ lease part                     ─────────▶ sink      pool: bucket × same held images
        └─────────────────────────────────────────────────────▶ sink    "stay pending", stay_pending_cost

A group's cold-start cost on a pool is graded (coldstart.py: 0 where the pool holds the current version, what the
bytes it lacks cost where it holds an older one, at most the flat penalty), and the grades a group meets in one
bucket are few. The arc to K(bucket) costs price + λ·latency + the dearest grade the group meets in the bucket;
below that, the arc to W(bucket, signature, grade) costs that grade and reaches only the pools whose grade is no
dearer. So a unit can never be dearer than the flow thinks, and the flow never pays more than a pool's own grade
for a pool it can reach through that grade's node, so the flow's cost is the placement's cost. Without image
sizes the grades are 0 and the flat penalty: W(bucket, signature, 0) reaches the warm pools, K all of them. A
lease part is the slots one lease holds in one pool: reachable by the lessee only, and free to it (latency and
cold start still count).

Pruning that keeps optimality: a group only gets arcs to its cheapest options until they hold N slots (the
batch's demand; `ranking.py` finds them). If some optimal answer sent a unit past them, they would still have a
free slot (the others use at most N-1) that is no dearer for that group; moving the unit there keeps it
optimal. (Smaller prefixes plus a posteriori checks were tried: at an evening peak most groups' cheap options
are full, so they needed as many rounds as they saved.)

Afterwards the packing rule picks concrete hosts: within a pool, partly used hosts first (most used first), so
whole hosts stay free for multi-slot sessions and idle ones can be powered down; within a group, the earliest
request gets the cheapest unit, so waiting is fair.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ortools.graph.python import min_cost_flow

from broker.placement.frame import I64, Frame, build_frame, spans
from broker.placement.model import Problem, Solution
from broker.placement.outcome import Capacity, Outcome, to_solution
from broker.placement.ranking import OptionRanking


def _first_of_runs(sorted_keys: I64) -> I64:
    """For each element of a sorted array, the index where its run of equal keys starts."""
    n = sorted_keys.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    new = np.ones(n, dtype=np.bool_)
    new[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return np.maximum.accumulate(np.where(new, np.arange(n), 0))


@dataclass(slots=True)
class _Graph:
    """The network: arcs in blocks [group->K | group->W | group->pool | group->lease part | K->pool | W->pool |
    pool->sink | part->sink | group->sink], and the node numbering. A K or W node that reaches one pool only is
    left out: its options go to that pool straight (the group->pool block), the same paths at the same costs
    with a node fewer (half the K and W nodes of a default-trace batch, ~10% of the solve)."""

    tails: I64
    heads: I64
    caps: I64
    costs: I64
    supplies: I64
    n_groups: int
    n_k_opt: int
    n_w_opt: int
    n_d_opt: int
    n_l_opt: int
    n_mid: int
    base_part: int
    base_pool: int

    @property
    def n_opt(self) -> int:
        return self.n_k_opt + self.n_w_opt + self.n_d_opt + self.n_l_opt

    def solve(self, pending: int) -> I64:
        """Min-cost flow; the arc flows. A huge pending cost makes cost scaling run more phases, so first try
        one a little above the dearest option: if that leaves nobody pending who had an option, no answer places
        more, and among answers placing as many the pending cost is a constant, so it is optimal for the real
        one too. Only otherwise (capacity ran out) solve again with the real pending cost."""
        option_costs = self.costs[: self.n_opt]
        # The trial is a multiple of the options' common divisor, so `_run` can still divide every cost by it
        # (an odd trial left a divisor of 1: 15 cost-scaling phases instead of 11, ~30% of the solve).
        positive = option_costs[option_costs > 0]
        step = max(int(np.gcd.reduce(positive)), 1) if positive.size else 1
        trial = min(pending, step * (int(option_costs.max(initial=0)) // step + 1))
        flow = self._run(trial)
        if trial < pending:
            has_option = np.zeros(self.n_groups, dtype=np.bool_)
            has_option[self.tails[: self.n_opt]] = True
            if (flow[-self.n_groups :][has_option] > 0).any():
                flow = self._run(pending)
        return flow

    def _run(self, pending: int) -> I64:
        costs = self.costs.copy()
        costs[-self.n_groups :] = pending
        # Dividing every cost by their common divisor changes no decision but shortens cost scaling (prices
        # come in whole 1,000s of micros, so this is usually 1,000).
        positive = costs[costs > 0]
        divisor = max(int(np.gcd.reduce(positive)), 1) if positive.size else 1
        solver = min_cost_flow.SimpleMinCostFlow()
        solver.add_arcs_with_capacity_and_unit_cost(
            self.tails.astype(np.int32), self.heads.astype(np.int32), self.caps, costs // divisor
        )
        solver.set_nodes_supplies(np.arange(self.supplies.size, dtype=np.int32), self.supplies)
        status = solver.solve()
        if status != solver.OPTIMAL:
            raise RuntimeError(f"min-cost flow failed: {status}")  # the pending arcs make it always feasible
        return np.asarray(solver.flows(np.arange(self.tails.size, dtype=np.int32)), dtype=np.int64)


def _pools(frame: Frame, live: I64) -> tuple[I64, I64, I64, I64]:
    """Hosts `live` in buckets (site, class, price) and pools (bucket, what they hold), numbered in that order:
    each host's bucket, each bucket's first host (an index into `live`), and the same for pools. One sort of a
    packed key where it fits in 63 bits (a few uniques cost ~3x as much), else the uniques."""
    site, cls, price, gs = frame.host_site[live], frame.host_class[live], frame.host_price[live], frame.host_gs[live]
    n_cls, n_gs = len(frame.classes), len(frame.gamesets)
    top_price = int(price.max(initial=0)) + 1
    if price.min(initial=0) < 0 or len(frame.sites) * n_cls * top_price * n_gs >= 1 << 62:
        _, price_rank = np.unique(price, return_inverse=True)
        bkey = (site * n_cls + cls) * (int(price_rank.max()) + 1) + price_rank
        _, b_first, host_bucket = np.unique(bkey, return_index=True, return_inverse=True)
        _, p_first, host_pool = np.unique(host_bucket * n_gs + gs, return_index=True, return_inverse=True)
        return host_bucket, b_first, host_pool, p_first
    key = ((site * n_cls + cls) * top_price + price) * n_gs + gs
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    new_pool = np.ones(order.size, dtype=np.bool_)
    new_pool[1:] = sorted_key[1:] != sorted_key[:-1]
    bucket_key = sorted_key // n_gs
    new_bucket = np.ones(order.size, dtype=np.bool_)
    new_bucket[1:] = bucket_key[1:] != bucket_key[:-1]
    host_pool = np.empty(order.size, dtype=np.int64)
    host_pool[order] = np.cumsum(new_pool) - 1
    host_bucket = np.empty(order.size, dtype=np.int64)
    host_bucket[order] = np.cumsum(new_bucket) - 1
    return host_bucket, order[new_bucket], host_pool, order[new_pool]


def place(frame: Frame, reqs: I64, cap: Capacity, out: Outcome) -> None:
    """Place single-slot requests `reqs` at minimum cost on `cap`, updating `cap` and `out` in place."""
    if reqs.size == 0:
        return
    params = frame.problem.params
    lam = params.latency_weight_micros_per_ms
    n_demand = int(reqs.size)

    # -- request groups: same venue, target and cold signature are interchangeable ----------------------------
    # Two games whose cold starts cost the same on every holding cost the same everywhere, so requests for them
    # merge (the popular titles are in every bundle: one group per venue and target covers most of a batch).
    r_venue, r_target = frame.req_venue[reqs], frame.req_target[reqs]
    u_games, r_gi = np.unique(frame.req_game[reqs], return_inverse=True)
    sig_rows, game_sig = np.unique(frame.cold[:, u_games].T, axis=0, return_inverse=True)
    sig_cost = sig_rows.T  # [gameset, signature]: the cold-start cost
    n_sig = sig_rows.shape[0]
    r_sig = game_sig.reshape(-1)[r_gi]
    gkey = (r_venue * n_sig + r_sig) * (int(r_target.max()) + 1) + r_target
    _, g_first, group_of, demand = np.unique(gkey, return_index=True, return_inverse=True, return_counts=True)
    demand = demand.astype(np.int64)
    n_groups = demand.size
    g_venue, g_sig, g_target = r_venue[g_first], r_sig[g_first], r_target[g_first]

    # -- pools: usable hosts with open or reserved slots, grouped by (site, class, price, cached games) ---------
    reserved = np.zeros(frame.n_hosts, dtype=np.bool_)
    reserved[frame.res_host[cap.res_left > 0]] = True
    live = np.nonzero(frame.host_usable & ((cap.open > 0) | reserved))[0]
    if live.size == 0:
        return
    host_bucket, b_first, host_pool, p_first = _pools(frame, live)
    n_buckets, n_pools = b_first.size, p_first.size
    b_site = frame.host_site[live[b_first]]
    b_price = frame.host_price[live[b_first]]
    p_bucket = host_bucket[p_first]
    p_gs = frame.host_gs[live[p_first]]
    p_open = np.bincount(host_pool, weights=cap.open[live], minlength=n_pools).astype(np.int64)
    pool_of_host = np.full(frame.n_hosts, -1, dtype=np.int64)
    pool_of_host[live] = host_pool
    # grades: the distinct cold-start costs; p_grade[pool, signature] indexes them
    grades, p_grade = np.unique(sig_cost[p_gs], return_inverse=True)
    n_gr = grades.size
    p_grade = p_grade.reshape(n_pools, n_sig)
    # open slots per (signature, grade, bucket): a column of the ranking is a (grade, bucket) that has any
    index = ((np.arange(n_sig) * n_gr + p_grade) * n_buckets + p_bucket[:, None]).ravel()
    gb_slots = np.bincount(
        index, weights=np.repeat(p_open, n_sig), minlength=n_sig * n_gr * n_buckets
    ).astype(np.int64).reshape(n_sig, n_gr * n_buckets)
    columns = np.nonzero(gb_slots.any(axis=0))[0]
    if columns.size == 0:  # only lease parts have room: one column, absent for every group
        columns = np.zeros(1, dtype=np.int64)
    col_bucket, col_grade = columns % n_buckets, columns // n_buckets
    sig_slots = gb_slots[:, columns]
    # the dearest grade with open slots per (signature, bucket): K(bucket) stands for it
    has = gb_slots.reshape(n_sig, n_gr, n_buckets) > 0
    top_grade = n_gr - 1 - np.argmax(has[:, ::-1, :], axis=1)
    pools_by_bucket = np.argsort(p_bucket, kind="stable")
    b_start = np.searchsorted(p_bucket[pools_by_bucket], np.arange(n_buckets))
    b_count = np.bincount(p_bucket, minlength=n_buckets)

    # -- lease parts: a lease's reserved slots in one pool, for its venue only (few, so always all kept) --------
    rows = np.nonzero((cap.res_left > 0) & (pool_of_host[frame.res_host] >= 0))[0]
    part_keys, row_part = np.unique(
        frame.res_lease[rows] * n_pools + pool_of_host[frame.res_host[rows]], return_inverse=True
    )
    part_pool = part_keys % n_pools
    part_cap = np.bincount(row_part, weights=cap.res_left[rows], minlength=part_keys.size).astype(np.int64)
    part_venue = frame.lease_venue[part_keys // n_pools]
    by_venue = np.argsort(part_venue, kind="stable")
    lo = np.searchsorted(part_venue[by_venue], g_venue, side="left")
    hi = np.searchsorted(part_venue[by_venue], g_venue, side="right")
    lg = np.repeat(np.arange(n_groups), hi - lo)
    lp = by_venue[spans(lo, hi - lo)]
    l_lat = frame.lat[g_venue[lg], b_site[p_bucket[part_pool[lp]]]]
    near = l_lat <= g_target[lg]
    lg, lp, l_lat = lg[near], lp[near], l_lat[near]
    lc = lam * l_lat + sig_cost[p_gs[part_pool[lp]], g_sig[lg]]

    # -- options: each group's cheapest ones holding N slots ----------------------------------------------------
    # clipped to 32 bits per (venue, site) first (a few dozen thousand entries), then gathered straight to the
    # ranking's columns: ~7x faster than gathering int64 (venue, bucket) columns and clipping those
    lat32 = np.minimum(frame.lat, np.iinfo(np.int32).max).astype(np.int32)[g_venue]
    col_lat = np.take(lat32, b_site[col_bucket], axis=1)
    ranking = OptionRanking(col_lat, g_target, b_price, lam, col_bucket, grades[col_grade], sig_slots, g_sig)
    gi, ci, _ = ranking.cut(np.full(n_groups, n_demand, dtype=np.int64))
    ob, og = col_bucket[ci], col_grade[ci]
    oc = b_price[ob] + lam * frame.lat[g_venue[gi], b_site[ob]] + grades[og]
    # the dearest grade of a bucket is all of it (K(bucket) reaches every pool); a cheaper one only some of the
    # bucket's pools (W(bucket, signature, grade) reaches those no dearer)
    to_w = og < top_grade[g_sig[gi], ob]
    graph = _build(
        gi[~to_w],
        ob[~to_w],
        oc[~to_w],
        gi[to_w],
        (ob[to_w] * n_sig + g_sig[gi[to_w]]) * n_gr + og[to_w],
        oc[to_w],
        lg,
        lp,
        lc,
        demand,
        n_sig,
        n_gr,
        p_open,
        p_grade,
        part_cap,
        pools_by_bucket,
        b_start,
        b_count,
    )
    flow = graph.solve(params.stay_pending_cost_micros)

    # -- split the flow through K/W nodes into (group, pool, amount) ------------------------------------------
    tails, heads, n_opt = graph.tails, graph.heads, graph.n_opt
    n_kw_opt = graph.n_k_opt + graph.n_w_opt
    in_sel = np.nonzero(flow[:n_kw_opt] > 0)[0]
    in_sel = in_sel[np.argsort(heads[in_sel], kind="stable")]
    out_sel = n_opt + np.nonzero(flow[n_opt : n_opt + graph.n_mid] > 0)[0]
    out_sel = out_sel[np.argsort(tails[out_sel], kind="stable")]
    # Per node, inflow equals outflow, so the two running sums meet at node boundaries: cut both at the union
    # of their breakpoints and every piece lies in one in-arc and one out-arc of the same node.
    cum_in, cum_out = np.cumsum(flow[in_sel]), np.cumsum(flow[out_sel])
    ends = np.union1d(cum_in, cum_out).astype(np.int64)
    starts = np.concatenate([np.zeros(1, dtype=np.int64), ends[:-1]]) if ends.size else ends
    # ... and the options straight to a pool are pieces as they are
    d_sel = n_kw_opt + np.nonzero(flow[n_kw_opt : n_kw_opt + graph.n_d_opt] > 0)[0]
    seg_group = np.concatenate([tails[in_sel][np.searchsorted(cum_in, starts, side="right")], tails[d_sel]])
    seg_pool = (
        np.concatenate([heads[out_sel][np.searchsorted(cum_out, starts, side="right")], heads[d_sel]])
        - graph.base_pool
    )
    seg_amount = np.concatenate([ends - starts, flow[d_sel]])
    l_start = n_kw_opt + graph.n_d_opt
    l_sel = l_start + np.nonzero(flow[l_start:n_opt] > 0)[0]

    # -- units: one per placed slot, with its true cost --------------------------------------------------------
    u_group = np.concatenate([np.repeat(seg_group, seg_amount), np.repeat(tails[l_sel], flow[l_sel])])
    u_pool = np.repeat(seg_pool, seg_amount)
    u_part = np.repeat(heads[l_sel] - graph.base_part, flow[l_sel])
    n_pool_units = u_pool.size
    u_target_pool = np.concatenate([u_pool, part_pool[u_part]])
    u_lat = frame.lat[g_venue[u_group], b_site[p_bucket[u_target_pool]]]
    u_cold = sig_cost[p_gs[u_target_pool], g_sig[u_group]]
    u_price = np.concatenate([b_price[p_bucket[u_pool]], np.zeros(u_part.size, dtype=np.int64)])
    u_cost = u_price + lam * u_lat + u_cold

    # Earliest request of a group gets the group's cheapest unit.
    u_order = np.lexsort((np.arange(u_group.size), u_cost, u_group))
    u_rank = np.arange(u_order.size) - _first_of_runs(u_group[u_order])
    r_order = np.lexsort((reqs, frame.req_arrival[reqs], group_of))
    g_req_start = np.cumsum(demand) - demand
    u_req = np.empty(u_group.size, dtype=np.int64)
    u_req[u_order] = reqs[r_order[g_req_start[u_group[u_order]] + u_rank]]

    # -- concrete hosts: within a pool (or lease part), most-used hosts first ---------------------------------
    used_now = frame.host_total - cap.open
    positions = np.arange(frame.n_hosts)
    if n_pool_units:
        slot_hosts = live[cap.open[live] > 0]
        top_used = int(frame.host_total.max(initial=0)) + 1
        if n_pools * top_used * frame.n_hosts < 1 << 62:
            # by pool, most used first, then position: one packed key (each part below its factor), one sort
            packed = (pool_of_host[slot_hosts] * top_used + (top_used - 1 - used_now[slot_hosts])) * frame.n_hosts
            slot_hosts = slot_hosts[np.argsort(packed + slot_hosts)]
        else:
            slot_hosts = slot_hosts[np.lexsort((slot_hosts, -used_now[slot_hosts], pool_of_host[slot_hosts]))]
        slots = np.repeat(slot_hosts, cap.open[slot_hosts])
        pool_slot_start = np.cumsum(p_open) - p_open
        by_pool = np.argsort(u_pool, kind="stable")
        rank = np.arange(n_pool_units) - _first_of_runs(u_pool[by_pool])
        hosts = np.empty(n_pool_units, dtype=np.int64)
        hosts[by_pool] = slots[pool_slot_start[u_pool[by_pool]] + rank]
        out.host[u_req[:n_pool_units]] = hosts
        np.subtract.at(cap.open, hosts, 1)
    if u_part.size:
        res_rows = rows[
            np.lexsort((positions[frame.res_host[rows]], -used_now[frame.res_host[rows]], row_part))
        ]
        row_slots = np.repeat(res_rows, cap.res_left[res_rows])
        part_slot_start = np.cumsum(part_cap) - part_cap
        by_part = np.argsort(u_part, kind="stable")
        rank = np.arange(u_part.size) - _first_of_runs(u_part[by_part])
        used_rows = np.empty(u_part.size, dtype=np.int64)
        used_rows[by_part] = row_slots[part_slot_start[u_part[by_part]] + rank]
        lease_reqs = u_req[n_pool_units:]
        out.host[lease_reqs] = frame.res_host[used_rows]
        out.leased[lease_reqs] = 1
        out.lease[lease_reqs] = frame.res_lease[used_rows]
        np.subtract.at(cap.res_left, used_rows, 1)


def _build(
    kg: I64,
    kb: I64,
    kc: I64,
    wg: I64,
    wkey: I64,
    wc: I64,
    lg: I64,
    lp: I64,
    lc: I64,
    demand: I64,
    n_sig: int,
    n_gr: int,
    p_open: I64,
    p_grade: I64,
    part_cap: I64,
    pools_by_bucket: I64,
    b_start: I64,
    b_count: I64,
) -> _Graph:
    """The network for the kept options: K options (group, bucket, cost), W options (group, (bucket * n_sig +
    signature) * n_gr + grade, cost) and lease options (group, part, cost)."""
    n_groups, n_pools, n_parts = demand.size, p_open.size, part_cap.size
    k_buckets, k_node_of = np.unique(kb, return_inverse=True)
    w_keys, w_node_of = np.unique(wkey, return_inverse=True)
    # K(bucket) -> every pool of the bucket with open slots
    kq_tail = np.repeat(np.arange(k_buckets.size), b_count[k_buckets])
    kq_pool = pools_by_bucket[spans(b_start[k_buckets], b_count[k_buckets])]
    keep = p_open[kq_pool] > 0
    kq_tail, kq_pool = kq_tail[keep], kq_pool[keep]
    # W(bucket, signature, grade) -> the pools of the bucket where the signature's cold start is no dearer
    w_bucket, w_sig, w_grade = w_keys // (n_sig * n_gr), (w_keys // n_gr) % n_sig, w_keys % n_gr
    wq_tail = np.repeat(np.arange(w_keys.size), b_count[w_bucket])
    wq_pool = pools_by_bucket[spans(b_start[w_bucket], b_count[w_bucket])]
    keep = (p_open[wq_pool] > 0) & (p_grade[wq_pool, w_sig[wq_tail]] <= w_grade[wq_tail])
    wq_tail, wq_pool = wq_tail[keep], wq_pool[keep]
    # A node reaching one pool only is left out; its options go to the pool (every option's node reaches one or
    # more: an option exists only where its grade has open slots for the group's signature)
    k_one = np.bincount(kq_tail, minlength=k_buckets.size) == 1
    w_one = np.bincount(wq_tail, minlength=w_keys.size) == 1
    k_pool = np.full(k_buckets.size, -1, dtype=np.int64)
    k_pool[kq_tail[k_one[kq_tail]]] = kq_pool[k_one[kq_tail]]
    w_pool = np.full(w_keys.size, -1, dtype=np.int64)
    w_pool[wq_tail[w_one[wq_tail]]] = wq_pool[w_one[wq_tail]]
    k_new = np.cumsum(~k_one) - 1
    w_new = np.cumsum(~w_one) - 1
    kq_keep, wq_keep = ~k_one[kq_tail], ~w_one[wq_tail]
    kq_tail, kq_pool = k_new[kq_tail[kq_keep]], kq_pool[kq_keep]
    wq_tail, wq_pool = w_new[wq_tail[wq_keep]], wq_pool[wq_keep]
    n_k, n_w = int((~k_one).sum()), int((~w_one).sum())
    kd, wd = k_one[k_node_of], w_one[w_node_of]  # options straight to a pool

    base_k = n_groups
    base_w = base_k + n_k
    base_part = base_w + n_w
    base_pool = base_part + n_parts
    sink = base_pool + n_pools
    n_mid = kq_tail.size + wq_tail.size
    d_group = np.concatenate([kg[kd], wg[wd]])
    tails = np.concatenate(
        [
            kg[~kd],
            wg[~wd],
            d_group,
            lg,  # group -> option
            base_k + kq_tail,
            base_w + wq_tail,  # option -> pool
            base_pool + np.arange(n_pools),
            base_part + np.arange(n_parts),  # capacity -> sink
            np.arange(n_groups),  # stay pending
        ]
    )
    heads = np.concatenate(
        [
            base_k + k_new[k_node_of[~kd]],
            base_w + w_new[w_node_of[~wd]],
            base_pool + np.concatenate([k_pool[k_node_of[kd]], w_pool[w_node_of[wd]]]),
            base_part + lp,
            base_pool + kq_pool,
            base_pool + wq_pool,
            np.full(n_pools + n_parts + n_groups, sink),
        ]
    )
    caps = np.concatenate(
        [
            demand[kg[~kd]],
            demand[wg[~wd]],
            demand[d_group],
            demand[lg],
            np.full(n_mid, int(demand.sum())),
            p_open,
            part_cap,
            demand,
        ]
    ).astype(np.int64)
    costs = np.concatenate(
        [kc[~kd], wc[~wd], kc[kd], wc[wd], lc, np.zeros(n_mid + n_pools + n_parts + n_groups, dtype=np.int64)]
    )
    supplies = np.zeros(sink + 1, dtype=np.int64)
    supplies[:n_groups] = demand
    supplies[sink] = -int(demand.sum())
    return _Graph(
        tails,
        heads,
        caps,
        costs.astype(np.int64),
        supplies,
        n_groups,
        int((~kd).sum()),
        int((~wd).sum()),
        int(d_group.size),
        lg.size,
        n_mid,
        base_part,
        base_pool,
    )


def solve(problem: Problem) -> Solution:
    """Solve a batch by min-cost flow. Every request must ask for one slot (the engine routes the others)."""
    frame = build_frame(problem)
    reqs = np.arange(frame.n_requests, dtype=np.int64)
    if (frame.req_slots != 1).any():
        raise ValueError(
            "flow.solve handles single-slot requests only; use engine.solve for multi-slot batches"
        )
    out = Outcome.empty(frame.n_requests)
    place(frame, reqs, Capacity.initial(frame), out)
    return to_solution(frame, out, "flow", proven_optimal=True)
