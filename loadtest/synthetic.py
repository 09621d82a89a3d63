"""A seeded synthetic region and evening-peak trace for the placement benchmark.

The region, in numbers that are plausible for one Chinese province served by one broker region:

- cities on a 600 x 400 km plane with a skewed size (a few big ones); sites and venues sit in cities.
- venue->site round trip: 1.5 ms access + 0.05 ms/km (routed fibre, there and back) + a little per-site and
  per-pair noise; same-city sites are 2-5 ms away, the next city 8-20 ms. Seats only probe sites within about
  60 ms, and a few pairs have no measurement yet: those pairs are unreachable.
- three GPU classes with different slot counts and prices (per slot-hour), and a price level per site
  (0.85-1.25, land and power differ), so the nearest site is often not the cheapest.
- a catalogue with Zipf popularity; every host caches the core bundle (the most played titles) and most also
  one extension pack of less popular titles, so popular games are warm nearly everywhere and the tail is not.
- zones: standard (30 ms cap) at every venue, esports (10 ms cap, the guideline's ≤10 ms) at some.
- leases for some venues: a block of one class at the venue's nearest site, or anywhere within 10 ms.
- hosts start 60-70% busy with sessions that end during the trace; a few are drained or offline.
- arrivals ramp up to an evening peak and ease off, compressed into `duration_ms`; ~2% ask for several slots on
  one host; sessions last a compressed 1-3 hours, so capacity is released and reused during the trace.
"""

from __future__ import annotations

import numpy as np

from broker.placement import Host, LatencyMatrix, Lease, Params
from broker.placement.model import UNREACHABLE_MS
from loadtest.instance import Instance, Running, TraceRequest

#: (class, slots per host, base price per slot-hour in micros, share of hosts)
GPU_CLASSES = (("a16", 8, 1_100_000, 0.30), ("l4", 4, 1_500_000, 0.45), ("rtx4090", 2, 2_300_000, 0.25))
STANDARD_CAP_MS = 30
ESPORTS_CAP_MS = 10
N_GAMES = 40
CORE_GAMES = 8
N_PACKS = 4
PACK_SIZE = 8


def generate(
    *,
    seed: int = 1,
    hosts: int = 10_000,
    sites: int = 100,
    venues: int = 500,
    requests: int = 30_000,
    duration_ms: int = 60_000,
    multi_share: float = 0.02,
    lease_share: float = 0.1,
) -> Instance:
    """A region and an arrival trace, the same for the same arguments."""
    rng = np.random.default_rng(seed)

    # -- geography ----------------------------------------------------------------------------------------------
    n_cities = max(3, sites // 5)
    city_xy = rng.uniform((0, 0), (600, 400), size=(n_cities, 2))
    city_w = 1.0 / np.arange(1, n_cities + 1) ** 0.8
    city_w /= city_w.sum()
    # every city gets a site first (so no city is left without a local one), then by size
    extra_sites = rng.choice(n_cities, max(sites - n_cities, 0), p=city_w)
    site_city = np.concatenate([np.arange(min(n_cities, sites)), extra_sites])
    site_xy = city_xy[site_city] + rng.normal(0, 8, size=(sites, 2))
    venue_city = rng.choice(n_cities, venues, p=city_w)
    venue_xy = city_xy[venue_city] + rng.normal(0, 12, size=(venues, 2))
    dist = np.linalg.norm(venue_xy[:, None, :] - site_xy[None, :, :], axis=2)
    site_extra = rng.uniform(0, 2.0, sites)
    rtt = 1.5 + 0.05 * dist + site_extra[None, :] + rng.uniform(0, 1.0, size=dist.shape)
    lat = np.maximum(1, np.rint(rtt)).astype(np.int64)
    lat[(lat > 60) | (rng.random(lat.shape) < 0.03)] = UNREACHABLE_MS
    site_ids = [f"site-{i:03d}" for i in range(sites)]
    venue_ids = [f"venue-{i:04d}" for i in range(venues)]
    latency = LatencyMatrix(venue_ids, site_ids, lat)

    # -- games: core bundle everywhere, one extension pack on most hosts ------------------------------------------
    games = [f"game-{i:02d}" for i in range(N_GAMES)]
    popularity = 1.0 / np.arange(1, N_GAMES + 1) ** 1.1
    popularity /= popularity.sum()
    tail = np.arange(CORE_GAMES, N_GAMES)
    tail_w = popularity[tail] / popularity[tail].sum()
    packs = [
        frozenset(games[int(g)] for g in rng.choice(tail, PACK_SIZE, replace=False, p=tail_w))
        for _ in range(N_PACKS)
    ]
    core = frozenset(games[:CORE_GAMES])
    bundles = [core, *(core | pack for pack in packs)]
    bundle_w = np.array([0.1] + [0.9 / N_PACKS] * N_PACKS)

    # -- hosts ------------------------------------------------------------------------------------------------
    site_level = np.clip(rng.lognormal(0, 0.12, sites), 0.85, 1.25)
    site_share = rng.dirichlet(np.full(sites, 0.7))
    host_site = np.sort(rng.choice(sites, hosts, p=site_share))
    class_p = np.array([c[3] for c in GPU_CLASSES])
    host_class = rng.choice(len(GPU_CLASSES), hosts, p=class_p)
    host_bundle = rng.choice(len(bundles), hosts, p=bundle_w)
    busy = rng.uniform(0.6, 0.7)
    host_list: list[Host] = []
    running: list[Running] = []
    state = rng.random(hosts)
    for i in range(hosts):
        name, slots, base, _ = GPU_CLASSES[int(host_class[i])]
        used = int(rng.binomial(slots, busy))
        host_id = f"host-{i:05d}"
        for _ in range(used):
            running.append(Running(host_id, 1, int(rng.uniform(0.05, 1.3) * duration_ms)))
        host_list.append(
            Host(
                id=host_id,
                site_id=site_ids[int(host_site[i])],
                gpu_class=name,
                free_slots=slots - used,
                total_slots=slots,
                price_micros=int(round(base * site_level[int(host_site[i])], -3)),
                games=bundles[int(host_bundle[i])],
                drained=bool(state[i] < 0.02),
                online=bool(state[i] < 0.99),
            )
        )

    # -- zones and leases ---------------------------------------------------------------------------------------
    has_esports = rng.random(venues) < 0.3
    leases: list[Lease] = []
    for v in np.nonzero(rng.random(venues) < lease_share)[0].tolist():
        near = int(np.argmin(lat[v]))
        if lat[v, near] >= UNREACHABLE_MS:
            continue
        cls = GPU_CLASSES[int(rng.choice(len(GPU_CLASSES), p=class_p))][0]
        size = int(rng.integers(4, 25))
        if rng.random() < 0.6:
            leases.append(Lease(f"lease-{v:04d}", venue_ids[v], cls, size, site_id=site_ids[near]))
        else:
            leases.append(Lease(f"lease-{v:04d}", venue_ids[v], cls, size, max_latency_ms=10))

    # -- trace: evening peak, compressed ------------------------------------------------------------------------
    grid = np.linspace(0, 1, 1001)
    density = np.interp(grid, [0, 0.3, 0.7, 1.0], [0.2, 1.0, 1.0, 0.4])
    cdf = np.cumsum(density)
    cdf = (cdf - cdf[0]) / (cdf[-1] - cdf[0])
    arrivals = np.sort(np.interp(rng.random(requests), cdf, grid) * duration_ms).astype(np.int64)
    venue_w = rng.pareto(1.5, venues) + 1
    venue_w /= venue_w.sum()
    req_venue = rng.choice(venues, requests, p=venue_w)
    req_game = rng.choice(N_GAMES, requests, p=popularity)
    esports = has_esports[req_venue] & (rng.random(requests) < 0.25)
    u = rng.random(requests)
    slots_needed = np.where(u < multi_share * 0.8, 2, np.where(u < multi_share, 4, 1))
    # sessions of 1-3 hours, compressed like the evening: 4 h -> duration_ms
    hours = rng.uniform(1.0, 3.0, requests)
    durations = np.maximum(1, (hours / 4.0 * duration_ms)).astype(np.int64)
    trace = [
        TraceRequest(
            id=f"req-{i:06d}",
            venue_id=venue_ids[int(req_venue[i])],
            game_id=games[int(req_game[i])],
            cap_ms=ESPORTS_CAP_MS if esports[i] else STANDARD_CAP_MS,
            arrival_ms=int(arrivals[i]),
            duration_ms=int(durations[i]),
            slots=int(slots_needed[i]),
        )
        for i in range(requests)
    ]
    return Instance(
        hosts=host_list, latency=latency, leases=leases, requests=trace, running=running, params=Params()
    )
