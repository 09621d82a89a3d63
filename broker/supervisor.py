"""`cloudseat-broker serve`: one broker on every core, its roles in processes of their own.

    supervisor (this process)   the database (embedded unless --database-url), migrations, the processes below,
       │                        the ports they share; stops them all on SIGTERM, and all of them when one dies
       ├─ tenant workers × N    the tenant-facing RPCs on --listen and the consoles on --http-listen, both shared
       │                        by every worker (SO_REUSEPORT: the kernel deals connections among them)
       ├─ agents                the agents' links on --agent-listen, and a relay port for calls forwarded to them
       └─ leader                contends for the placement lease; while it holds it: places, judges liveness, meters

One asyncio loop serves one core; Python's GIL keeps a process on one. So the tenant RPCs, which grow with the
seats, get as many processes as there are cores, and the agents' links and the placement work each get one of their
own, where a long solve or a burst of reports takes nothing from a seat's call. The processes share nothing but the
database — coordinated exactly as separate replicas are (broker.server) — and a small file of counters
(broker.counters) so that /metrics shows the whole broker.

A child is started with the `spawn` method (a fresh interpreter: gRPC's threads do not survive fork) and dies with
this process (Linux's parent-death signal), so a killed broker leaves nothing serving behind it. A child that dies on
its own takes the whole broker down: the service manager or Kubernetes restarts it whole, as it would a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import structlog
from cloudseat import errors, logs

from broker import collector
from broker.config import BrokerConfig
from broker.counters import Counters
from broker.server import ALL_ROLES, Broker, Role

log = structlog.get_logger(__name__)

# A child says it serves within this long, or the broker does not start.
_START_TIMEOUT_S = 120.0
_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15


@dataclasses.dataclass(frozen=True, slots=True)
class _Plan:
    """One child process: its roles and its row of the counters."""

    name: str
    roles: frozenset[Role]
    row: int
    # Added to the process's niceness (os.nice): lower priority for the CPU than the others'.
    nice: int = 0


def plan(roles: frozenset[Role], workers: int, tenant_nice: int = 0) -> list[_Plan]:
    """The processes a broker of `roles` with `workers` tenant workers runs; the tenant workers `tenant_nice` lower
    in the CPU's priority than the agents' and the leader's processes."""
    out: list[_Plan] = []
    if Role.TENANT in roles:
        out += [_Plan(f"tenant-{i}", frozenset({Role.TENANT}), 0, tenant_nice) for i in range(workers)]
    if Role.AGENTS in roles:
        out.append(_Plan("agents", frozenset({Role.AGENTS}), 0))
    if Role.LEADER in roles:
        out.append(_Plan("leader", frozenset({Role.LEADER}), 0))
    return [dataclasses.replace(p, row=i + 1) for i, p in enumerate(out)]


def _fixed_port(address: str | None) -> str | None:
    """`address` with port 0 replaced by a free port now, so that processes sharing it bind the same one."""
    if address is None:
        return None
    host, _, port = address.rpartition(":")
    if port != "0":
        return address
    family = socket.AF_INET6 if host.startswith("[") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host.strip("[]"), 0))
        return f"{host}:{s.getsockname()[1]}"


def _die_with_parent(name: str) -> None:
    """Linux: this process is killed when the supervisor dies, however it dies; and it goes by `name` in ps, top
    and /proc (what the fleet load test's CPU accounting reads)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        libc.prctl(_PR_SET_NAME, f"cs-{name}".encode()[:15])
    if os.getppid() == 1:  # the supervisor died before prctl took
        os._exit(1)


def _child(
    config: BrokerConfig,
    part: _Plan,
    counters_path: str,
    rows: int,
    log_config: logs.LogConfig,
    ready: multiprocessing.connection.Connection,
) -> None:
    """A child's life: serve its roles until SIGTERM, telling the supervisor its ports once serving."""
    _die_with_parent(part.name)
    if part.nice:
        os.nice(part.nice)
    logs.configure(log_config.log_format, log_config.log_level)
    structlog.contextvars.bind_contextvars(process=part.name)
    counters = Counters(Path(counters_path), row=part.row, rows=rows)

    async def main() -> None:
        broker = Broker(config, roles=part.roles, counters=counters, migrate=False)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(
            signal.SIGINT, lambda: None
        )  # the supervisor decides; a terminal's ^C reaches all
        keeper: asyncio.Task[None] | None = None
        try:
            await broker.start()
            # Full garbage collections walk only what was made since the last one (broker.collector).
            keeper = asyncio.create_task(collector.keep(), name="gc-keeper")
            ready.send(
                {
                    "port": broker.port,
                    "agent_port": broker.agent_port,
                    "relay_port": broker.relay_port,
                    "console_url": broker.console_url,
                }
            )
            await stop.wait()
        finally:
            if keeper is not None:
                keeper.cancel()
            await broker.stop()

    try:
        asyncio.run(main())
    except (errors.CloudseatError, OSError) as exc:
        with contextlib.suppress(OSError):
            ready.send({"error": str(exc)})
        sys.exit(1)


class Supervisor:
    """A whole broker as processes: `await start()`, then `await wait()` or `await stop()`. `port`, `agent_port` and
    `console_url` as for broker.server.Broker."""

    def __init__(
        self,
        config: BrokerConfig,
        *,
        workers: int,
        roles: frozenset[Role] = ALL_ROLES,
        log_config: logs.LogConfig | None = None,
        tenant_nice: int = 0,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1 (0 runs the broker in one process: broker.server)")
        if Role.AGENTS in roles and config.agent_listen is None:
            raise errors.FailedPrecondition("agent_listen: the agents' process needs a port of its own")
        self.config = config
        self.roles = roles
        self.plan = plan(roles, workers, tenant_nice)
        self.log_config = log_config or logs.LogConfig()
        self.port = 0
        self.agent_port = 0
        self.console_url: str | None = None
        self.database_url = ""
        self._procs: dict[str, Any] = {}
        self._dir = Path(tempfile.mkdtemp(prefix="cloudseat-broker-"))
        self.counters: Counters | None = None
        self._failed = asyncio.Event()

    async def start(self) -> None:
        cfg = self.config
        url = cfg.database_url
        if url is None:
            from broker.store import embedded

            url = await asyncio.to_thread(embedded.start, cfg.data_dir)
        self.database_url = url
        import asyncpg

        from broker.store import migrate

        conn = await asyncpg.connect(url)
        try:
            applied = await migrate.apply(conn)
        finally:
            await conn.close()
        log.info("database ready", migrations_applied=applied)
        shared = dataclasses.replace(
            cfg,
            database_url=url,
            listen=_fixed_port(cfg.listen) or cfg.listen,
            agent_listen=_fixed_port(cfg.agent_listen),
            http_listen=_fixed_port(cfg.http_listen),
        )
        counters_path = self._dir / "counters"
        rows = len(self.plan) + 1
        Counters.create(counters_path, rows)
        self.counters = Counters(counters_path, row=0, rows=rows)
        ctx = multiprocessing.get_context("spawn")
        waiting: dict[str, multiprocessing.connection.Connection] = {}
        for part in self.plan:
            mine, theirs = ctx.Pipe(duplex=False)
            proc = ctx.Process(
                target=_child,
                name=f"cloudseat-broker-{part.name}",
                args=(shared, part, str(counters_path), rows, self.log_config, theirs),
            )
            proc.start()
            theirs.close()
            self._procs[part.name] = proc
            waiting[part.name] = mine
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _START_TIMEOUT_S
        for name, conn in waiting.items():
            answer = await self._answer(name, conn, deadline - loop.time())
            if "error" in answer:
                await self.stop()
                raise errors.FailedPrecondition(
                    f"the broker's {name} process could not start: {answer['error']}"
                )
            if name.startswith("tenant"):
                self.port = answer["port"]
                self.console_url = answer["console_url"] or self.console_url
            if name == "agents":
                self.agent_port = answer["agent_port"]
            conn.close()
        for name, proc in self._procs.items():
            loop.add_reader(proc.sentinel, self._exited, name)
        log.info(
            "broker serving",
            roles=sorted(str(r) for r in self.roles),
            processes=[p.name for p in self.plan],
            listen=shared.listen,
            port=self.port,
            agent_port=self.agent_port,
            console_url=self.console_url,
        )

    async def _answer(
        self, name: str, conn: multiprocessing.connection.Connection, timeout_s: float
    ) -> dict[str, Any]:
        proc = self._procs[name]
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while loop.time() < end:
            if await asyncio.to_thread(conn.poll, 0.2):
                try:
                    got: dict[str, Any] = conn.recv()
                except EOFError:
                    return {"error": f"exited with code {proc.exitcode}"}
                return got
            if not proc.is_alive():
                return {"error": f"exited with code {proc.exitcode}"}
        await self.stop()
        raise errors.Unavailable(f"the broker's {name} process was not serving within {timeout_s:.0f} s")

    def _exited(self, name: str) -> None:
        loop = asyncio.get_running_loop()
        proc = self._procs[name]
        loop.remove_reader(proc.sentinel)
        if not self._failed.is_set():
            log.error("a broker process exited; stopping the broker", process=name, code=proc.exitcode)
            self._failed.set()

    def pids(self) -> dict[str, int]:
        """Each started process's pid, by its name in the plan."""
        return {name: proc.pid for name, proc in self._procs.items() if proc.pid is not None}

    async def wait_failed(self) -> None:
        """Until one of the processes exits on its own."""
        await self._failed.wait()

    async def stop(self, grace_s: float | None = None) -> None:
        """SIGTERM every process; each finishes its calls within the grace; whatever is left then is killed."""
        grace = self.config.shutdown_grace_s if grace_s is None else grace_s
        loop = asyncio.get_running_loop()
        self._failed.set()  # exits from here on are ours
        for proc in self._procs.values():
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(proc.sentinel)
            if proc.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        end = loop.time() + grace + 5.0
        for proc in self._procs.values():
            await asyncio.to_thread(proc.join, max(0.0, end - loop.time()))
            if proc.is_alive():
                proc.kill()
                await asyncio.to_thread(proc.join, 5)
        with contextlib.suppress(OSError):
            for entry in self._dir.iterdir():
                entry.unlink()
            self._dir.rmdir()
        log.info("broker stopped")
