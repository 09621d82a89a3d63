"""The patrons of the fleet load test: a worker process that plays its venues' seats over real gRPC.

Each patron follows the real seat's flow:

- StartSession with a fresh request id, asking the broker to hold the answer until the session is placed
  (`wait_for_placement_ms`; 0: the old flow). An answer that shows the session PLACED (or later) ends the
  request→placed time in one round trip; one still PENDING is followed with WatchSession until the update that says
  PLACED, as before. The agent side reports READY and STREAMING on its own, and EndSession comes when the session's
  time is up. A patron who finds every seat of the venue taken walks away (counted, not an error).
- Admission control: a StartSession answered RESOURCE_EXHAUSTED (refused by the broker's code) or CANCELLED
  (refused inside the broker's gRPC before its code took the call up: `--accept-wait`) is a refusal, not an error.
  The patron asks again with the same request id after the broker's hint (`grpc-retry-pushback-ms`) or, without
  one, after a backoff of 50 ms doubling to 2 s, plus up to half again either way (`retry_delay_s`), until its
  patience runs out (counted as gave up refused). Each call keeps its own timeout: a patron never waits a whole
  deadline on one call.
- A site lost (the orchestrator's "site_down"): the seats whose sessions were on it lost their stream. Each watches
  its session until it ends (HOST_LOST, once the broker sees the hosts gone), then resumes it: StartSession with
  `resume` and a fresh request id, followed to PLACED like a new patron's, refusals retried the same way. Every
  such session gets one outcome (`resume_outcome`): placed again, refused with a reason, not resumable, or lost.

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
from collections.abc import Callable
from typing import Any

from cloudseat import retry

from loadtest import fleet_venues

# -- admission: how a refused patron asks again (pure) --------------------------------------------------------

#: Answers to a resume that say no with a reason (the session cannot be resumed, the request is wrong): the seat
#: knows where it stands. Anything else (a deadline, an unavailable broker) leaves it stranded: the session is lost.
CLEAR_REFUSALS = frozenset(
    {
        "FAILED_PRECONDITION",
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "PERMISSION_DENIED",
        "OUT_OF_RANGE",
        "ALREADY_EXISTS",
    }
)


def retry_delay_s(code: str, refusals: int, trailing: Any, draw: Callable[[], float]) -> float | None:
    """Seconds to wait before asking again after the `refusals`-th refusal (1 for the first) answered `code`, by the
    seat's own rule (cloudseat.retry: the broker's hint, or a doubling backoff, plus up to half again): a simulated
    patron comes back when a real seat would. None: not worth another try (the broker said so)."""
    wait = retry.next_wait(code, trailing, refusals, draw)
    return None if wait is None else wait.delay_s


def resume_outcome(
    ended_reason: str | None,
    resumable: bool,
    failure: str,
    placed: bool,
    ended_before_placed: str | None,
    pending: str = "",
) -> str:
    """One lost session's outcome: `placed`, `refused:CODE` (a clear no), `not_resumable:REASON` (it ended for a
    reason that was the seat's doing), or `lost:WHY` (never placed again and never clearly refused).

    `ended_reason` is how the old session ended (None: it never did within patience); `failure` is why the resume
    call failed ('' when it was answered OK; 'REFUSED' when refusals outlasted patience, else a gRPC code or an
    exception's name); `ended_before_placed` the end reason of a resumed session that ended before it was placed;
    `pending` why the broker said a resumed session still waited when patience ran out (its PendingReason)."""
    if ended_reason is None:
        return "lost:never_ended"
    if not resumable:
        return f"not_resumable:{ended_reason}"
    if failure == "REFUSED":
        return "lost:refused_until_patience"
    if failure:
        return f"refused:{failure}" if failure in CLEAR_REFUSALS else f"lost:{failure}"
    if ended_before_placed is not None:
        return f"lost:ended_before_placed:{ended_before_placed}"
    if placed:
        return "placed"
    return f"lost:not_placed:{pending}" if pending else "lost:not_placed"


# -- the patrons (a worker process) ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PatronWorkerSpec:
    """What one patron process drives: its venues (all their seats) and their arrivals."""

    index: int
    target: str
    run_id: str
    venues: tuple[fleet_venues.VenueSeats, ...]
    games: tuple[str, ...]
    schedule: fleet_venues.Schedule  # venue indices are into `venues`
    # Seats are many connections; SO_REUSEPORT deals connections (not calls) among the tenant workers, so a few
    # channels could all land on one worker: enough of them that the deal evens out, as thousands of seats do.
    channels: int = 32
    #: A patron's patience: one who has not seen PLACED this long after first asking gives up (counted as not
    #: placed, or as gave up refused when the broker kept refusing).
    placed_timeout_s: float = 30.0
    rpc_timeout_s: float = 10.0
    #: StartSessionRequest.wait_for_placement_ms (0: answer at once, then WatchSession).
    wait_for_placement_ms: int = 0
    #: Send the live sessions per site with each progress message (the orchestrator picks the site to lose).
    track_sites: bool = False
    seed: int = 1


#: What each placed session's record holds, in order (loadtest.fleet_summary.summarise reads them).
RECORD_FIELDS = (
    "t_start",  # seconds into the run when StartSession was first sent
    "placed_ms",  # first send -> PLACED seen: in StartSession's answer, or in a WatchSession update
    "queue_wait_ms",  # placed_at - created_at, both by the database clock
    "latency_ms",
    "cap_ms",
    "price_micros",
    "slots",
    "to_created_ms",  # first send -> created_at (the database clock; same machine): the way in, refusals included
    "from_placed_ms",  # placed_at (the placing transaction's start) -> PLACED seen: the commit and the way out
)
# EndSession is tried this many times before a patron gives up on it.
_END_ATTEMPTS = 3


@dataclasses.dataclass(order=True)
class _Live:
    """A session playing; the heap orders by end time."""

    end: float
    seq: int
    sid: str = dataclasses.field(compare=False)
    token: str = dataclasses.field(compare=False)
    venue: int = dataclasses.field(compare=False)
    seat: str = dataclasses.field(compare=False)
    site: str = dataclasses.field(compare=False)
    game: int = dataclasses.field(compare=False)
    slots: int = dataclasses.field(compare=False)


@dataclasses.dataclass
class _Asked:
    """A StartSession asked and followed: the answer (None: refused until patience ran out, or failed), the session
    as first seen PLACED or later (None: not placed), why not, and when each was seen (seconds into the run)."""

    response: Any
    session: Any
    why: str
    answered_at: float
    seen_at: float = 0.0
    in_answer: bool = False  # PLACED (or later) in StartSession's own answer: one round trip


class _Patrons:
    def __init__(self, spec: PatronWorkerSpec, conn: multiprocessing.connection.Connection) -> None:
        from cloudseat.client import BrokerClient
        from cloudseat.v1 import common_pb2, session_pb2

        self.spec = spec
        self.conn = conn
        self.pb = session_pb2
        self.common = common_pb2
        self.placed_state = common_pb2.SESSION_STATE_PLACED
        self.ended_state = common_pb2.SESSION_STATE_ENDED
        # Separate subchannel pools: each client is its own HTTP/2 connection, as separate seats would be.
        self.clients = [
            BrokerClient(spec.target, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(max(1, spec.channels))
        ]
        self.free = [list(v.seats) for v in spec.venues]
        self.rng = random.Random(spec.seed)
        self.jitter = random.Random(spec.seed + 7919)  # its own stream: the seats chosen stay the same
        self.errors: Counter[str] = Counter()
        self.error_samples: list[str] = []
        self.records: list[tuple[float, float, float, int, int, int, int, float, float]] = []
        self.hosts: list[str] = []
        self.games: list[int] = []
        self.ended_at: list[float] = []
        self.start_ok_at: list[float] = []
        self.waiting_samples: list[tuple[float, int]] = []
        self.refused_ms: list[float] = []
        self.issued = 0
        self.started = 0
        self.placed_at_start = 0
        self.not_placed = 0
        self.gave_up_refused = 0
        self.watch_refused = 0  # WatchSession calls refused by a busy broker (or unanswered) and opened again
        self.ended_before_placed: Counter[str] = Counter()
        self.turned_away = 0
        self.ended = 0
        self.end_failed = 0
        self.waiting = 0
        self.none_waiting = asyncio.Event()
        self.live: list[_Live] = []  # a heap: the sessions playing, soonest end first
        self.tasks: set[asyncio.Task[None]] = set()
        # Site loss: the sites told down, what was on each when told, and one outcome per session lost there.
        self.down_sites: set[str] = set()
        self.site_loss: list[dict[str, Any]] = []
        self.resumes: list[dict[str, Any]] = []
        self.resuming: set[asyncio.Task[None]] = set()
        self.resumed = 0
        self.resume_seq = 0
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

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def _client(self, seq: int) -> Any:
        return self.clients[seq % len(self.clients)]

    # -- the calls a seat makes --

    async def _ask(self, client: Any, request: Any, deadline: float, method: str) -> tuple[Any, str]:
        """StartSession, asked again after each refusal until `deadline` (seconds into the run). Returns (the
        answer, '') or (None, why): 'REFUSED' when the broker was still refusing as patience ran out, else the
        error's code (counted as an error)."""
        from grpc import aio

        refusals = 0
        while True:
            sent = self._now()
            try:
                return await client.sessions.StartSession(request, timeout=self.spec.rpc_timeout_s), ""
            except aio.AioRpcError as exc:
                if exc.code().name not in retry.BUSY_CODES:
                    self._error(method, exc)
                    return None, exc.code().name
                now = self._now()
                self.refused_ms.append((now - sent) * 1000)
                refusals += 1
                delay = retry_delay_s(exc.code().name, refusals, exc.trailing_metadata(), self.jitter.random)
                if delay is None or now + delay >= deadline:
                    return None, "REFUSED"
                await asyncio.sleep(delay)
            except Exception as exc:
                self._error(method, exc)
                return None, type(exc).__name__

    async def _follow(self, client: Any, sid: str, deadline: float, until: int) -> tuple[Any, str]:
        """WatchSession until the session's state reaches `until` (PLACED, or ENDED) or `deadline` passes.
        Returns (the session, '') or (None, why): 'timeout' (with ':REASON' when the broker said why it was still
        pending), 'stream ended', or 'WatchSession' for the watch's error (counted as an error). A watch refused by a
        busy broker (CANCELLED) or not answered (UNAVAILABLE) is opened again, as the seat's own watch is
        (thin_client.seat), each time counted as a refusal, not an error."""
        from grpc import aio

        pending, delay = 0, 0.1
        try:
            async with asyncio.timeout(max(0.0, deadline - self._now())):
                while True:
                    call = client.sessions.WatchSession(self.pb.WatchSessionRequest(session_id=sid))
                    try:
                        async for update in call:
                            if update.session.state >= until:
                                return update.session, ""
                            pending = update.session.pending_reason
                        return None, "stream ended"
                    except aio.AioRpcError as exc:
                        if exc.code().name not in retry.WATCH_AGAIN_CODES:
                            raise
                        self.watch_refused += 1
                    finally:
                        call.cancel()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
        except TimeoutError:
            reason = (
                self.common.PendingReason.Name(pending).removeprefix("PENDING_REASON_") if pending else ""
            )
            return None, f"timeout:{reason}" if reason else "timeout"
        except Exception as exc:
            self._error("WatchSession", exc)
            return None, "WatchSession"

    async def _placed(self, client: Any, request: Any, t_start: float, method: str) -> _Asked:
        """Ask (refusals retried) and follow the answer to PLACED or later, all within patience from `t_start`."""
        deadline = t_start + self.spec.placed_timeout_s
        response, failure = await self._ask(client, request, deadline, method)
        out = _Asked(response, None, failure, self._now())
        if response is None:
            return out
        if response.session.state >= self.placed_state:
            out.session, out.in_answer = response.session, True
        else:
            sid = response.session.session_id
            out.session, out.why = await self._follow(client, sid, deadline, self.placed_state)
        out.seen_at = self._now()
        return out

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
        game = int(sched.game[i])
        client = self._client(seq)
        request = self.pb.StartSessionRequest(
            request_id=f"{self.spec.run_id}-{self.spec.index}-{seq}",
            venue_id=self.spec.venues[v].venue_id,
            seat_id=seat,
            game_id=self.spec.games[game],
            slots=int(sched.slots[i]),
            wait_for_placement_ms=self.spec.wait_for_placement_ms,
        )
        t_start = self._now()
        t_start_wall = time.time()
        self.issued += 1
        self.waiting += 1
        try:
            asked = await self._placed(client, request, t_start, "StartSession")
        finally:
            self.waiting -= 1
            if not self.waiting:
                self.none_waiting.set()
        response, placed = asked.response, asked.session
        if response is None:
            if asked.why == "REFUSED":
                self.gave_up_refused += 1
            free.append(seat)  # no session was made: the seat is free again
            return
        self.started += 1
        self.start_ok_at.append(asked.answered_at)
        sid, token = response.session.session_id, response.session_token
        if asked.why.startswith("timeout"):
            self.not_placed += 1
        if placed is None or placed.state == self.ended_state:
            # Not placed in time (counted above), the watch failed (an error), or ended before it was seen placed.
            if placed is not None:
                self.ended_before_placed[str(placed.end_reason)] += 1
            await self._end(sid, token, v, seat)
            return
        if asked.in_answer:
            self.placed_at_start += 1
        self.records.append(
            (
                t_start,
                (asked.seen_at - t_start) * 1000,
                (placed.placed_at.ToMicroseconds() - placed.created_at.ToMicroseconds()) / 1000,
                placed.latency_ms,
                placed.latency_cap_ms,
                placed.price_micros_per_slot_hour,
                placed.slots,
                placed.created_at.ToMicroseconds() / 1000 - t_start_wall * 1000,
                (t_start_wall + asked.seen_at - t_start) * 1000 - placed.placed_at.ToMicroseconds() / 1000,
            )
        )
        self.hosts.append(placed.host_id)
        self.games.append(game)
        end = t_start + float(sched.duration_s[i])
        await self._play(_Live(end, seq, sid, token, v, seat, placed.site_id, game, int(sched.slots[i])))

    async def _play(self, item: _Live) -> None:
        """A session placed: it plays until its end (or is ended at once when the run is closing); one placed on a
        site already lost has lost its stream before it began."""
        if item.site in self.down_sites:
            self._lost(item, told=False)
        elif self.closing:
            await self._end(item.sid, item.token, item.venue, item.seat)
        else:
            heapq.heappush(self.live, item)

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

    # -- a site lost --

    def site_down(self, site: str) -> None:
        """The orchestrator cut `site`'s hosts: every session playing there lost its stream."""
        self.down_sites.add(site)
        hit = [x for x in self.live if x.site == site]
        self.live = [x for x in self.live if x.site != site]
        heapq.heapify(self.live)
        self.site_loss.append({"site": site, "told_at": self._now(), "sessions": len(hit)})
        for item in hit:
            self._lost(item, told=True)

    def _lost(self, item: _Live, *, told: bool) -> None:
        # The outcome is 'lost' until the resume says otherwise: one still under way when the run ends was lost.
        record: dict[str, Any] = {
            "site": item.site,
            "on_site_when_told": told,
            "outcome": "lost:unfinished",
            "end_reason": None,
            "seen_ended_at": None,
            "resume_to_placed_ms": None,
        }
        self.resumes.append(record)
        task = self._spawn(self._resume(item, record))
        self.resuming.add(task)
        task.add_done_callback(self.resuming.discard)

    async def _resume(self, item: _Live, record: dict[str, Any]) -> None:
        """As a seat whose stream died: watch the session until it ends, then resume it and follow the new one to
        PLACED; it plays on until the old one's end."""
        from cloudseat.resume import RESUMABLE_REASONS

        client = self._client(item.seq)
        ended, why = await self._follow(
            client, item.sid, self._now() + self.spec.placed_timeout_s, self.ended_state
        )
        if ended is None:  # the broker never ended it within patience (or the watch broke): the seat gives up
            record["outcome"] = f"{resume_outcome(None, False, '', False, None)}:{why}"
            await self._end(item.sid, item.token, item.venue, item.seat)
            return
        reason = self.common.EndReason.Name(ended.end_reason).removeprefix("END_REASON_")
        record["end_reason"], record["seen_ended_at"] = reason, self._now()
        if reason not in RESUMABLE_REASONS:
            record["outcome"] = resume_outcome(reason, False, "", False, None)
            self.free[item.venue].append(item.seat)
            return
        self.resume_seq += 1
        request = self.pb.StartSessionRequest(
            request_id=f"{self.spec.run_id}-{self.spec.index}-r{self.resume_seq}",
            venue_id=self.spec.venues[item.venue].venue_id,
            seat_id=item.seat,
            game_id=self.spec.games[item.game],
            slots=item.slots,
            resume=self.pb.Resume(session_id=item.sid, session_token=item.token),
            wait_for_placement_ms=self.spec.wait_for_placement_ms,
        )
        t_resume = self._now()
        asked = await self._placed(client, request, t_resume, "StartSession(resume)")
        response, placed = asked.response, asked.session
        if response is not None:
            self.resumed += 1
        ended_early = (
            self.common.EndReason.Name(placed.end_reason).removeprefix("END_REASON_")
            if placed is not None and placed.state == self.ended_state
            else None
        )
        failure = asked.why if response is None else ""
        pending = asked.why.partition(":")[2] if asked.why.startswith("timeout") else ""
        record["outcome"] = resume_outcome(reason, True, failure, placed is not None, ended_early, pending)
        if response is None:
            self.free[item.venue].append(item.seat)
            return
        sid, token = response.session.session_id, response.session_token
        if placed is None or ended_early is not None:
            await self._end(sid, token, item.venue, item.seat)
            return
        record["resume_to_placed_ms"] = (asked.seen_at - t_resume) * 1000
        await self._play(dataclasses.replace(item, sid=sid, token=token, site=placed.site_id))

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
            while self.live and self.live[0].end <= now:
                x = heapq.heappop(self.live)
                self._spawn(self._end(x.sid, x.token, x.venue, x.seat))
            await asyncio.sleep(0.002)

    async def _sample(self) -> None:
        while True:
            self.waiting_samples.append((self._now(), self.waiting))
            await asyncio.sleep(0.25)

    async def _progress(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            recent = [r[1] for r in self.records[-2000:]]
            progress: dict[str, Any] = {
                "issued": self.issued,
                "started": self.started,
                "placed": len(self.records),
                "ended": self.ended,
                "errors": sum(self.errors.values()),
                "refused": len(self.refused_ms),
                "resumed": self.resumed,
                "waiting": self.waiting,
                "recent_placed_ms": recent[-500:],
            }
            if self.spec.track_sites:
                progress["live_by_site"] = dict(Counter(x.site for x in self.live))
            self.conn.send(("progress", progress))

    async def run_load(self, t_zero: float, duration_s: float) -> dict[str, Any]:
        self.t_zero = t_zero
        await asyncio.sleep(max(0.0, t_zero - time.monotonic()))
        sampler = asyncio.create_task(self._sample())
        progress = asyncio.create_task(self._progress())
        patience = self.spec.placed_timeout_s
        try:
            await self._drive(duration_s)
            # The run is over: let the requests on their way be placed, then end every session still playing.
            if self.waiting:
                self.none_waiting.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(patience + self.spec.rpc_timeout_s):
                        await self.none_waiting.wait()
            # Seats resuming after a site loss: each waits at most patience for the end, then patience to be placed.
            if self.resuming:
                await asyncio.wait(set(self.resuming), timeout=2 * patience + self.spec.rpc_timeout_s)
            self.closing = True
            live, self.live = self.live, []
            limit = asyncio.Semaphore(256)

            async def end_one(item: _Live) -> None:
                async with limit:
                    await self._end(item.sid, item.token, item.venue, item.seat)

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
            "placed_at_start": self.placed_at_start,
            "ended": self.ended,
            "end_failed": self.end_failed,
            "not_placed": self.not_placed,
            "gave_up_refused": self.gave_up_refused,
            "watch_refused": self.watch_refused,
            "ended_before_placed": dict(self.ended_before_placed),
            "turned_away": self.turned_away,
            "errors": dict(self.errors),
            "error_samples": self.error_samples,
            "refused_ms": self.refused_ms,
            "records": self.records,
            "hosts": self.hosts,
            "games": self.games,
            "start_ok_at": self.start_ok_at,
            "ended_at": self.ended_at,
            "waiting_samples": self.waiting_samples,
            "site_loss": self.site_loss,
            "resumes": self.resumes,
            "resumed": self.resumed,
            "unfinished_tasks": len(self.tasks),
        }

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


async def _serve(spec: PatronWorkerSpec, conn: multiprocessing.connection.Connection) -> None:
    """The conversation with the orchestrator: "echo" (the baseline), "go" (play the window; "final" when done),
    "site_down" (during the window), "stop"."""
    from loadtest import echo

    patrons = _Patrons(spec, conn)
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    loop.add_reader(conn.fileno(), lambda: inbox.put_nowait(conn.recv() if conn.poll() else ("stop",)))
    conn.send(("ready", spec.index))
    run: asyncio.Task[dict[str, Any]] | None = None
    try:
        while True:
            msg = await inbox.get()
            kind = msg[0]
            if kind == "echo":
                _, target, seconds, concurrency, t_zero = msg
                conn.send(("echo", await echo.drive(target, seconds, concurrency, spec.channels, t_zero)))
            elif kind == "go":
                # The window runs beside this loop, which keeps reading: "site_down" arrives during it.
                _, t_zero, duration_s = msg
                run = asyncio.create_task(patrons.run_load(t_zero, duration_s))
                run.add_done_callback(lambda _: inbox.put_nowait(("done",)))
            elif kind == "done" and run is not None:
                conn.send(("final", run.result()))
            elif kind == "site_down":
                patrons.site_down(msg[1])
            else:
                return
    finally:
        loop.remove_reader(conn.fileno())
        if run is not None and not run.done():
            run.cancel()
            with contextlib.suppress(BaseException):
                await run
        await patrons.close()


def main(spec: PatronWorkerSpec, conn: multiprocessing.connection.Connection) -> None:
    """A patron process: drives `spec`'s venues when told to (see loadtest.fleet for the conversation)."""
    logging.disable(logging.WARNING)
    try:
        asyncio.run(_serve(spec, conn))
    except Exception as exc:  # the parent reports it; a traceback in a worker's stderr helps no one
        conn.send(("error", f"patron worker {spec.index}: {type(exc).__name__}: {exc}"))
