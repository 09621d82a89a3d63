"""The agent's live link to the broker: register, report, carry session events, take commands; reconnect; leave.

Liveness is the link itself: the broker pings the connection (HTTP/2 keepalive, below Python) and the agent pings
the broker the same way (CHANNEL_OPTIONS), so neither side needs a message to stay alive. What the agent sends is
only what the broker needs (gpu_agent.reports decides): session moves, coalesced over REPORT_WINDOW_S, and a
Heartbeat (load and stream stats) every interval while the host runs sessions, at once when its cached images or
its draining flag change, and when its load moved by 0.15 or more. An idle host with steady load sends nothing.
An agent that leaves on purpose (SIGTERM's shutdown, `stop`) sends what it holds, then Goodbye, then half-closes: the
broker marks the host offline at once. A link that ends any other way is, to the broker, lost.

The epoch is chosen once per process (its start time in microseconds), so a restarted agent always presents a newer
one. When the broker goes, the agent keeps its sessions running, reconnects with backoff and jitter under the same
epoch, and tells the broker what it still runs. If the broker refuses that epoch (the host was declared lost while
cut off), those sessions are already ended on the broker's side: the agent lets them go and registers afresh with a
new epoch, so an old session is never served twice.

Certificate rotation: with mutual TLS, each (re)connect reads the [tls] files afresh and, when they changed (a renewed
certificate, a new key or CA bundle written over the old files), opens a new channel with them, so the rotated
certificate is presented from the next reconnect on without restarting the agent. Files that cannot be read (mid
rewrite) leave the last good ones in use until the next attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import cast

import grpc
import structlog
from cloudseat.client import AgentLinkClient, BrokerClient
from cloudseat.images import oci
from cloudseat.v1 import agent_pb2, common_pb2, fleet_pb2
from grpc import aio

from gpu_agent import inventory, peers, reports
from gpu_agent.config import AgentConfig, TlsConfig
from gpu_agent.errors import RegistrationError
from gpu_agent.images import ImageCache
from gpu_agent.sessions import SessionManager

log = structlog.get_logger(__name__)

AGENT_VERSION = "cloudseat-agent/0.1"
_BACKOFF_FIRST_S = 0.5
_BACKOFF_MAX_S = 10.0
# Events queued while disconnected; beyond this the oldest go (the broker's own timeouts cover the gap).
_OUTBOX_MAX = 10_000
# Keepalive: a half-open connection to the broker (its machine gone without a FIN, a cut path) is noticed within
# keepalive_time + keepalive_timeout = 15 s, not TCP's minutes. The broker (broker/server.py) permits a client's
# pings no more often than every 5 s while no data flows (grpc.http2.min_ping_interval_without_data_ms) and sends
# GOAWAY after two that come sooner; 10 s keeps well clear of it, BDP pings only follow data the broker sent.
# max_pings_without_data 0: an idle agent now sends no data for hours, and with gRPC's default (2) its pings would
# fall to one a minute after the second (grpc core's max_pings_wo_data throttle, on by default in grpc 1.80).
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
# The heartbeat interval when the broker names none (a Registered without it).
_DEFAULT_INTERVAL_S = 5.0
# How often the reporter looks at the draining flag and the cached images (attribute reads): a change reaches the
# broker within this.
_LOOK_EVERY_S = 0.1
# The load is read at most this often: each NVML reading initialises and shuts the library down, which holds the
# event loop for milliseconds, and the CPU figure (the one-minute load average) moves slowly anyway.
_LOAD_EVERY_S = 1.0


def _registry(config: AgentConfig) -> oci.Registry | None:
    r = config.registry
    if r is None:
        return None
    return oci.Registry(r.url, oci.Credentials(r.username, r.password), ca_file=str(r.ca) if r.ca else None)


def new_epoch() -> int:
    return time.time_ns() // 1000


class Outbox:
    """Messages for the broker: sent at once while connected, kept while not (the oldest go first when full).

    Session events are gathered for REPORT_WINDOW_S and go as one report per session (gpu_agent.reports); any other
    message first lets the gathered ones go ahead of it, so the broker reads everything in the order it happened.
    """

    def __init__(self, window_s: float = reports.REPORT_WINDOW_S) -> None:
        self.queue: asyncio.Queue[agent_pb2.AgentMessage] = asyncio.Queue(maxsize=_OUTBOX_MAX)
        # Messages put and not yet written to a connection (queued or being written now); `flushed` is set when
        # that count is zero and no session event is being gathered.
        self.unsent = 0
        self.flushed = asyncio.Event()
        self.flushed.set()
        self._moves = reports.SessionReports(window_s)
        self._timer: asyncio.TimerHandle | None = None

    def put(self, msg: agent_pb2.AgentMessage) -> None:
        if msg.WhichOneof("body") == "session_event":
            ev = msg.session_event
            loop = asyncio.get_running_loop()
            self._moves.move(ev.session_id, reports.Step(ev.state), loop.time(), ev.end_reason, ev.detail)
            self.flushed.clear()
            due = self._moves.due_at
            if self._timer is None and due is not None:
                self._timer = loop.call_at(due, self.flush)
            return
        self.flush()
        self._queue(msg)

    def flush(self) -> None:
        """Let the gathered session events go now (the window ran out, another message goes, the agent leaves)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for r in self._moves.flush():
            self._queue(event_message(r))
        if self.unsent == 0:
            self.flushed.set()

    def sent(self) -> None:
        self.unsent -= 1
        if self.unsent == 0 and not self._moves:
            self.flushed.set()

    def _queue(self, msg: agent_pb2.AgentMessage) -> None:
        if self.queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
                self.unsent -= 1
        self.queue.put_nowait(msg)
        self.unsent += 1
        self.flushed.clear()


class BrokerLink:
    def __init__(self, config: AgentConfig, sessions: SessionManager, outbox: Outbox) -> None:
        self.config = config
        self.epoch = new_epoch()
        self.sessions = sessions
        self.outbox = outbox.queue
        self._outbox = outbox
        self.registered = asyncio.Event()
        self.connections = 0
        self._current: AgentLinkClient | None = None
        self._negotiations: set[asyncio.Task[None]] = set()
        # The PEM files (key, certificate chain, CA bundle) the channel was made with; None for plaintext.
        self._pem = _read_pem(config.tls) if config.tls is not None else None
        self._client = self._new_client()
        self._stopping = False
        # Set when stop() has said Goodbye and the broker closed (or gave up): until then the call must stand.
        self._left = asyncio.Event()
        self.images = ImageCache(
            config.games_cached,
            config.image_store,
            config.image_fetch_bytes_per_s,
            registry=_registry(config),
            disk_bytes=config.image_disk_bytes,
            workers=config.image_fetch_workers,
            retry_s=config.image_fetch_retry_s,
            games_in_use=lambda: {s.game_id for s in self.sessions.sessions.values()},
            host_id=config.host_id,
            tls_files=config.tls,
        )
        self._peer_server: aio.Server | None = None
        self.peer_address = ""
        self.sessions.assets = self.images.tree
        self.sessions.fetch_image = lambda cmd: self.images.ensure(
            cmd.game_id, cmd.version, cmd.image_ref, cmd.image_digest
        )
        self._gpus = [
            fleet_pb2.Gpu(
                model=g.model, memory_bytes=g.memory_bytes, encoder_engines=g.encoder_engines, uuid=g.uuid
            )
            for g in inventory.gpus()
        ]

    def _register_message(self) -> agent_pb2.Register:
        c = self.config
        return agent_pb2.Register(
            host_id=c.host_id,
            provider_id=c.provider_id,
            site_id=c.site_id,
            epoch=self.epoch,
            agent_version=AGENT_VERSION,
            inventory=agent_pb2.HostInventory(
                gpu_class=c.gpu_class,
                gpus=self._gpus,
                slots=c.slots,
                games_cached=self.images.held(),
                media_addresses=list(c.media_addresses),
                price_micros_per_slot_hour=c.price_micros_per_slot_hour,
                peer_address=self.peer_address,
            ),
            running=self.sessions.running(),
        )

    async def _serve_peers(self) -> None:
        """Serve image chunks to the site's hosts (gpu_agent.peers) when the config says where."""
        c = self.config
        if not c.peer_listen or self.images.flights is None or self._peer_server is not None:
            return
        self._peer_server, port = await peers.serve(
            c.peer_listen, self.images.flights, c.tls, self.images.site_hosts
        )
        if c.peer_address:
            self.peer_address = c.peer_address
        else:
            host = c.peer_listen.rsplit(":", 1)[0]
            if host in ("0.0.0.0", "[::]", ""):
                host = c.media_addresses[0]
            self.peer_address = f"{host}:{port}"
        log.info("serving image chunks to the site", address=self.peer_address)

    async def run(self) -> None:
        """Stay connected until stop(); raises RegistrationError when the broker refuses this host for good."""
        await self._serve_peers()
        backoff = _BACKOFF_FIRST_S
        while not self._stopping:
            await self._follow_rotation()
            link = AgentLinkClient(self._client, self._register_message())
            self._current = link
            try:
                registered = await link.open()
                backoff = _BACKOFF_FIRST_S
                self.connections += 1
                log.info(
                    "registered with the broker",
                    broker=self.config.broker,
                    epoch=self.epoch,
                    reconnect=self.connections > 1,
                )
                self.registered.set()
                # The provider's drain as the broker holds it (a drain or undrain may have come while away).
                self.sessions.drained = registered.drained
                await self._serve(link, registered)
            except aio.AioRpcError as exc:
                self._refused(exc)
            except (TimeoutError, OSError, asyncio.InvalidStateError) as exc:
                # InvalidStateError: a write found the call already ended by the broker (say, one going away just
                # after it registered us) before the read that carries its status; a refusal that matters (a stale
                # epoch) is said again at the next registration.
                if not self._stopping:
                    log.warning("broker link failed", error=str(exc))
            finally:
                self.registered.clear()
                self._current = None
                if self._stopping:
                    # stop() is leaving on this call; cancelling it now would cut its Goodbye short and read, to
                    # the broker, as a lost link.
                    await self._left.wait()
                await link.close()
            if self._stopping:
                break
            delay = backoff * random.uniform(0.5, 1.5)
            log.info("reconnecting to the broker", in_s=round(delay, 2))
            await asyncio.sleep(delay)
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    def _new_client(self) -> BrokerClient:
        credentials = None
        if self._pem is not None:
            key, chain, ca = self._pem
            credentials = grpc.ssl_channel_credentials(
                root_certificates=ca, private_key=key, certificate_chain=chain
            )
        return BrokerClient(self.config.broker, options=CHANNEL_OPTIONS, credentials=credentials)

    async def _follow_rotation(self) -> None:
        """Before each connect: re-read the TLS files and, if they changed, replace the channel with one that
        presents them (a channel keeps the credentials it was made with, and its connection, for good)."""
        if self.config.tls is None:
            return
        try:
            pem = _read_pem(self.config.tls)
        except OSError as exc:
            log.warning("cannot read the TLS files; keeping the last ones", error=str(exc))
            return
        if pem == self._pem:
            return
        log.info("TLS files changed; connecting with them", cert=str(self.config.tls.cert))
        old, self._pem = self._client, pem
        self._client = self._new_client()
        await old.close()

    def _refused(self, exc: aio.AioRpcError) -> None:
        code, details = exc.code(), exc.details() or ""
        if code in (
            grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.INVALID_ARGUMENT,
        ):
            raise RegistrationError(f"the broker refused this host: {details}") from exc
        if code is grpc.StatusCode.FAILED_PRECONDITION and "epoch" in details:
            # Declared lost or replaced while we were away: our sessions are over on the broker's side.
            log.warning("the broker retired this agent's epoch; starting afresh", detail=details)
            for sid in list(self.sessions.sessions):
                self.sessions.stop(sid, common_pb2.END_REASON_UNSPECIFIED)
            self.epoch = new_epoch()
            return
        log.warning("broker link closed", status=code.name, detail=details)

    async def _serve(self, link: AgentLinkClient, registered: agent_pb2.Registered) -> None:
        interval_s = registered.heartbeat_interval_ms / 1000 or _DEFAULT_INTERVAL_S
        tasks = [
            asyncio.create_task(self._heartbeat(link, interval_s)),
            asyncio.create_task(self._send(link)),
            asyncio.create_task(self._commands(link)),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                t.result()
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, aio.AioRpcError, Exception):
                    await t

    async def _heartbeat(self, link: AgentLinkClient, interval_s: float) -> None:
        """Send a Heartbeat when reports.HeartbeatSchedule says one is due (nothing, on an idle, steady host)."""
        loop = asyncio.get_running_loop()
        load, read_at = inventory.utilisation(), loop.time()
        schedule = reports.HeartbeatSchedule(interval_s, read_at, *load)
        while not self._stopping:  # leaving: Goodbye is the last word
            now = loop.time()
            games = self.images.take_changes()  # when not None, a heartbeat goes now and carries it
            fetches = self.images.take_fetch_changes(now)  # the same
            draining = self.sessions.draining
            if (
                games is not None
                or fetches is not None
                or draining != schedule.draining
                or schedule.interval_passed(now)
            ):
                if now - read_at >= _LOAD_EVERY_S:
                    load, read_at = inventory.utilisation(), now
                cpu, gpu = load
                if schedule.due(
                    now,
                    sessions=len(self.sessions.sessions),
                    cpu=cpu,
                    gpu=gpu,
                    games_changed=games is not None or fetches is not None,
                    draining=draining,
                ):
                    await link.heartbeat(
                        cpu,
                        gpu,
                        self.sessions.stats(),
                        games_cached=games,
                        draining=draining,
                        image_fetches=fetches,
                    )
                    schedule.sent(now, cpu=cpu, gpu=gpu, draining=draining)
            await asyncio.sleep(_LOOK_EVERY_S)
        await asyncio.Event().wait()  # parked: a writer that returned would end the link under stop()

    async def _send(self, link: AgentLinkClient) -> None:
        while True:
            msg = await self.outbox.get()
            try:
                await link.send(msg)
                self._outbox.sent()
            except BaseException:
                # Not sent: keep it for the next connection (order among events of one session is kept).
                requeue = [msg]
                while not self.outbox.empty():
                    requeue.append(self.outbox.get_nowait())
                for m in requeue:
                    self.outbox.put_nowait(m)
                raise

    async def _commands(self, link: AgentLinkClient) -> None:
        async for msg in link.commands():
            kind = msg.WhichOneof("body")
            if kind == "start_session":
                self.sessions.start(msg.start_session)
            elif kind == "stop_session":
                self.sessions.stop(msg.stop_session.session_id, msg.stop_session.reason)
            elif kind == "negotiate":
                task = asyncio.create_task(self._negotiate(msg.negotiate))
                self._negotiations.add(task)
                task.add_done_callback(self._negotiations.discard)
            elif kind == "drain":
                # Nothing new here; running sessions go on (the broker moves them at a deadline: broker.drain).
                self.sessions.drained = msg.drain.drained
                log.info("drain set by the provider", drained=msg.drain.drained)
            elif kind == "prewarm":
                p = msg.prewarm
                self.images.prewarm(
                    p.game_id,
                    p.version,
                    p.image_size_bytes,
                    p.image_ref,
                    p.image_digest,
                    [peers.Peer(x.host_id, x.address) for x in p.peers],
                )
            elif kind == "site_peers":
                self.images.set_site_peers([peers.Peer(x.host_id, x.address) for x in msg.site_peers.peers])
        raise ConnectionError("the broker closed the link")

    async def _negotiate(self, cmd: agent_pb2.NegotiateCommand) -> None:
        result = await self.sessions.negotiate(cmd)
        self._outbox.put(agent_pb2.AgentMessage(negotiate_result=result))

    async def stop(self, flush_s: float = 5.0) -> None:
        """Leave: send what is held (sessions handed back), then Goodbye, so the broker marks the host offline at
        once rather than lost, half-close and wait for the broker to close; then close the channel."""
        self._stopping = True
        try:
            await self.images.close()
            if self._peer_server is not None:
                await self._peer_server.stop(0.5)
            self._outbox.flush()
            link, self._current = self._current, None  # leave once, however often stop is called
            if link is not None and self.registered.is_set():
                # InvalidStateError: the broker ended the call meanwhile (going away itself); nothing left to say.
                with contextlib.suppress(
                    TimeoutError, aio.AioRpcError, asyncio.CancelledError, asyncio.InvalidStateError
                ):
                    async with asyncio.timeout(flush_s):
                        await self._outbox.flushed.wait()
                    await link.finish(flush_s)
        finally:
            self._left.set()
        await self._client.close()


def event_message(r: reports.Report) -> agent_pb2.AgentMessage:
    """A coalesced report as the contract's SessionEvent. Step's numbers are SessionState's; the generated stubs
    type enum fields as the enum, so the casts say the ints are those."""
    event = agent_pb2.SessionEvent(
        session_id=r.session_id,
        state=cast(common_pb2.SessionState, int(r.step)),
        end_reason=cast(common_pb2.EndReason, r.end_reason),
        detail=r.detail,
    )
    return agent_pb2.AgentMessage(session_event=event)


def _read_pem(files: TlsConfig) -> tuple[bytes, bytes, bytes]:
    """This host's key, its certificate (chain) and the CA bundle that signs brokers, as they are on disk now."""
    return files.key.read_bytes(), files.cert.read_bytes(), files.ca.read_bytes()
