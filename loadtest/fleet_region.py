"""The region a fleet run plays and its arrivals: pure, no I/O.

The region is the placement benchmark's synthetic province (loadtest.synthetic) with seats sized to the capacity
near each venue (the sites within a fresh request's latency target, shared with the other venues there); the
schedule is the evening-peak curve or a constant rate (loadtest.fleet_venues); `partition` deals the venues and
their arrivals to the patron processes.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from loadtest import fleet_agents, fleet_venues, synthetic

if TYPE_CHECKING:
    from loadtest import fleet

#: At most this share of a venue's seats are in its esports zone (where a site is near enough for its cap).
ESPORTS_SHARE = 0.2
F64 = npt.NDArray[np.float64]


@dataclasses.dataclass(frozen=True)
class Region:
    """The sites, the hosts and the venues with their seats that one run plays, and the games they play."""

    sites: tuple[str, ...]
    hosts: tuple[fleet_agents.HostSpec, ...]
    venues: tuple[fleet_venues.VenueSeats, ...]  # the venues with seats
    esports_seats: dict[str, int]  # venue -> how many of its seats (the first ones) are in its esports zone
    latency: dict[str, list[tuple[str, int]]]  # venue -> measured (site, round trip ms)
    games: tuple[str, ...]
    game_weights: tuple[float, ...]
    venues_without_seats: int

    @property
    def slots(self) -> int:
        return sum(h.slots for h in self.hosts)

    def site_slots(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for h in self.hosts:
            out[h.site_id] += h.slots
        return dict(out)


def _near_capacity(lat: npt.NDArray[np.int64], site_slots: F64, within_ms: int) -> F64:
    """Each venue's share of the slots at sites within `within_ms` of it (a site's slots split evenly among the
    venues that have it that near)."""
    near = lat <= within_ms
    sharing = near.sum(axis=0)
    per_venue = np.where(sharing > 0, site_slots / np.maximum(sharing, 1), 0.0)
    return np.asarray((near * per_venue[None, :]).sum(axis=1), dtype=np.float64)


def build_region(cfg: fleet.FleetConfig) -> Region:
    """The synthetic province (loadtest.synthetic) with seats sized to the capacity near each venue."""
    from broker.placement import LatencyMatrix, Params
    from broker.placement.model import UNREACHABLE_MS

    inst = synthetic.generate(
        seed=cfg.seed, hosts=cfg.hosts, sites=cfg.sites, venues=cfg.venues, requests=0, duration_ms=1000
    )
    matrix = inst.latency
    assert isinstance(matrix, LatencyMatrix)
    hosts = tuple(
        fleet_agents.HostSpec(
            h.id, h.site_id, h.gpu_class, h.total_slots, h.price_micros, tuple(sorted(h.games))
        )
        for h in inst.hosts
    )
    site_slots = np.zeros(len(matrix.sites))
    for h in hosts:
        site_slots[matrix.site_index[h.site_id]] += h.slots
    policy = Params().latency_policy
    # Sized by what a fresh request's target reaches, so every request can be placed at once when the broker can.
    standard = _near_capacity(matrix.ms, site_slots, policy.target_ms(fleet_venues.STANDARD[1], 0))
    esports = _near_capacity(matrix.ms, site_slots, policy.target_ms(fleet_venues.ESPORTS[1], 0))
    venues, n_esports, latency = [], {}, {}
    for v, venue_id in enumerate(matrix.venues):
        if standard[v] <= 0:
            continue
        seats = max(2, int(cfg.seats_per_slot * standard[v]))
        e = int(min(ESPORTS_SHARE * seats, cfg.seats_per_slot * esports[v] / 2))
        venues.append(
            fleet_venues.VenueSeats(venue_id, tuple(f"{'e' if j < e else 's'}{j:04d}" for j in range(seats)))
        )
        n_esports[venue_id] = e
        row = matrix.ms[v]
        latency[venue_id] = [(s, int(row[i])) for i, s in enumerate(matrix.sites) if row[i] < UNREACHABLE_MS]
    games = tuple(f"game-{i:02d}" for i in range(synthetic.N_GAMES))
    weights = tuple(float(w) for w in 1.0 / np.arange(1, len(games) + 1) ** 1.1)  # Zipf, as synthetic's trace
    return Region(
        matrix.sites,
        hosts,
        tuple(venues),
        n_esports,
        latency,
        games,
        weights,
        len(matrix.venues) - len(venues),
    )


def make_schedule(cfg: fleet.FleetConfig, region: Region) -> fleet_venues.Schedule:
    """The arrivals: the evening-peak curve, or with --rate a constant rate (Poisson)."""
    rng = np.random.default_rng(cfg.seed + 1)
    seats = [len(v.seats) for v in region.venues]
    if cfg.rate is None:
        return fleet_venues.peak_schedule(
            rng,
            seats=seats,
            game_weights=region.game_weights,
            duration_s=cfg.duration_s,
            peak_occupancy=cfg.peak_occupancy,
            multi_share=cfg.multi_slot_share,
        )
    return fleet_venues.rate_schedule(
        rng,
        rate_per_s=cfg.rate,
        seats=seats,
        game_weights=region.game_weights,
        duration_s=cfg.duration_s,
        # Little's law: this mean length keeps `occupancy` of the slots (or of the seats, if fewer) busy.
        mean_session_s=cfg.occupancy * min(region.slots, sum(seats)) / cfg.rate,
        multi_share=cfg.multi_slot_share,
    )


def partition(
    region: Region, schedule: fleet_venues.Schedule, n: int
) -> list[tuple[list[int], fleet_venues.Schedule]]:
    """Venues dealt to `n` patron processes (most seats first, to the least loaded), with their arrivals (venue
    indices renumbered within each process)."""
    groups: list[list[int]] = [[] for _ in range(n)]
    load = [0] * n
    for v in sorted(range(len(region.venues)), key=lambda v: -len(region.venues[v].seats)):
        k = load.index(min(load))
        groups[k].append(v)
        load[k] += len(region.venues[v].seats)
    out = []
    for group in groups:
        local = np.full(len(region.venues), -1, dtype=np.int64)
        local[group] = np.arange(len(group))
        sub = schedule.subset(np.isin(schedule.venue, group))
        out.append((group, dataclasses.replace(sub, venue=local[sub.venue])))
    return out
