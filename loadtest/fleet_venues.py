"""Venues of the fleet load test: when patrons arrive (the evening-peak curve), and the patrons themselves.

The curve and the schedule are pure (NumPy, a seeded generator, no clock or I/O), so they are unit-tested alone:

- `EVENING`: arrivals at internet cafes from 18:00 to 02:00, relative to the peak (20:00-22:00 = 1). The evening
  is compressed into the run's duration; session lengths (log-normal around 2 h, most between 1 and 3 h) are
  compressed by the same factor, so occupancy rises, peaks and falls as it does in a real evening.
- `peak_schedule`: arrivals drawn from the curve (a non-homogeneous Poisson process) scaled so that, at the peak,
  `peak_occupancy` of all seats are taken; each arrival picks a venue (in proportion to its seats), a game (by
  popularity) and, rarely, a multi-slot session.
- `rate_schedule`: `--rate R`: a Poisson stream of R arrivals per second, session lengths from the same
  distribution compressed to a given mean.

The patrons (`main`, run in worker processes) follow the real flow over real gRPC: StartSession, WatchSession until
the update that says PLACED (that moment, as the patron sees it, ends the request→placed time), the agent side
reports READY and STREAMING on its own, and EndSession when the session's time is up. A patron who finds every
seat of the venue taken walks away (counted, not an error).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import logging
import multiprocessing.connection
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

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


async def _each(limit: int, method: Callable[..., Awaitable[Any]], requests: Iterable[Any]) -> None:
    """Call `method` with each request, `limit` at a time (a gRPC call starts when it is made, so the calls are
    made here, under the limit)."""
    import grpc
    from grpc import aio

    sem = asyncio.Semaphore(limit)

    async def one(request: Any) -> None:
        async with sem:
            try:
                await method(request, timeout=60)
            except aio.AioRpcError as exc:
                if exc.code() is not grpc.StatusCode.ALREADY_EXISTS:
                    raise SeedError(f"seeding failed: {exc.code().name}: {exc.details()}") from exc

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


# -- the patrons (a worker process) ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PatronWorkerSpec:
    """What one patron process drives: its venues (all their seats) and their arrivals."""

    index: int
    target: str
    run_id: str
    venues: tuple[VenueSeats, ...]
    games: tuple[str, ...]
    schedule: Schedule  # venue indices are into `venues`
    channels: int = 4
    #: A patron who has not seen PLACED this long after asking gives up (counted as not placed).
    placed_timeout_s: float = 30.0
    rpc_timeout_s: float = 10.0
    seed: int = 1


#: What each placed session's record holds, in order (loadtest.fleet_summary.summarise reads them).
RECORD_FIELDS = (
    "t_start",  # seconds into the run when StartSession was sent
    "placed_ms",  # StartSession sent -> the WatchSession update that says PLACED arrived
    "queue_wait_ms",  # placed_at - created_at, both by the database clock
    "latency_ms",
    "cap_ms",
    "price_micros",
    "slots",
)
# EndSession is tried this many times before a patron gives up on it.
_END_ATTEMPTS = 3
# A session playing: (end, seq, session id, token, venue index, seat).
_Live = tuple[float, int, str, str, int, str]


class _Patrons:
    def __init__(self, spec: PatronWorkerSpec, conn: multiprocessing.connection.Connection) -> None:
        from cloudseat.client import BrokerClient
        from cloudseat.v1 import common_pb2, session_pb2

        self.spec = spec
        self.conn = conn
        self.pb = session_pb2
        self.placed_state = common_pb2.SESSION_STATE_PLACED
        self.ended_state = common_pb2.SESSION_STATE_ENDED
        # Separate subchannel pools: each client is its own HTTP/2 connection, as separate seats would be.
        self.clients = [
            BrokerClient(spec.target, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(max(1, spec.channels))
        ]
        self.free = [list(v.seats) for v in spec.venues]
        self.rng = random.Random(spec.seed)
        self.errors: Counter[str] = Counter()
        self.error_samples: list[str] = []
        self.records: list[tuple[float, float, float, int, int, int, int]] = []
        self.hosts: list[str] = []
        self.games: list[int] = []
        self.ended_at: list[float] = []
        self.start_ok_at: list[float] = []
        self.waiting_samples: list[tuple[float, int]] = []
        self.issued = 0
        self.started = 0
        self.not_placed = 0
        self.ended_before_placed: Counter[str] = Counter()
        self.turned_away = 0
        self.ended = 0
        self.end_failed = 0
        self.waiting = 0
        self.none_waiting = asyncio.Event()
        self.live: list[_Live] = []  # a heap: the sessions playing, soonest end first
        self.tasks: set[asyncio.Task[None]] = set()
        self.t_zero = 0.0
        self.closing = False

    # -- helpers --

    def _now(self) -> float:
        return time.monotonic() - self.t_zero

    def _error(self, method: str, exc: BaseException) -> None:
        from grpc import aio

        code = exc.code().name if isinstance(exc, aio.AioRpcError) else type(exc).__name__
        self.errors[f"{method}:{code}"] += 1
        if len(self.error_samples) < 10:
            detail = exc.details() if isinstance(exc, aio.AioRpcError) else str(exc)
            self.error_samples.append(f"{method}: {code}: {detail}"[:300])

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- one patron --

    async def _patron(self, i: int, seq: int) -> None:
        sched = self.spec.schedule
        v = int(sched.venue[i])
        free = self.free[v]
        if not free:
            self.turned_away += 1
            return
        j = self.rng.randrange(len(free))
        free[j], free[-1] = free[-1], free[j]
        seat = free.pop()
        venue_id = self.spec.venues[v].venue_id
        game = int(sched.game[i])
        client = self.clients[seq % len(self.clients)]
        request = self.pb.StartSessionRequest(
            request_id=f"{self.spec.run_id}-{self.spec.index}-{seq}",
            venue_id=venue_id,
            seat_id=seat,
            game_id=self.spec.games[game],
            slots=int(sched.slots[i]),
        )
        t_start = self._now()
        self.issued += 1
        self.waiting += 1
        placed = None
        try:
            try:
                response = await client.sessions.StartSession(request, timeout=self.spec.rpc_timeout_s)
            except Exception as exc:
                self._error("StartSession", exc)
                free.append(seat)
                return
            self.started += 1
            self.start_ok_at.append(self._now())
            sid = response.session.session_id
            token = response.session_token
            call = client.sessions.WatchSession(self.pb.WatchSessionRequest(session_id=sid))
            try:
                async with asyncio.timeout(self.spec.placed_timeout_s):
                    async for update in call:
                        if update.session.state >= self.placed_state:
                            placed = update.session
                            break
            except TimeoutError:
                self.not_placed += 1
            except Exception as exc:
                self._error("WatchSession", exc)
            finally:
                call.cancel()
        finally:
            self.waiting -= 1
            if not self.waiting:
                self.none_waiting.set()
        t_placed = self._now()
        if placed is None or placed.state == self.ended_state:
            # Not placed in time (counted above), the watch failed (an error), or ended before it was seen placed.
            if placed is not None:
                self.ended_before_placed[str(placed.end_reason)] += 1
            await self._end(sid, token, v, seat)
            return
        self.records.append(
            (
                t_start,
                (t_placed - t_start) * 1000,
                (placed.placed_at.ToMicroseconds() - placed.created_at.ToMicroseconds()) / 1000,
                placed.latency_ms,
                placed.latency_cap_ms,
                placed.price_micros_per_slot_hour,
                placed.slots,
            )
        )
        self.hosts.append(placed.host_id)
        self.games.append(game)
        end = t_start + float(sched.duration_s[i])
        if self.closing:
            await self._end(sid, token, v, seat)
        else:
            heapq.heappush(self.live, (end, seq, sid, token, v, seat))

    async def _end(self, sid: str, token: str, v: int, seat: str) -> None:
        """End the session; the seat is free again once it is ended. A failed call is an error and is tried
        again a second later (a patron does not leave a session running); after the last try the seat stays
        taken, as its session does."""
        client = self.clients[hash(sid) % len(self.clients)]
        request = self.pb.EndSessionRequest(session_id=sid, session_token=token)
        for attempt in range(_END_ATTEMPTS):
            if attempt:
                await asyncio.sleep(1.0)
            try:
                await client.sessions.EndSession(request, timeout=self.spec.rpc_timeout_s)
            except Exception as exc:
                self._error("EndSession", exc)
                continue
            self.ended += 1
            self.ended_at.append(self._now())
            self.free[v].append(seat)
            return
        self.end_failed += 1

    # -- the run --

    async def _drive(self, duration_s: float) -> None:
        """Launch arrivals on time and end sessions when their time is up, until the run's duration is over."""
        sched = self.spec.schedule
        at = sched.at_s.tolist()
        nxt = 0
        seq = 0
        while True:
            now = self._now()
            if now >= duration_s:
                break
            while nxt < len(at) and at[nxt] <= now:
                self._spawn(self._patron(nxt, seq))
                nxt += 1
                seq += 1
            while self.live and self.live[0][0] <= now:
                _, _, sid, token, v, seat = heapq.heappop(self.live)
                self._spawn(self._end(sid, token, v, seat))
            await asyncio.sleep(0.002)

    async def _sample(self) -> None:
        while True:
            self.waiting_samples.append((self._now(), self.waiting))
            await asyncio.sleep(0.25)

    async def _progress(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            recent = [r[1] for r in self.records[-2000:]]
            self.conn.send(
                (
                    "progress",
                    {
                        "issued": self.issued,
                        "started": self.started,
                        "placed": len(self.records),
                        "ended": self.ended,
                        "errors": sum(self.errors.values()),
                        "waiting": self.waiting,
                        "recent_placed_ms": recent[-500:],
                    },
                )
            )

    async def run_load(self, t_zero: float, duration_s: float) -> dict[str, Any]:
        self.t_zero = t_zero
        await asyncio.sleep(max(0.0, t_zero - time.monotonic()))
        sampler = asyncio.create_task(self._sample())
        progress = asyncio.create_task(self._progress())
        try:
            await self._drive(duration_s)
            # The run is over: let the requests on their way be placed, then end every session still playing.
            if self.waiting:
                self.none_waiting.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.spec.placed_timeout_s + self.spec.rpc_timeout_s):
                        await self.none_waiting.wait()
            self.closing = True
            live, self.live = self.live, []
            limit = asyncio.Semaphore(256)

            async def end_one(item: _Live) -> None:
                async with limit:
                    await self._end(item[2], item[3], item[4], item[5])

            await asyncio.gather(*(end_one(item) for item in live))
            # Patrons still at it (an EndSession being retried): each has at most its last tries left.
            if self.tasks:
                await asyncio.wait(set(self.tasks), timeout=_END_ATTEMPTS * (self.spec.rpc_timeout_s + 1))
        finally:
            sampler.cancel()
            progress.cancel()
        return {
            "issued": self.issued,
            "started": self.started,
            "placed": len(self.records),
            "ended": self.ended,
            "end_failed": self.end_failed,
            "not_placed": self.not_placed,
            "ended_before_placed": dict(self.ended_before_placed),
            "turned_away": self.turned_away,
            "errors": dict(self.errors),
            "error_samples": self.error_samples,
            "records": self.records,
            "hosts": self.hosts,
            "games": self.games,
            "start_ok_at": self.start_ok_at,
            "ended_at": self.ended_at,
            "waiting_samples": self.waiting_samples,
            "unfinished_tasks": len(self.tasks),
        }

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


async def _serve(spec: PatronWorkerSpec, conn: multiprocessing.connection.Connection) -> None:
    from loadtest import echo

    patrons = _Patrons(spec, conn)
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    loop.add_reader(conn.fileno(), lambda: inbox.put_nowait(conn.recv() if conn.poll() else ("stop",)))
    conn.send(("ready", spec.index))
    try:
        while True:
            msg = await inbox.get()
            kind = msg[0]
            if kind == "echo":
                _, target, seconds, concurrency, t_zero = msg
                conn.send(("echo", await echo.drive(target, seconds, concurrency, spec.channels, t_zero)))
            elif kind == "go":
                _, t_zero, duration_s = msg
                conn.send(("final", await patrons.run_load(t_zero, duration_s)))
            else:
                return
    finally:
        loop.remove_reader(conn.fileno())
        await patrons.close()


def main(spec: PatronWorkerSpec, conn: multiprocessing.connection.Connection) -> None:
    """A patron process: drives `spec`'s venues when told to (see loadtest.fleet for the conversation)."""
    logging.disable(logging.WARNING)
    try:
        asyncio.run(_serve(spec, conn))
    except Exception as exc:  # the parent reports it; a traceback in a worker's stderr helps no one
        conn.send(("error", f"patron worker {spec.index}: {type(exc).__name__}: {exc}"))
