"""Simulated GPU hosts for the fleet load test: many agents per process, each on the real AgentService protocol.

Each simulated host is what `gpu_agent` is to the broker, without media, and follows its rules (gpu_agent.reports):
its own `AgentService.Connect` stream (cloudseat.client.AgentLinkClient), a Register with its inventory and a fresh
epoch, then only what the broker needs. Liveness is the link itself, so a host without sessions sends nothing; while
it runs sessions it sends a heartbeat every interval the broker asks for (with per-session stream stats, as a real
agent does), and one when its load moved enough. On a start command the session moves STARTING at once, then READY
and STREAMING after a short start-up; the moves go through the real agent's coalescer and window
(gpu_agent.reports.REPORT_WINDOW_S, longer than the start-up), so a start costs one report, as on a real host whose
workload comes up at once. On a stop command the host lets the session go.

One worker process holds thousands of them. Streams are spread over `streams_per_connection`-sized groups of
separate HTTP/2 connections; heartbeats come from one timer loop per process (a heap of due times, each host at its
own phase), not a sleeping task per host.

The process talks to the orchestrator (loadtest.fleet) over a pipe: "connect", "site_down", "site_leave" and "stop"
in; "ready", "connecting", "connected", "site_down", "site_leave", "stats" and "final" out.
- ("site_down", site_id): every host of the site drops at once, as in a power loss: its stream is cancelled, without
  Goodbye (its connection stays open and idle until the process exits: see _Fleet.site_down); the hosts are
  simulated no more. Answered ("site_down", {"site", "dropped", "at": time.monotonic()}).
- ("site_leave", site_id): every host of the site leaves on purpose, as agents shut down cleanly: what it holds, then
  Goodbye, then the half-close. Answered ("site_leave", {"site", "left", "at"}).
- "stop": every stream is dropped at once, as a fleet whose agents were all killed (the broker this run started stops
  right after; a broker given with --broker declares the hosts lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import logging
import multiprocessing
import multiprocessing.connection
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

from gpu_agent import reports

if TYPE_CHECKING:
    from cloudseat.v1 import common_pb2

#: Bucket width for the heartbeat counts sent back (seconds).
BEAT_BUCKET_S = 0.1


@dataclasses.dataclass(frozen=True)
class HostSpec:
    host_id: str
    site_id: str
    gpu_class: str
    slots: int
    price_micros: int
    games: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class AgentWorkerSpec:
    index: int
    target: str
    provider_id: str
    hosts: tuple[HostSpec, ...]
    epoch: int
    streams_per_connection: int = 1
    connect_concurrency: int = 64
    #: Seconds from STARTING to READY (the workload coming up), compressed like the rest of the evening.
    start_up_s: float = 0.02
    open_timeout_s: float = 60.0


class _Agent:
    __slots__ = (
        "client",
        "flushing",
        "gone",
        "link",
        "live",
        "reports",
        "schedule",
        "sessions",
        "spec",
        "task",
    )

    def __init__(self, spec: HostSpec, link: Any, client: int, schedule: reports.HeartbeatSchedule) -> None:
        self.spec = spec
        self.link = link
        self.client = client  # index of its channel in _Fleet.clients
        self.sessions: dict[str, int] = {}  # session id -> slots
        self.task: asyncio.Task[None] | None = None
        self.schedule = schedule
        self.reports = reports.SessionReports()
        self.flushing: asyncio.TimerHandle | None = None  # the end of the reports' window
        # Counted in _Fleet.connected: registered, and neither lost nor gone.
        self.live = True
        # Dropped (site down) or left (site leave): simulated no more.
        self.gone = False

    @property
    def load(self) -> tuple[float, float]:
        """(cpu, gpu) as a real host running these sessions might report it."""
        busy = sum(self.sessions.values()) / self.spec.slots
        return 0.1 + 0.5 * busy, busy


class _Fleet:
    def __init__(self, spec: AgentWorkerSpec, conn: multiprocessing.connection.Connection) -> None:
        from cloudseat.v1 import agent_pb2, common_pb2

        self.spec = spec
        self.conn = conn
        self.pb = agent_pb2
        self.states = common_pb2
        self.clients: list[Any] = []
        self.agents: list[_Agent] = []
        self.connected = 0
        self.lost_streams = 0
        self.dropped = 0  # hosts dropped by "site_down"
        self.left = 0  # hosts that left by "site_leave"
        self.errors: Counter[str] = Counter()
        self.error_samples: list[str] = []
        self.commands: Counter[str] = Counter()
        self.events_sent = 0
        self.beats: Counter[int] = Counter()  # bucket (monotonic / BEAT_BUCKET_S) -> heartbeats sent
        self.busy: Counter[str] = Counter()  # site -> slots taken
        self.busy_samples: list[tuple[float, dict[str, int]]] = []
        self.interval_s = 5.0
        self.stopping = False
        self.background: set[asyncio.Task[None]] = set()
        # (due time, agent index, heartbeat seq): one timer loop beats for every agent in this process
        self.due: list[tuple[float, int, int]] = []
        self.rng = random.Random(spec.index)

    def _error(self, where: str, exc: BaseException) -> None:
        from grpc import aio

        code = exc.code().name if isinstance(exc, aio.AioRpcError) else type(exc).__name__
        self.errors[f"{where}:{code}"] += 1
        if len(self.error_samples) < 10:
            detail = exc.details() if isinstance(exc, aio.AioRpcError) else str(exc)
            self.error_samples.append(f"{where}: {code}: {detail}"[:300])

    # -- connecting --

    def _register(self, host: HostSpec) -> Any:
        return self.pb.Register(
            host_id=host.host_id,
            provider_id=self.spec.provider_id,
            site_id=host.site_id,
            epoch=self.spec.epoch,
            agent_version="loadtest-fleet",
            inventory=self.pb.HostInventory(
                gpu_class=host.gpu_class,
                slots=host.slots,
                games_cached=list(host.games),
                media_addresses=["127.0.0.1"],
                price_micros_per_slot_hour=host.price_micros,
            ),
        )

    async def connect(self) -> dict[str, Any]:
        from cloudseat.client import AgentLinkClient, BrokerClient

        per = max(1, self.spec.streams_per_connection)
        n_clients = -(-len(self.spec.hosts) // per)
        self.clients = [
            BrokerClient(self.spec.target, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(n_clients)
        ]
        limit = asyncio.Semaphore(self.spec.connect_concurrency)
        started = time.monotonic()

        async def open_one(i: int, host: HostSpec) -> None:
            link = AgentLinkClient(self.clients[i // per], self._register(host))
            async with limit:
                try:
                    registered = await link.open(timeout_s=self.spec.open_timeout_s)
                except Exception as exc:
                    self._error("Connect", exc)
                    await link.close()
                    return
            self.interval_s = registered.heartbeat_interval_ms / 1000 or self.interval_s
            now = time.monotonic()
            idle = 0.1, 0.0  # _Agent.load without sessions: what the broker is taken to know at registration
            agent = _Agent(host, link, i // per, reports.HeartbeatSchedule(self.interval_s, now, *idle))
            agent.task = asyncio.create_task(self._serve(agent))
            self.agents.append(agent)
            self.connected += 1
            # The timer loop looks at each host once per interval, at a random phase: the fleet's beats spread.
            heapq.heappush(self.due, (now + self.rng.uniform(0.0, self.interval_s), len(self.agents) - 1, 0))

        async def report() -> None:
            while True:
                await asyncio.sleep(0.5)
                self.conn.send(("connecting", self.connected))

        reporter = asyncio.create_task(report())
        try:
            await asyncio.gather(*(open_one(i, h) for i, h in enumerate(self.spec.hosts)))
        finally:
            reporter.cancel()
        return {
            "connected": self.connected,
            "seconds": time.monotonic() - started,
            "errors": dict(self.errors),
            "error_samples": self.error_samples,
        }

    # -- one agent's commands and session reports --

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def _move(
        self, agent: _Agent, sid: str, step: reports.Step, end_reason: int = 0, detail: str = ""
    ) -> None:
        """A session moved: into the host's coalescer, which the end of its window flushes (as the real agent's
        outbox does)."""
        loop = asyncio.get_running_loop()
        agent.reports.move(sid, step, loop.time(), end_reason, detail)
        due = agent.reports.due_at
        if agent.flushing is None and due is not None:
            agent.flushing = loop.call_at(due, self._flush_reports, agent)

    def _events(self, agent: _Agent) -> list[Any]:
        """The host's gathered session reports as messages, now; its window closes."""
        if agent.flushing is not None:
            agent.flushing.cancel()
            agent.flushing = None
        return [
            self.pb.AgentMessage(
                session_event=self.pb.SessionEvent(
                    session_id=r.session_id,
                    # reports.Step's numbers are SessionState's (the stubs type enum fields as the enum).
                    state=cast("common_pb2.SessionState", int(r.step)),
                    end_reason=cast("common_pb2.EndReason", r.end_reason),
                    detail=r.detail,
                )
            )
            for r in agent.reports.flush()
        ]

    def _flush_reports(self, agent: _Agent) -> None:
        agent.flushing = None
        if not agent.gone and not self.stopping:
            self._spawn(self._send_events(agent, self._events(agent)))

    async def _send_events(self, agent: _Agent, events: list[Any]) -> None:
        try:
            for msg in events:
                await agent.link.send(msg)
                self.events_sent += 1
        except Exception as exc:
            if not self.stopping and not agent.gone:
                self._error("SessionEvent", exc)

    def _up(self, agent: _Agent, sid: str) -> None:
        """The session's workload came up (start_up_s after the command) and its seat connected."""
        if not agent.gone and not self.stopping and sid in agent.sessions:
            self._move(agent, sid, reports.Step.READY)
            self._move(agent, sid, reports.Step.STREAMING)

    async def _serve(self, agent: _Agent) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for msg in agent.link.commands():
                kind = msg.WhichOneof("body")
                self.commands[kind] += 1
                if agent.gone:
                    continue  # leaving: what comes now is the broker's business
                if kind == "start_session":
                    cmd = msg.start_session
                    agent.sessions[cmd.session_id] = cmd.slots or 1
                    self.busy[agent.spec.site_id] += cmd.slots or 1
                    self._move(agent, cmd.session_id, reports.Step.STARTING)
                    loop.call_later(self.spec.start_up_s, self._up, agent, cmd.session_id)
                elif kind == "stop_session":
                    slots = agent.sessions.pop(msg.stop_session.session_id, 0)
                    self.busy[agent.spec.site_id] -= slots
        except Exception as exc:
            if not self.stopping and not agent.gone:
                self._error("Connect(stream)", exc)
        if not self.stopping and not agent.gone:
            self.lost_streams += 1
            self._not_live(agent)

    # -- heartbeats --

    def _heartbeat(self, agent: _Agent, seq: int, cpu: float, gpu: float) -> Any:
        stats = [
            self.pb.SessionStats(
                session_id=sid, fps_sent=60.0, bitrate_kbps=10_000, rtt_ms=4.0, encode_ms=3.0
            )
            for sid in agent.sessions
        ]
        return self.pb.AgentMessage(
            heartbeat=self.pb.Heartbeat(seq=seq, cpu_load=cpu, gpu_load=gpu, sessions=stats)
        )

    async def _beat_one(self, agent: _Agent, seq: int, cpu: float, gpu: float) -> None:
        try:
            await agent.link.send(self._heartbeat(agent, seq, cpu, gpu))
            self.beats[int(time.monotonic() / BEAT_BUCKET_S)] += 1
        except Exception as exc:
            if not self.stopping and not agent.gone:
                self._error("Heartbeat", exc)

    async def heartbeats(self) -> None:
        """Every host is looked at once per interval, at its own phase, from this one timer loop, and beats when
        gpu_agent.reports.HeartbeatSchedule says so (while it runs sessions; when its load moved). A beat is its
        own task: a stream the broker is slow to read holds up that host's beats, never the others'."""
        due = self.due
        while True:
            now = time.monotonic()
            while due and due[0][0] <= now:
                at, i, seq = heapq.heappop(due)
                agent = self.agents[i]
                if agent.gone or agent.task is None or agent.task.done():
                    continue  # dropped, left or lost: looked at no more
                cpu, gpu = agent.load
                # Judged at the tick's own time, not when it was popped: a late pop must not skip the next beat.
                if agent.schedule.due(at, sessions=len(agent.sessions), cpu=cpu, gpu=gpu):
                    agent.schedule.sent(at, cpu=cpu, gpu=gpu)
                    seq += 1
                    self._spawn(self._beat_one(agent, seq, cpu, gpu))
                heapq.heappush(due, (at + self.interval_s, i, seq))
            await asyncio.sleep(max(0.0, min(0.02, (due[0][0] - time.monotonic()) if due else 0.02)))

    # -- sites going away --

    def _not_live(self, agent: _Agent) -> None:
        if agent.live:
            agent.live = False
            self.connected -= 1

    def _forget(self, agent: _Agent) -> None:
        """Simulate the host no more: its sessions and slots go with it."""
        agent.gone = True
        self._not_live(agent)
        if agent.flushing is not None:
            agent.flushing.cancel()
            agent.flushing = None
        agent.reports.flush()
        self.busy[agent.spec.site_id] -= sum(agent.sessions.values())
        agent.sessions.clear()
        if agent.task is not None:
            agent.task.cancel()

    async def site_down(self, site_id: str) -> dict[str, Any]:
        """Every host of the site drops at once, as in a power loss: its stream cancelled, no Goodbye.

        Its connections stay open, idle, until the process exits (as at `close`): grpc.aio's Channel.close looks
        through every task of the loop for its calls, so closing a site's hundred channels in a process of 10,000
        hosts kept this loop busy for ~12 s, even in the background; every other simulated host stopped answering
        meanwhile, and 1,413 sessions placed on them timed out in PLACED (a load-generator stall the broker was
        blamed for: docs/loadtest-fleet.md, a site lost). The broker sees each link end with its stream."""
        victims = [a for a in self.agents if a.spec.site_id == site_id and not a.gone]
        dropped = sum(a.live for a in victims)  # streams cut (a lost one has none left to cut)
        for agent in victims:
            self._forget(agent)
            await agent.link.close()
        at = time.monotonic()
        self.dropped += dropped
        return {"site": site_id, "dropped": dropped, "at": at}

    async def site_leave(self, site_id: str, timeout_s: float = 10.0) -> dict[str, Any]:
        """Every host of the site leaves on purpose, as an agent shut down with SIGTERM does: its sessions handed
        back (HOST_DRAINED) with whatever else it holds, then Goodbye, then the half-close."""
        leaving = [a for a in self.agents if a.spec.site_id == site_id and a.live]
        limit = asyncio.Semaphore(self.spec.connect_concurrency)

        async def leave(agent: _Agent) -> None:
            for sid in agent.sessions:
                self._move(
                    agent,
                    sid,
                    reports.Step.ENDED,
                    self.states.END_REASON_HOST_DRAINED,
                    "the host is shutting down",
                )
            events = self._events(agent)
            agent.gone = True  # its stream's end is no loss
            async with limit:
                try:
                    await self._send_events(agent, events)
                    await agent.link.finish(timeout_s)
                except Exception as exc:
                    self._error("Goodbye", exc)
            self._forget(agent)
            await agent.link.close()

        await asyncio.gather(*(leave(a) for a in leaving))
        at = time.monotonic()
        # Their connections stay open, idle, until the process exits (see site_down).
        self.left += len(leaving)
        return {"site": site_id, "left": len(leaving), "at": at}

    async def sample(self) -> None:
        while True:
            self.busy_samples.append((time.monotonic(), dict(self.busy)))
            self.conn.send(
                (
                    "stats",
                    {
                        "connected": self.connected,
                        "beats": sum(self.beats.values()),
                        "running": sum(len(a.sessions) for a in self.agents),
                        "errors": sum(self.errors.values()),
                    },
                )
            )
            await asyncio.sleep(1.0)

    # -- leaving --

    async def close(self) -> None:
        """Drop every stream, as a fleet of agents killed at once would (the broker stops right after)."""
        for task in list(self.background):
            task.cancel()
        for agent in self.agents:
            if agent.flushing is not None:
                agent.flushing.cancel()
            if agent.task is not None:
                agent.task.cancel()
            await agent.link.close()
        # Closing thousands of channels one by one takes minutes; the process exits next, which closes them.

    def final(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "lost_streams": self.lost_streams,
            "dropped": self.dropped,
            "left": self.left,
            "errors": dict(self.errors),
            "error_samples": self.error_samples,
            "commands": dict(self.commands),
            "events_sent": self.events_sent,
            "beats": {str(k): v for k, v in self.beats.items()},
            "busy_samples": self.busy_samples,
            "interval_s": self.interval_s,
        }


async def _serve(spec: AgentWorkerSpec, conn: multiprocessing.connection.Connection) -> None:
    fleet = _Fleet(spec, conn)
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[Any] = asyncio.Queue()

    def readable() -> None:
        try:
            inbox.put_nowait(conn.recv())
        except (EOFError, OSError):
            loop.remove_reader(conn.fileno())
            inbox.put_nowait(("stop",))

    loop.add_reader(conn.fileno(), readable)
    conn.send(("ready", spec.index))
    tasks: list[asyncio.Task[None]] = []
    try:
        while True:
            msg = await inbox.get()
            if msg[0] == "connect":
                tasks = [asyncio.create_task(fleet.heartbeats())]
                conn.send(("connected", await fleet.connect()))
                tasks.append(asyncio.create_task(fleet.sample()))
            elif msg[0] == "site_down":
                conn.send(("site_down", await fleet.site_down(msg[1])))
            elif msg[0] == "site_leave":
                conn.send(("site_leave", await fleet.site_leave(msg[1])))
            elif msg[0] == "stop":
                fleet.stopping = True
                for task in tasks:
                    task.cancel()
                conn.send(("final", fleet.final()))
                await fleet.close()
                return
    finally:
        with contextlib.suppress(Exception):
            loop.remove_reader(conn.fileno())


def main(spec: AgentWorkerSpec, conn: multiprocessing.connection.Connection) -> None:
    """An agent process: holds `spec.hosts` connected until told to stop."""
    logging.disable(logging.WARNING)
    try:
        asyncio.run(_serve(spec, conn))
    except Exception as exc:
        conn.send(("error", f"agent worker {spec.index}: {type(exc).__name__}: {exc}"))


# -- the orchestrator's side ----------------------------------------------------------------------------------


class WorkerError(Exception):
    """A worker process failed, exited, or did not answer in time; the message says which and why."""


class Workers:
    """The orchestrator's side of the worker processes (agents here, patrons in loadtest.fleet_venues): spawned
    with their spec, each with a pipe; their messages arrive on one asyncio queue."""

    def __init__(self) -> None:
        self.ctx = multiprocessing.get_context("spawn")
        self.procs: dict[str, tuple[Any, multiprocessing.connection.Connection]] = {}
        self.inbox: asyncio.Queue[tuple[str, tuple[Any, ...]]] = asyncio.Queue()
        self.latest: dict[tuple[str, str], Any] = {}  # (worker, kind) -> the last progress message

    def spawn(self, name: str, target: Callable[..., None], spec: object) -> None:
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=target, args=(spec, child), name=name, daemon=True)
        proc.start()
        child.close()
        loop = asyncio.get_running_loop()

        def readable() -> None:
            try:
                msg = parent.recv()
            except (EOFError, OSError):
                loop.remove_reader(parent.fileno())
                msg = ("exit",)
            self.inbox.put_nowait((name, msg))

        loop.add_reader(parent.fileno(), readable)
        self.procs[name] = (proc, parent)

    def names(self, prefix: str) -> list[str]:
        return [n for n in self.procs if n.startswith(prefix)]

    def pids(self, prefix: str) -> list[int]:
        return [p.pid for n, (p, _) in self.procs.items() if n.startswith(prefix) and p.pid is not None]

    def send(self, names: Iterable[str], msg: tuple[Any, ...]) -> None:
        for name in names:
            self.procs[name][1].send(msg)

    def total(self, kind: str, key: str) -> int:
        """The sum of `key` over every worker's last `kind` message."""
        return sum(
            int(v.get(key, 0)) for (_, k), v in self.latest.items() if k == kind and isinstance(v, dict)
        )

    async def expect(self, kind: str, names: Iterable[str], timeout_s: float) -> dict[str, Any]:
        """Wait for `kind` from each of `names`; progress messages meanwhile update `latest`."""
        waiting, got = set(names), {}
        deadline = time.monotonic() + timeout_s
        while waiting:
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    name, msg = await self.inbox.get()
            except TimeoutError:
                raise WorkerError(f"no {kind!r} from {sorted(waiting)} within {timeout_s:.0f} s") from None
            payload = msg[1] if len(msg) > 1 else None
            if msg[0] == kind and name in waiting:
                got[name] = payload
                waiting.discard(name)
            elif msg[0] == "error":
                raise WorkerError(str(payload))
            elif msg[0] == "exit":
                raise WorkerError(f"{name} exited unexpectedly (exit code {self.procs[name][0].exitcode})")
            else:
                self.latest[(name, msg[0])] = payload
        return got

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for _, conn in self.procs.values():
            with contextlib.suppress(Exception):
                loop.remove_reader(conn.fileno())
            with contextlib.suppress(Exception):
                conn.send(("stop",))
        deadline = time.monotonic() + 15
        for proc, conn in self.procs.values():
            await asyncio.to_thread(proc.join, max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                await asyncio.to_thread(proc.join, 5)
            conn.close()
        self.procs.clear()
