"""Venues of the fleet load test: when patrons arrive (the evening-peak curve), and the world they play in.

The curve and the schedule are pure (NumPy, a seeded generator, no clock or I/O), so they are unit-tested alone:

- `EVENING`: arrivals at internet cafes from 18:00 to 02:00, relative to the peak (20:00-22:00 = 1). The evening
  is compressed into the run's duration; session lengths (log-normal around 2 h, most between 1 and 3 h) are
  compressed by the same factor, so occupancy rises, peaks and falls as it does in a real evening.
- `peak_schedule`: arrivals drawn from the curve (a non-homogeneous Poisson process) scaled so that, at the peak,
  `peak_occupancy` of all seats are taken; each arrival picks a venue (in proportion to its seats), a game (by
  popularity) and, rarely, a multi-slot session.
- `rate_schedule`: `--rate R`: a Poisson stream of R arrivals per second, session lengths from the same
  distribution compressed to a given mean.

`seed` makes the venues, their zones, seats and measured latency through the broker's public API. The patrons who
play the schedule are loadtest.fleet_patrons.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from cloudseat import retry

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

# -- the curve (pure) -----------------------------------------------------------------------------------------

#: The evening, as (hours since 18:00, arrivals per hour relative to the peak): people come after work and
#: dinner, the peak runs 20:00-22:00, and it thins out after midnight until 02:00.
EVENING: tuple[tuple[float, float], ...] = (
    (0.0, 0.45),
    (1.0, 0.75),
    (2.0, 1.0),
    (3.0, 1.0),
    (4.0, 0.85),
    (5.0, 0.6),
    (6.0, 0.4),
    (7.0, 0.25),
    (8.0, 0.15),
)
EVENING_HOURS = EVENING[-1][0]

#: Session lengths in real hours: log-normal with median 2 h (two thirds between 1.4 and 2.8 h), clipped.
SESSION_MEDIAN_H = 2.0
SESSION_SIGMA = 0.35
SESSION_MIN_H = 0.5
SESSION_MAX_H = 5.0
#: The mean of that distribution (the clipping moves it by well under 1%).
SESSION_MEAN_H = SESSION_MEDIAN_H * float(np.exp(SESSION_SIGMA**2 / 2))

_X = np.array([x for x, _ in EVENING])
_Y = np.array([y for _, y in EVENING])
# The integral of the curve at each knot (trapezoids: exact for a piecewise-linear curve).
_C = np.concatenate([[0.0], np.cumsum(np.diff(_X) * (_Y[1:] + _Y[:-1]) / 2)])


def intensity(hours: npt.ArrayLike) -> F64:
    """Arrivals per hour relative to the peak, `hours` after 18:00; 0 outside the evening."""
    return np.asarray(
        np.interp(np.asarray(hours, dtype=np.float64), _X, _Y, left=0.0, right=0.0), dtype=np.float64
    )


def cumulative(hours: npt.ArrayLike) -> F64:
    """The integral of `intensity` from 0 to `hours` (clamped to the evening): expected arrivals per unit of
    peak rate."""
    h = np.clip(np.asarray(hours, dtype=np.float64), 0.0, EVENING_HOURS)
    k = np.clip(np.searchsorted(_X, h, side="right") - 1, 0, len(_X) - 2)
    return np.asarray(_C[k] + (h - _X[k]) * (_Y[k] + intensity(h)) / 2, dtype=np.float64)


def mean_intensity() -> float:
    """The evening's average arrival rate relative to the peak."""
    return float(cumulative(EVENING_HOURS)) / EVENING_HOURS


def evening_arrivals(rng: np.random.Generator, peak_per_hour: float) -> F64:
    """Arrival times (hours after 18:00, sorted) of a Poisson process whose rate is `peak_per_hour` × the curve."""
    total = float(cumulative(EVENING_HOURS))
    n = int(rng.poisson(peak_per_hour * total))
    # Inverse transform: arrivals are where the cumulative curve crosses sorted uniform levels.
    grid = np.linspace(0.0, EVENING_HOURS, 8001)
    levels = np.sort(rng.uniform(0.0, total, n))
    return np.interp(levels, cumulative(grid), grid)


def session_hours(rng: np.random.Generator, n: int) -> F64:
    """`n` session lengths in real hours."""
    hours = rng.lognormal(np.log(SESSION_MEDIAN_H), SESSION_SIGMA, n)
    return np.clip(hours, SESSION_MIN_H, SESSION_MAX_H)


def poisson_arrivals(rng: np.random.Generator, rate_per_s: float, duration_s: float) -> F64:
    """Arrival times (seconds, sorted) of a Poisson process of `rate_per_s` over `duration_s`."""
    n = int(rng.poisson(rate_per_s * duration_s))
    return np.sort(rng.uniform(0.0, duration_s, n))


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Every arrival of a run in time order: when (seconds into the run), at which venue (index), which game
    (index), how many slots, and how long the session lasts (run seconds)."""

    at_s: F64
    venue: I64
    game: I64
    slots: I64
    duration_s: F64
    #: Real seconds per run second.
    compression: float

    def __len__(self) -> int:
        return int(self.at_s.size)

    def subset(self, mask: npt.NDArray[np.bool_]) -> Schedule:
        return Schedule(
            self.at_s[mask],
            self.venue[mask],
            self.game[mask],
            self.slots[mask],
            self.duration_s[mask],
            self.compression,
        )


def _draw(
    rng: np.random.Generator,
    at_s: F64,
    seats: Sequence[int],
    game_weights: Sequence[float],
    multi_share: float,
    compression: float,
) -> Schedule:
    n = int(at_s.size)
    seat_w = np.asarray(seats, dtype=np.float64)
    game_w = np.asarray(game_weights, dtype=np.float64)
    venue = rng.choice(seat_w.size, n, p=seat_w / seat_w.sum()).astype(np.int64)
    game = rng.choice(game_w.size, n, p=game_w / game_w.sum()).astype(np.int64)
    slots = np.where(rng.random(n) < multi_share, 2, 1).astype(np.int64)
    duration = session_hours(rng, n) * 3600.0 / compression
    return Schedule(at_s, venue, game, slots, duration, compression)


def peak_schedule(
    rng: np.random.Generator,
    *,
    seats: Sequence[int],
    game_weights: Sequence[float],
    duration_s: float,
    peak_occupancy: float = 0.85,
    multi_share: float = 0.0,
) -> Schedule:
    """The evening compressed into `duration_s`: at the peak, arrivals keep about `peak_occupancy` of all seats
    taken (Little's law: rate = occupancy × seats / mean session length)."""
    if duration_s <= 0 or not 0 < peak_occupancy <= 1:
        raise ValueError("need duration_s > 0 and 0 < peak_occupancy <= 1")
    compression = EVENING_HOURS * 3600.0 / duration_s
    peak_per_hour = peak_occupancy * float(sum(seats)) / SESSION_MEAN_H
    at_s = evening_arrivals(rng, peak_per_hour) * 3600.0 / compression
    return _draw(rng, at_s, seats, game_weights, multi_share, compression)


def rate_schedule(
    rng: np.random.Generator,
    *,
    rate_per_s: float,
    seats: Sequence[int],
    game_weights: Sequence[float],
    duration_s: float,
    mean_session_s: float,
    multi_share: float = 0.0,
) -> Schedule:
    """A Poisson stream of `rate_per_s` arrivals for `duration_s`; sessions last `mean_session_s` on average,
    with the evening's spread of lengths."""
    if rate_per_s <= 0 or duration_s <= 0 or mean_session_s <= 0:
        raise ValueError("need rate_per_s, duration_s and mean_session_s > 0")
    compression = SESSION_MEAN_H * 3600.0 / mean_session_s
    at_s = poisson_arrivals(rng, rate_per_s, duration_s)
    return _draw(rng, at_s, seats, game_weights, multi_share, compression)


# -- the world the patrons play in, made through the public API ----------------------------------------------


@dataclasses.dataclass(frozen=True)
class VenueSeats:
    venue_id: str
    seats: tuple[str, ...]


#: The zones: id, latency cap (ms), tier. Standard seats at every venue; esports seats where a site is near enough
#: for the esports cap (loadtest.synthetic's caps).
STANDARD = ("std", 30, "TIER_720P60")
ESPORTS = ("esports", 10, "TIER_1080P120")


class SeedError(Exception):
    """The broker refused part of the world (anything but ALREADY_EXISTS, which a re-run meets)."""


# A seeding call refused as overload is tried this many times.
_SEED_ATTEMPTS = 50


async def _each(limit: int, method: Callable[..., Awaitable[Any]], requests: Iterable[Any]) -> None:
    """Call `method` with each request, `limit` at a time (a gRPC call starts when it is made, so the calls are
    made here, under the limit)."""
    import grpc
    from grpc import aio

    sem = asyncio.Semaphore(limit)

    async def one(request: Any) -> None:
        async with sem:
            for _ in range(_SEED_ATTEMPTS):
                try:
                    await method(request, timeout=60)
                    return
                except aio.AioRpcError as exc:
                    if exc.code() is grpc.StatusCode.ALREADY_EXISTS:
                        return
                    if exc.code().name not in retry.BUSY_CODES and exc.code() is not grpc.StatusCode.UNAVAILABLE:
                        raise SeedError(f"seeding failed: {exc.code().name}: {exc.details()}") from exc
                    # The broker is busy (this seeding, most likely: RESOURCE_EXHAUSTED, or CANCELLED by its gRPC
                    # before the call was taken up, seen once in 41,728 PutSeats on a busy machine), or is not
                    # there for a moment: come back when it says. Every seeding call is a put or a create.
                    hint = dict(exc.trailing_metadata() or ()).get("grpc-retry-pushback-ms", "200")
                    await asyncio.sleep(int(hint) / 1000)
            raise SeedError(f"seeding failed: the broker refused a call {_SEED_ATTEMPTS} times (overloaded)")

    await asyncio.gather(*(one(r) for r in requests))


async def seed(
    target: str,
    provider: str,
    sites: Sequence[str],
    games: Sequence[str],
    venues: Sequence[VenueSeats],
    esports_seats: Mapping[str, int],
    latency: Mapping[str, Sequence[tuple[str, int]]],
) -> float:
    """Create the provider and its sites, the games, the venues with their zones, seats (a venue's first
    `esports_seats` are in its esports zone) and measured latency to the sites; returns the seconds it took."""
    from cloudseat.client import BrokerClient
    from cloudseat.v1 import fleet_pb2, venue_pb2

    started = time.monotonic()
    async with BrokerClient(target) as c:
        f, v = c.fleet, c.venues
        await _each(
            1, f.CreateProvider, [fleet_pb2.CreateProviderRequest(provider_id=provider, name=provider)]
        )
        await _each(
            32,
            f.CreateSite,
            (fleet_pb2.CreateSiteRequest(site_id=s, provider_id=provider, name=s) for s in sites),
        )
        await _each(32, f.PutGame, (fleet_pb2.PutGameRequest(game_id=g, name=g) for g in games))
        await _each(
            32,
            v.CreateVenue,
            (venue_pb2.CreateVenueRequest(venue_id=x.venue_id, name=x.venue_id) for x in venues),
        )
        zones = [
            venue_pb2.PutZoneRequest(
                venue_id=x.venue_id, zone_id=zone, tier=tier, latency_cap_ms=cap
            )
            for x in venues
            for zone, cap, tier in (STANDARD, ESPORTS)
            if zone == STANDARD[0] or esports_seats[x.venue_id]
        ]
        await _each(32, v.PutZone, zones)
        samples = {
            x.venue_id: [venue_pb2.LatencySample(site_id=s, rtt_ms=ms) for s, ms in latency[x.venue_id]]
            for x in venues
        }
        await _each(
            32,
            v.ReportLatency,
            (venue_pb2.ReportLatencyRequest(venue_id=k, samples=s) for k, s in samples.items() if s),
        )
        await _each(
            64,
            v.PutSeat,
            (
                venue_pb2.PutSeatRequest(
                    venue_id=x.venue_id,
                    seat_id=seat,
                    zone_id=(ESPORTS if j < esports_seats[x.venue_id] else STANDARD)[0],
                )
                for x in venues
                for j, seat in enumerate(x.seats)
            ),
        )
    return time.monotonic() - started
