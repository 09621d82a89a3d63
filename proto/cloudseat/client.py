"""A typed asyncio client for the broker: what the agent, the thin client, the load test and the tests use.

    async with BrokerClient("127.0.0.1:50051") as broker:
        started = await broker.start_session("demo-cafe", "seat-01", "demo")
        async for update in broker.watch(started.session.session_id): ...

`AgentLinkClient` speaks AgentService.Connect for one host: register, heartbeat, report, read commands, say goodbye.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import grpc
from grpc import aio

from cloudseat import retry
from cloudseat.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    audit_pb2_grpc,
    billing_pb2_grpc,
    common_pb2,
    fleet_pb2,
    fleet_pb2_grpc,
    lease_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
    venue_pb2,
    venue_pb2_grpc,
)

State = common_pb2.SessionState

# StartSession's on_wait(attempt, delay_s, reason): called before each wait to ask again (cloudseat.retry).
OnWait = Callable[[int, float, str], None]
# A StartSession held for its placement is asked to answer at least this long before the call's deadline.
_ANSWER_MARGIN_S = 1.0


def _with_token(details: Any, token: str) -> Any:
    metadata = aio.Metadata(*(details.metadata or ()), ("authorization", f"Bearer {token}"))
    return details._replace(metadata=metadata)


# grpc.aio files an interceptor under the first call kind it implements, so one class per kind.
class _BearerUnary(aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Puts `authorization: Bearer <token>` on every unary call."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(_with_token(client_call_details, self._token), request)


class _BearerStream(aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """... and on every server-streaming call (WatchSession)."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(_with_token(client_call_details, self._token), request)


class BrokerClient:
    """A channel to a broker. `token` is the caller's tenant token (sent on every call); `credentials` the TLS
    credentials (cloudseat.tls.channel_credentials for an agent's mutual TLS, client_credentials for a token holder);
    neither: plaintext, for a broker running with authentication off."""

    def __init__(
        self,
        target: str,
        *,
        options: Sequence[tuple[str, object]] = (),
        token: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.target = target
        interceptors: list[Any] | None = [_BearerUnary(token), _BearerStream(token)] if token else None
        if credentials is not None:
            self.channel = aio.secure_channel(
                target, credentials, options=list(options), interceptors=interceptors
            )
        else:
            self.channel = aio.insecure_channel(target, options=list(options), interceptors=interceptors)
        self.sessions = session_pb2_grpc.SessionServiceStub(self.channel)
        self.venues = venue_pb2_grpc.VenueServiceStub(self.channel)
        self.fleet = fleet_pb2_grpc.FleetServiceStub(self.channel)
        self.billing = billing_pb2_grpc.BillingServiceStub(self.channel)
        self.leases = lease_pb2_grpc.LeaseServiceStub(self.channel)
        self.agents = agent_pb2_grpc.AgentServiceStub(self.channel)
        self.audit = audit_pb2_grpc.AuditServiceStub(self.channel)

    async def __aenter__(self) -> BrokerClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def enrol_hosts(
        self, site_id: str, host_ids: Sequence[str] = (), *, prefix: str = "", gpu_class: str = ""
    ) -> fleet_pb2.EnrolHostsResponse:
        """Enrol hosts (by id, or every id starting with `prefix`) into a site, so their agents may register."""
        response: fleet_pb2.EnrolHostsResponse = await self.fleet.EnrolHosts(
            fleet_pb2.EnrolHostsRequest(
                site_id=site_id, host_ids=list(host_ids), host_prefix=prefix, gpu_class=gpu_class
            )
        )
        return response

    async def start_session(
        self,
        venue_id: str,
        seat_id: str,
        game_id: str,
        *,
        request_id: str | None = None,
        patron_id: str = "",
        slots: int = 1,
        zone_id: str = "",
        resume: tuple[str, str] | None = None,
        paid_time_s: int = 0,
        wait_for_placement_ms: int = 0,
        timeout_s: float = 10.0,
        busy_timeout_s: float | None = None,
        on_wait: OnWait | None = None,
    ) -> session_pb2.StartSessionResponse:
        """Start a session. Refusals worth another try are retried with the same request id, so a refusal that
        raced a success never starts two: UNAVAILABLE (no broker answered) within `timeout_s`, RESOURCE_EXHAUSTED
        (the broker is busy) within `busy_timeout_s` (default `timeout_s`; never less) after the broker's pushback
        hint plus jitter, or a jittered backoff without one (`cloudseat.retry`). `on_wait(attempt, delay_s,
        reason)` is called before each wait (reason `retry.BUSY` or `retry.UNREACHABLE`), so a seat can say why
        it waits.

        `resume` is (session id, session token) of a session the seat lost through no fault of its own: the new
        session goes to the front of the queue. `paid_time_s`: the patron's paid time (0 = unlimited).
        `wait_for_placement_ms`: let the broker hold its answer that long for the placement (at most 5000), so
        the answer is PLACED (or later) in the common case; shortened when less of the call's budget is left."""
        request = session_pb2.StartSessionRequest(
            request_id=request_id or uuid.uuid4().hex,
            venue_id=venue_id,
            seat_id=seat_id,
            game_id=game_id,
            patron_id=patron_id,
            slots=slots,
            zone_id=zone_id,
            paid_time_s=paid_time_s,
        )
        if resume is not None:
            request.resume.session_id, request.resume.session_token = resume
        loop = asyncio.get_running_loop()
        began = loop.time()
        deadline = began + timeout_s
        # A broker that answers "busy" is there and will take the seat soon; one that does not answer may be gone.
        # So the busy budget may be longer than the plain one, and only refusals for being busy extend the call.
        busy_deadline = began + max(timeout_s, busy_timeout_s or timeout_s)
        until = deadline
        attempt = 0
        while True:
            left = until - loop.time()
            # The held answer must come back inside this call's deadline, with room for the round trip; the wait is
            # not part of the request's identity (a retry may ask for less).
            request.wait_for_placement_ms = max(
                0, min(wait_for_placement_ms, int((left - _ANSWER_MARGIN_S) * 1000))
            )
            try:
                response: session_pb2.StartSessionResponse = await self.sessions.StartSession(
                    request, timeout=max(0.1, left)
                )
                return response
            except aio.AioRpcError as exc:
                attempt += 1
                wait = retry.next_wait(exc.code().name, exc.trailing_metadata(), attempt, random.random)
                if wait is None:
                    raise
                until = busy_deadline if wait.reason == retry.BUSY else deadline
                now = loop.time()
                if now + wait.floor_s > until:
                    raise  # coming back sooner than asked would only be refused again: give up now
                delay = min(wait.delay_s, until - now)
            if on_wait is not None:
                on_wait(attempt, delay, wait.reason)
            await asyncio.sleep(delay)

    async def watch(self, session_id: str) -> AsyncIterator[session_pb2.SessionUpdate]:
        """The session's updates as they happen, until it ends."""
        call = self.sessions.WatchSession(session_pb2.WatchSessionRequest(session_id=session_id))
        try:
            async for update in call:
                yield update
        finally:
            call.cancel()

    async def wait_for(self, session_id: str, *states: int, timeout_s: float = 10.0) -> common_pb2.Session:
        """Watch until the session reaches one of `states` (or ends); returns it then."""
        async with asyncio.timeout(timeout_s):
            async for update in self.watch(session_id):
                if update.session.state in states or update.session.state == State.SESSION_STATE_ENDED:
                    return update.session
        raise RuntimeError(f"session {session_id} watch ended early")

    async def list_games(self, timeout_s: float = 10.0) -> list[fleet_pb2.Game]:
        response = await self.sessions.ListGames(session_pb2.ListGamesRequest(), timeout=timeout_s)
        return list(response.games)

    async def add_time(self, venue_id: str, session_id: str, seconds: int) -> venue_pb2.AddTimeResponse:
        """Add paid time to a live session of the venue (VenueService.AddTime)."""
        response: venue_pb2.AddTimeResponse = await self.venues.AddTime(
            venue_pb2.AddTimeRequest(venue_id=venue_id, session_id=session_id, seconds=seconds)
        )
        return response

    async def prewarm_game(self, site_id: str, game_id: str) -> fleet_pb2.PrewarmGameResponse:
        """Have a site's hosts fetch the game's current image (FleetService.PrewarmGame)."""
        response: fleet_pb2.PrewarmGameResponse = await self.fleet.PrewarmGame(
            fleet_pb2.PrewarmGameRequest(site_id=site_id, game_id=game_id)
        )
        return response

    async def end_session(
        self, session_id: str, token: str, detail: str = "", *, timeout_s: float = 10.0
    ) -> common_pb2.Session:
        """End the session (ending one that has ended answers it as it is). A busy broker's refusal (CANCELLED,
        before it took the call up) or no answer (UNAVAILABLE) is asked again within `timeout_s`, as a start is
        (`cloudseat.retry`): a seat must not leave its session running."""
        request = session_pb2.EndSessionRequest(session_id=session_id, session_token=token, detail=detail)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        attempt = 0
        while True:
            try:
                response: session_pb2.EndSessionResponse = await self.sessions.EndSession(
                    request, timeout=max(0.1, deadline - loop.time())
                )
                return response.session
            except aio.AioRpcError as exc:
                attempt += 1
                code = exc.code().name
                wait = (
                    retry.next_wait(code, None, attempt, random.random)
                    if code != "RESOURCE_EXHAUSTED"
                    else None
                )
                if wait is None or loop.time() + wait.floor_s > deadline:
                    raise
            await asyncio.sleep(min(wait.delay_s, max(0.0, deadline - loop.time())))

    async def report_stream_stats(
        self,
        session_id: str,
        token: str,
        samples: Sequence[tuple[float, float, float | None]],
        timeout_s: float = 5.0,
    ) -> int:
        """Report the seat's own stream stats: (at as Unix seconds, fps, rtt ms or None) per window. Returns how
        many the broker recorded (SessionService.ReportStreamStats)."""
        request = session_pb2.ReportStreamStatsRequest(session_id=session_id, session_token=token)
        for at, fps, rtt_ms in samples:
            sample = request.samples.add(fps=fps)
            sample.at.FromNanoseconds(int(at * 1e9))
            if rtt_ms is not None:
                sample.rtt_ms = rtt_ms
        response = await self.sessions.ReportStreamStats(request, timeout=timeout_s)
        return int(response.accepted)


class AgentLinkClient:
    """One agent's AgentService.Connect stream. Its methods may be called from several tasks at once: writes go
    one at a time (a second write while one is in flight fails the whole call with INTERNAL in grpc.aio)."""

    def __init__(self, client: BrokerClient, register: agent_pb2.Register) -> None:
        self._client = client
        self.register = register
        self._call: aio.StreamStreamCall | None = None
        self.registered: agent_pb2.Registered | None = None
        self._seq = 0
        self._writing = asyncio.Lock()

    async def open(self, timeout_s: float = 10.0) -> agent_pb2.Registered:
        """Connect and register; raises the broker's refusal as an AioRpcError (a stale epoch, an unknown site)."""
        self._call = self._client.agents.Connect()
        await self._call.write(agent_pb2.AgentMessage(register=self.register))
        async with asyncio.timeout(timeout_s):
            first = await self._call.read()
        if first is aio.EOF:
            # read() raises the broker's refusal itself; EOF here means it closed the stream with OK, unregistered.
            raise RuntimeError(f"the broker closed the stream before registering ({await self._call.code()})")
        if first.WhichOneof("body") != "registered":
            raise RuntimeError(f"expected registered, got {first.WhichOneof('body')}")
        registered: agent_pb2.Registered = first.registered
        self.registered = registered
        return registered

    async def send(self, msg: agent_pb2.AgentMessage) -> None:
        call = self._call
        assert call is not None, "open() first"
        async with self._writing:
            await call.write(msg)

    async def heartbeat(
        self,
        cpu_load: float = 0.0,
        gpu_load: float = 0.0,
        sessions: Sequence[agent_pb2.SessionStats] = (),
        games_cached: Sequence[str] | None = None,
        draining: bool = False,
        image_fetches: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        self._seq += 1
        hb = agent_pb2.Heartbeat(
            seq=self._seq, cpu_load=cpu_load, gpu_load=gpu_load, sessions=list(sessions), draining=draining
        )
        if games_cached is not None:
            hb.games_cached_changed = True
            hb.games_cached.extend(games_cached)
        if image_fetches is not None:
            hb.image_fetches_changed = True
            hb.image_fetches.extend(common_pb2.ImageFetch(**f) for f in image_fetches)
        await self.send(agent_pb2.AgentMessage(heartbeat=hb))

    async def report(
        self,
        session_id: str,
        state: common_pb2.SessionState,
        end_reason: common_pb2.EndReason = common_pb2.END_REASON_UNSPECIFIED,
        detail: str = "",
    ) -> None:
        await self.send(
            agent_pb2.AgentMessage(
                session_event=agent_pb2.SessionEvent(
                    session_id=session_id, state=state, end_reason=end_reason, detail=detail
                )
            )
        )

    async def answer(self, correlation_id: str, sdp: str = "", error: str = "") -> None:
        result = agent_pb2.NegotiateResult(correlation_id=correlation_id, error=error)
        if not error:
            result.answer.CopyFrom(common_pb2.SessionDescription(type="answer", sdp=sdp))
        await self.send(agent_pb2.AgentMessage(negotiate_result=result))

    async def commands(self) -> AsyncIterator[agent_pb2.BrokerMessage]:
        """The broker's commands until it closes the stream (then the call's status is raised, if not OK)."""
        assert self._call is not None, "open() first"
        while True:
            msg = await self._call.read()
            if msg is aio.EOF:  # closed with OK (read() raises any other status)
                return
            yield msg

    async def finish(self, timeout_s: float = 5.0) -> None:
        """Leave on purpose: say Goodbye after everything sent, half-close, and wait until the broker has taken it
        all and closed (the host goes offline at once). A link that ends any other way is, for the broker, lost."""
        call = self._call
        if call is None:
            return
        async with asyncio.timeout(timeout_s):
            async with self._writing:  # nothing goes between the Goodbye and the half-close
                await call.write(agent_pb2.AgentMessage(goodbye=agent_pb2.Goodbye()))
                await call.done_writing()
            await call.code()

    async def close(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None
