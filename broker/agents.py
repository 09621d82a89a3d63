"""The agents connected to this broker replica: one link per host, commands out, heartbeats and session reports in
(both batched: one statement for many hosts, one transaction for many sessions).

Commands follow from session and host changes (hub notifications), so it does not matter which replica placed or
ended a session, or drained a host: the replica that holds the host's link sends the command. Each replica also
learns from its own batched heartbeats which of its links the broker retired (a host declared lost by the leader,
or replaced under a newer epoch at another replica): the beats of such a link match no online host of its epoch, and
the link is closed, so the agent reconnects under a new epoch. The host records which replica holds its link
(`broker_address`), so a call that needs the agent reaching another replica can be forwarded there.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import Coroutine, Mapping
from typing import Any

import asyncpg
import structlog
from cloudseat import errors
from cloudseat.v1 import agent_pb2, common_pb2
from google.protobuf import timestamp_pb2

from broker import lifecycle, tiers
from broker.rpc import convert
from broker.store import fleet as fleet_store
from broker.store import hosts as host_store
from broker.store import metering as metering_store
from broker.store import sessions as session_store

log = structlog.get_logger(__name__)

# Heartbeats are written to the database in batches this often: one statement for the whole fleet.
_FLUSH_INTERVAL_S = 0.25
# Agents' reports that sessions moved on (STARTING, READY, STREAMING) are applied in batches: whatever arrived
# while the previous batch was being written, gathered for at most this long. One transaction for many sessions
# instead of three per session, and a slow database never holds up an agent's stream (its heartbeats).
_REPORT_WINDOW_S = 0.002
# Why a link the broker retired is closed; the agent's stream ends FAILED_PRECONDITION with it, and an agent
# told so about its epoch starts afresh under a new one.
_LOST = "the host was declared lost; restart the agent with a new epoch"
_RETIRED = (
    "the host is no longer online under epoch {epoch} (declared lost, or replaced by a newer epoch); "
    "restart the agent with a new epoch"
)
# A report refused for what it says (logged and dropped; the agent's stream stays up).
_REFUSED = (errors.InvalidArgument, errors.FailedPrecondition, errors.PermissionDenied, errors.NotFound)


class AgentLink:
    """One connected agent process (host + epoch) and what the broker sends it."""

    def __init__(self, host_id: str, epoch: int) -> None:
        self.host_id = host_id
        self.epoch = epoch
        self.outbox: asyncio.Queue[agent_pb2.BrokerMessage | None] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.close_reason = ""
        # Why the broker ended the link, when it was an error the agent should see as the stream's status.
        self.error: errors.CloudseatError | None = None
        self.negotiations: dict[str, asyncio.Future[common_pb2.SessionDescription]] = {}
        # Done when every report this link handed to the registry has been applied.
        self.reported: asyncio.Future[None] | None = None

    def send(self, msg: agent_pb2.BrokerMessage) -> None:
        if not self.closed.is_set():
            self.outbox.put_nowait(msg)

    def close(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        self.outbox.put_nowait(None)
        for fut in self.negotiations.values():
            if not fut.done():
                fut.set_exception(errors.Unavailable("the host's agent disconnected"))


def start_command(session: Mapping[str, Any]) -> agent_pb2.BrokerMessage:
    spec = tiers.SPECS[tiers.Tier(session["tier"])]
    return agent_pb2.BrokerMessage(
        start_session=agent_pb2.StartSessionCommand(
            session_id=str(session["session_id"]),
            game_id=session["game_id"],
            tier=convert.tier_spec(spec),
            slots=session["slots"],
            venue_id=session["venue_id"],
            seat_id=session["seat_id"],
        )
    )


def drain_command(drained: bool) -> agent_pb2.BrokerMessage:
    return agent_pb2.BrokerMessage(drain=agent_pb2.DrainCommand(drained=drained))


def prewarm_command(image: Mapping[str, Any]) -> agent_pb2.BrokerMessage:
    return agent_pb2.BrokerMessage(
        prewarm=agent_pb2.PrewarmCommand(
            game_id=image["game_id"], version=image["version"], image_size_bytes=image["image_size_bytes"]
        )
    )


def stop_command(session_id: str, reason: str) -> agent_pb2.BrokerMessage:
    return agent_pb2.BrokerMessage(
        stop_session=agent_pb2.StopSessionCommand(
            session_id=session_id, reason=convert.END_REASON_TO_PB[reason]
        )
    )


@dataclasses.dataclass(slots=True)
class _Report:
    link: AgentLink
    session_id: uuid.UUID
    state: lifecycle.State
    done: asyncio.Future[None]


class AgentRegistry:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._links: dict[str, AgentLink] = {}
        self._beats: dict[str, tuple[str, int, float, float, bool]] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._reports: list[_Report] = []
        self._reports_waiting = asyncio.Event()
        self._reporter: asyncio.Task[None] | None = None
        # Latest stream stats per session, from the heartbeats of the agents connected here.
        self.stream_stats: dict[str, common_pb2.StreamStats] = {}
        # (session id, rtt ms, fps sent) of the heartbeats since the last flush: the SLA's evidence (store.metering).
        self._stream_samples: list[tuple[str, float, float]] = []
        # HOST:PORT where other replicas reach this one, recorded on the hosts linked here (set once serving).
        self.address: str | None = None
        # Small writes started from synchronous callbacks (recording a link, re-reading drains).
        self._chores: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_forever(), name="heartbeat-flush")
        self._reporter = asyncio.create_task(self._apply_reports_forever(), name="agent-reports")

    async def close(self) -> None:
        for link in list(self._links.values()):
            link.close("the broker is shutting down")
        for task in (self._flusher, self._reporter, *self._chores):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        with contextlib.suppress(errors.CloudseatError):
            await self._flush()
        await self._apply_reports()

    def __len__(self) -> int:
        return len(self._links)

    def attach(self, link: AgentLink) -> None:
        """Make `link` the host's link; an older link of the same host is closed."""
        old = self._links.get(link.host_id)
        if old is not None and old is not link:
            old.close(f"replaced by a new connection (epoch {link.epoch})")
        self._links[link.host_id] = link
        if self.address is not None:
            self._chore(self._record_link(link, self.address), f"link-{link.host_id}")

    async def _record_link(self, link: AgentLink, address: str) -> None:
        try:
            await host_store.link_host(self._pool, link.host_id, link.epoch, address)
        except errors.CloudseatError as exc:
            # The link's heartbeats record it too, within one interval.
            log.warning("could not record the host's link", host_id=link.host_id, error=str(exc))

    def _chore(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    def detach(self, link: AgentLink) -> None:
        if self._links.get(link.host_id) is link:
            del self._links[link.host_id]
            # A newer link of the same host may have beaten already; its heartbeat stays.
            self._beats.pop(link.host_id, None)
        link.close(link.close_reason or "disconnected")

    def link(self, host_id: str) -> AgentLink | None:
        return self._links.get(host_id)

    def hosts_lost(self, host_ids: list[str]) -> None:
        """The leader declared these hosts lost: their current connections are stale."""
        for host_id in host_ids:
            link = self._links.get(host_id)
            if link is not None:
                link.close(_LOST)

    # -- host changes -> commands -----------------------------------------------------------------------------

    def on_host_change(self, change: Mapping[str, Any]) -> None:
        """A host's drain changed (at any replica): tell its agent when its link is here."""
        link = self._links.get(change["host_id"])
        if link is not None and "drained" in change:
            link.send(drain_command(bool(change["drained"])))
        if link is not None and "prewarm" in change:
            link.send(prewarm_command(change["prewarm"]))

    def resync_hosts(self) -> None:
        """Host changes may have been missed: tell every agent linked here its host's drain as it stands."""
        if self._links:
            self._chore(self._resend_drains(), "agents-resync-drains")

    async def _resend_drains(self) -> None:
        try:
            drained = await fleet_store.drained_of(self._pool, list(self._links))
        except errors.CloudseatError as exc:
            log.warning("could not re-read the hosts' drains", error=str(exc))
            return
        for host_id, value in drained.items():
            self.on_host_change({"host_id": host_id, "drained": value})

    # -- session changes -> commands --------------------------------------------------------------------------

    def on_change(self, change: Mapping[str, Any]) -> None:
        if change["state"] == "ENDED":
            self.stream_stats.pop(change["session_id"], None)
        host_id = change.get("host_id")
        link = self._links.get(host_id) if host_id else None
        if link is None:
            return
        state = change["state"]
        if state == "PLACED":
            link.send(start_command(change))
        elif state == "ENDED" and change["end_reason"] not in lifecycle.AGENT_REASONS:
            # The agent reported the reasons it gives itself; every other end needs telling.
            link.send(stop_command(change["session_id"], change["end_reason"]))

    # -- negotiation relay ------------------------------------------------------------------------------------

    async def negotiate(
        self, host_id: str, session_id: uuid.UUID, offer: common_pb2.SessionDescription, timeout_s: float
    ) -> common_pb2.SessionDescription:
        """Send the seat's offer to the agent holding the session; wait for its answer."""
        link = self._links.get(host_id)
        if link is None or link.closed.is_set():
            raise errors.Unavailable(
                f"session_id: the agent of host {host_id!r} is not connected; retry shortly"
            )
        correlation = uuid.uuid4().hex
        fut: asyncio.Future[common_pb2.SessionDescription] = asyncio.get_running_loop().create_future()
        link.negotiations[correlation] = fut
        try:
            link.send(
                agent_pb2.BrokerMessage(
                    negotiate=agent_pb2.NegotiateCommand(
                        correlation_id=correlation, session_id=str(session_id), offer=offer
                    )
                )
            )
            async with asyncio.timeout(timeout_s):
                return await fut
        except TimeoutError as exc:
            raise errors.DeadlineExceeded(
                f"the agent of host {host_id!r} did not answer the offer in time"
            ) from exc
        finally:
            link.negotiations.pop(correlation, None)

    # -- heartbeats ---------------------------------------------------------------------------------------------

    def beat(self, link: AgentLink, hb: agent_pb2.Heartbeat, cpu_load: float, gpu_load: float) -> None:
        self._beats[link.host_id] = (link.host_id, link.epoch, cpu_load, gpu_load, hb.draining)
        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        for s in hb.sessions[:256]:
            self.stream_stats[s.session_id[:64]] = common_pb2.StreamStats(
                fps_sent=s.fps_sent,
                bitrate_kbps=s.bitrate_kbps,
                rtt_ms=s.rtt_ms,
                loss_pct=s.loss_pct,
                encode_ms=s.encode_ms,
                reported_at=now,
            )
            self._stream_samples.append((s.session_id[:64], s.rtt_ms, s.fps_sent))

    async def _flush(self) -> None:
        beats, self._beats = list(self._beats.values()), {}
        samples, self._stream_samples = self._stream_samples, []
        counted = await host_store.heartbeats(self._pool, beats, self.address)
        for host_id, epoch, *_ in beats:
            if (host_id, epoch) in counted:
                continue
            # No online host of this epoch: the leader declared the host lost (and told only its own links), or
            # a newer epoch replaced it elsewhere. The process beats into the void; end its link.
            link = self._links.get(host_id)
            if link is not None and link.epoch == epoch:
                log.info("heartbeat of a retired epoch; closing the link", host_id=host_id, epoch=epoch)
                link.close(_RETIRED.format(epoch=epoch))
        await metering_store.record_stream_samples(self._pool, samples)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(_FLUSH_INTERVAL_S)
            try:
                await self._flush()
            except errors.CloudseatError as exc:
                # The agents beat again; the database's host-lost timeout is far longer than one flush.
                log.warning("heartbeat flush failed", error=str(exc))

    # -- agents' reports of sessions moving on --------------------------------------------------------------

    def report(self, link: AgentLink, session_id: uuid.UUID, state: lifecycle.State) -> None:
        """Queue an agent's report that a session on its host moved forward (STARTING, READY, STREAMING).

        Reports are applied in the order they arrive, in batches (host_store.advance_reported); `link.reported`
        is done once this one and every earlier one of the link are applied."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reports.append(_Report(link, session_id, state, done))
        link.reported = done
        self._reports_waiting.set()

    async def _apply_reports_forever(self) -> None:
        while True:
            await self._reports_waiting.wait()
            await asyncio.sleep(_REPORT_WINDOW_S)
            self._reports_waiting.clear()
            await self._apply_reports()

    async def _apply_reports(self) -> None:
        batch, self._reports = self._reports, []
        if not batch:
            return
        try:
            outcomes = await host_store.advance_reported(
                self._pool, [(r.session_id, r.link.host_id, r.state) for r in batch]
            )
        except errors.CloudseatError as exc:
            # The batch as a whole failed (a lost connection, a deadlock with another writer): one by one, so
            # one report's trouble is only its own.
            log.warning("batch of agent reports failed; applying them one by one", error=str(exc))
            outcomes = [await self._apply_one(r) for r in batch]
        for r, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, _REFUSED):
                log.warning(
                    "agent session event refused",
                    host_id=r.link.host_id,
                    session_id=str(r.session_id),
                    error=outcome.message,
                )
            elif outcome is not None:
                # The database is out of reach: end the agent's stream with it; the agent reconnects and both
                # sides reconcile.
                r.link.error = outcome
                r.link.close(outcome.message)
            if not r.done.done():
                r.done.set_result(None)

    async def _apply_one(self, r: _Report) -> errors.CloudseatError | None:
        try:
            await session_store.advance(self._pool, r.session_id, r.state, host_id=r.link.host_id)
        except errors.CloudseatError as exc:
            return exc
        return None
