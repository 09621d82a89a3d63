"""AgentService.Connect: register, then reports in (session events, load and stream stats) and commands out, until
either side goes. The link's own transport is its liveness (broker.links)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence

import asyncpg
import structlog
from cloudseat import errors
from cloudseat import validate as v
from cloudseat.v1 import agent_pb2, agent_pb2_grpc
from grpc import aio

from broker import auth, lifecycle
from broker.agent_reports import ReportBatcher, settled
from broker.agent_stats import StatsBatcher
from broker.lifecycle import EndReason, State
from broker.links import AgentLink, LinkRegistry
from broker.reconcile import Held, plan_reconcile
from broker.replica import Presence
from broker.rpc import convert
from broker.rpc.agent_commands import prewarm_command, site_peers_command, start_command, stop_command
from broker.store import games as game_store
from broker.store import hosts as host_store
from broker.store import sessions as session_store

log = structlog.get_logger(__name__)

# An agent must say who it is this soon after connecting.
_REGISTER_TIMEOUT_S = 10.0
_AGENT_STATES = {State.STARTING, State.READY, State.STREAMING, State.ENDED}
# What a reconnecting agent may say a session it runs has reached.
_NOT_RUNNING_DETAIL = "not running on its host after a reconnect"


class AgentService(agent_pb2_grpc.AgentServiceServicer):
    def __init__(
        self,
        pool: asyncpg.Pool,
        links: LinkRegistry,
        reports: ReportBatcher,
        stats: StatsBatcher,
        presence: Presence,
        *,
        heartbeat_interval_s: float,
        lost_after_s: float,
    ) -> None:
        self._pool = pool
        self._links = links
        self._reports = reports
        self._stats = stats
        self._presence = presence
        self._heartbeat_ms = int(heartbeat_interval_s * 1000)
        self._lost_after_ms = int(lost_after_s * 1000)

    async def Connect(
        self, request_iterator: AsyncIterator[agent_pb2.AgentMessage], context: aio.ServicerContext
    ) -> None:
        messages = request_iterator.__aiter__()
        try:
            async with asyncio.timeout(_REGISTER_TIMEOUT_S):
                first = await anext(messages)
        except (TimeoutError, StopAsyncIteration):
            raise errors.InvalidArgument("register", "the agent must send register first") from None
        if first.WhichOneof("body") != "register":
            raise errors.InvalidArgument("register", "the first message must be register")
        reg = convert.registration(first.register)
        # Mutual TLS: the certificate's host and no other (an agent never speaks for another host).
        caller = auth.caller()
        caller.require_host(reg.host_id, "register.host_id")
        structlog.contextvars.bind_contextvars(host_id=reg.host_id)
        link = AgentLink(reg.host_id, reg.epoch, reg.site_id)
        held_by = host_store.Link(link.link_id, self._presence.replica_id, self._presence.address)
        # A certificate proves the host; only then does its enrolment mean something (broker.enrolment).
        result = await host_store.register(self._pool, reg, held_by, enrolment_required=not caller.trusted)
        self._links.attach(link)
        log.info("agent registered", epoch=reg.epoch, slots=reg.slots, ended=len(result.ended))
        writer = asyncio.create_task(self._write(link, context), name=f"agent-write-{reg.host_id}")
        reader: asyncio.Task[None] | None = None
        try:
            link.send(
                agent_pb2.BrokerMessage(
                    registered=agent_pb2.Registered(
                        host_id=reg.host_id,
                        epoch=reg.epoch,
                        heartbeat_interval_ms=self._heartbeat_ms,
                        lost_after_ms=self._lost_after_ms,
                        drained=result.drained,
                    )
                )
            )
            # Before reading what the agent sends next: the moves it reported in its registration are queued first.
            await self._reconcile(link, first.register.running)
            # The site's serving hosts (before any fetch): whom to fetch chunks from and serve them to.
            link.send(site_peers_command(await host_store.site_peers(self._pool, reg.host_id)))
            # Images the provider pre-warmed at this site while the host was away (or before it joined).
            for image in await game_store.prewarms_missed(self._pool, reg.host_id):
                link.send(prewarm_command(image))
            reader = asyncio.create_task(self._read(link, messages), name=f"agent-read-{reg.host_id}")
            closed = asyncio.create_task(link.closed.wait())
            done, _ = await asyncio.wait({reader, closed}, return_when=asyncio.FIRST_COMPLETED)
            closed.cancel()
            if reader in done:
                reader.result()  # raises if the stream broke
                if link.goodbye:
                    # A deliberate leave: once everything it sent has been applied, the host is offline at once.
                    await settled(link)
                    ended = await host_store.set_offline(self._pool, link.host_id, link.epoch)
                    log.info("agent said goodbye; host offline", sessions_ended=len(ended))
                else:
                    # The stream ended without a goodbye: the transport died (or the agent is an older one that
                    # just half-closed). The host stays online for the grace of a reconnect (broker.links).
                    log.info("agent link lost")
            else:
                raise link.error or errors.FailedPrecondition(f"register.epoch: {link.close_reason}")
        finally:
            self._links.detach(link)
            tasks = [t for t in (reader, writer) if t is not None]
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    @staticmethod
    async def _write(link: AgentLink, context: aio.ServicerContext) -> None:
        while True:
            msg = await link.outbox.get()
            if msg is None:
                return
            await context.write(msg)

    async def _reconcile(self, link: AgentLink, running: Sequence[agent_pb2.RunningSession]) -> None:
        """After (re)connecting, bring the agent and the broker to agree (plan_reconcile decides how).

        The sessions are read once the link is attached, so a change made after the read reaches the agent as a
        command of its own (LinkRegistry.on_change) and one made before it is in the read. The agent's stream is
        read only afterwards, so the moves its registration reports are queued before any move it reports next."""
        claimed = [(r.session_id, _reported_state(r.state)) for r in running]
        rows = await session_store.held_or_claimed(
            self._pool, link.host_id, [u for u in (_uuid(sid) for sid, _ in claimed) if u is not None]
        )
        if link.closed.is_set():
            return  # replaced meanwhile: the newer connection reconciles
        by_id = {str(r["session_id"]): r for r in rows}
        plan = plan_reconcile(link.host_id, [_held(r) for r in rows], claimed)
        # Stops first: they free the agent's slots that the sessions placed meanwhile are to take.
        for sid, reason in plan.stops:
            link.send(stop_command(sid, reason.value))
        for sid in plan.starts:
            link.send(start_command(by_id[sid]))
        # Queued like the agent's own reports, so they apply before whatever it reports next.
        for sid, to in plan.advances:
            self._reports.report(link, uuid.UUID(sid), to)
        for sid in plan.ends:
            try:
                await session_store.end(
                    self._pool, uuid.UUID(sid), EndReason.FAILED, _NOT_RUNNING_DETAIL, host_id=link.host_id
                )
            except (errors.FailedPrecondition, errors.PermissionDenied, errors.NotFound) as exc:
                log.warning(
                    "could not end a session its agent no longer runs", session_id=sid, error=exc.message
                )
        if plan:
            log.info(
                "agent reconciled",
                stopped=len(plan.stops),
                started=len(plan.starts),
                advanced=len(plan.advances),
                ended=len(plan.ends),
            )

    async def _read(self, link: AgentLink, messages: AsyncIterator[agent_pb2.AgentMessage]) -> None:
        async for msg in messages:
            kind = msg.WhichOneof("body")
            if kind == "heartbeat":
                hb = msg.heartbeat
                self._stats.record(link, hb)
                if hb.games_cached_changed:
                    await self._games_changed(link, list(hb.games_cached))
                if hb.image_fetches_changed:
                    await self._fetches_changed(link, hb)
            elif kind == "session_event":
                await self._session_event(link, msg.session_event)
            elif kind == "negotiate_result":
                self._negotiate_result(link, msg.negotiate_result)
            elif kind == "goodbye":
                link.goodbye = True
            else:
                log.warning("agent sent an unexpected message; ignored", kind=kind)

    async def _games_changed(self, link: AgentLink, games: list[str]) -> None:
        try:
            clean = [v.image_ref(g, f"heartbeat.games_cached[{i}]") for i, g in enumerate(games)]
        except errors.InvalidArgument as exc:
            log.warning("agent sent a bad games list; ignored", error=exc.message)
            return
        # The host change is told to the scheduler (cloudseat_hosts): warm for other games now.
        await host_store.set_games_cached(self._pool, link.host_id, link.epoch, clean)

    async def _fetches_changed(self, link: AgentLink, hb: agent_pb2.Heartbeat) -> None:
        try:
            fetches = convert.image_fetches(hb.image_fetches, "heartbeat.image_fetches")
        except errors.InvalidArgument as exc:
            log.warning("agent sent bad image fetches; ignored", error=exc.message)
            return
        await host_store.set_image_fetches(self._pool, link.host_id, link.epoch, fetches)

    async def _session_event(self, link: AgentLink, ev: agent_pb2.SessionEvent) -> None:
        """Apply one event from the agent; a bad event is logged and dropped, the link stays up."""
        try:
            sid = v.session_id(ev.session_id, "session_event.session_id")
            state_name = convert.STATE_FROM_PB.get(ev.state)
            if state_name is None or State(state_name) not in _AGENT_STATES:
                raise errors.InvalidArgument(
                    "session_event.state", "must be STARTING, READY, STREAMING or ENDED"
                )
            detail = v.text(ev.detail, "session_event.detail")
            state = State(state_name)
            if state is State.ENDED:
                reason_name = convert.END_REASON_FROM_PB.get(ev.end_reason)
                if reason_name is None or EndReason(reason_name) not in lifecycle.AGENT_REASONS:
                    raise errors.InvalidArgument(
                        "session_event.end_reason",
                        "must be one of " + ", ".join(sorted(r.value for r in lifecycle.AGENT_REASONS)),
                    )
                # In order: the moves this agent reported before are applied first.
                await settled(link)
                await session_store.end(self._pool, sid, EndReason(reason_name), detail, host_id=link.host_id)
            else:
                # Applied in a batch with other agents' reports (broker.agent_reports), off this stream's read loop:
                # a busy database never holds up this host's other messages.
                self._reports.report(link, sid, state)
        except (
            errors.InvalidArgument,
            errors.FailedPrecondition,
            errors.PermissionDenied,
            errors.NotFound,
        ) as exc:
            log.warning("agent session event refused", session_id=ev.session_id[:80], error=exc.message)

    @staticmethod
    def _negotiate_result(link: AgentLink, res: agent_pb2.NegotiateResult) -> None:
        fut = link.negotiations.get(res.correlation_id)
        if fut is None or fut.done():
            log.warning(
                "negotiate result for no pending offer; ignored", correlation_id=res.correlation_id[:64]
            )
            return
        if res.error:
            fut.set_exception(errors.FailedPrecondition(f"offer: the agent refused it: {res.error[:200]}"))
            return
        try:
            v.sdp(res.answer.type, res.answer.sdp, "answer", expect="answer")
        except errors.InvalidArgument as exc:
            fut.set_exception(
                errors.Unavailable(f"the agent answered with a bad description ({exc.message})")
            )
            return
        fut.set_result(res.answer)


def _held(row: asyncpg.Record) -> Held:
    reason = EndReason(row["end_reason"]) if row["end_reason"] else None
    return Held(str(row["session_id"]), State(row["state"]), row["host_id"], reason)


def _reported_state(pb_state: int) -> State | None:
    name = convert.STATE_FROM_PB.get(pb_state)
    return State(name) if name is not None else None


def _uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None
