"""Helpers for the fault tests (issue 7): real processes, real faults, and the store's invariants read back.

- `LogProcess`: a broker or agent subprocess whose JSON log lines are read as they come (so its pipe never fills)
  and kept with the time they arrived; tests wait for log events and send signals (SIGKILL, SIGSTOP, SIGCONT).
- `start_broker` / `start_agent`: `python -m broker serve` and `python -m gpu_agent run`, optionally inside a
  network namespace.
- `NetNS`: a network namespace of the test's own (`unshare --net`), with its own loopback, where nftables drops
  packets to make a real network fault; nothing outside the namespace is touched.
- `partitioned`: an agent and a broker replica in such a namespace, and a second replica outside that the test's
  calls go to, so the network between agent and broker can be cut while the test watches.
- `Postgres`: a PostgreSQL server of the test's own (the pgserver wheel's binaries), which the test may stop and
  start again: the session-wide server is shared with every other test and must not be restarted.
- `FleetAgent`: a scripted agent on the real AgentService protocol that reconnects like the real one (same epoch,
  reporting what it runs; a new epoch when the broker retired the old one) and counts what it runs.
- `SeatLoad`: seats playing sessions in a loop through the public API, retrying with the same request id, keeping
  every answer.
- `violations`: the store's invariants checked from the database itself.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import json
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from cloudseat.client import AgentLinkClient, BrokerClient
from cloudseat.v1 import agent_pb2, common_pb2, fleet_pb2, session_pb2, venue_pb2
from grpc import aio

from broker import lifecycle
from broker.config import BrokerConfig
from broker.server import Broker
from broker.store import fleet as fleet_store
from broker.store import games as game_store
from broker.store import hosts as host_store
from broker.store import venues as venue_store
from tests.integration.conftest import FAST

S = common_pb2.SessionState
ON_HOST = ("PLACED", "STARTING", "READY", "STREAMING")
# Keepalive as the real agent sets it (gpu_agent.link.CHANNEL_OPTIONS), so scripted agents notice a dead broker.
AGENT_CHANNEL_OPTIONS: list[tuple[str, object]] = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
]
_ENV_DROP = ("DATABASE_URL", "CLOUDSEAT_DATABASE_URL", "CLOUDSEAT_BROKER_LISTEN", "CLOUDSEAT_INSECURE")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a broker that must come back on the same port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def wait_until(
    check: Callable[[], Awaitable[Any]], *, timeout_s: float, interval_s: float = 0.05, what: str = ""
) -> Any:
    """Poll `check` until it returns something truthy; returns it. AssertionError after `timeout_s`."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                result = await check()
                if result:
                    return result
                await asyncio.sleep(interval_s)
    except TimeoutError:
        raise AssertionError(f"not reached within {timeout_s} s: {what}") from None


# -- processes ----------------------------------------------------------------------------------------------------


class LogProcess:
    """A subprocess that logs JSON lines on stderr; every line is kept as (monotonic arrival time, entry)."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.entries: list[tuple[float, dict[str, Any]]] = []
        self.raw: list[str] = []
        self._new = asyncio.Event()
        assert proc.stderr is not None
        self._reader = asyncio.create_task(self._read(proc.stderr), name=f"log-{name}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            try:
                entry = json.loads(line)
            except ValueError:
                self.raw.append(line.decode(errors="replace").rstrip())
                continue
            if isinstance(entry, dict):
                self.entries.append((time.monotonic(), entry))
                self._new.set()
        self._new.set()

    def events(
        self, event: str, *, since: float = 0.0, **fields: object
    ) -> list[tuple[float, dict[str, Any]]]:
        return [
            (t, e)
            for t, e in self.entries
            if t >= since and e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
        ]

    async def wait_event(
        self, event: str, *, timeout_s: float, since: float = 0.0, **fields: object
    ) -> tuple[float, dict[str, Any]]:
        """The first log entry `event` (with these field values) that arrived at or after `since`."""
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    found = self.events(event, since=since, **fields)
                    if found:
                        return found[0]
                    if self.proc.returncode is not None and self._reader.done():
                        raise AssertionError(f"{self.name} exited ({self.proc.returncode}): {self.tail()}")
                    self._new.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.5):
                            await self._new.wait()
        except TimeoutError:
            raise AssertionError(
                f"{self.name}: no {event!r} {fields} within {timeout_s} s; last lines: {self.tail()}"
            ) from None

    def tail(self, n: int = 8) -> str:
        lines = [json.dumps(e)[:300] for _, e in self.entries[-n:]] + self.raw[-n:]
        return "\n".join(lines)

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)

    async def kill(self) -> None:
        """SIGKILL (after SIGCONT, should it be stopped) and reap."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)
                self.proc.kill()
        await self.proc.wait()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            async with asyncio.timeout(5):
                await self._reader

    async def terminate(self, timeout_s: float = 20.0) -> int:
        self.signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout_s):
                return await self.proc.wait()
        except TimeoutError:
            await self.kill()
            raise AssertionError(f"{self.name} did not stop on SIGTERM: {self.tail()}") from None


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _ENV_DROP}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _tool(name: str) -> str:
    """The absolute path of a system tool. Children are started with an absolute path and close_fds=False (Python's
    own descriptors are not inheritable anyway), so that subprocess uses posix_spawn rather than fork(): a fork of
    this process, with gRPC's threads running, can crash in gRPC's fork handlers before it execs."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"{name} is not installed (scripts/system-deps installs what the fault tests need)"
        )
    return path


async def _exec(argv: Sequence[str], netns: NetNS | None) -> asyncio.subprocess.Process:
    prefix = netns.prefix() if netns is not None else []
    return await asyncio.create_subprocess_exec(
        *prefix,
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
        close_fds=False,
    )


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (a broker's role processes), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class BrokerProcess(LogProcess):
    """`cloudseat-broker serve`: a supervisor and its role processes. A signal meant for "the broker" (a freeze,
    a thaw) goes to all of them, as to a machine; a kill to the supervisor takes its processes with it."""

    port = 0
    agent_port = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def agent_target(self) -> str:
        """Where its agents connect (--agent-listen)."""
        return f"127.0.0.1:{self.agent_port}"

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.returncode is None:
            for pid in descendants(self.proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            self.proc.send_signal(sig)


async def start_broker(
    database_url: str,
    *,
    name: str = "broker",
    listen: str = "127.0.0.1:0",
    heartbeat_s: float = 5.0,
    lost_after_s: float = 15.0,
    link_ping_s: float = 3.0,
    link_ping_timeout_s: float = 1.0,
    agent_listen: str = "127.0.0.1:0",
    workers: int = 1,
    netns: NetNS | None = None,
    timeout_s: float = 60.0,
) -> BrokerProcess:
    """`python -m broker serve` with authentication off (the fault tests are about availability, not access): the
    production layout, a supervisor and its role processes."""
    argv = [
        sys.executable, "-m", "broker", "serve",
        "--listen", listen,
        "--agent-listen", agent_listen,
        "--database-url", database_url,
        "--heartbeat-interval", str(heartbeat_s),
        "--host-lost-after", str(lost_after_s),
        "--link-ping", str(link_ping_s),
        "--link-ping-timeout", str(link_ping_timeout_s),
        # The production layout (tenant workers, the agents' process, the leader's), one tenant worker: the
        # machine running the tests has two cores for several brokers.
        "--workers", str(workers),
        # The fault tests count the answers seats get; refusals for a busy loop are test_overload.py's subject.
        "--shed-lag-ms", "0",
        "--start-db-wait-ms", "0",
        "--start-backlog-ms", "0",
        "--shutdown-grace", "2",
        "--log-format", "json",
        "--insecure",
    ]  # fmt: skip
    broker = BrokerProcess(name, await _exec(argv, netns))
    try:
        _, serving = await broker.wait_event("broker serving", timeout_s=timeout_s)
    except AssertionError:
        await broker.kill()
        raise
    broker.port = int(serving["port"])
    broker.agent_port = int(serving["agent_port"])
    return broker


AGENT_CONFIG = """
host_id = "{host}"
provider_id = "prov"
site_id = "{site}"
broker = "{target}"
slots = {slots}
gpu_class = "cpu"
price_micros_per_slot_hour = 1000000
games_cached = ["demo"]
media_addresses = ["127.0.0.1"]
codec = "vp8"
drain_grace_s = 1
insecure = true
"""


async def start_agent(
    folder: Path,
    host: str,
    target: str,
    *,
    slots: int = 2,
    site: str = "site-near",
    netns: NetNS | None = None,
) -> LogProcess:
    """The real agent program (`python -m gpu_agent run`), the built-in demo game."""
    path = folder / f"{host}.toml"
    path.write_text(AGENT_CONFIG.format(host=host, target=target, slots=slots, site=site))
    argv = [sys.executable, "-m", "gpu_agent", "run", "--config", str(path), "--log-format", "json"]
    return LogProcess(host, await _exec(argv, netns))


# -- a network namespace with packet filters ----------------------------------------------------------------------


class NetNS:
    """A network namespace of this test's own: a holder process made by `unshare --net` keeps it alive; commands
    join it with nsenter. Its loopback is its own, so a rule here drops packets between processes inside only."""

    def __init__(self) -> None:
        self._holder: subprocess.Popen[bytes] | None = None

    def open(self) -> NetNS:
        self._holder = subprocess.Popen(
            [_tool("unshare"), "--net", "sh", "-c", "ip link set lo up && echo up && exec sleep 3600"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            close_fds=False,
        )
        assert self._holder.stdout is not None
        line = self._holder.stdout.readline()
        if line.strip() != b"up":
            self.close()
            raise RuntimeError(
                "could not create a network namespace (unshare --net needs root or user namespaces)"
            )
        return self

    def prefix(self) -> list[str]:
        assert self._holder is not None, "open() first"
        return [_tool("nsenter"), f"--net=/proc/{self._holder.pid}/ns/net", "--"]

    async def run(self, *argv: str, stdin: str | None = None) -> str:
        proc = await asyncio.create_subprocess_exec(
            *self.prefix(),
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            close_fds=False,
        )
        out, _ = await proc.communicate(stdin.encode() if stdin is not None else None)
        if proc.returncode != 0:
            raise RuntimeError(f"{shlex.join(argv)}: {out.decode()}")
        return out.decode()

    async def drop(self, *matches: str) -> None:
        """Drop every packet sent in this namespace that one of the nftables `matches` (e.g. "meta l4proto udp")
        selects, silently: no reset, no ICMP. Until `heal`."""
        rules = "".join(f"    {m} drop\n" for m in matches)
        await self.run(
            "nft",
            "-f",
            "-",
            stdin=(
                "table inet cloudseat_fault {\n"
                f"  chain out {{ type filter hook output priority 0; policy accept;\n{rules}  }}\n"
                "}\n"
            ),
        )

    async def cut(self, port: int) -> None:
        """Drop every TCP packet to or from `port` on this namespace's loopback, so both ends see a half-open
        connection."""
        await self.drop(f"tcp dport {port}", f"tcp sport {port}")

    async def heal(self) -> None:
        """Remove what `drop` (or `cut`) put in place."""
        await self.run("nft", "delete", "table", "inet", "cloudseat_fault")

    def close(self) -> None:
        if self._holder is not None and self._holder.poll() is None:
            self._holder.kill()
            self._holder.wait()


@dataclasses.dataclass(frozen=True)
class Partitioned:
    """An agent and the broker replica it links to ("inner"), both in a network namespace of the test's own, and a
    second replica outside ("outer", on the same database, which learns every change through PostgreSQL) that the
    test's own calls go to: `cut()` drops every packet between agent and inner replica, the test still sees all."""

    ns: NetNS
    inner: BrokerProcess
    outer: Broker
    client: BrokerClient
    agent: LogProcess

    async def cut(self) -> None:
        await self.ns.cut(self.inner.agent_port)

    async def heal(self) -> None:
        await self.ns.heal()


@contextlib.asynccontextmanager
async def partitioned(
    database_url: str,
    folder: Path,
    *,
    heartbeat_s: float,
    lost_after_s: float,
    seats: int,
    link_ping_s: float = 1.0,
    host: str = "agent-1",
) -> AsyncIterator[Partitioned]:
    """The world `seed` makes, served by an inner replica (heartbeat and lost-after as given) in a new network
    namespace and an outer one, and the real agent `host` started in the namespace, linked to the inner replica
    (not yet registered: wait for that). The processes are killed and the namespace removed on the way out."""
    ns = NetNS().open()
    inner: BrokerProcess | None = None
    agent: LogProcess | None = None
    try:
        inner = await start_broker(
            database_url,
            name="inner",
            heartbeat_s=heartbeat_s,
            lost_after_s=lost_after_s,
            link_ping_s=link_ping_s,
            netns=ns,
        )
        # The inner replica leads (it judges liveness), as the only replica that holds the agent's link.
        await inner.wait_event("took the placement lease", timeout_s=15)
        async with (
            running_broker(dataclasses.replace(FAST, database_url=database_url)) as outer,
            BrokerClient(f"127.0.0.1:{outer.port}") as client,
        ):
            await seed(client, seats=seats)
            agent = await start_agent(folder, host, inner.agent_target, netns=ns)
            yield Partitioned(ns, inner, outer, client, agent)
    finally:
        if agent is not None:
            await agent.kill()
        if inner is not None:
            await inner.kill()
        ns.close()


# -- a PostgreSQL server the test may restart ---------------------------------------------------------------------


class Postgres:
    """A PostgreSQL server in `root` (initdb'd by pgserver, then stopped and started with pg_ctl), on a unix socket.

    `stop()` then `start()` keeps the data and the address; `url(db)` names a database on it."""

    def __init__(self, root: Path) -> None:
        import pgserver

        self.pgdata = root / "pgdata"
        self._server = pgserver.get_server(self.pgdata, cleanup_mode=None)
        info = self._server.get_postmaster_info()
        self.socket_dir = str(info.socket_dir)
        self._user = self._server.system_user
        self._base = str(self._server.get_uri())
        self.running = True

    def url(self, database: str = "postgres") -> str:
        return self._base.replace("/postgres?", f"/{database}?")

    def _pg_ctl(self, *args: str) -> None:
        """pg_ctl as the server's owner (pgserver runs PostgreSQL as a 'pgserver' user when we are root). Its output
        goes to a file: the server it starts inherits the descriptors and would hold a pipe open."""
        from pgserver import _commands

        argv = [str(_commands.POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.pgdata), *args]
        if self._user is not None:
            argv = [_tool("runuser"), "-u", self._user, "--", *argv]
        with tempfile.TemporaryFile() as out:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                close_fds=False,
                timeout=60,
                check=False,
            )
            if done.returncode != 0:
                out.seek(0)
                raise RuntimeError(f"pg_ctl {' '.join(args)}: {out.read().decode(errors='replace')}")

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server: 'immediate' is a crash (no checkpoint, recovery at the next start), 'fast' a clean
        shutdown that disconnects every client."""
        self._pg_ctl("-w", "-m", mode, "stop")
        self.running = False

    def start(self) -> None:
        log = str(self.pgdata / "log")
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", log, "start")
        self.running = True

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.running:
                self.stop("fast")
        shutil.rmtree(self.pgdata, ignore_errors=True)


async def create_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


# -- seeding through the public API -------------------------------------------------------------------------------


async def seed(
    client: BrokerClient,
    *,
    seats: int,
    sites: Sequence[str] = ("site-near", "site-far"),
    dark_sites: Sequence[str] = (),
) -> list[str]:
    """A provider with sites, the demo game, a venue 'cafe' with a 30 ms zone and `seats` seats measured at 5 ms
    to the first site and 25 ms to the others; `dark_sites` exist but the venue has no measurement to them, so
    nothing of its is placed there. Returns the seat ids."""
    await client.fleet.CreateProvider(fleet_pb2.CreateProviderRequest(provider_id="prov", name="Provider"))
    for site in (*sites, *dark_sites):
        await client.fleet.CreateSite(
            fleet_pb2.CreateSiteRequest(site_id=site, provider_id="prov", name=site)
        )
    await client.fleet.PutGame(fleet_pb2.PutGameRequest(game_id="demo", name="Demo"))
    await client.venues.CreateVenue(venue_pb2.CreateVenueRequest(venue_id="cafe", name="Cafe"))
    await client.venues.PutZone(
        venue_pb2.PutZoneRequest(
            venue_id="cafe", zone_id="std", tier=common_pb2.TIER_720P60, latency_cap_ms=30
        )
    )
    ids = [f"s{i:03d}" for i in range(1, seats + 1)]
    await asyncio.gather(
        *(
            client.venues.PutSeat(venue_pb2.PutSeatRequest(venue_id="cafe", seat_id=s, zone_id="std"))
            for s in ids
        )
    )
    await client.venues.ReportLatency(
        venue_pb2.ReportLatencyRequest(
            venue_id="cafe",
            samples=[
                venue_pb2.LatencySample(site_id=site, rtt_ms=5 if i == 0 else 25)
                for i, site in enumerate(sites)
            ],
        )
    )
    return ids


async def seed_store(pool: asyncpg.Pool, *, seats: int) -> list[str]:
    """The same world as `seed`, written through the store modules (for tests of the store without a broker)."""
    await fleet_store.create_provider(pool, "prov", "Provider")
    for site in ("site-near", "site-far"):
        await fleet_store.create_site(pool, site, "prov", site, "")
    await game_store.put_game(pool, "demo", "Demo", 0)
    await venue_store.create_venue(pool, "cafe", "Cafe")
    await venue_store.put_zone(pool, "cafe", "std", "720P60", 30)
    ids = [f"s{i:03d}" for i in range(1, seats + 1)]
    for seat in ids:
        await venue_store.put_seat(pool, "cafe", seat, "std")
    await venue_store.report_latency(pool, "cafe", [("site-near", 5), ("site-far", 25)])
    return ids


def registration(
    host_id: str, *, epoch: int, slots: int, site_id: str = "site-near"
) -> host_store.Registration:
    return host_store.Registration(
        host_id=host_id,
        provider_id="prov",
        site_id=site_id,
        epoch=epoch,
        agent_version="model",
        gpu_class="rtx4080",
        slots=slots,
        price_micros=1_000_000,
        games_cached=("demo",),
    )


# -- a scripted agent that reconnects -----------------------------------------------------------------------------


class FleetAgent:
    """A host's agent on the real protocol, without media, that behaves like gpu_agent.link.BrokerLink: it stays
    connected (rotating through `targets`), heartbeats, brings every started session to READY, reports what it
    runs when it reconnects under the same epoch, and lets its sessions go and takes a newer epoch when the broker
    retires the old one. It records the most sessions it ever ran at once (never more than its slots if no slot is
    handed out twice)."""

    def __init__(
        self,
        targets: Sequence[str],
        host_id: str,
        *,
        epoch: int = 1,
        slots: int = 4,
        site_id: str = "site-near",
        heartbeat_s: float | None = None,
    ) -> None:
        self.targets = list(targets)
        self.host_id = host_id
        self.epoch = epoch
        self.slots = slots
        self.site_id = site_id
        self._heartbeat_s = heartbeat_s
        self.running: dict[str, int] = {}
        self.connections = 0
        self.connected_at: list[float] = []
        # Every command received: (monotonic time, kind, session id).
        self.journal: list[tuple[float, str, str]] = []
        self.refusals: list[str] = []
        self.peak = 0
        self.overbooked: list[str] = []
        self.connected = asyncio.Event()
        self._clients = [BrokerClient(t, options=AGENT_CHANNEL_OPTIONS) for t in self.targets]
        self._task: asyncio.Task[None] | None = None
        self._turn = 0

    def start(self) -> FleetAgent:
        self._task = asyncio.create_task(self._run(), name=f"fleet-agent-{self.host_id}")
        return self

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for c in self._clients:
            await c.close()

    def _register(self) -> agent_pb2.Register:
        return agent_pb2.Register(
            host_id=self.host_id,
            provider_id="prov",
            site_id=self.site_id,
            epoch=self.epoch,
            agent_version="fleet-agent",
            inventory=agent_pb2.HostInventory(
                gpu_class="rtx4080",
                slots=self.slots,
                games_cached=["demo"],
                media_addresses=["127.0.0.1"],
                price_micros_per_slot_hour=1_000_000,
            ),
            running=[agent_pb2.RunningSession(session_id=s, state=st) for s, st in self.running.items()],
        )

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            client = self._clients[self._turn % len(self._clients)]
            link = AgentLinkClient(client, self._register())
            try:
                registered = await link.open(timeout_s=5)
                self.connections += 1
                self.connected_at.append(time.monotonic())
                backoff = 0.1
                self.connected.set()
                await self._serve(link, registered)
            except aio.AioRpcError as exc:
                details = exc.details() or ""
                if exc.code() is grpc.StatusCode.FAILED_PRECONDITION and "epoch" in details:
                    # Declared lost or replaced: as a restarted agent would, let the sessions go, new epoch.
                    self.refusals.append(details)
                    self.running.clear()
                    self.epoch += 1
            except (TimeoutError, OSError, ConnectionError):
                pass
            finally:
                self.connected.clear()
                await link.close()
            self._turn += 1
            await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, 1.0)

    async def _serve(self, link: AgentLinkClient, registered: agent_pb2.Registered) -> None:
        interval = self._heartbeat_s or registered.heartbeat_interval_ms / 1000

        async def beat() -> None:
            while True:
                await link.heartbeat(cpu_load=0.1)
                await asyncio.sleep(interval)

        beating = asyncio.create_task(beat())
        try:
            async for msg in link.commands():
                kind = msg.WhichOneof("body")
                self.journal.append((time.monotonic(), kind or "", _command_session(msg)))
                if kind == "start_session":
                    sid = msg.start_session.session_id
                    if sid in self.running:
                        continue
                    self.running[sid] = S.SESSION_STATE_STARTING
                    if len(self.running) > self.slots:
                        self.overbooked.append(f"{sid} started while running {sorted(self.running)}")
                    self.peak = max(self.peak, len(self.running))
                    await link.report(sid, S.SESSION_STATE_STARTING)
                    await link.report(sid, S.SESSION_STATE_READY)
                    self.running[sid] = S.SESSION_STATE_READY
                elif kind == "stop_session":
                    self.running.pop(msg.stop_session.session_id, None)
                elif kind == "negotiate":
                    await link.answer(
                        msg.negotiate.correlation_id,
                        sdp="v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n",
                    )
            raise ConnectionError("the broker closed the link")
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await beating


def _command_session(msg: agent_pb2.BrokerMessage) -> str:
    kind = msg.WhichOneof("body")
    if kind == "start_session":
        return str(msg.start_session.session_id)
    if kind == "stop_session":
        return str(msg.stop_session.session_id)
    if kind == "negotiate":
        return str(msg.negotiate.session_id)
    return ""


# -- seats under load ---------------------------------------------------------------------------------------------


_RETRY = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
)


@dataclasses.dataclass
class Outage:
    """A stretch during which a seat's calls failed, from the first failure to the next success."""

    began: float
    ended: float | None = None


class SeatLoad:
    """Seats that play sessions one after another through the public API: StartSession (retried with the same
    request id until it answers), wait until READY, hold, EndSession (retried), again. Every answer is kept."""

    def __init__(
        self,
        clients: Sequence[BrokerClient],
        seats: Sequence[str],
        *,
        hold_s: float = 0.3,
        call_timeout_s: float = 2.0,
        ready_timeout_s: float = 20.0,
    ) -> None:
        self.clients = list(clients)
        self.seats = list(seats)
        self.hold_s = hold_s
        self.call_timeout_s = call_timeout_s
        self.ready_timeout_s = ready_timeout_s
        # request id -> (session id, created) for every StartSession answered, in order of answers.
        self.answers: dict[str, list[tuple[str, bool]]] = collections.defaultdict(list)
        self.tokens: dict[str, str] = {}
        self.codes: collections.Counter[str] = collections.Counter()
        self.outages: list[Outage] = []
        self.played = 0
        self.ended_by_us: set[str] = set()
        # Seconds from StartSession's answer to READY; sessions that ended before READY (why); never READY in time.
        self.ready_waits: list[float] = []
        self.ended_early: dict[str, str] = {}
        self.never_ready: list[str] = []
        self._open_outage: dict[str, Outage] = {}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> SeatLoad:
        self._tasks = [asyncio.create_task(self._seat(i, s)) for i, s in enumerate(self.seats)]
        return self

    async def stop(self) -> None:
        self._stop.set()
        async with asyncio.timeout(60):
            await asyncio.gather(*self._tasks)

    @property
    def bad_codes(self) -> dict[str, int]:
        """Answers a client must never see: UNKNOWN, INTERNAL (a bug), or anything but the expected ones."""
        ok = {"OK", "UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"}
        return {k: v for k, v in self.codes.items() if k not in ok}

    def longest_outage_s(self) -> float:
        spans = [o.ended - o.began for o in self.outages if o.ended is not None]
        return max(spans, default=0.0)

    def _failed(self, seat: str) -> None:
        if seat not in self._open_outage:
            outage = Outage(time.monotonic())
            self._open_outage[seat] = outage
            self.outages.append(outage)

    def _succeeded(self, seat: str) -> None:
        outage = self._open_outage.pop(seat, None)
        if outage is not None:
            outage.ended = time.monotonic()

    async def _call(self, seat: str, i: int, method: str, request: Any) -> Any:
        """Call SessionService.`method` until it answers (at most 60 s), rotating through the clients (replicas).

        Every call here is idempotent (StartSession by its request id), so a seat retries whatever left the outcome
        unknown: UNAVAILABLE and its own deadline, and also INTERNAL and UNKNOWN, which are counted as bugs."""
        attempt = 0
        deadline = time.monotonic() + 60
        while True:
            client = self.clients[(i + attempt) % len(self.clients)]
            try:
                result = await getattr(client.sessions, method)(request, timeout=self.call_timeout_s)
            except aio.AioRpcError as exc:
                self.codes[exc.code().name] += 1
                if exc.code() not in _RETRY:
                    self._succeeded(seat)  # the broker answered
                    raise
                self._failed(seat)
                attempt += 1
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(min(0.05 * 2**attempt, 0.5))
                continue
            self.codes["OK"] += 1
            self._succeeded(seat)
            return result

    async def _seat(self, i: int, seat: str) -> None:
        while not self._stop.is_set():
            try:
                await self._play(i, seat)
            except aio.AioRpcError:
                await asyncio.sleep(0.2)

    async def _play(self, i: int, seat: str) -> None:
        rid = f"{seat}-{uuid.uuid4().hex[:12]}"
        request = session_pb2.StartSessionRequest(
            request_id=rid, venue_id="cafe", seat_id=seat, game_id="demo"
        )
        started = await self._call(seat, i, "StartSession", request)
        sid = started.session.session_id
        self.answers[rid].append((sid, started.created))
        self.tokens[sid] = started.session_token
        get = session_pb2.GetSessionRequest(session_id=sid)
        asked = time.monotonic()
        while not self._stop.is_set() and time.monotonic() < asked + self.ready_timeout_s:
            got = await self._call(seat, i, "GetSession", get)
            if got.session.state == S.SESSION_STATE_READY:
                self.ready_waits.append(time.monotonic() - asked)
                break
            if got.session.state == S.SESSION_STATE_ENDED:
                self.ended_early[sid] = common_pb2.EndReason.Name(got.session.end_reason)
                break
            await asyncio.sleep(0.05)
        else:
            if not self._stop.is_set():
                self.never_ready.append(sid)
        await asyncio.sleep(self.hold_s * random.uniform(0.5, 1.5))
        end = session_pb2.EndSessionRequest(session_id=sid, session_token=started.session_token)
        await self._call(seat, i, "EndSession", end)
        self.ended_by_us.add(sid)
        self.played += 1


# -- the store's invariants, from the database ---------------------------------------------------------------------

_NEXT = {"PENDING": "PLACED", "PLACED": "STARTING", "STARTING": "READY", "READY": "STREAMING"}


async def violations(conn: asyncpg.Connection, *, history: bool = True) -> list[str]:
    """Every broken invariant of the store, read in one snapshot (REPEATABLE READ): an empty list when all hold.

    - at most one live session per seat; one session per (venue, request id)
    - each host's free slots = its slots - the slots its live sessions hold, within 0..slots (no slot handed out
      twice, no half-applied batch)
    - a session's seq = the number of its recorded transitions, and its history is a legal path of the lifecycle
      (PENDING, then one step forward at a time, or ENDED from any live state; nothing after ENDED), so no
      session is placed twice; skipped with history=False, for frequent samples
    - ENDED iff an end reason; a session on a host names it; no live session on a host that is lost or offline
    """
    out: list[str] = []
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        for r in await conn.fetch(
            "SELECT venue_id, seat_id, count(*) AS n FROM sessions WHERE state <> 'ENDED' GROUP BY 1, 2 "
            "HAVING count(*) > 1"
        ):
            out.append(f"seat {r['venue_id']}/{r['seat_id']} has {r['n']} live sessions")
        for r in await conn.fetch(
            "SELECT venue_id, request_id, count(*) AS n FROM sessions GROUP BY 1, 2 HAVING count(*) > 1"
        ):
            out.append(f"request {r['request_id']} made {r['n']} sessions")
        for r in await conn.fetch(
            """SELECT h.host_id, h.slots, h.free_slots,
                      coalesce(sum(s.slots) FILTER (WHERE s.state = ANY($1::text[])), 0)::int AS held
               FROM hosts h LEFT JOIN sessions s ON s.host_id = h.host_id
               GROUP BY h.host_id, h.slots, h.free_slots""",
            list(ON_HOST),
        ):
            if r["held"] > r["slots"] or r["free_slots"] != r["slots"] - r["held"]:
                out.append(
                    f"host {r['host_id']}: slots {r['slots']}, free {r['free_slots']}, held by live sessions "
                    f"{r['held']}"
                )
        for r in await conn.fetch(
            """SELECT s.session_id, s.state, h.status FROM sessions s JOIN hosts h ON h.host_id = s.host_id
               WHERE s.state = ANY($1::text[]) AND h.status <> 'online'""",
            list(ON_HOST),
        ):
            out.append(f"session {r['session_id']} is {r['state']} on a host that is {r['status']}")
        for r in await conn.fetch(
            "SELECT session_id FROM sessions WHERE (state = 'ENDED') <> (end_reason IS NOT NULL) "
            "OR (state = ANY($1::text[]) AND host_id IS NULL)",
            list(ON_HOST),
        ):
            out.append(f"session {r['session_id']}: state, reason and host disagree")
        if not history:
            return out
        sessions = {
            r["session_id"]: r for r in await conn.fetch("SELECT session_id, seq, state FROM sessions")
        }
        paths: dict[Any, list[asyncpg.Record]] = collections.defaultdict(list)
        for r in await conn.fetch(
            "SELECT session_id, seq, from_state, to_state FROM session_transitions ORDER BY session_id, seq"
        ):
            paths[r["session_id"]].append(r)
        for sid, row in sessions.items():
            path = paths.get(sid, [])
            problem = _path_problem(row["state"], row["seq"], path)
            if problem:
                out.append(f"session {sid}: {problem}")
    return out


def _path_problem(state: str, seq: int, path: Sequence[asyncpg.Record]) -> str:
    if [t["seq"] for t in path] != list(range(1, len(path) + 1)) or len(path) != seq:
        return f"seq {seq} but transitions {[t['seq'] for t in path]}"
    if not path or path[0]["from_state"] is not None or path[0]["to_state"] != "PENDING":
        return "history does not begin with PENDING"
    for prev, cur in itertools.pairwise(path):
        if cur["from_state"] != prev["to_state"]:
            return f"transition {cur['seq']} starts from {cur['from_state']}, not {prev['to_state']}"
        if prev["to_state"] == "ENDED":
            return f"moved after ENDED (transition {cur['seq']})"
        frm, to = lifecycle.State(cur["from_state"]), lifecycle.State(cur["to_state"])
        if to is not lifecycle.State.ENDED and _NEXT.get(frm.value) != to.value:
            return f"illegal move {frm} -> {to}"
    if path[-1]["to_state"] != state:
        return f"history ends {path[-1]['to_state']} but the session is {state}"
    return ""


async def check_store(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        found = await violations(conn)
    finally:
        await conn.close()
    assert not found, "store invariants broken:\n" + "\n".join(found[:30])


async def db_now(conn: asyncpg.Connection) -> float:
    """The database clock as seconds since the epoch (the same clock as time.time() on this machine)."""
    value: float = await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())::float8")
    return value


@contextlib.asynccontextmanager
async def running_broker(config: BrokerConfig) -> AsyncIterator[Broker]:
    """An in-process broker replica (broker.server.Broker) for the length of the block."""
    broker = Broker(config)
    await broker.start()
    failed = False
    try:
        yield broker
    except BaseException:
        failed = True
        raise
    finally:
        try:
            await broker.stop(grace_s=1.0)
        except Exception:
            if not failed:  # else the block's own failure (or xfail) is what the test reports
                raise


def report(name: str, **figures: object) -> None:
    """Print the measured figures of a fault test in one line (pytest -s, or the captured output of a failure)."""
    print(f"FAULT {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
