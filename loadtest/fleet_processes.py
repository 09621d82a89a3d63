"""The processes a fleet run starts besides its workers, and how it watches them: the broker (`python -m broker
serve`, under cProfile when asked), the echo server, PostgreSQL's postmaster found from its URL, py-spy; and CPU
accounting from /proc for each role.

The agent and patron workers are loadtest.fleet_agents' and loadtest.fleet_venues'; loadtest.fleet starts these
and runs the phases.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loadtest import fleet


class StartError(Exception):
    """A process the run needs did not start or serve (the broker, the echo server); the message says why."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_ticks(pid: int) -> int | None:
    """User + system CPU of a process so far, in clock ticks; None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children, ...), from one look at /proc."""
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                kids.setdefault(parent, []).append(int(entry.name))
    out, todo = [], list(kids.get(pid, ()))
    while todo:
        child = todo.pop()
        out.append(child)
        todo.extend(kids.get(child, ()))
    return out


def process_role(root: bool, comm: str, argv: Sequence[str]) -> str:
    """What one process of a program's tree does, for CPU by role: `main` for the process the run started; else
    the role its command line names (`--role X`), the name it gave itself (/proc/PID/comm, when it is not just
    the interpreter's), a multiprocessing worker, or `child`."""
    if root:
        return "main"
    for i, arg in enumerate(argv):
        if arg == "--role" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--role="):
            return arg.split("=", 1)[1]
    if comm and not comm.startswith("python"):
        return comm
    if any("multiprocessing" in arg for arg in argv):
        return "worker"
    return "child"


def _role_of(pid: int, root: int) -> str:
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        comm, argv = "", []
    return process_role(pid == root, comm, argv)


class CpuMeter:
    """% of one core each role (broker, postgres, agents, ...) used between start() and stop().

    `roles` are fixed lists of processes; `trees` are a root process and everything below it at each reading (a
    broker's workers, PostgreSQL's backends), looked up again at stop() so processes started meanwhile count. For
    the trees, `by_process` has the same figure split by what each process does (`process_role`)."""

    def __init__(self, roles: Mapping[str, Sequence[int]], trees: Mapping[str, int | None]) -> None:
        self.roles = {k: list(v) for k, v in roles.items() if v}
        self.trees = {k: v for k, v in trees.items() if v is not None}
        self.first: dict[str, dict[int, int]] = {}
        self.by_process: dict[str, dict[str, float]] = {}
        self.processes: dict[str, dict[str, int]] = {}
        self.t0 = 0.0

    def _snapshot(self) -> dict[str, dict[int, int]]:
        roles = {**self.roles, "load test (this process)": [os.getpid()]}
        for role, root in self.trees.items():
            roles[role] = [root, *descendants(root)]
        return {role: {p: t for p in pids if (t := cpu_ticks(p)) is not None} for role, pids in roles.items()}

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.first = self._snapshot()

    def stop(self) -> dict[str, float]:
        wall = max(1e-9, time.monotonic() - self.t0)
        hz = os.sysconf("SC_CLK_TCK")
        out = {}
        for role, ticks in self._snapshot().items():
            before = self.first.get(role, {})
            used = {p: t - before.get(p, 0) for p, t in ticks.items()}
            out[role] = round(100 * sum(used.values()) / hz / wall, 1)
            if role in self.trees:
                split: Counter[str] = Counter()
                count: Counter[str] = Counter()
                for p, n in used.items():
                    name = _role_of(p, self.trees[role])
                    split[name] += n
                    count[name] += 1
                self.by_process[role] = {k: round(100 * n / hz / wall, 1) for k, n in split.most_common()}
                self.processes[role] = dict(count)
        out[f"total (of {100 * len(os.sched_getaffinity(0))})"] = round(sum(out.values()), 1)
        return out


async def stop(proc: asyncio.subprocess.Process, timeout_s: float = 60) -> None:
    """SIGTERM, then SIGKILL after `timeout_s`."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout_s):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


@dataclasses.dataclass
class BrokerProcess:
    """`python -m broker serve` (under cProfile when asked), its log in a file."""

    proc: asyncio.subprocess.Process
    target: str
    #: Where its agents connect (--agent-listen): the process that holds their links.
    agent_target: str
    log: Path
    #: Its consoles' /metrics (--http-listen on a free port), where its message counter is read.
    metrics_url: str | None = None

    @classmethod
    async def start(
        cls, cfg: fleet.FleetConfig, url: str, solver: str, log: Path, cprofile: Path | None
    ) -> BrokerProcess:
        port, agent_port, http_port = _free_port(), _free_port(), _free_port()
        args = [
            "-m",
            "broker",
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--agent-listen",
            f"127.0.0.1:{agent_port}",
            "--http-listen",
            f"127.0.0.1:{http_port}",
            "--database-url",
            url,
            "--solver",
            solver,
        ]
        args += ["--log-format", "json", "--log-level", cfg.broker_log_level]
        args += [
            "--heartbeat-interval",
            str(cfg.heartbeat_interval_s),
            "--host-lost-after",
            str(cfg.host_lost_after_s),
            "--link-ping",
            str(cfg.link_ping_s),
            "--link-ping-timeout",
            str(cfg.link_ping_timeout_s),
        ]
        if cfg.workers is not None:  # only when asked: a broker without the flag still starts
            args += ["--workers", str(cfg.workers)]
        if cprofile is not None:
            args = ["-m", "cProfile", "-o", str(cprofile), *args]
        # Plaintext, no tenant tokens: the run measures placement, not TLS (docs/loadtest-fleet.md).
        env = {**os.environ, "CLOUDSEAT_INSECURE": "1"}
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, *args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env
            )
        broker = cls(
            proc, f"127.0.0.1:{port}", f"127.0.0.1:{agent_port}", log, f"http://127.0.0.1:{http_port}/metrics"
        )
        await wait_serving(broker.target, 60.0, broker)
        await wait_serving(broker.agent_target, 60.0, broker)
        return broker

    def tail(self, lines: int = 3) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.log.read_text(errors="replace").strip().splitlines()[-lines:])[-600:]
        return ""


#: The broker's count of gRPC messages in and out (label `direction`), summed over all its processes; a unary call
#: counts 2. A Prometheus counter: its samples carry the `_total` suffix.
MESSAGES_SAMPLE = "cloudseat_grpc_messages_total"


def grpc_messages(text: str) -> int | None:
    """The broker's gRPC messages so far from its /metrics text (every `cloudseat_grpc_messages_total` sample
    summed, whatever its labels); None when the broker does not count them. ValueError when it is not the
    Prometheus text format."""
    from prometheus_client.parser import text_string_to_metric_families

    found, total = False, 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == MESSAGES_SAMPLE:
                found, total = True, total + sample.value
    return round(total) if found else None


ROUNDS_SAMPLE = "cloudseat_placement_round_seconds"


def round_phases(text: str) -> dict[str, dict[str, Any]]:
    """The leader's placement rounds so far, per phase, from /metrics text: {phase: {"buckets": [(upper bound s,
    cumulative count)...], "sum_s", "count"}}; empty for a broker that does not time its rounds."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, dict[str, Any]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != ROUNDS_SAMPLE:
            continue
        for sample in family.samples:
            phase = out.setdefault(sample.labels["phase"], {"buckets": [], "sum_s": 0.0, "count": 0})
            if sample.name.endswith("_bucket"):
                phase["buckets"].append((float(sample.labels["le"]), round(sample.value)))
            elif sample.name.endswith("_sum"):
                phase["sum_s"] = sample.value
            elif sample.name.endswith("_count"):
                phase["count"] = round(sample.value)
    for phase in out.values():
        phase["buckets"].sort()
    return out


async def read_grpc_messages(url: str) -> tuple[int | None, str, dict[str, dict[str, Any]]]:
    """(the broker's gRPC messages so far, '', its placement rounds so far: round_phases) from its /metrics, or
    (None, why not, {})."""
    import urllib.request

    def fetch() -> str:
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode("utf-8", errors="replace"))

    try:
        text = await asyncio.to_thread(fetch)
        count = grpc_messages(text)
        rounds = round_phases(text)
    except (OSError, ValueError, KeyError) as exc:
        return None, f"could not read {url}: {exc}", {}
    if count is None:
        return None, f"the broker's {url} has no {MESSAGES_SAMPLE} (a broker older than the counter)", rounds
    return count, "", rounds


async def wait_serving(target: str, timeout_s: float, broker: BrokerProcess | None = None) -> None:
    """Until the gRPC health service at `target` says SERVING."""
    from grpc import aio
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    async with aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if broker is not None and broker.proc.returncode is not None:
                raise StartError(f"the broker exited with code {broker.proc.returncode}: {broker.tail()}")
            with contextlib.suppress(aio.AioRpcError):
                got = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                if got.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            if time.monotonic() > deadline:
                raise StartError(f"the broker at {target} was not serving within {timeout_s:.0f} s")
            await asyncio.sleep(0.2)


async def start_echo() -> tuple[asyncio.subprocess.Process, str]:
    """`python -m loadtest.echo` on a free port, and its HOST:PORT."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadtest.echo", "--listen", "127.0.0.1:0", stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        line = (await proc.stdout.readline()).decode()
    if not line.startswith("port "):
        raise StartError(f"the echo server did not start: {line!r}")
    return proc, f"127.0.0.1:{int(line.split()[1])}"


async def postmaster(url: str) -> int | None:
    """The PostgreSQL server's main process, when it runs on this machine and says where its data is."""
    import asyncpg

    with contextlib.suppress(Exception):
        conn = await asyncpg.connect(url)
        try:
            data_dir = await conn.fetchval("SELECT setting FROM pg_settings WHERE name = 'data_directory'")
        finally:
            await conn.close()
        return int((Path(data_dir) / "postmaster.pid").read_text().split()[0])
    return None


def _pyspy() -> list[str]:
    """py-spy from this environment's scripts, or from PATH."""
    local = Path(sys.executable).with_name("py-spy")
    return [str(local)] if local.exists() else [shutil.which("py-spy") or "py-spy"]


def pyspy_works(pid: int) -> str:
    """'' when py-spy can attach to `pid` (ptrace allowed here), else why not."""
    try:
        done = subprocess.run([*_pyspy(), "dump", "--pid", str(pid)], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return "" if done.returncode == 0 else done.stderr.decode(errors="replace").strip()[-300:]


async def pyspy_record(pid: int, duration_s: float, out: Path) -> asyncio.subprocess.Process:
    """py-spy recording `pid` and every process below it (a broker's role processes) for `duration_s` into `out`
    (raw stacks, 100 samples/s per process), without pausing them; its stderr is piped (why it failed)."""
    return await asyncio.create_subprocess_exec(
        *_pyspy(),
        *("record", "--pid", str(pid), "--subprocesses", "--duration", str(max(1, round(duration_s))), "--rate"),
        *("100", "--nonblocking", "--format", "raw", "-o", str(out)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
