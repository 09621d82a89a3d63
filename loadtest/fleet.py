"""`cloudseat-loadtest fleet`: a simulated fleet and its venues against a real broker on PostgreSQL.

    this process (orchestrator)   the region, the schedule, seeding through the public API, the progress bar,
       │                          CPU accounting, results (JSON) and the report (loadtest.report)
       ├─ PostgreSQL              embedded (pgserver, a temporary data directory) unless --database-url
       ├─ broker                  `python -m broker serve` on 127.0.0.1 (unless --broker ADDR): its own process,
       │                          so the load generator's CPU and GIL stay out of it and py-spy attaches cleanly
       ├─ echo server             `python -m loadtest.echo`: the bare-RPC yardstick
       ├─ agent processes         loadtest.fleet_agents: thousands of simulated hosts each, real Connect streams
       └─ patron processes        loadtest.fleet_venues: the venues' seats, real StartSession/WatchSession/EndSession

The region (sites, hosts with their GPU classes, prices and cached games, venues and venue→site latency) is the
placement benchmark's synthetic province (loadtest.synthetic). Each venue gets seats in proportion to the capacity
near it (the sites within a fresh request's latency target, shared with the other venues there): providers build
where the cafes are, so a request waits for the broker, not for geography.

Phases: start and seed → the echo baseline (before any agent connects: a bare RPC on an otherwise idle machine) →
agents connect and settle into their heartbeats → the measured window (`--duration`) → the requests on their way
are placed, every session is ended, the agents' streams drop. With `--compare-greedy` the window runs again with a
broker on the greedy solver (same database, fleet and schedule). docs/loadtest-fleet.md explains every figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from cloudseat import logs, settings
from cloudseat.settings import above, at_least, setting

from loadtest import fleet_agents, fleet_venues, synthetic

PROVIDER = "loadtest"
#: At most this share of a venue's seats are in its esports zone (where a site is near enough for its cap).
ESPORTS_SHARE = 0.2
#: The figures a comparison shows side by side.
HEADLINE = (
    "starts_per_s",
    "placed_ms_p50",
    "placed_ms_p99",
    "queue_wait_ms_p50",
    "queue_wait_ms_p99",
    "errors",
    "hosts_connected",
    "heartbeats_per_s",
    "cost_per_session",
    "cap_violations",
    "utilisation_fleet",
)
F64 = npt.NDArray[np.float64]


class FleetError(Exception):
    """The run could not go on (a broker or server would not start, seeding failed); the message says why."""


def _fraction(value: float) -> str | None:
    """check=: a share of something, more than none."""
    return None if 0 < value <= 1 else "must be more than 0 and at most 1"


def _share(value: float) -> str | None:
    """check=: a share that may be none but not all."""
    return None if 0 <= value < 1 else "must be at least 0 and less than 1"


def _address(value: str) -> str | None:
    """check=: HOST:PORT of a broker to call."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return "must be HOST:PORT with a port in 1..65535"
    return None


@dataclasses.dataclass(frozen=True)
class FleetConfig:
    """Everything one `fleet` run was asked to do. The settings are the subcommand's flags and
    CLOUDSEAT_LOADTEST_* variables (loadtest.cli builds it with cloudseat.settings)."""

    hosts: int = setting(10_000, "simulated GPU hosts (agents)", check=at_least(1))
    sites: int = setting(100, "edge sites", check=at_least(1))
    venues: int = setting(
        500, "venues (internet cafes); their seats follow the capacity near them", check=at_least(1)
    )
    # None: the evening-peak curve.
    rate: float | None = setting(
        None, "StartSession calls per second (Poisson) instead of the evening curve", check=above(0)
    )
    duration_s: float = setting(
        60.0,
        "seconds measured (the evening is compressed into them)",
        flag="--duration",
        env="CLOUDSEAT_LOADTEST_DURATION",
        check=above(0),
    )
    # Target this broker instead of starting one.
    broker: str | None = setting(
        None, "HOST:PORT of a running broker to target instead of starting one", check=_address
    )
    database_url: str | None = setting(
        None,
        "PostgreSQL for the broker this starts; none: an embedded, temporary one",
        parse=lambda text: text or None,
    )
    json_path: Path | None = setting(
        None,
        "write the results as one JSON object to this file",
        flag="--json",
        env="CLOUDSEAT_LOADTEST_JSON",
    )
    report_dir: Path | None = setting(
        None,
        "write report.md and PNG plots into this directory",
        flag="--report",
        env="CLOUDSEAT_LOADTEST_REPORT",
    )
    profile: bool = setting(
        False, "record where the broker's time goes (py-spy, else cProfile) into the report"
    )
    compare_greedy: bool = setting(
        False, "run the window again with the broker on the greedy solver; compare the cost"
    )
    seed: int = setting(1, "seed of the region and the arrivals")
    # The broker this starts: as its own --heartbeat-interval and --host-lost-after.
    heartbeat_interval_s: float = setting(
        5.0,
        "seconds between heartbeats (the broker this starts)",
        flag="--heartbeat-interval",
        env="CLOUDSEAT_LOADTEST_HEARTBEAT_INTERVAL",
        check=above(0),
    )
    host_lost_after_s: float = setting(
        13.0,
        "seconds of silence before a host is lost (the broker; more than --heartbeat-interval)",
        flag="--host-lost-after",
        env="CLOUDSEAT_LOADTEST_HOST_LOST_AFTER",
        check=above(0),
    )
    # 0: one per 10,000 hosts.
    agent_procs: int = setting(0, "processes for the simulated agents (0: one per 10,000)", check=at_least(0))
    patron_procs: int = setting(1, "processes for the patrons", check=at_least(1))
    streams_per_connection: int = setting(1, "agent streams sharing one HTTP/2 connection", check=at_least(1))
    seats_per_slot: float = setting(0.9, "seats per slot of capacity near each venue", check=above(0))
    peak_occupancy: float = setting(0.85, "share of seats taken at the evening's peak", check=_fraction)
    occupancy: float = setting(
        0.5, "with --rate: share of the fleet's slots busy at steady state", check=_fraction
    )
    multi_slot_share: float = setting(0.02, "share of sessions that need two slots on one host", check=_share)
    echo_s: float = setting(5.0, "seconds of the bare gRPC echo baseline", check=at_least(0))
    echo_concurrency: int = 64
    broker_log_level: str = setting(
        "info", "log level of the broker this starts (info: one line per RPC)", choices=logs.LEVELS
    )
    # The variable is named for the opposite, as the switch was: CLOUDSEAT_LOADTEST_NO_PROGRESS=1 turns it off.
    progress: bool = setting(
        True,
        "a progress bar on stderr (CLOUDSEAT_LOADTEST_NO_PROGRESS=1 turns it off)",
        env="CLOUDSEAT_LOADTEST_NO_PROGRESS",
        parse=settings.negated,
    )

    def __post_init__(self) -> None:
        if self.broker is not None and (self.profile or self.compare_greedy):
            raise ValueError(
                "--profile and --compare-greedy need the broker this command starts (drop --broker)"
            )
        if self.host_lost_after_s <= self.heartbeat_interval_s:
            raise ValueError("--host-lost-after: must be longer than --heartbeat-interval")


# -- the region -----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Region:
    sites: tuple[str, ...]
    hosts: tuple[fleet_agents.HostSpec, ...]
    venues: tuple[fleet_venues.VenueSeats, ...]  # the venues with seats
    esports_seats: dict[str, int]  # venue -> how many of its seats (the first ones) are in its esports zone
    latency: dict[str, list[tuple[str, int]]]  # venue -> measured (site, round trip ms)
    games: tuple[str, ...]
    game_weights: tuple[float, ...]
    venues_without_seats: int

    @property
    def slots(self) -> int:
        return sum(h.slots for h in self.hosts)

    def site_slots(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for h in self.hosts:
            out[h.site_id] += h.slots
        return dict(out)


def _near_capacity(lat: npt.NDArray[np.int64], site_slots: F64, within_ms: int) -> F64:
    """Each venue's share of the slots at sites within `within_ms` of it (a site's slots split evenly among the
    venues that have it that near)."""
    near = lat <= within_ms
    sharing = near.sum(axis=0)
    per_venue = np.where(sharing > 0, site_slots / np.maximum(sharing, 1), 0.0)
    return np.asarray((near * per_venue[None, :]).sum(axis=1), dtype=np.float64)


def build_region(cfg: FleetConfig) -> Region:
    """The synthetic province (loadtest.synthetic) with seats sized to the capacity near each venue."""
    from broker.placement import LatencyMatrix, Params
    from broker.placement.model import UNREACHABLE_MS

    inst = synthetic.generate(
        seed=cfg.seed, hosts=cfg.hosts, sites=cfg.sites, venues=cfg.venues, requests=0, duration_ms=1000
    )
    matrix = inst.latency
    assert isinstance(matrix, LatencyMatrix)
    hosts = tuple(
        fleet_agents.HostSpec(
            h.id, h.site_id, h.gpu_class, h.total_slots, h.price_micros, tuple(sorted(h.games))
        )
        for h in inst.hosts
    )
    site_slots = np.zeros(len(matrix.sites))
    for h in hosts:
        site_slots[matrix.site_index[h.site_id]] += h.slots
    policy = Params().latency_policy
    # Sized by what a fresh request's target reaches, so every request can be placed at once when the broker can.
    standard = _near_capacity(matrix.ms, site_slots, policy.target_ms(fleet_venues.STANDARD[1], 0))
    esports = _near_capacity(matrix.ms, site_slots, policy.target_ms(fleet_venues.ESPORTS[1], 0))
    venues, n_esports, latency = [], {}, {}
    for v, venue_id in enumerate(matrix.venues):
        if standard[v] <= 0:
            continue
        seats = max(2, int(cfg.seats_per_slot * standard[v]))
        e = int(min(ESPORTS_SHARE * seats, cfg.seats_per_slot * esports[v] / 2))
        venues.append(
            fleet_venues.VenueSeats(venue_id, tuple(f"{'e' if j < e else 's'}{j:04d}" for j in range(seats)))
        )
        n_esports[venue_id] = e
        row = matrix.ms[v]
        latency[venue_id] = [(s, int(row[i])) for i, s in enumerate(matrix.sites) if row[i] < UNREACHABLE_MS]
    games = tuple(f"game-{i:02d}" for i in range(synthetic.N_GAMES))
    weights = tuple(float(w) for w in 1.0 / np.arange(1, len(games) + 1) ** 1.1)  # Zipf, as synthetic's trace
    return Region(
        matrix.sites,
        hosts,
        tuple(venues),
        n_esports,
        latency,
        games,
        weights,
        len(matrix.venues) - len(venues),
    )


def make_schedule(cfg: FleetConfig, region: Region) -> fleet_venues.Schedule:
    rng = np.random.default_rng(cfg.seed + 1)
    seats = [len(v.seats) for v in region.venues]
    if cfg.rate is None:
        return fleet_venues.peak_schedule(
            rng,
            seats=seats,
            game_weights=region.game_weights,
            duration_s=cfg.duration_s,
            peak_occupancy=cfg.peak_occupancy,
            multi_share=cfg.multi_slot_share,
        )
    return fleet_venues.rate_schedule(
        rng,
        rate_per_s=cfg.rate,
        seats=seats,
        game_weights=region.game_weights,
        duration_s=cfg.duration_s,
        # Little's law: this mean length keeps `occupancy` of the slots (or of the seats, if fewer) busy.
        mean_session_s=cfg.occupancy * min(region.slots, sum(seats)) / cfg.rate,
        multi_share=cfg.multi_slot_share,
    )


# -- processes ------------------------------------------------------------------------------------------------


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


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
    return out


class _CpuMeter:
    """% of one core each role (broker, postgres, agents, ...) used between start() and stop()."""

    def __init__(self, roles: Mapping[str, Sequence[int]], postmaster: int | None) -> None:
        self.roles = {k: list(v) for k, v in roles.items() if v}
        self.postmaster = postmaster
        self.first: dict[str, dict[int, int]] = {}
        self.t0 = 0.0

    def _snapshot(self) -> dict[str, dict[int, int]]:
        roles = {**self.roles, "load test (this process)": [os.getpid()]}
        if self.postmaster is not None:
            roles["postgres"] = [self.postmaster, *_children(self.postmaster)]
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
            out[role] = round(100 * sum(t - before.get(p, 0) for p, t in ticks.items()) / hz / wall, 1)
        out[f"total (of {100 * (os.cpu_count() or 1)})"] = round(sum(out.values()), 1)
        return out


async def _stop(proc: asyncio.subprocess.Process, timeout_s: float = 60) -> None:
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
class _Broker:
    """`python -m broker serve` (under cProfile when asked), its log in a file."""

    proc: asyncio.subprocess.Process
    target: str
    log: Path

    @classmethod
    async def start(
        cls, cfg: FleetConfig, url: str, solver: str, log: Path, cprofile: Path | None
    ) -> _Broker:
        port = _free_port()
        args = [
            "-m",
            "broker",
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
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
        ]
        if cprofile is not None:
            args = ["-m", "cProfile", "-o", str(cprofile), *args]
        # Plaintext, no tenant tokens: the run measures placement, not TLS (docs/loadtest-fleet.md).
        env = {**os.environ, "CLOUDSEAT_INSECURE": "1"}
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, *args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env
            )
        broker = cls(proc, f"127.0.0.1:{port}", log)
        await wait_serving(broker.target, 60.0, broker)
        return broker

    def tail(self, lines: int = 3) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.log.read_text(errors="replace").strip().splitlines()[-lines:])[-600:]
        return ""


async def wait_serving(target: str, timeout_s: float, broker: _Broker | None = None) -> None:
    """Until the gRPC health service at `target` says SERVING."""
    from grpc import aio
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    async with aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if broker is not None and broker.proc.returncode is not None:
                raise FleetError(f"the broker exited with code {broker.proc.returncode}: {broker.tail()}")
            with contextlib.suppress(aio.AioRpcError):
                got = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                if got.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            if time.monotonic() > deadline:
                raise FleetError(f"the broker at {target} was not serving within {timeout_s:.0f} s")
            await asyncio.sleep(0.2)


async def _start_echo() -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadtest.echo", "--listen", "127.0.0.1:0", stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        line = (await proc.stdout.readline()).decode()
    if not line.startswith("port "):
        raise FleetError(f"the echo server did not start: {line!r}")
    return proc, f"127.0.0.1:{int(line.split()[1])}"


async def _postmaster(url: str) -> int | None:
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


# -- one measured window --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Window:
    """What one run of the window brought back, before `summarise`."""

    label: str
    solver: str
    scheduled: int = 0
    t_zero: float = 0.0
    patrons: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    agents: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    connect: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    echo: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    cpu: dict[str, float] = dataclasses.field(default_factory=dict)
    hosts_connected: int = 0
    hosts_connected_min: int = 0
    profile: dict[str, Any] | None = None
    profile_note: str = ""


def _partition(
    region: Region, schedule: fleet_venues.Schedule, n: int
) -> list[tuple[list[int], fleet_venues.Schedule]]:
    """Venues dealt to `n` patron processes (most seats first, to the least loaded), with their arrivals (venue
    indices renumbered within each process)."""
    groups: list[list[int]] = [[] for _ in range(n)]
    load = [0] * n
    for v in sorted(range(len(region.venues)), key=lambda v: -len(region.venues[v].seats)):
        k = load.index(min(load))
        groups[k].append(v)
        load[k] += len(region.venues[v].seats)
    out = []
    for group in groups:
        local = np.full(len(region.venues), -1, dtype=np.int64)
        local[group] = np.arange(len(group))
        sub = schedule.subset(np.isin(schedule.venue, group))
        out.append((group, dataclasses.replace(sub, venue=local[sub.venue])))
    return out


def _spawn(
    workers: fleet_agents.Workers,
    cfg: FleetConfig,
    region: Region,
    schedule: fleet_venues.Schedule,
    target: str,
) -> str:
    n_agent = cfg.agent_procs or max(1, -(-len(region.hosts) // 10_000))
    epoch = time.time_ns() // 1000  # newer than any earlier run's: a re-registration replaces it
    for i in range(n_agent):
        spec = fleet_agents.AgentWorkerSpec(
            i,
            target,
            PROVIDER,
            region.hosts[i::n_agent],
            epoch,
            streams_per_connection=cfg.streams_per_connection,
        )
        workers.spawn(f"agents-{i}", fleet_agents.main, spec)
    run_id = f"r{epoch:x}"
    for i, (group, sub) in enumerate(_partition(region, schedule, cfg.patron_procs)):
        venues = tuple(region.venues[v] for v in group)
        spec2 = fleet_venues.PatronWorkerSpec(
            i, target, run_id, venues, region.games, sub, seed=cfg.seed * 1000 + i
        )
        workers.spawn(f"patrons-{i}", fleet_venues.main, spec2)
    return run_id


async def _bar(
    cfg: FleetConfig, until: asyncio.Future[Any], total: int, desc: str, value: Callable[[], int]
) -> Any:
    """A progress bar of value() out of `total` until `until` is done; returns its result."""
    from tqdm import tqdm  # type: ignore[import-untyped]

    with tqdm(total=total, desc=desc, disable=not cfg.progress, mininterval=0.5) as bar:
        while not until.done():
            await asyncio.wait({until}, timeout=0.5)
            bar.n = min(total, value())
            bar.refresh()
        bar.n = min(total, value())
    return until.result()


async def run_window(
    cfg: FleetConfig,
    region: Region,
    schedule: fleet_venues.Schedule,
    target: str,
    *,
    label: str,
    solver: str,
    broker_pid: int | None,
    postmaster: int | None,
    echo_target: str | None,
    profile_to: Path | None,
) -> Window:
    """Agents connect, the patrons play the schedule for the window, everything ends; returns what came back."""
    win = Window(label, solver, scheduled=len(schedule))
    workers = fleet_agents.Workers()
    try:
        _spawn(workers, cfg, region, schedule, target)
        agents, patrons = workers.names("agents-"), workers.names("patrons-")
        await workers.expect("ready", [*agents, *patrons], 120)

        if echo_target is not None and cfg.echo_s > 0:
            per = max(1, cfg.echo_concurrency // len(patrons))
            workers.send(patrons, ("echo", echo_target, cfg.echo_s, per, time.monotonic() + 0.5))
            win.echo = list((await workers.expect("echo", patrons, cfg.echo_s + 60)).values())

        workers.send(agents, ("connect",))
        connected = asyncio.ensure_future(workers.expect("connected", agents, 120 + len(region.hosts) / 20))
        registered = functools.partial(workers.total, "connecting", "connected")
        win.connect = list(
            (await _bar(cfg, connected, len(region.hosts), f"{label}: hosts", registered)).values()
        )
        # Let every host settle into its heartbeat phase before the clock starts.
        await asyncio.sleep(min(cfg.heartbeat_interval_s, 5.0))

        win.t_zero = t_zero = time.monotonic() + 0.5
        roles = {"broker": [broker_pid] if broker_pid else [], "agent processes": workers.pids("agents-")}
        meter = _CpuMeter({**roles, "patron processes": workers.pids("patrons-")}, postmaster)
        workers.send(patrons, ("go", t_zero, cfg.duration_s))
        await asyncio.sleep(max(0.0, t_zero - time.monotonic()))
        meter.start()
        profiler = None
        if profile_to is not None and broker_pid is not None:
            profiler = await asyncio.create_subprocess_exec(
                *_pyspy(),
                *(
                    "record",
                    "--pid",
                    str(broker_pid),
                    "--duration",
                    str(max(1, round(cfg.duration_s))),
                    "--rate",
                ),
                *("100", "--nonblocking", "--format", "raw", "-o", str(profile_to)),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        finals = asyncio.ensure_future(workers.expect("final", patrons, cfg.duration_s + 180))
        seen = await _watch_window(cfg, workers, finals, t_zero, label, meter, win)
        win.hosts_connected_min = min(seen, default=win.hosts_connected)
        win.patrons = list(finals.result().values())
        if profiler is not None and profile_to is not None:
            _, err = await profiler.communicate()
            win.profile_note = (
                f"py-spy failed (exit {profiler.returncode}): {err.decode(errors='replace')[-300:]}"
            )
            if profiler.returncode == 0:
                from loadtest import report

                with contextlib.suppress(OSError):
                    win.profile = await asyncio.to_thread(report.pyspy_summary, profile_to)
                    win.profile_note = ""
        workers.send(agents, ("stop",))
        win.agents = list((await workers.expect("final", agents, 180)).values())
    finally:
        await workers.close()
    return win


async def _watch_window(
    cfg: FleetConfig,
    workers: fleet_agents.Workers,
    finals: asyncio.Future[Any],
    t_zero: float,
    label: str,
    meter: _CpuMeter,
    win: Window,
) -> list[int]:
    """The progress bar over the window; takes the CPU reading and the hosts connected when the window ends.
    Returns the hosts connected at each look during the window."""
    from tqdm import tqdm

    seen: list[int] = []
    total = round(cfg.duration_s)
    with tqdm(
        total=total, desc=f"{label}: window", unit="s", disable=not cfg.progress, mininterval=0.5
    ) as bar:
        last_started, last_t = 0, time.monotonic()
        while not finals.done():
            await asyncio.wait({finals}, timeout=1.0)
            now = time.monotonic()
            started, connected = workers.total("progress", "started"), workers.total("stats", "connected")
            if now - t_zero <= cfg.duration_s:
                seen.append(connected)
                if not win.cpu and now - t_zero >= cfg.duration_s - 0.5:
                    win.cpu, win.hosts_connected = meter.stop(), connected
            recent = [
                x
                for (_, k), v in workers.latest.items()
                if k == "progress"
                for x in v.get("recent_placed_ms", [])
            ]
            bar.n = min(total, max(0, round(now - t_zero)))
            bar.set_postfix(
                starts_s=round((started - last_started) / max(1e-3, now - last_t)),
                p99_ms=round(float(np.percentile(recent, 99)), 1) if recent else None,
                waiting=workers.total("progress", "waiting"),
                hosts=connected,
                errors=workers.total("progress", "errors"),
                refresh=False,
            )
            bar.refresh()
            last_started, last_t = started, now
    if not win.cpu:
        win.cpu, win.hosts_connected = meter.stop(), workers.total("stats", "connected")
    return seen


# -- results --------------------------------------------------------------------------------------------------


def _q(values: F64, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values.size else None


def _mean(values: F64) -> float | None:
    return round(float(values.mean()), 1) if values.size else None


def _per_second(times: F64, length: int) -> list[int]:
    idx = np.floor(times).astype(np.int64)
    counts: list[int] = np.bincount(idx[(idx >= 0) & (idx < length)], minlength=length).tolist()
    return counts


def _utilisation(region: Region, win: Window, d: float) -> tuple[dict[str, float], float, list[float]]:
    """Per site: busy slots ÷ slots, averaged over the window; the fleet's; busy slots per second (plot)."""
    site_slots = region.site_slots()
    busy: dict[str, float] = {}
    grid = np.arange(0, int(np.ceil(d)) + 1, dtype=np.float64)
    fleet = np.zeros(grid.size)
    for a in win.agents:  # each agent process samples its own hosts' busy slots once a second
        samples = [(t - win.t_zero, b) for t, b in a["busy_samples"]]
        inside = [b for t, b in samples if 0 <= t <= d]
        for site in {s for b in inside for s in b}:
            busy[site] = busy.get(site, 0.0) + float(np.mean([b.get(site, 0) for b in inside]))
        if samples:
            ts = np.array([t for t, _ in samples])
            fleet += np.interp(
                grid, ts, np.array([sum(b.values()) for _, b in samples], dtype=float), left=0.0
            )
    per_site = {s: round(busy.get(s, 0.0) / n, 4) for s in region.sites if (n := site_slots.get(s, 0)) > 0}
    return per_site, round(sum(busy.values()) / max(1, region.slots), 4), fleet.round(1).tolist()


def summarise(cfg: FleetConfig, region: Region, win: Window) -> tuple[dict[str, Any], dict[str, F64]]:
    """The window's figures (the JSON object) and the samples the report plots."""
    from broker.placement import Params

    params = Params()
    d = cfg.duration_s
    n = len(fleet_venues.RECORD_FIELDS)
    rec = np.array([r for p in win.patrons for r in p["records"]], dtype=np.float64).reshape(-1, n)
    t_start, placed_ms, queue_ms, lat, cap, price, slots = (rec[:, i] for i in range(n))
    placed_at = t_start + placed_ms / 1000
    start_ok = np.array([t for p in win.patrons for t in p["start_ok_at"]], dtype=np.float64)
    ended_at = np.array([t for p in win.patrons for t in p["ended_at"]], dtype=np.float64)

    by_method: Counter[str] = Counter()
    for part in (*win.patrons, *win.agents, *win.connect):
        by_method.update(part["errors"])
    by_code: Counter[str] = Counter()
    for key, n in by_method.items():
        by_code[key.rsplit(":", 1)[1]] += n

    # Each placement's cost as the placement objective counts it (this region has no leases).
    games_of = {h.host_id: h.games for h in region.hosts}
    hosts = [h for p in win.patrons for h in p["hosts"]]
    games = [region.games[g] for p in win.patrons for g in p["games"]]
    cold = np.array([g not in games_of.get(h, (g,)) for h, g in zip(hosts, games, strict=True)], dtype=bool)
    money = price * slots
    latency_cost = params.latency_weight_micros_per_ms * lat
    cold_cost = params.cold_start_penalty_micros * cold.astype(np.float64)
    cost = money + latency_cost + cold_cost

    utilisation, fleet_utilisation, fleet_busy = _utilisation(region, win, d)
    beats = sum(
        n
        for a in win.agents
        for bucket, n in a["beats"].items()
        if win.t_zero <= int(bucket) * fleet_agents.BEAT_BUCKET_S < win.t_zero + d
    )
    echo_s = float(np.mean([e["seconds"] for e in win.echo])) if win.echo else 0.0
    echo_rps = round(sum(e["calls"] for e in win.echo) / echo_s, 1) if echo_s else None

    horizon = int(np.ceil(max([d, *placed_at.tolist(), *ended_at.tolist()]))) + 1
    starts = _per_second(start_ok, horizon)
    in_window = int(((start_ok >= 0) & (start_ok < d)).sum())
    full = starts[: int(d)]
    worst5 = round(min(sum(full[i : i + 5]) / 5 for i in range(len(full) - 4)), 1) if len(full) >= 5 else None
    waiting: Counter[float] = Counter()
    for p in win.patrons:
        for t, n in p["waiting_samples"]:
            waiting[round(t * 4) / 4] += n
    result: dict[str, Any] = {
        "starts_per_s": round(in_window / d, 1),
        "placed_ms_p50": _q(placed_ms, 50),
        "placed_ms_p99": _q(placed_ms, 99),
        "errors": dict(by_code),
        "hosts_connected": win.hosts_connected,
        "heartbeats_per_s": round(beats / d, 1),
        "queue_wait_ms_p50": _q(queue_ms, 50),
        "queue_wait_ms_p99": _q(queue_ms, 99),
        "cost_per_session": _mean(cost),
        "cap_violations": int((lat > cap).sum()),
        "utilisation": utilisation,
        "echo_rps": echo_rps,
        "starts_per_echo_rps": round(in_window / d / echo_rps, 4) if echo_rps else None,
        "solver": win.solver,
        "requested_starts_per_s": cfg.rate,
        "starts_per_s_worst_5s": worst5,
        "placed_per_s": round(int(((placed_at >= 0) & (placed_at < d)).sum()) / d, 1),
        "placed_ms_p90": _q(placed_ms, 90),
        "placed_ms_p999": _q(placed_ms, 99.9),
        "placed_ms_max": _q(placed_ms, 100),
        "utilisation_fleet": fleet_utilisation,
        "sessions": {
            "scheduled": win.scheduled,
            "requested": sum(p["issued"] for p in win.patrons),
            "started": sum(p["started"] for p in win.patrons),
            "placed": int(rec.shape[0]),
            "ended": sum(p["ended"] for p in win.patrons),
            "never_ended": sum(p["end_failed"] for p in win.patrons),
            "not_placed": sum(p["not_placed"] for p in win.patrons),
            "ended_before_placed": sum(sum(p["ended_before_placed"].values()) for p in win.patrons),
            "turned_away": sum(p["turned_away"] for p in win.patrons),
            "unfinished": sum(p["unfinished_tasks"] for p in win.patrons),
        },
        "errors_by_method": dict(by_method),
        "error_samples": [
            s for part in (*win.patrons, *win.agents, *win.connect) for s in part["error_samples"]
        ][:10],
        "hosts": {
            "simulated": len(region.hosts),
            "registered": sum(c["connected"] for c in win.connect),
            "register_s": round(max((c["seconds"] for c in win.connect), default=0.0), 2),
            "connected_min_in_window": win.hosts_connected_min,
            "streams_lost": sum(a["lost_streams"] for a in win.agents),
            "commands": dict(sum((Counter(a["commands"]) for a in win.agents), Counter())),
            "session_events_sent": sum(a["events_sent"] for a in win.agents),
        },
        "cost": {
            "unit": "micros per session: price per slot-hour × slots + λ·latency + cold-start penalty",
            "price": _mean(money),
            "latency": _mean(latency_cost),
            "cold_start": _mean(cold_cost),
            "cold_starts": int(cold.sum()),
            "latency_ms_mean": _mean(lat),
        },
        "cpu_pct_of_one_core": win.cpu,
        "timeseries": {
            "t_s": list(range(horizon)),
            "starts_per_s": starts,
            "placed_per_s": _per_second(placed_at, horizon),
            "ended_per_s": _per_second(ended_at, horizon),
            "placed_ms_p99": [_q(placed_ms[(t_start >= s) & (t_start < s + 1)], 99) for s in range(horizon)],
            "waiting_t_s": sorted(waiting),
            "waiting": [waiting[k] for k in sorted(waiting)],
            "fleet_busy_slots": fleet_busy,
        },
        "profile": win.profile,
        "profile_note": win.profile_note,
    }
    return result, {"placed_ms": placed_ms, "queue_wait_ms": queue_ms, "cost": cost}


# -- the run --------------------------------------------------------------------------------------------------


async def run(cfg: FleetConfig) -> tuple[dict[str, Any], dict[str, dict[str, F64]]]:
    """The whole run; returns the results (the JSON object) and the samples for the report's plots."""
    region = build_region(cfg)
    if not region.venues:
        raise FleetError("no venue has a site within a fresh request's latency target; add hosts or sites")
    schedule = make_schedule(cfg, region)
    work = Path(tempfile.mkdtemp(prefix="cloudseat-fleet-"))
    out = cfg.report_dir or work
    out.mkdir(parents=True, exist_ok=True)
    pg: Any = None
    brokers: list[_Broker] = []
    echo: asyncio.subprocess.Process | None = None
    samples: dict[str, dict[str, F64]] = {}
    ok = False
    try:
        url = cfg.database_url
        if cfg.broker is None and url is None:
            import pgserver

            pg = await asyncio.to_thread(pgserver.get_server, work / "pgdata", cleanup_mode="delete")
            url = str(pg.get_uri())
        echo, echo_target = await _start_echo()
        mode = None
        if cfg.profile:  # py-spy attaches from outside; where ptrace is not allowed, cProfile inside
            mode = "py-spy" if not await asyncio.to_thread(pyspy_works, echo.pid) else "cProfile"
        broker_pid = None
        if cfg.broker is None:
            assert url is not None
            cprofile = out / "broker.cprofile" if mode == "cProfile" else None
            brokers.append(await _Broker.start(cfg, url, "engine", out / "broker.log", cprofile))
            target, broker_pid = brokers[0].target, brokers[0].proc.pid
        else:
            target = cfg.broker
            await wait_serving(target, 30)
        postmaster = await _postmaster(url) if url else None
        seed_s = await fleet_venues.seed(
            target, PROVIDER, region.sites, region.games, region.venues, region.esports_seats, region.latency
        )
        win = await run_window(
            cfg,
            region,
            schedule,
            target,
            label="engine" if cfg.broker is None else "broker",
            solver="engine" if cfg.broker is None else "(the broker's own)",
            broker_pid=broker_pid,
            postmaster=postmaster,
            echo_target=echo_target,
            profile_to=out / "broker.pyspy.txt" if mode == "py-spy" else None,
        )
        await _stop(echo)
        for b in brokers:
            await _stop(b.proc)
        if mode == "cProfile" and (out / "broker.cprofile").exists():
            from loadtest import report

            win.profile = report.cprofile_summary(out / "broker.cprofile")
            win.profile_note = "py-spy could not attach here; the broker ran under cProfile (the whole run)"
        result, samples["engine"] = summarise(cfg, region, win)
        if cfg.compare_greedy:
            assert url is not None
            greedy_broker = await _Broker.start(cfg, url, "greedy", out / "broker-greedy.log", None)
            brokers.append(greedy_broker)
            gwin = await run_window(
                cfg,
                region,
                schedule,
                greedy_broker.target,
                label="greedy",
                solver="greedy",
                broker_pid=greedy_broker.proc.pid,
                postmaster=postmaster,
                echo_target=None,
                profile_to=None,
            )
            await _stop(greedy_broker.proc)
            greedy, samples["greedy"] = summarise(cfg, region, gwin)
            result["greedy"] = {k: greedy[k] for k in (*HEADLINE, "cost", "sessions", "cpu_pct_of_one_core")}
            g_cost, e_cost = greedy["cost_per_session"], result["cost_per_session"]
            result["cost_vs_greedy_pct"] = (
                round((e_cost - g_cost) / g_cost * 100, 3) if g_cost and e_cost else None
            )
        result.update(_about(cfg, region, schedule, seed_s, out))
        ok = True
        return result, samples
    finally:
        for b in brokers:
            with contextlib.suppress(Exception):
                await _stop(b.proc)
        if echo is not None:
            with contextlib.suppress(Exception):
                await _stop(echo)
        if pg is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(pg.cleanup)
        if ok or cfg.report_dir is not None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"cloudseat-loadtest fleet: the run failed; its logs are in {work}", file=sys.stderr)


def _about(
    cfg: FleetConfig, region: Region, schedule: fleet_venues.Schedule, seed_s: float, out: Path
) -> dict[str, Any]:
    """What was run, on what: the JSON's descriptive fields."""
    return {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(cfg).items()},
        "region": {
            "hosts": len(region.hosts),
            "sites": len(region.sites),
            "slots": region.slots,
            "venues": len(region.venues),
            "venues_without_a_near_site": region.venues_without_seats,
            "seats": sum(len(v.seats) for v in region.venues),
            "esports_seats": sum(region.esports_seats.values()),
        },
        "schedule": {
            "kind": "evening peak" if cfg.rate is None else "constant rate (Poisson)",
            "arrivals": len(schedule),
            "compression": round(schedule.compression, 1),
            "mean_session_s": round(float(schedule.duration_s.mean()), 2) if len(schedule) else None,
        },
        "setup": {
            "seed_s": round(seed_s, 2),
            "broker_log": str(out / "broker.log") if cfg.broker is None else None,
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
        },
        "targets": {
            "starts_per_s": 3000,
            "placed_ms_p99": 100,
            "hosts_connected": 10_000,
            "heartbeat_interval_s": 5,
        },
    }


def one_line(result: Mapping[str, Any]) -> str:
    """The run in one line, for the terminal."""
    line = (
        f"{result['hosts_connected']:,} hosts connected ({result['heartbeats_per_s']:,.0f} heartbeats/s): "
        f"{result['starts_per_s']:,.1f} starts/s (echo {result['echo_rps'] or 0:,.0f} rps, ratio "
        f"{result['starts_per_echo_rps'] or 0:.4f}), request→placed p50 {result['placed_ms_p50']} ms "
        f"p99 {result['placed_ms_p99']} ms, queue wait p99 {result['queue_wait_ms_p99']} ms, "
        f"{sum(result['errors'].values())} errors, cost/session {result['cost_per_session'] or 0:,.0f} µ, "
        f"{result['cap_violations']} cap violations"
    )
    if result.get("cost_vs_greedy_pct") is not None:
        line += f"; cost vs greedy {result['cost_vs_greedy_pct']:+.2f}%"
    return line


def main(cfg: FleetConfig) -> int:
    # gRPC's C core logs a line at every fork while its threads run (this process forks its workers): quiet it.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    from loadtest import report

    logs.configure("console", "warning")
    try:
        result, samples = asyncio.run(run(cfg))
    except (FleetError, fleet_agents.WorkerError, fleet_venues.SeedError) as exc:
        print(f"cloudseat-loadtest fleet: {exc}", file=sys.stderr)
        return 1
    print(one_line(result))
    if cfg.json_path is not None:
        cfg.json_path.write_text(json.dumps(result, indent=2, default=str))
    if cfg.report_dir is not None:
        print(f"report: {report.fleet_report(result, samples, cfg.report_dir)}")
    return 0
