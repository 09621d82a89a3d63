"""SessionService: thin — validate and convert the request, call the store or the relay, convert the answer."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator

import asyncpg
from cloudseat import errors
from cloudseat import validate as v
from cloudseat.v1 import session_pb2, session_pb2_grpc
from grpc import aio

from broker import auth, drain, guard, hub, patron_time
from broker.backlog import Backlog
from broker.lifecycle import ON_HOST, EndReason, State
from broker.links import LinkRegistry
from broker.rpc import convert, forward
from broker.store import drains as drain_store
from broker.store import hosts as host_store
from broker.store import metering as metering_store
from broker.store import patron_time as patron_time_store
from broker.store import session_batches
from broker.store import sessions as session_store

# StartSession may hold its answer this long at most for the placement (StartSessionRequest.wait_for_placement_ms).
MAX_WAIT_MS = 5000
# ... and answers this much before the caller's deadline, whatever the wait asked.
_ANSWER_MARGIN_S = 0.05
# Negotiation needs a workload to connect to.
_NEGOTIABLE = (State.READY, State.STREAMING)
# A forwarded negotiation may take this much longer than the relay at the target (the hop there and back).
_FORWARD_MARGIN_S = 2.0


class SessionService(session_pb2_grpc.SessionServiceServicer):
    def __init__(
        self,
        pool: asyncpg.Pool,
        session_hub: hub.SessionHub,
        links: LinkRegistry | None,
        negotiate_timeout_s: float,
        tokens: auth.SessionTokens | None = None,
        forwarder: forward.Forwarder | None = None,
        patron_time_config: patron_time.PatronTimeConfig | None = None,
        drain_config: drain.DrainConfig | None = None,
        start_db_wait_s: float | None = None,
        backlog: Backlog | None = None,
    ) -> None:
        self._pool = pool
        # The placement queue's backlog (None: new starts are never refused for it).
        self._backlog = backlog
        # How long a new start may wait for a database connection before it is refused (None: no limit).
        self._start_db_wait_s = start_db_wait_s
        # This process's starts and ends, each kind one statement at a time for all callers of the moment.
        self._batches = session_batches.SessionBatches(pool, db_wait_s=start_db_wait_s)
        self._hub = session_hub
        # The agents' links this process holds (None: it holds none; calls that need an agent are forwarded).
        self._links = links
        self._negotiate_timeout_s = negotiate_timeout_s
        self._tokens = tokens or auth.SessionTokens(None, None)
        self._forwarder = forwarder
        self._patron_time = patron_time_config or patron_time.PatronTimeConfig()
        self._drain = drain_config or drain.DrainConfig()

    async def StartSession(
        self, request: session_pb2.StartSessionRequest, context: aio.ServicerContext
    ) -> session_pb2.StartSessionResponse:
        req = convert.start_request(request)
        wait_s = v.int_range(request.wait_for_placement_ms, "wait_for_placement_ms", 0, MAX_WAIT_MS) / 1000
        auth.caller().require_seat(req.venue_id, req.seat_id)
        if self._backlog is not None and req.resume is None:
            retry_ms = self._backlog.refusal(time.monotonic())
            if retry_ms is not None:
                raise errors.ResourceExhausted(
                    f"the placement queue is behind; retry in {retry_ms} ms", retry_after_ms=retry_ms
                )
        remaining = context.time_remaining()
        if (
            remaining is not None
        ):  # answer in time: what the wait cannot hold, the seat follows with WatchSession
            wait_s = min(wait_s, max(0.0, remaining - _ANSWER_MARGIN_S))
        # Listening before the session exists: its placement cannot fall between the insert and the wait.
        with self._hub.placement_of(req.session_id) as placed:
            row, created = await session_store.start(
                self._pool,
                req,
                self._tokens.check,
                busy_after_s=self._start_db_wait_s,
                batches=self._batches,
                token_stored=self._tokens.verifier is None,
            )
            if wait_s > 0 and row["state"] == "PENDING":
                if row["session_id"] == req.session_id:
                    row = await self._placement(row, placed, wait_s)
                else:  # a retry: the earlier call's session, listened to from now on
                    with self._hub.placement_of(row["session_id"]) as earlier:
                        row = await session_store.get(self._pool, row["session_id"])
                        if row["state"] == "PENDING":
                            row = await self._placement(row, earlier, wait_s)
        response = session_pb2.StartSessionResponse(
            session=convert.session(row), session_token=self._tokens.issue(row), created=created
        )
        if row["state"] == "PENDING" and wait_s > 0:
            place = await session_store.queue_position(self._pool, row["session_id"])
            if place is not None:
                response.queue_position, response.queue_length = place
        return response

    async def _placement(
        self, row: asyncpg.Record, placed: asyncio.Future[None], wait_s: float
    ) -> asyncpg.Record:
        """The session once it left the queue, or as it stands when `wait_s` ran out."""
        guard.waiting()  # a held answer is no work in progress here
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                await placed
        if not placed.done():
            return row
        return await session_store.get(self._pool, row["session_id"])

    async def GetSession(
        self, request: session_pb2.GetSessionRequest, context: aio.ServicerContext
    ) -> session_pb2.GetSessionResponse:
        sid = v.session_id(request.session_id)
        row = await session_store.get(self._pool, sid)
        auth.caller().require_session(row)
        history = await session_store.history(self._pool, sid) if request.include_history else []
        session = convert.session(row)
        stats = (await metering_store.stream_stats(self._pool, [sid])).get(sid)
        if stats is not None:
            session.stream_stats.CopyFrom(convert.stream_stats(stats))
        return session_pb2.GetSessionResponse(
            session=session, history=[convert.transition(t) for t in history]
        )

    async def WatchSession(
        self, request: session_pb2.WatchSessionRequest, context: aio.ServicerContext
    ) -> AsyncIterator[session_pb2.SessionUpdate]:
        sid = v.session_id(request.session_id)
        async with self._hub.watch(sid) as changes:
            # Subscribed first, read second: a change in between arrives on the queue, and the seq check drops
            # notifications older than what was read (a change of paid time, or of the host's drain deadline,
            # keeps the seq: it is read too). The row carries its host's drain deadline (broker.drain).
            row: hub.Change = dict(await drain_store.watched_session(self._pool, sid))
            auth.caller().require_session(row)
            position = (0, 0)
            sent: tuple[object, ...] | None = None
            clock = _PatronClock(self._pool, self._patron_time)
            move_clock = _MoveClock(self._drain)
            while True:
                shown = position if row["state"] == "PENDING" else (0, 0)
                reading = await clock.read(row)
                move = move_clock.read(row)
                key = (row["seq"], row["pending_reason"], shown, row.get("paid_time_s"), row.get("moves_at"))
                news = reading is not None and (reading.warning_s is not None or reading.announce_time_up)
                news = news or (move is not None and move.warning_s is not None)
                if key != sent or news:
                    yield _update(row, shown, reading, move)
                    sent = key
                if row["state"] == "ENDED":
                    return
                due = [r.next_due_s for r in (reading, move) if r is not None and r.next_due_s is not None]
                try:
                    # Wake for the next warning (or the time up) when nothing changes before it.
                    async with asyncio.timeout(min(due) if due else None):
                        item = await changes.get()
                except TimeoutError:
                    continue
                if item is None:
                    raise errors.Unavailable("the broker is shutting down; watch again")
                if isinstance(item, hub.QueuePosition):
                    position = (item.position, item.total)
                elif isinstance(item, hub.Resync) or item["seq"] >= row["seq"]:
                    # A change says what moved, not the whole session: read it (a resync may have missed some).
                    row = dict(await drain_store.watched_session(self._pool, sid))

    async def Negotiate(
        self, request: session_pb2.NegotiateRequest, context: aio.ServicerContext
    ) -> session_pb2.NegotiateResponse:
        sid = v.session_id(request.session_id)
        token = v.token(request.session_token)
        if not request.HasField("offer"):
            raise errors.InvalidArgument("offer", "is required")
        v.sdp(request.offer.type, request.offer.sdp, "offer", expect="offer")
        row = await session_store.get(self._pool, sid)
        auth.caller().require_session(row, media=True)
        self._tokens.check(row, token)
        state = State(row["state"])
        if state not in _NEGOTIABLE:
            raise errors.FailedPrecondition(
                f"session_id: the session is {state}; negotiate once it is READY (watch it for the change)"
            )
        host_id = row["host_id"]
        holder = await self._link_elsewhere(host_id, context)
        if holder is not None:
            assert self._forwarder is not None
            remaining = context.time_remaining()
            timeout_s = self._negotiate_timeout_s + _FORWARD_MARGIN_S
            if remaining is not None:
                timeout_s = min(timeout_s, remaining)
            metadata = context.invocation_metadata()
            response: session_pb2.NegotiateResponse = await self._forwarder.negotiate(
                holder, request, metadata, timeout_s
            )
            return response
        if self._links is None:
            raise errors.Unavailable(
                f"session_id: the agent of host {host_id!r} is not linked to any broker process now; retry shortly"
            )
        answer = await self._links.negotiate(host_id, sid, request.offer, self._negotiate_timeout_s)
        return session_pb2.NegotiateResponse(answer=answer)

    async def _link_elsewhere(self, host_id: str, context: aio.ServicerContext) -> str | None:
        """The address of the replica holding the host's agent link, when it is another and the call may go there
        (a forwarded call is served here or not at all)."""
        if self._forwarder is None or (self._links is not None and self._links.link(host_id) is not None):
            return None
        if forward.forwarded(context.invocation_metadata()):
            return None
        address = await host_store.broker_address(self._pool, host_id)
        if address is None or address == self._forwarder.address:
            return None
        return address

    async def EndSession(
        self, request: session_pb2.EndSessionRequest, context: aio.ServicerContext
    ) -> session_pb2.EndSessionResponse:
        sid = v.session_id(request.session_id)
        caller = auth.caller()
        # The venue's staff (or the operator) end a seat's session without its token: ENDED_BY_VENUE.
        by_venue = (
            not request.session_token
            and not caller.trusted
            and caller.role in (auth.Role.VENUE, auth.Role.OPERATOR)
        )
        token = None if by_venue else v.token(request.session_token)
        detail = v.text(request.detail, "detail")
        row = await session_store.get(self._pool, sid)
        caller.require_session(row)
        reason = EndReason.ENDED_BY_VENUE if by_venue else EndReason.ENDED_BY_PATRON
        row = await session_store.end(
            self._pool, sid, reason, detail, token=token, check=self._tokens.check, current=row, batches=self._batches
        )
        return session_pb2.EndSessionResponse(session=convert.session(row))

    async def ReportStreamStats(
        self, request: session_pb2.ReportStreamStatsRequest, context: aio.ServicerContext
    ) -> session_pb2.ReportStreamStatsResponse:
        sid = v.session_id(request.session_id)
        token = v.token(request.session_token)
        samples = convert.stream_samples(request, dt.datetime.now(dt.UTC))
        row = await session_store.get(self._pool, sid)
        # The stream is the seat's (or its patron's), as for Negotiate: the venue's staff do not speak for it.
        auth.caller().require_session(row, media=True)
        self._tokens.check(row, token)
        if row["state"] != State.STREAMING:
            raise errors.FailedPrecondition(
                f"session_id: the session is {row['state']}; report stream stats while it is STREAMING"
            )
        # What the seat saw before the broker had it STREAMING is not the stream the SLA promises.
        kept = [s for s in samples if s[0] >= row["streaming_at"]]
        if kept and not await metering_store.record_seat_samples(self._pool, sid, kept):
            raise errors.FailedPrecondition("session_id: the session is no longer STREAMING")
        return session_pb2.ReportStreamStatsResponse(accepted=len(kept))

    async def ListGames(
        self, request: session_pb2.ListGamesRequest, context: aio.ServicerContext
    ) -> session_pb2.ListGamesResponse:
        rows = await session_store.list_games(self._pool)
        return session_pb2.ListGamesResponse(games=[convert.game(r) for r in rows])


def _update(
    row: hub.Change,
    shown: tuple[int, int],
    reading: patron_time.Reading | None,
    move: patron_time.Reading | None = None,
) -> session_pb2.SessionUpdate:
    update = session_pb2.SessionUpdate(
        session=convert.session(row), queue_position=shown[0], queue_length=shown[1]
    )
    if reading is not None:
        update.time_left_s = reading.time_left_s
        update.time_up = reading.time_up
        update.grace_left_s = reading.grace_left_s
        if reading.warning_s is not None:
            update.time_warning_s = int(reading.warning_s)
            update.warnings.append(patron_time.warning_text(reading.warning_s))
        if reading.announce_time_up:
            update.warnings.append(patron_time.time_up_text(reading.grace_left_s))
    if move is not None:
        update.move_in_s = move.time_left_s
        if move.warning_s is not None:
            update.move_warning_s = int(move.warning_s)
            update.warnings.append(drain.warning_text(move.warning_s))
    return update


class _PatronClock:
    """One watcher's view of its session's patron time: the deadline the database keeps, measured once by the
    database clock each time it changes (streaming began, time added) and counted down on the event loop's clock
    in between; and the warnings this watcher has given (broker.patron_time decides)."""

    def __init__(self, pool: asyncpg.Pool, config: patron_time.PatronTimeConfig) -> None:
        self._pool = pool
        self._config = config
        self._deadline: dt.datetime | None = None
        self._at = 0.0  # loop time of the deadline
        self._announced: frozenset[float] = frozenset()

    async def read(self, row: hub.Change) -> patron_time.Reading | None:
        """None when the session has no limit or its time has not started (not STREAMING)."""
        deadline = _instant(row.get("paid_until"))
        if row["state"] != "STREAMING" or deadline is None:
            return None
        loop = asyncio.get_running_loop()
        if deadline != self._deadline:
            left = await patron_time_store.seconds_until(self._pool, deadline)
            self._deadline, self._at = deadline, loop.time() + left
        reading = patron_time.read(self._at - loop.time(), self._config, self._announced)
        self._announced = reading.announced
        return reading


class _MoveClock:
    """One watcher's view of its host's drain deadline (broker.drain): measured by the database clock when the
    session is read with a new deadline (the read gives the seconds until it), counted down on the event loop's clock
    in between; and the warnings this watcher has given."""

    def __init__(self, config: drain.DrainConfig) -> None:
        self._config = config
        self._deadline: dt.datetime | None = None
        self._at = 0.0  # loop time of the deadline
        self._announced: frozenset[float] = frozenset()

    def read(self, row: hub.Change) -> patron_time.Reading | None:
        """None while the session's host has no drain deadline (or the session holds no host)."""
        deadline = _instant(row.get("moves_at"))
        left = row.get("moves_in_s")
        if deadline is None or left is None or row["state"] not in ON_HOST:
            self._deadline, self._announced = None, frozenset()
            return None
        loop = asyncio.get_running_loop()
        if deadline != self._deadline:
            self._deadline, self._at = deadline, loop.time() + float(left)
        reading = drain.read(self._at - loop.time(), self._config, self._announced)
        self._announced = reading.announced
        return reading


def _instant(value: object) -> dt.datetime | None:
    """A timestamp from a row (a datetime) or a notification (ISO text)."""
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value))
