"""Shared builders and a Hypothesis strategy for the placement tests (no tests of its own here)."""

from __future__ import annotations

from hypothesis import strategies as st

from broker.placement import Host, Lease, Params, Problem, Request
from broker.placement.model import GameImage

GAMES = ("lol", "cs2", "dota2", "valorant")
#: Versions an image strategy draws from; "3" is the current one.
VERSIONS = ("1", "2", "3")
GIB = 1 << 30


def host(
    hid: str,
    site: str = "s0",
    *,
    free: int = 4,
    total: int = 4,
    price: int = 1_500_000,
    games: tuple[str, ...] = GAMES,
    gpu: str = "l4",
    drained: bool = False,
    online: bool = True,
) -> Host:
    return Host(hid, site, gpu, free, total, price, frozenset(games), drained=drained, online=online)


def request(
    rid: str,
    venue: str = "v0",
    *,
    game: str = "lol",
    cap: int = 30,
    target: int | None = None,
    arrival: int = 0,
    slots: int = 1,
) -> Request:
    return Request(rid, venue, game, cap, cap if target is None else target, arrival, slots)


@st.composite
def problems(draw: st.DrawFn, *, multi: bool = False, max_requests: int = 8, max_hosts: int = 6) -> Problem:
    """A few sites, venues, hosts (some drained, offline or full), leases and requests."""
    sites = [f"s{i}" for i in range(draw(st.integers(1, 3)))]
    venues = [f"v{i}" for i in range(draw(st.integers(1, 3)))]
    classes = ["l4", "a16"]
    # Some games have known images: a host holding an older version lacks only part of the current one.
    images = {}
    if draw(st.booleans()):
        for game in draw(st.sets(st.sampled_from(GAMES))):
            size = draw(st.sampled_from([0, 3 * GIB, 30 * GIB, 80 * GIB]))
            lacking = {v: draw(st.integers(0, size)) for v in draw(st.sets(st.sampled_from(VERSIONS[:2])))}
            images[game] = GameImage("3", size, lacking)
    held_images = st.frozensets(st.builds("{}@{}".format, st.sampled_from(GAMES), st.sampled_from(VERSIONS)))
    hosts = []
    for i in range(draw(st.integers(1, max_hosts))):
        total = draw(st.integers(1, 4))
        hosts.append(
            Host(
                id=f"h{i}",
                site_id=draw(st.sampled_from(sites)),
                gpu_class=draw(st.sampled_from(classes)),
                free_slots=draw(st.integers(0, total)),
                total_slots=total,
                price_micros=draw(st.sampled_from([1_000_000, 1_500_000, 2_000_000])),
                games=frozenset(draw(st.sets(st.sampled_from(GAMES)))),
                drained=draw(st.booleans()) and draw(st.booleans()),
                online=not (draw(st.booleans()) and draw(st.booleans()) and draw(st.booleans())),
                images=draw(held_images) if images else frozenset(),
            )
        )
    latency = {}
    for v in venues:
        for s in sites:
            if draw(st.integers(0, 9)) > 0:
                latency[(v, s)] = draw(st.integers(1, 40))
    leases = []
    for i in range(draw(st.integers(0, 2))):
        venue = draw(st.sampled_from(venues))
        gpu = draw(st.sampled_from(classes))
        unused = draw(st.integers(0, 4))
        if draw(st.booleans()):
            leases.append(Lease(f"L{i}", venue, gpu, unused, site_id=draw(st.sampled_from(sites))))
        else:
            leases.append(Lease(f"L{i}", venue, gpu, unused, max_latency_ms=draw(st.integers(5, 40))))
    requests = []
    for i in range(draw(st.integers(0, max_requests))):
        cap = draw(st.sampled_from([10, 20, 30]))
        requests.append(
            Request(
                id=f"r{i}",
                venue_id=draw(st.sampled_from(venues)),
                game_id=draw(st.sampled_from(GAMES)),
                cap_ms=cap,
                target_ms=draw(st.integers(cap // 2, cap)),
                arrival_ms=draw(st.integers(0, 50)),
                slots=draw(st.sampled_from([1, 1, 2, 3])) if multi else 1,
            )
        )
    params = Params(
        latency_weight_micros_per_ms=draw(st.sampled_from([0, 20_000])),
        cold_start_penalty_micros=draw(st.sampled_from([0, 400_000])),
        cold_start_micros_per_gib=draw(st.sampled_from([10_000, 200_000])),
    )
    return Problem(requests, hosts, latency, leases, params, images=images)
