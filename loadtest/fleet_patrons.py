"""The patrons of the fleet load test: a worker process that plays its venues' seats over real gRPC.

Each patron follows the real flow: StartSession, WatchSession until the update that says PLACED (that moment, as the
patron sees it, ends the request→placed time), the agent side reports READY and STREAMING on its own, and EndSession
when the session's time is up. A patron who finds every seat of the venue taken walks away (counted, not an error).

The arrivals it plays are loadtest.fleet_venues' schedule; the orchestrator (loadtest.fleet) tells it when to go.
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
from typing import Any

from loadtest import fleet_venues


@dataclasses.dataclass(frozen=True)
class PatronWorkerSpec:
    """What one patron process drives: its venues (all their seats) and their arrivals."""

    index: int
    target: str
    run_id: str
    venues: tuple[fleet_venues.VenueSeats, ...]
    games: tuple[str, ...]
    schedule: fleet_venues.Schedule  # venue indices are into `venues`
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
