"""CP-SAT: the exact reference, and the solver for sessions that need several slots on one host.

The model, as a pipeline: columns of the problem -> candidate options -> variables -> one constraint block per
capacity -> objective -> solve with the caller's time limit, hinted with another answer (greedy's, by default)
-> decode into hosts with the same packing rule and the same fairness rule as the flow.

Variables:
- one-slot requests are grouped (same venue, game and target: interchangeable). `take[g, o]` (integer) is how
  many of group g go to option o: a pool (hosts alike in site, class, price and cached games) or a lease part
  (the slots one lease of g's venue holds in one pool). Hosts of a pool are interchangeable for a one-slot
  session and requests of a group are interchangeable for any option, so this is exact; concrete hosts and
  requests are matched afterwards.
- k-slot requests on hosts that hold no lease go by filling patterns (_PatternModel, the configuration model of
  bin packing): such hosts alike in pool and open slots form a sub-pool; `y[s, π]` counts its hosts filled by
  pattern π (a multiset of the k-slot sizes that want it, within the open slots) and `units[c, s]` how many
  requests of a class c (same venue, game, target and k) go there. No variable per host, so no symmetry between
  identical hosts: CP-SAT proves a 1,000-request batch with 8% multi-slot sessions where a boolean per host and
  request proved none (docs/placement.md#multi-slot-sessions-measured-honestly).
- k-slot request r on a host h that holds some lease's slots: `on[r, h]` (bool), and `leased[r, h]` in
  0..min(k, reserved) where h holds r's venue's lease: the slots of the k that the lease pays; the other
  k - leased are on-demand, on the same host. (`per_host=True` puts every k-slot request on hosts this way: the
  plain model, which the property tests hold the patterns to.)

Candidate pruning keeps optimality (the flow's exchange argument): a one-slot group keeps its cheapest options
until their capacity covers N, the batch's slots; a k-slot request keeps its cheapest n hosts, n the number of
requests in the model (each other request sits on one host, so it spoils at most one of them); a k-slot class
keeps its cheapest sub-pools until they hold that many hosts, for the same reason.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from ortools.sat.python import cp_model

from broker.placement import greedy
from broker.placement.frame import I64, Frame, build_frame
from broker.placement.model import Problem, Solution
from broker.placement.outcome import Capacity, Outcome, outcome_cost, to_solution

# Variable kinds, in `_Vars.kind`.
_POOL, _PART, _HOST, _LEASED, _UNITS, _PATTERN = 0, 1, 2, 3, 4, 5


@dataclass(frozen=True, slots=True)
class ExactStatus:
    """How a CP-SAT solve went: whether it found an answer, whether it proved it optimal, and its wall time."""

    found: bool
    proven_optimal: bool
    wall_s: float


@dataclass(slots=True)
class _Vars:
    """The model's variables and what each one stands for."""

    model: cp_model.CpModel
    x: list[cp_model.IntVar]
    owner: list[int]  # group index (kinds _POOL, _PART) or request position (kinds _HOST, _LEASED)
    kind: list[int]
    target: list[int]  # pool, lease part or host
    cost: list[int]  # objective coefficient per unit, before the pending cost

    def add(self, owner: int, kind: int, target: int, cost: int, upper: int) -> int:
        i = len(self.x)
        name = f"{kind}_{owner}_{target}"
        self.x.append(self.model.new_bool_var(name) if upper == 1 else self.model.new_int_var(0, upper, name))
        self.owner.append(owner)
        self.kind.append(kind)
        self.target.append(target)
        self.cost.append(cost)
        return i


def _pools(frame: Frame, cap: Capacity) -> tuple[I64, I64, int]:
    """Pool of each host (-1 for hosts with nothing to give), pool -> one member host, and the pool count."""
    reserved = np.zeros(frame.n_hosts, dtype=np.bool_)
    reserved[frame.res_host[cap.res_left > 0]] = True
    live = np.nonzero(frame.host_usable & ((cap.open > 0) | reserved))[0]
    _, price_rank = np.unique(frame.host_price[live], return_inverse=True)
    key = (
        (frame.host_site[live] * len(frame.classes) + frame.host_class[live])
        * (int(price_rank.max(initial=0)) + 1)
        + price_rank
    ) * len(frame.gamesets) + frame.host_gs[live]
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    pool_of = np.full(frame.n_hosts, -1, dtype=np.int64)
    pool_of[live] = inverse
    return pool_of, live[first], int(first.size)


@dataclass(slots=True)
class _PatternModel:
    """k-slot requests on hosts that hold no lease: the configuration model of bin packing.

    Such hosts alike in pool (site, class, price, cached games) and open slots f form a sub-pool of n hosts. The
    ways one of them can be filled by the k-slot sizes that want it are its patterns (f = 4 with sizes 2 and 4:
    nothing, 2, 2+2, 4); `y[s, π]` counts the sub-pool's hosts filled by pattern π (the counts add up to n), and
    `units[c, s]` how many requests of class c (same venue, game, target and k: interchangeable) go to sub-pool
    s, at most the k-sized places its patterns hold. A host's slots left by its pattern take one-slot sessions
    (each pattern's size counts against the pool's open slots). Exact, and small: no variable per host, so no
    symmetry between hosts for CP-SAT to wade through; concrete hosts are matched afterwards (`decode`).
    """

    members: list[list[int]]  # class -> its requests, earliest first
    class_k: list[int]
    # candidate sub-pools per class: (sub-pool, cost per request), cheapest first
    options: list[list[tuple[int, int]]]
    sub_hosts: list[I64]  # sub-pool -> its hosts, in the packing order (most used first)
    sub_pool: list[int]
    sub_open: list[int]
    sub_of: I64  # host -> sub-pool or -1
    class_of: dict[int, int]  # request -> class
    class_vars: list[list[int]] = field(default_factory=list)  # class -> its unit variables
    unit_at: dict[int, tuple[int, int]] = field(default_factory=dict)  # unit variable -> (class, sub-pool)
    patterns: dict[int, list[tuple[int, ...]]] = field(default_factory=dict)  # sub-pool -> patterns
    pattern_vars: dict[int, list[int]] = field(default_factory=dict)  # sub-pool -> a variable per pattern

    def add_to(self, vs: _Vars, pool_load: dict[int, list[tuple[int, int]]]) -> None:
        """The unit and pattern variables, the link between them, and the patterns' load on their pools."""
        sizes: dict[int, set[int]] = defaultdict(set)
        units_of: dict[tuple[int, int], list[int]] = defaultdict(list)  # (sub-pool, k) -> unit variables
        for c, options in enumerate(self.options):
            k = self.class_k[c]
            self.class_vars.append([])
            for sub, cost in options:
                upper = min(len(self.members[c]), int(self.sub_hosts[sub].size) * (self.sub_open[sub] // k))
                v = vs.add(c, _UNITS, sub, cost, upper)
                self.class_vars[c].append(v)
                self.unit_at[v] = (c, sub)
                units_of[(sub, k)].append(v)
                sizes[sub].add(k)
        for sub, ks in sizes.items():
            n, f = int(self.sub_hosts[sub].size), self.sub_open[sub]
            pats = fillings(sorted(ks, reverse=True), f)
            self.patterns[sub] = pats
            y = [vs.add(sub, _PATTERN, i, 0, n) for i in range(len(pats))]
            self.pattern_vars[sub] = y
            vs.model.add(sum(vs.x[v] for v in y) == n)
            for k in ks:
                slots = [(v, pat.count(k)) for v, pat in zip(y, pats, strict=True) if k in pat]
                _linear_le(vs.model, vs.x, [(u, 1) for u in units_of[(sub, k)]] + [(v, -a) for v, a in slots], 0)
            pool_load[self.sub_pool[sub]].extend((v, sum(pat)) for v, pat in zip(y, pats, strict=True) if pat)

    def hint_values(self, frame: Frame, hint: Outcome) -> dict[int, int]:
        """Each unit and pattern variable's value in `hint` (left out where the hint fits no variable)."""
        values: dict[int, int] = {}
        var_of = {(c, sub): v for v, (c, sub) in self.unit_at.items()}
        on_host: dict[int, list[int]] = defaultdict(list)
        for r, c in self.class_of.items():
            h = int(hint.host[r])
            if h < 0 or self.sub_of[h] < 0:
                continue
            on_host[h].append(self.class_k[c])
            v = var_of.get((c, int(self.sub_of[h])))
            if v is not None:
                values[v] = values.get(v, 0) + 1
        for sub, pats in self.patterns.items():
            count = [0] * len(pats)
            index = {pat: i for i, pat in enumerate(pats)}
            for h in self.sub_hosts[sub].tolist():
                i = index.get(tuple(sorted(on_host.get(h, []), reverse=True)))
                if i is not None:
                    count[i] += 1
            for v, n in zip(self.pattern_vars[sub], count, strict=True):
                values[v] = n
        return values

    def decode(self, frame: Frame, vs: _Vars, values: list[int], cap: Capacity, out: Outcome) -> None:
        """Give each sub-pool's hosts their patterns (fullest pattern to the most used host) and each class's
        units to its requests not placed otherwise, the earliest request getting the cheapest unit."""
        places: dict[tuple[int, int], list[int]] = {}  # (sub-pool, k) -> hosts with a k-sized place, in order
        for sub, pats in self.patterns.items():
            chosen = [
                pat
                for v, pat in sorted(
                    zip(self.pattern_vars[sub], pats, strict=True), key=lambda vp: (-sum(vp[1]), vp[1])
                )
                for _ in range(values[v])
            ]
            for h, pat in zip(self.sub_hosts[sub].tolist(), chosen, strict=False):
                for k in pat:
                    places.setdefault((sub, k), []).append(h)
        for c, unit_vars in enumerate(self.class_vars):
            k = self.class_k[c]
            units = sorted((vs.cost[v], self.unit_at[v][1]) for v in unit_vars for _ in range(values[v]))
            waiting = [r for r in self.members[c] if out.host[r] < 0]
            for r, (_, sub) in zip(waiting, units, strict=False):
                h = places[(sub, k)].pop(0)
                out.host[r] = h
                cap.open[h] -= k


def fillings(sizes: list[int], room: int) -> list[tuple[int, ...]]:
    """Every multiset of `sizes` (largest first) whose sum is at most `room`, the empty one included."""
    out: list[tuple[int, ...]] = []

    def grow(prefix: tuple[int, ...], start: int, left: int) -> None:
        out.append(prefix)
        for i in range(start, len(sizes)):
            if sizes[i] <= left:
                grow((*prefix, sizes[i]), i, left - sizes[i])

    grow((), 0, room)
    return out


def _patterns(
    frame: Frame, cap: Capacity, multis: I64, pool_of: I64, leased_host: npt.NDArray[np.bool_], keep: int
) -> _PatternModel:
    """The k-slot requests' classes and, for each, its cheapest sub-pools of hosts that hold no lease: enough of
    them to hold `keep` hosts (every other request of the model sits on one host, so it can spoil at most one of
    them: a class's cheapest `keep` hosts always include one left for it)."""
    params = frame.problem.params
    lam = params.latency_weight_micros_per_ms
    plain = np.nonzero(frame.host_usable & ~leased_host & (pool_of >= 0) & (cap.open >= 2))[0]
    key = pool_of[plain] * (int(cap.open.max(initial=0)) + 1) + cap.open[plain]
    _, sub_first, sub_inverse = np.unique(key, return_index=True, return_inverse=True)
    sub_of = np.full(frame.n_hosts, -1, dtype=np.int64)
    sub_of[plain] = sub_inverse
    used = frame.host_total - cap.open
    n_subs = int(sub_first.size)
    order = plain[np.lexsort((plain, -used[plain], sub_inverse))]
    bounds = np.searchsorted(sub_of[order], np.arange(n_subs + 1))
    sub_hosts = [order[bounds[i] : bounds[i + 1]] for i in range(n_subs)]
    rep = plain[sub_first]
    sub_pool, sub_open = pool_of[rep], cap.open[rep]
    sub_site, sub_price, sub_gs = frame.host_site[rep], frame.host_price[rep], frame.host_gs[rep]
    sub_size = np.array([h.size for h in sub_hosts], dtype=np.int64)

    venue, game, target, k = (frame.req_venue[multis], frame.req_game[multis], frame.req_target[multis],
                              frame.req_slots[multis])
    ckey = ((venue * (len(frame.games) + 1) + game) * (int(target.max(initial=0)) + 1) + target) * 9 + k
    arrival = np.lexsort((multis, frame.req_arrival[multis]))
    members: dict[int, list[int]] = defaultdict(list)
    for i in arrival.tolist():
        members[int(ckey[i])].append(int(multis[i]))
    model = _PatternModel([], [], [], sub_hosts, sub_pool.tolist(), sub_open.tolist(), sub_of, {})
    for reqs in members.values():
        r = reqs[0]
        v, g, t, kk = (int(frame.req_venue[r]), int(frame.req_game[r]), int(frame.req_target[r]),
                       int(frame.req_slots[r]))
        lat = frame.lat[v][sub_site]
        ok = np.nonzero((lat <= t) & (sub_open >= kk))[0]
        cost = sub_price[ok] * kk + lam * lat[ok] + frame.cold[sub_gs[ok], g]
        ranked = np.lexsort((ok, cost))
        before = np.cumsum(sub_size[ok][ranked]) - sub_size[ok][ranked]
        c = len(model.members)
        model.members.append(reqs)
        model.class_k.append(kk)
        model.options.append([(int(ok[i]), int(cost[i])) for i in ranked[before < keep].tolist()])
        for req in reqs:
            model.class_of[req] = c
    return model


def _linear_le(
    model: cp_model.CpModel, x: list[cp_model.IntVar], load: list[tuple[int, int]], bound: int
) -> None:
    model.add(cp_model.LinearExpr.weighted_sum([x[v] for v, _ in load], [c for _, c in load]) <= bound)


def place(
    frame: Frame,
    reqs: I64,
    cap: Capacity,
    out: Outcome,
    *,
    time_limit_s: float,
    workers: int = 1,
    hint: Outcome | None = None,
    per_host: bool = False,
) -> ExactStatus:
    """Place `reqs` optimally (within the time limit) on `cap`, updating `cap` and `out` in place.

    k-slot requests on hosts that hold no lease go by filling patterns of identical hosts (the module docstring);
    `per_host` puts them on each host by a boolean instead, the plain model the tests check the patterns against.
    """
    if reqs.size == 0:
        return ExactStatus(True, True, 0.0)
    params = frame.problem.params
    lam = params.latency_weight_micros_per_ms
    pending = params.stay_pending_cost_micros
    n_slots = int(frame.req_slots[reqs].sum())
    singles = reqs[frame.req_slots[reqs] == 1]
    multis = reqs[frame.req_slots[reqs] > 1]

    # -- data: pools and lease parts (only one-slot requests need them) ------------------------------------------
    if singles.size or (multis.size and not per_host):
        pool_of, pool_rep, n_pools = _pools(frame, cap)
    else:
        pool_of, pool_rep, n_pools = (
            np.full(frame.n_hosts, -1, dtype=np.int64),
            np.zeros(0, dtype=np.int64),
            0,
        )
    live = pool_of >= 0
    pool_open = np.bincount(pool_of[live], weights=cap.open[live], minlength=n_pools).astype(np.int64)
    rows = np.nonzero((cap.res_left > 0) & (pool_of[frame.res_host] >= 0))[0]
    part_keys, row_part = np.unique(
        frame.res_lease[rows] * n_pools + pool_of[frame.res_host[rows]], return_inverse=True
    )
    part_cap = np.bincount(row_part, weights=cap.res_left[rows], minlength=part_keys.size).astype(np.int64)
    part_pool = part_keys % max(n_pools, 1)
    part_venue = frame.lease_venue[part_keys // max(n_pools, 1)]
    pool_site, pool_price, pool_gs = (
        frame.host_site[pool_rep],
        frame.host_price[pool_rep],
        frame.host_gs[pool_rep],
    )

    # -- one-slot groups and their options, cheapest first up to N slots -----------------------------------------
    s_venue, s_game, s_target = frame.req_venue[singles], frame.req_game[singles], frame.req_target[singles]
    gkey = (s_venue * (len(frame.games) + 1) + s_game) * (int(s_target.max(initial=0)) + 1) + s_target
    _, g_first, group_of, demand = np.unique(gkey, return_index=True, return_inverse=True, return_counts=True)
    vs = _Vars(cp_model.CpModel(), [], [], [], [], [])
    model = vs.model
    by_owner: dict[tuple[int, int], list[int]] = defaultdict(list)  # (0, group) or (1, request) -> vars
    pool_load: dict[int, list[tuple[int, int]]] = defaultdict(list)  # pool -> (var, open slots per unit)
    part_load: dict[int, list[tuple[int, int]]] = defaultdict(list)
    host_load: dict[int, list[tuple[int, int]]] = defaultdict(list)
    row_load: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for g, first in enumerate(g_first.tolist()):
        venue, game, target = int(s_venue[first]), int(s_game[first]), int(s_target[first])
        lat = frame.lat[venue]
        p_ok = np.nonzero((lat[pool_site] <= target) & (pool_open > 0))[0]
        l_ok = np.nonzero((part_venue == venue) & (lat[pool_site[part_pool]] <= target))[0]
        o_pool = np.concatenate([p_ok, part_pool[l_ok]])
        kinds = np.concatenate([np.full(p_ok.size, _POOL), np.full(l_ok.size, _PART)])
        targets = np.concatenate([p_ok, l_ok])
        costs = (
            np.where(kinds == _POOL, pool_price[o_pool], 0)
            + lam * lat[pool_site[o_pool]]
            + frame.cold[pool_gs[o_pool], game]
        )
        caps = np.concatenate([pool_open[p_ok], part_cap[l_ok]])
        order = np.lexsort((targets, kinds, costs))
        before = np.cumsum(caps[order]) - caps[order]
        for i in order[before < n_slots].tolist():
            kind, t = int(kinds[i]), int(targets[i])
            v = vs.add(g, kind, t, int(costs[i]), int(min(demand[g], caps[i])))
            by_owner[(0, g)].append(v)
            (pool_load if kind == _POOL else part_load)[t].append((v, 1))

    # -- k-slot requests: hosts with k slots for them (their own reserved slots count) ---------------------------
    # Every other request sits on one host, so it can spoil at most one of r's hosts: r's cheapest
    # len(reqs) hosts always include one that stays free for it.
    keep_hosts = int(reqs.size)
    # Hosts holding some lease's slots are told apart (their reserved slots differ); the others, alike in pool and
    # open slots, take k-slot sessions by pattern (_patterns), unless per_host.
    leased_host = np.zeros(frame.n_hosts, dtype=np.bool_)
    leased_host[frame.res_host[cap.res_left > 0]] = True
    by_pattern = (
        None if per_host or multis.size == 0 else _patterns(frame, cap, multis, pool_of, leased_host, keep_hosts)
    )
    for r in multis.tolist():
        venue, game, target, k = (
            int(frame.req_venue[r]),
            int(frame.req_game[r]),
            int(frame.req_target[r]),
            int(frame.req_slots[r]),
        )
        rows_of_venue = frame.lessee_rows(venue)
        own = cap.own_reserved(rows_of_venue)
        lat_h = frame.lat[venue][frame.host_site]
        hosts = np.nonzero(frame.host_usable & (lat_h <= target) & (cap.open + own >= k))[0]
        if by_pattern is not None:
            hosts = hosts[leased_host[hosts]]
        best = (
            frame.host_price[hosts] * (k - np.minimum(own[hosts], k))
            + lam * lat_h[hosts]
            + frame.cold[frame.host_gs[hosts], game]
        )
        for h in hosts[np.lexsort((hosts, best))][:keep_hosts].tolist():
            price = int(frame.host_price[h])
            fixed = lam * int(lat_h[h]) + int(frame.cold[frame.host_gs[h], game])
            v = vs.add(r, _HOST, h, price * k + fixed, 1)
            by_owner[(1, r)].append(v)
            host_load[h].append((v, k))
            if singles.size:  # with only k-slot requests, the per-host rows imply the pool rows
                pool_load[int(pool_of[h])].append((v, k))
            most = min(k, int(own[h]))
            if most > 0:
                # leased[r, h] <= most * on[r, h]; each leased slot takes a reserved slot instead of an open one
                lv = vs.add(r, _LEASED, h, -price, most)
                model.add(vs.x[lv] <= most * vs.x[v])
                row = int(rows_of_venue[h])
                host_load[h].append((lv, -1))
                row_load[row].append((lv, 1))
                if singles.size:
                    pool_load[int(pool_of[h])].append((lv, -1))
                    part = int(np.searchsorted(part_keys, frame.res_lease[row] * n_pools + pool_of[h]))
                    part_load[part].append((lv, 1))

    if by_pattern is not None:
        by_pattern.add_to(vs, pool_load)

    # -- constraints ---------------------------------------------------------------------------------------------
    # demand: a group places at most its size; a k-slot request takes at most one host (none = stays pending)
    for (is_multi, owner), v_list in by_owner.items():
        if is_multi:
            model.add_at_most_one([vs.x[v] for v in v_list if vs.kind[v] == _HOST])
        else:
            model.add(sum(vs.x[v] for v in v_list) <= int(demand[owner]))
    if by_pattern is not None:
        # a k-slot class places at most its size, by pattern and on leased hosts together
        for c, members in enumerate(by_pattern.members):
            on_hosts = [v for r in members for v in by_owner.get((1, r), []) if vs.kind[v] == _HOST]
            units = by_pattern.class_vars[c]
            if units:
                model.add(sum(vs.x[v] for v in units + on_hosts) <= len(members))
    # open slots: per pool (one-slot sessions spread over its hosts) and per host (a k-slot session sits on one)
    for p, load in pool_load.items():
        _linear_le(model, vs.x, load, int(pool_open[p]))
    for h, load in host_load.items():
        _linear_le(model, vs.x, load, int(cap.open[h]))
    # reserved slots: per lease part and per reservation row; only lessees have variables here
    for part, load in part_load.items():
        _linear_le(model, vs.x, load, int(part_cap[part]))
    for row, load in row_load.items():
        _linear_le(model, vs.x, load, int(cap.res_left[row]))

    # -- objective: placement costs, and the pending cost of every request not placed ----------------------------
    # Written as (cost - pending) per placed unit plus pending for everyone, so that leaving a request out costs.
    coeffs = [
        c if kind in (_LEASED, _PATTERN) else c - pending for c, kind in zip(vs.cost, vs.kind, strict=True)
    ]
    # Dividing by the coefficients' common divisor (prices come in 1,000s of micros) keeps CP-SAT's numbers
    # small; the constant term is left out. Neither changes which answer is best.
    divisor = math.gcd(*coeffs) if coeffs else 1
    model.minimize(cp_model.LinearExpr.weighted_sum(vs.x, [c // max(divisor, 1) for c in coeffs]))

    if hint is not None:
        _hint(frame, vs, singles, group_of, pool_of, part_keys, n_pools, hint, by_pattern)

    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(time_limit_s, 0.001)
    solver.parameters.num_workers = max(workers, 1)
    status = solver.solve(model)
    wall = float(solver.wall_time)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return ExactStatus(False, False, wall)
    values = [int(solver.value(x)) for x in vs.x]
    _decode(frame, vs, values, singles, group_of, pool_of, rows, row_part, cap, out, by_pattern)
    return ExactStatus(True, status == cp_model.OPTIMAL, wall)


def _hint(
    frame: Frame,
    vs: _Vars,
    singles: I64,
    group_of: I64,
    pool_of: I64,
    part_keys: I64,
    n_pools: int,
    hint: Outcome,
    by_pattern: _PatternModel | None = None,
) -> None:
    """Hint every variable with its value in `hint` (a complete answer, e.g. greedy's)."""
    pattern_hint = by_pattern.hint_values(frame, hint) if by_pattern is not None else {}
    counts: dict[tuple[int, int, int], int] = defaultdict(int)  # (group, kind, pool or part) -> requests
    for i, r in enumerate(singles.tolist()):
        h = int(hint.host[r])
        if h < 0 or pool_of[h] < 0:
            continue
        if hint.leased[r] > 0:
            part = int(np.searchsorted(part_keys, int(hint.lease[r]) * n_pools + int(pool_of[h])))
            counts[(int(group_of[i]), _PART, part)] += 1
        else:
            counts[(int(group_of[i]), _POOL, int(pool_of[h]))] += 1
    for i, kind in enumerate(vs.kind):
        owner, t = vs.owner[i], vs.target[i]
        if kind in (_POOL, _PART):
            value = counts.get((owner, kind, t), 0)
        elif kind == _HOST:
            value = int(hint.host[owner] == t)
        elif kind == _LEASED:
            value = int(hint.leased[owner]) if hint.host[owner] == t else 0
        else:
            value = pattern_hint.get(i, 0)
        vs.model.add_hint(vs.x[i], value)


def _decode(
    frame: Frame,
    vs: _Vars,
    values: list[int],
    singles: I64,
    group_of: I64,
    pool_of: I64,
    rows: I64,
    row_part: I64,
    cap: Capacity,
    out: Outcome,
    by_pattern: _PatternModel | None = None,
) -> None:
    """Write a CP-SAT answer into `out` and `cap`: k-slot sessions first (those on leased hosts name their host,
    the others go by pattern), then the groups' units into their pools' hosts (most-used first), the earliest
    request of a group getting its cheapest unit."""
    leased_at = {
        (vs.owner[i], vs.target[i]): val for i, val in enumerate(values) if vs.kind[i] == _LEASED and val
    }
    for i, val in enumerate(values):
        if vs.kind[i] == _HOST and val:
            r, h = vs.owner[i], vs.target[i]
            leased = leased_at.get((r, h), 0)
            out.host[r] = h
            cap.open[h] -= int(frame.req_slots[r]) - leased
            if leased:
                row = int(frame.lessee_rows(int(frame.req_venue[r]))[h])
                cap.res_left[row] -= leased
                out.leased[r] = leased
                out.lease[r] = int(frame.res_lease[row])
    if by_pattern is not None:
        by_pattern.decode(frame, vs, values, cap, out)
    units: dict[int, list[tuple[int, int, int]]] = defaultdict(list)  # group -> (cost, kind, target) per unit
    for i, val in enumerate(values):
        if vs.kind[i] in (_POOL, _PART) and val:
            units[vs.owner[i]].extend([(vs.cost[i], vs.kind[i], vs.target[i])] * val)
    members = defaultdict(list)
    for i in np.lexsort((singles, frame.req_arrival[singles])).tolist():
        members[int(group_of[i])].append(int(singles[i]))
    used = frame.host_total - cap.open
    pack = np.lexsort((np.arange(frame.n_hosts), -used))
    for g, g_units in units.items():
        for r, (_, kind, t) in zip(members[g], sorted(g_units), strict=False):
            if kind == _POOL:
                h = int(pack[np.argmax((pool_of[pack] == t) & (cap.open[pack] > 0))])
                cap.open[h] -= 1
                out.host[r] = h
            else:
                cand = rows[(row_part == t) & (cap.res_left[rows] > 0)]
                row = int(cand[np.lexsort((frame.res_host[cand], -used[frame.res_host[cand]]))][0])
                cap.res_left[row] -= 1
                out.host[r] = int(frame.res_host[row])
                out.leased[r] = 1
                out.lease[r] = int(frame.res_lease[row])


def solve(
    problem: Problem,
    *,
    time_limit_s: float = 10.0,
    workers: int = 1,
    hint: bool = True,
    per_host: bool = False,
) -> Solution:
    """Solve a batch with CP-SAT; `Solution.proven_optimal` says whether the optimum was proved.

    The greedy answer is the hint, and the answer returned is never worse than it: if CP-SAT finds nothing
    better within the time limit (or nothing at all), greedy's answer comes back.
    """
    frame = build_frame(problem)
    reqs = np.arange(frame.n_requests, dtype=np.int64)
    base = Outcome.empty(frame.n_requests)
    greedy.place(frame, reqs, Capacity.initial(frame), base)
    out = Outcome.empty(frame.n_requests)
    status = place(
        frame,
        reqs,
        Capacity.initial(frame),
        out,
        time_limit_s=time_limit_s,
        workers=workers,
        hint=base if hint else None,
        per_host=per_host,
    )
    if not status.found or outcome_cost(frame, out) > outcome_cost(frame, base):
        return to_solution(frame, base, "exact", proven_optimal=False)
    return to_solution(frame, out, "exact", proven_optimal=status.proven_optimal)
