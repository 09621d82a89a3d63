"""Multi-slot requests on the capacity left, exactly, without CP-SAT when a min-cost flow's answer holds.

The split (engine.py) places a batch's multi-slot requests on what the one-slot flow left. This solves a
relaxation of that part exactly and keeps its answer when the answer is a real one at the relaxation's cost,
which makes it optimal (no answer costs less than the relaxation's optimum):

- hosts holding no slots reserved for these requests' venues, alike in site, class, price, what they hold and
  open slots f, form a **sub-pool** of n hosts with n·⌊f/k⌋ places for k-slot sessions, for each size k apart
  ("k slots on one host" is kept per size, not between sizes), and n·g⌊f/g⌋ slots in all, g the sizes' greatest
  common divisor (sessions of 2 and 4 slots never use the fifth slot of a host);
- a host holding reserved slots for one of the venues is a column of its own: a lessee's k-slot session there
  costs as if it alone drew min(k, its reserved slots) from its lease (the cheapest it can), and the host has
  ⌊(open + all reserved)/k⌋ places per size; another venue's session uses its open slots at the full price;
- classes of alike requests (venue, target, game, size) send their sessions to places or leave them pending,
  a transportation problem solved by a min-cost flow.

The answer holds when, per sub-pool, the sessions fit on its hosts together (first fit, largest first, the most
used host first: the packing rule), and, per reserved host, its sessions fit and each lessee's session draws as
many leased slots as the relaxation priced. Otherwise `place` changes nothing and says so, and the engine falls
back to CP-SAT.

Pruning keeps the relaxation exact: each class keeps its cheapest options until they hold as many places as the
batch has sessions of its size (the others take fewer, so one of its places stays free, no dearer).
"""

from __future__ import annotations

import numpy as np
from ortools.graph.python import min_cost_flow

from broker.placement.frame import I64, Frame
from broker.placement.outcome import Capacity, Outcome


def _dense(*cols: I64) -> tuple[I64, I64]:
    """One dense integer per distinct combination of the (non-negative) columns, and the first row of each."""
    key = np.zeros(cols[0].size, dtype=np.int64)
    for col in cols:
        _, rank = np.unique(col, return_inverse=True)
        key = key * (int(rank.max(initial=0)) + 1) + rank.reshape(-1)
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    return np.asarray(inverse, dtype=np.int64).reshape(-1), np.asarray(first, dtype=np.int64)


def _solve(tails: I64, heads: I64, caps: I64, costs: I64, supplies: I64) -> I64:
    """A min-cost flow's arc flows, every cost divided by their common divisor (no decision changes)."""
    positive = costs[costs > 0]
    divisor = max(int(np.gcd.reduce(positive)), 1) if positive.size else 1
    solver = min_cost_flow.SimpleMinCostFlow()
    solver.add_arcs_with_capacity_and_unit_cost(
        tails.astype(np.int32), heads.astype(np.int32), caps.astype(np.int64), (costs // divisor).astype(np.int64)
    )
    solver.set_nodes_supplies(np.arange(supplies.size, dtype=np.int32), supplies)
    if solver.solve() != solver.OPTIMAL:
        raise RuntimeError("min-cost flow failed")  # the pending arcs make it always feasible
    return np.asarray(solver.flows(np.arange(tails.size, dtype=np.int32)), dtype=np.int64)


def place(frame: Frame, multi: I64, cap: Capacity, out: Outcome) -> bool:
    """Place multi-slot requests `multi` optimally on `cap` (updating `cap` and `out`) when the relaxation's
    answer holds (the module docstring); else change nothing and return False."""
    if multi.size == 0:
        return True
    params = frame.problem.params
    lam, pending = params.latency_weight_micros_per_ms, params.stay_pending_cost_micros
    k_req = frame.req_slots[multi]
    sizes = np.unique(k_req)
    k_min, k_top = int(sizes[0]), int(sizes[-1]) + 1

    # -- classes: requests alike in venue, target, game and size ------------------------------------------------
    class_of, c_first = _dense(frame.req_venue[multi], frame.req_target[multi], frame.req_game[multi], k_req)
    c_req = multi[c_first]
    c_venue, c_target, c_game, c_k = (
        frame.req_venue[c_req], frame.req_target[c_req], frame.req_game[c_req], frame.req_slots[c_req]
    )
    c_count = np.bincount(class_of, minlength=c_req.size).astype(np.int64)
    n_classes = c_req.size

    # -- reserved hosts: usable hosts holding reserved slots left for one of these venues -----------------------
    live_rows = np.nonzero(cap.res_left > 0)[0]
    venues = np.unique(c_venue)
    lessee_rows = live_rows[np.isin(frame.lease_venue[frame.res_lease[live_rows]], venues)]
    reserved = np.zeros(frame.n_hosts, dtype=np.bool_)
    reserved[frame.res_host[lessee_rows]] = True
    # only hosts at sites some class may use (within its target) matter
    near = np.asarray((frame.lat[c_venue] <= c_target[:, None]).any(axis=0), dtype=np.bool_)[frame.host_site]
    near &= frame.host_usable
    reserved &= near
    r_hosts = np.nonzero(reserved)[0]
    r_all = np.bincount(frame.res_host[live_rows], weights=cap.res_left[live_rows], minlength=frame.n_hosts)
    r_all = r_all.astype(np.int64)[r_hosts]  # every reserved slot left on it, whoever's

    # -- sub-pools: the other usable hosts with room for the smallest session -----------------------------------
    plain = np.nonzero(near & ~reserved & (cap.open >= k_min))[0]
    if plain.size:
        price, top_open = frame.host_price[plain], int(cap.open[plain].max()) + 1
        top_price = int(price.max()) + 1
        n_cls, n_gs = len(frame.classes), len(frame.gamesets)
        if price.min() >= 0 and len(frame.sites) * n_cls * top_price * n_gs * top_open < 1 << 62:
            # (site, class, price, holding, open slots) packed: one unique, numbered as `_dense` numbers them
            key = ((frame.host_site[plain] * n_cls + frame.host_class[plain]) * top_price + price) * n_gs
            key = (key + frame.host_gs[plain]) * top_open + cap.open[plain]
            _, s_first, sub_of = np.unique(key, return_index=True, return_inverse=True)
            sub_of = sub_of.reshape(-1)
        else:
            _, price_rank = np.unique(price, return_inverse=True)
            key = (
                (frame.host_site[plain] * n_cls + frame.host_class[plain]) * (int(price_rank.max()) + 1)
                + price_rank.reshape(-1)
            ) * n_gs + frame.host_gs[plain]
            sub_of, s_first = _dense(key, cap.open[plain])
    else:
        sub_of, s_first = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    n_subs = s_first.size
    s_n = np.bincount(sub_of, minlength=n_subs).astype(np.int64)

    # -- columns: sub-pools, then reserved hosts ------------------------------------------------------------------
    col_host = np.concatenate([plain[s_first], r_hosts])  # a representative host per column
    col_open = cap.open[col_host]
    col_n = np.concatenate([s_n, np.ones(r_hosts.size, dtype=np.int64)])
    n_cols = col_host.size
    if n_cols == 0:
        return True  # nothing fits anywhere: every one stays pending, as in any answer
    # own[c, col]: the class's venue's reserved slots left on the column's host (0 for sub-pools)
    own = np.zeros((n_classes, n_cols), dtype=np.int64)
    if r_hosts.size:
        for v in np.unique(c_venue).tolist():
            rows = frame.lessee_rows(v)[r_hosts]
            left = np.where(rows >= 0, cap.res_left[np.maximum(rows, 0)], 0) if cap.res_left.size else 0
            own[c_venue == v, n_subs:] = left
    lat = frame.lat[c_venue][:, frame.host_site[col_host]]
    leased = np.minimum(own, c_k[:, None])
    places = col_n[None, :] * ((col_open[None, :] + own) // c_k[:, None])
    ok = (lat <= c_target[:, None]) & (places > 0)
    cost = (
        frame.host_price[col_host][None, :] * (c_k[:, None] - leased)
        + lam * lat
        + frame.cold[frame.host_gs[col_host]][:, c_game].T
    )
    # a column's places per size, whoever takes them (an upper bound on every answer)
    node_room = np.concatenate([col_open[:n_subs], col_open[n_subs:] + r_all])

    # -- options: each class's cheapest holding as many hosts as the batch has sessions. An optimal answer
    # that put one of the class's sessions past them left one of them untouched (each other session touches one
    # host), with a place no dearer: moving it there costs no more, so some optimal answer uses kept options only
    ranked = np.argsort(np.where(ok, cost, np.iinfo(np.int64).max), axis=1, kind="stable")
    ok_ranked = np.take_along_axis(ok, ranked, axis=1)
    hosts_held = np.where(ok_ranked, col_n[ranked], 0)
    ci, at = np.nonzero(ok_ranked & (np.cumsum(hosts_held, axis=1) - hosts_held < multi.size))
    co = ranked[ci, at]

    # -- the flow, in units of g slots (a k-slot session is k/g units, each bearing g/k of its cost; costs times
    # the sizes' least common multiple stay whole): class -> (column, size) -> column -> sink; class -> sink
    # (pending). A column holds at most its slots in all, and at most its places per size --------------------------
    lcm = int(np.lcm.reduce(sizes))
    # Units of g slots, g the sizes' greatest common divisor: no answer uses more than g*floor(f/g) of a host's f
    # slots, so a column holds that many units; with sizes 2 and 4 a 2-slot session is one unit and never split
    # (in slots, a 4-slot session could take 4 of a host's 5 and leave half a 2-slot one there, an answer no
    # real one has, and CP-SAT then ran)
    g = int(np.gcd.reduce(sizes))
    c_u = c_k // g
    unit_room = node_room // g
    q_key, q_node = np.unique(co * k_top + c_k[ci], return_inverse=True)
    q_node = np.asarray(q_node, dtype=np.int64).reshape(-1)
    q_col, q_k = q_key // k_top, q_key % k_top
    cols_used, col_node = np.unique(q_col, return_inverse=True)
    col_node = np.asarray(col_node, dtype=np.int64).reshape(-1)
    n_q, n_used = q_key.size, cols_used.size
    base_col = n_classes + n_q
    sink = base_col + n_used
    per_unit = lcm // c_k
    tails = np.concatenate(
        [ci, n_classes + np.arange(n_q), base_col + np.arange(n_used), np.arange(n_classes)]
    )
    heads = np.concatenate(
        [n_classes + q_node, base_col + col_node, np.full(n_used + n_classes, sink)]
    )
    caps = np.concatenate(
        [
            c_u[ci] * np.minimum(c_count[ci], places[ci, co]),
            (q_k // g) * col_n[q_col] * (node_room[q_col] // q_k),
            col_n[cols_used] * unit_room[cols_used],
            c_u * c_count,
        ]
    )
    option_costs = cost[ci, co] * per_unit[ci]
    supplies = np.zeros(sink + 1, dtype=np.int64)
    supplies[:n_classes] = c_u * c_count
    supplies[sink] = -int(supplies[:n_classes].sum())
    # A pending cost just above the dearest option first, a multiple of the options' common divisor (every cost
    # is divided by it): cost scaling then runs ~10 phases, not the ~16 the real pending cost takes. If no class
    # that has an option leaves a unit pending, every session that can be placed is, and among such answers the
    # pending cost is a constant: the answer is optimal for the real pending cost too. Else solve again with it.
    positive = option_costs[option_costs > 0]
    step = int(np.gcd.reduce(positive)) if positive.size else 1
    trial = step * (int(option_costs.max(initial=0)) // step + 1)
    real = pending * per_unit
    inner = np.zeros(n_q + n_used, dtype=np.int64)
    units_sent = _solve(tails, heads, caps, np.concatenate([option_costs, inner, np.minimum(real, trial)]), supplies)
    has_option = np.zeros(n_classes, dtype=np.bool_)
    has_option[ci] = True
    if (units_sent[-n_classes:][has_option] > 0).any() and (real > trial).any():
        units_sent = _solve(tails, heads, caps, np.concatenate([option_costs, inner, real]), supplies)
    units_sent = units_sent[: ci.size]
    flow = units_sent // c_u[ci]
    split = np.nonzero(units_sent % c_u[ci])[0]
    if split.size:
        # Sessions split between columns: between columns of the same cost (ties, the usual case) each whole
        # session goes to the one with the most slots left, at no extra cost; the check below says if it fits
        room = col_n * unit_room
        np.subtract.at(room, co, flow * c_u[ci])
        for c in np.unique(ci[split]).tolist():
            arcs = split[ci[split] == c]
            k = int(c_u[c])  # a session's units
            if np.unique(cost[c, co[arcs]]).size > 1:
                return False  # split between dearer and cheaper places: no answer at this cost, CP-SAT's job
            residue = units_sent[arcs] % k
            if int(residue.sum()) % k:
                return False  # part of a session left pending: CP-SAT's job
            for _ in range(int(residue.sum()) // k):
                a = int(arcs[np.argmax(room[co[arcs]])])
                flow[a] += 1
                room[co[a]] -= k
                arcs = arcs[arcs != a]

    # -- does the answer hold? Per column: (k, class, count) sessions ---------------------------------------------
    used = frame.host_total - cap.open
    loads: dict[int, list[tuple[int, int, int]]] = {}
    for a in np.nonzero(flow > 0)[0].tolist():
        loads.setdefault(int(co[a]), []).append((int(c_k[ci[a]]), int(ci[a]), int(flow[a])))
    # units[class]: (cost, host, leased slots, reservation row)
    units: list[list[tuple[int, int, int, int]]] = [[] for _ in range(n_classes)]
    for col, load in loads.items():
        load.sort(key=lambda x: (-x[0], x[1]))
        if col < n_subs:
            # first fit, largest first, the most used host first
            members = plain[sub_of == col]
            members = members[np.lexsort((members, -used[members]))].tolist()
            room = [int(col_open[col])] * len(members)
            for k, c, count in load:
                i = 0
                for _ in range(count):
                    while i < len(room) and room[i] < k:
                        i += 1
                    if i == len(room):
                        return False  # it does not pack here: CP-SAT's job
                    room[i] -= k
                    units[c].append((int(cost[c, col]), members[i], 0, -1))
        else:
            # one host: each lessee's session draws what it was priced with from its lease, the rest open slots
            h = int(col_host[col])
            open_left = int(cap.open[h])
            res_now: dict[int, int] = {}
            for k, c, count in load:
                row = int(frame.lessee_rows(int(c_venue[c]))[h])
                for _ in range(count):
                    have = res_now.setdefault(row, int(cap.res_left[row])) if row >= 0 else 0
                    j = min(have, k)
                    if j != int(leased[c, col]) or open_left < k - j:
                        return False  # dearer than priced, or it does not fit: CP-SAT's job
                    open_left -= k - j
                    if j:
                        res_now[row] = have - j
                    units[c].append((int(cost[c, col]), h, j, row))

    # -- requests: within a class, the earliest gets the cheapest unit ------------------------------------------
    order = np.lexsort((multi, frame.req_arrival[multi], class_of))
    start = np.cumsum(c_count) - c_count
    for c in range(n_classes):
        reqs = multi[order[start[c] : start[c] + c_count[c]]].tolist()
        for r, (_, h, j, row) in zip(reqs, sorted(units[c]), strict=False):
            out.host[r] = h
            cap.open[h] -= int(frame.req_slots[r]) - j
            if j:
                out.leased[r] = j
                out.lease[r] = int(frame.res_lease[row])
                cap.res_left[row] -= j
    return True
