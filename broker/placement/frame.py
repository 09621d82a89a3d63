"""A problem turned into NumPy columns once per batch, shared by every solver, the validator and the reasons.

Building this is the part of a solve that touches Python objects one by one (10,000 hosts is a few ms); every
later step works on whole arrays. The frame also owns the lease reservation rule, because "which slots are
reserved for whom" must be the same for every solver and for the validator, or their answers would not be
comparable.

Lease reservation rule: before a batch, each lease's unused slots are reserved on concrete hosts of its class at
its site (or at sites within its `max_latency_ms` of the venue): leases in id order, hosts nearest first, then
cheapest, then most-used (the packing rule: keep whole hosts free), then in `Problem.hosts` order. A host holds
at most one lease of a given venue, so a request draws from at most one lease. Other venues may only use a
host's open slots (free minus reserved); the lessee may use both, leased first. If hosts went away and a lease
cannot be reserved in full, the shortfall is simply not reserved.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from broker.placement.coldstart import Holding, cold_costs
from broker.placement.host_table import host_columns, positions
from broker.placement.model import UNREACHABLE_MS, LatencyMatrix, Problem, Request

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
B = npt.NDArray[np.bool_]


@dataclass(slots=True)
class Frame:
    """Columns of one problem. Host, request and lease arrays are indexed by position in the problem."""

    problem: Problem
    # hosts
    host_site: I64  # index into `sites`
    host_class: I64  # index into `classes`
    host_price: I64
    host_free: I64
    host_total: I64
    host_usable: B
    host_gs: I64  # index into `gamesets`
    sites: list[str]
    classes: list[str]
    gamesets: list[Holding]  # (warm games, images held)
    # requests
    req_venue: I64  # index into `venues`
    req_game: I64  # index into `games` (the batch's games)
    req_target: I64
    req_cap: I64
    req_slots: I64
    req_arrival: I64
    venues: list[str]
    games: list[str]
    # latency[venue, site] in ms, UNREACHABLE_MS where unmeasured
    lat: I64
    # cold[gameset, game]: the cold-start cost of the batch game on hosts of the gameset (0: warm; coldstart.py)
    cold: I64
    # reservations: one row per (lease, host) holding slots
    lease_venue: I64
    res_lease: I64
    res_host: I64
    res_count: I64
    # open[h]: free slots other venues may use (0 on unusable hosts)
    open: I64
    # lessee view: venue index -> reservation row per host or -1
    _lessee: dict[int, I64] = field(default_factory=dict)

    @property
    def n_hosts(self) -> int:
        return int(self.host_site.size)

    @property
    def n_requests(self) -> int:
        return len(self.problem.requests)

    def lessee_rows(self, venue: int) -> I64:
        """For a venue: the reservation row it holds on each host, or -1 (one lease per venue per host)."""
        rows = self._lessee.get(venue)
        if rows is None:
            mine = np.nonzero(self.lease_venue[self.res_lease] == venue)[0]
            if mine.size == 0:
                # Most venues hold no lease: share one read-only "none" row instead of one array each.
                rows = self._lessee.get(-1)
                if rows is None:
                    rows = np.full(self.n_hosts, -1, dtype=np.int64)
                    rows.setflags(write=False)
                    self._lessee[-1] = rows
            else:
                rows = np.full(self.n_hosts, -1, dtype=np.int64)
                rows[self.res_host[mine]] = mine
            self._lessee[venue] = rows
        return rows


def _latency_block(latency: Mapping[tuple[str, str], int], venues: list[str], sites: list[str]) -> I64:
    """latency[venue, site] for the given venues and sites, vectorised when the mapping is a LatencyMatrix."""
    if isinstance(latency, LatencyMatrix):
        rows = np.array([latency.venue_index.get(v, -1) for v in venues], dtype=np.int64)
        cols = np.array([latency.site_index.get(s, -1) for s in sites], dtype=np.int64)
        block = latency.ms[np.maximum(rows, 0)][:, np.maximum(cols, 0)].copy() if latency.ms.size else None
        if block is None:
            return np.full((len(venues), len(sites)), UNREACHABLE_MS, dtype=np.int64)
        block[rows < 0, :] = UNREACHABLE_MS
        block[:, cols < 0] = UNREACHABLE_MS
        return block
    block = np.full((len(venues), len(sites)), UNREACHABLE_MS, dtype=np.int64)
    for i, venue in enumerate(venues):
        for j, site in enumerate(sites):
            value = latency.get((venue, site))
            if value is not None:
                block[i, j] = value
    return block


def build_frame(problem: Problem) -> Frame:
    """Turn a problem into columns and reserve its leases (see the module docstring)."""
    requests: Sequence[Request] = problem.requests
    cols = problem.host_columns
    if cols is None or cols.n_hosts != len(problem.hosts):
        cols = host_columns(problem.hosts)
    class_index = {name: i for i, name in enumerate(cols.classes)}
    host_site, host_class, host_gs = cols.site, cols.gpu_class, cols.games
    host_price, host_free, host_total, host_usable = cols.price, cols.free, cols.total, cols.usable

    venue_index: dict[str, int] = {}
    game_index: dict[str, int] = {}
    req_venue = positions([r.venue_id for r in requests], venue_index)
    req_game = positions([r.game_id for r in requests], game_index)
    lease_venue = positions([lease.venue_id for lease in problem.leases], venue_index)
    venues = list(venue_index)
    sites = cols.sites
    games = list(game_index)
    gamesets = cols.gamesets

    # What each batch game's cold start costs on each holding: a loop over the (few) distinct holdings.
    cold = cold_costs(problem.params, problem.images, gamesets, game_index)

    lat = _latency_block(problem.latency, venues, sites)
    frame = Frame(
        problem=problem,
        host_site=host_site,
        host_class=host_class,
        host_price=host_price,
        host_free=host_free,
        host_total=host_total,
        host_usable=host_usable,
        host_gs=host_gs,
        sites=sites,
        classes=cols.classes,
        gamesets=gamesets,
        req_venue=req_venue,
        req_game=req_game,
        req_target=np.array([r.target_ms for r in requests], dtype=np.int64),
        req_cap=np.array([r.cap_ms for r in requests], dtype=np.int64),
        req_slots=np.array([r.slots for r in requests], dtype=np.int64),
        req_arrival=np.array([r.arrival_ms for r in requests], dtype=np.int64),
        venues=venues,
        games=games,
        lat=lat,
        cold=cold,
        lease_venue=lease_venue,
        res_lease=np.zeros(0, dtype=np.int64),
        res_host=np.zeros(0, dtype=np.int64),
        res_count=np.zeros(0, dtype=np.int64),
        open=np.where(host_usable, host_free, 0),
    )
    if problem.leases:
        _reserve(frame, class_index)
    return frame


def spans(starts: I64, counts: I64) -> I64:
    """Concatenated ranges [starts[i], starts[i] + counts[i]) as one array, without a Python loop."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(counts)
    offsets = np.repeat(starts - (ends - counts), counts)
    return np.asarray(np.arange(total, dtype=np.int64) + offsets, dtype=np.int64)


def _reserve(frame: Frame, class_index: dict[str, int]) -> None:
    """Apply the lease reservation rule to `frame` (fills res_* and lowers `open`).

    A lease needs a handful of slots, so it walks hosts in preference order in plain Python and stops early;
    NumPy only sorts every (site, class) run once: by price, then most used, then position.
    """
    problem = frame.problem
    n_classes = max(len(frame.classes), 1)
    used = frame.host_total - frame.host_free
    # full, drained and offline hosts can hold nothing, nor hosts of a class no lease asks for
    lease_classes = [class_index[c] for c in {lease.gpu_class for lease in problem.leases} if c in class_index]
    holders = np.nonzero((frame.open > 0) & np.isin(frame.host_class, lease_classes))[0]
    c_site, c_cls, c_price = frame.host_site[holders], frame.host_class[holders], frame.host_price[holders]
    top_price = int(c_price.max(initial=0)) + 1
    top_used = int(frame.host_total.max(initial=0)) + 1
    if c_price.min(initial=0) >= 0 and len(frame.sites) * n_classes * top_price * top_used * frame.n_hosts < 1 << 62:
        # (site, class, price, most used, position) packed in one integer: one sort instead of a 5-key lexsort
        key = ((c_site * n_classes + c_cls) * top_price + c_price) * top_used + (top_used - 1 - used[holders])
        order = holders[np.argsort(key * frame.n_hosts + holders)]
    else:
        order = holders[np.lexsort((holders, -used[holders], c_price, c_cls, c_site))]
    run_key = frame.host_site[order] * n_classes + frame.host_class[order]
    n_runs = len(frame.sites) * n_classes
    run_start = np.searchsorted(run_key, np.arange(n_runs)).tolist()
    run_end = np.searchsorted(run_key, np.arange(n_runs), side="right").tolist()
    order_list: list[int] = order.tolist()
    open_list: list[int] = frame.open.tolist()
    host_price, host_used = frame.host_price, used
    site_lookup = {s: i for i, s in enumerate(frame.sites)}
    held_by_venue: dict[int, set[int]] = {}  # a host holds at most one lease per venue
    rows: list[tuple[int, int, int]] = []
    for li in sorted(range(len(problem.leases)), key=lambda i: problem.leases[i].id):
        lease = problem.leases[li]
        cls = class_index.get(lease.gpu_class)
        need = lease.unused_slots
        if need <= 0 or cls is None:
            continue
        venue = int(frame.lease_venue[li])
        held = held_by_venue.setdefault(venue, set())
        if lease.site_id is not None:
            site = site_lookup.get(lease.site_id)
            levels = [[site]] if site is not None else []
        else:
            lat = frame.lat[venue]
            limit = lease.max_latency_ms if lease.max_latency_ms is not None else UNREACHABLE_MS - 1
            near = np.nonzero(lat <= limit)[0]
            # sites at the same latency are one level: their hosts compete on price, use and position
            by_latency = sorted(zip(lat[near].tolist(), near.tolist(), strict=True))
            levels = [
                [site for _, site in group] for _, group in itertools.groupby(by_latency, key=lambda x: x[0])
            ]
        for level in levels:
            if need == 0:
                break
            runs = [
                order_list[run_start[site * n_classes + cls] : run_end[site * n_classes + cls]]
                for site in level
            ]
            # each run is sorted already; merge lazily, since a lease usually stops after a host or two
            cand = (
                runs[0]
                if len(runs) == 1
                else heapq.merge(*runs, key=lambda h: (int(host_price[h]), -int(host_used[h]), h))
            )
            for h in cand:
                room = open_list[h]
                if room <= 0 or h in held:
                    continue
                take = min(room, need)
                open_list[h] -= take
                need -= take
                held.add(h)
                rows.append((li, h, take))
                if need == 0:
                    break
    if rows:
        table = np.array(rows, dtype=np.int64)
        frame.res_lease, frame.res_host, frame.res_count = table[:, 0], table[:, 1], table[:, 2]
        # only the hosts that took a reservation change: no 10,000-element list back to an array
        frame.open = frame.open.copy()
        np.subtract.at(frame.open, frame.res_host, frame.res_count)


def reserve_leases(problem: Problem) -> dict[str, dict[str, int]]:
    """Where each lease's unused slots are reserved for this batch: lease id -> {host id: slots}."""
    frame = build_frame(problem)
    out: dict[str, dict[str, int]] = {}
    for li, h, c in zip(
        frame.res_lease.tolist(), frame.res_host.tolist(), frame.res_count.tolist(), strict=True
    ):
        out.setdefault(problem.leases[li].id, {})[problem.hosts[h].id] = c
    return out
