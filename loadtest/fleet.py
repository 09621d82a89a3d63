"""`cloudseat-loadtest fleet`: a simulated fleet and its venues against a real broker on PostgreSQL.

    this process (orchestrator)   the region, the schedule, seeding through the public API, the progress bar,
       │                          CPU accounting, results (JSON) and the report (loadtest.report)
       ├─ PostgreSQL              embedded (pgserver, a temporary data directory) unless --database-url
       ├─ broker                  `python -m broker serve` on 127.0.0.1 (unless --broker ADDR): its own process(es),
       │                          so the load generator's CPU and GIL stay out of it and py-spy attaches cleanly;
       │                          its /metrics (--http-listen) count its gRPC messages
       ├─ echo server             `python -m loadtest.echo`: the bare-RPC yardstick
       ├─ agent processes         loadtest.fleet_agents: thousands of simulated hosts each, real Connect streams
       └─ patron processes        loadtest.fleet_patrons: the venues' seats, real StartSession/WatchSession/EndSession

The region (sites, hosts with their GPU classes, prices and cached games, venues and venue→site latency) is the
placement benchmark's synthetic province (loadtest.synthetic). Each venue gets seats in proportion to the capacity
near it (the sites within a fresh request's latency target, shared with the other venues there): providers build
where the cafes are, so a request waits for the broker, not for geography.

Phases: start and seed → the echo baseline (before any agent connects: a bare RPC on an otherwise idle machine) →
agents connect and settle into their heartbeats → the broker's CPU idle (`--idle-cpu-s`) → the broker's message
counter read → the measured window (`--duration`; with `--site-loss` a site goes down in it, loadtest.fleet_siteloss)
→ the counter read again → the requests on their way are placed, every session is ended, the agents' streams drop.
With `--compare-greedy` the window runs again with a broker on the greedy solver (same database, fleet and
schedule). docs/loadtest-fleet.md explains every figure.

This module holds the run's configuration (FleetConfig: its settings are the subcommand's flags) and its phases
(run_window, run). Beside it: loadtest.fleet_region (the region, the seats, the schedule, the venues dealt to the
patron processes; pure), loadtest.fleet_venues (the arrivals and the seeding), loadtest.fleet_patrons (the patron
processes), loadtest.fleet_agents (the simulated hosts), loadtest.fleet_processes (the broker, the echo server,
PostgreSQL's postmaster, py-spy, CPU accounting) and loadtest.fleet_summary (a window's figures, the comparison
with greedy, the JSON).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from cloudseat import logs, settings
from cloudseat.settings import above, at_least, setting

from loadtest import (
    fleet_agents,
    fleet_patrons,
    fleet_processes,
    fleet_region,
    fleet_siteloss,
    fleet_summary,
    fleet_venues,
)

PROVIDER = "loadtest"


class FleetError(Exception):
    """The run itself could not go on (no venue has a site near enough); the message says why. A process that
    would not start is fleet_processes.StartError; a worker's failure, fleet_agents.WorkerError."""


def _fraction(value: float) -> str | None:
    """check=: a share of something, more than none."""
    return None if 0 < value <= 1 else "must be more than 0 and at most 1"


def _share(value: float) -> str | None:
    """check=: a share that may be none but not all."""
    return None if 0 <= value < 1 else "must be at least 0 and less than 1"


def _wait_ms(value: int) -> str | None:
    """check=: StartSessionRequest.wait_for_placement_ms (the contract's bound)."""
    return None if 0 <= value <= 5000 else "must be 0 to 5000"


def _capacity_file(path: Path) -> str | None:
    """check=: an earlier run's JSON with its starts_per_s."""
    try:
        fleet_summary.capacity_of(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return f"cannot read {str(path)!r}: {exc.strerror or exc}"
    except ValueError as exc:
        return f"{str(path)!r} {exc}"
    return None


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
    broker_agents: str | None = setting(
        None,
        "with --broker: HOST:PORT where that broker's agents connect (its --agent-listen); default: --broker",
        check=_address,
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
    # The broker this starts: as its own --heartbeat-interval, --link-ping and --host-lost-after.
    heartbeat_interval_s: float = setting(
        30.0,
        "seconds between a busy host's load and stream stats reports (the broker this starts)",
        flag="--heartbeat-interval",
        env="CLOUDSEAT_LOADTEST_HEARTBEAT_INTERVAL",
        check=above(0),
    )
    link_ping_s: float = setting(
        8.0,
        "seconds between the broker's keepalive pings on an agent's link (the broker this starts)",
        flag="--link-ping",
        env="CLOUDSEAT_LOADTEST_LINK_PING",
        check=above(0),
    )
    link_ping_timeout_s: float = setting(
        2.0,
        "seconds a keepalive ping on an agent's link may go unanswered (the broker this starts)",
        flag="--link-ping-timeout",
        env="CLOUDSEAT_LOADTEST_LINK_PING_TIMEOUT",
        check=above(0),
    )
    host_lost_after_s: float = setting(
        13.0,
        "seconds from a host's last sign of life to its loss (the broker; more than --link-ping plus "
        "--link-ping-timeout)",
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
    idle_cpu_s: float = setting(
        5.0,
        "seconds over which the broker's CPU is measured idle, the fleet connected and no sessions, before the "
        "window (0: not measured)",
        check=at_least(0),
        metavar="SECONDS",
    )
    # The one-round-trip start: PLACED in StartSession's own answer when the broker can place within this.
    wait_for_placement_ms: int = setting(
        2000,
        "patrons ask StartSession to hold its answer this long for the placement (0: answer at once and follow "
        "WatchSession, the old flow)",
        check=_wait_ms,
        metavar="MS",
    )
    site_loss: fleet_siteloss.SiteLoss | None = setting(
        None,
        "cut every host of SITE at once, SECONDS into the window (SITE a site id, or auto: the site holding the "
        "most sessions then); the patrons resume the sessions lost there",
        parse=fleet_siteloss.SiteLoss.parse,
        metavar="SITE@SECONDS",
    )
    capacity_ref: Path | None = setting(
        None,
        "an earlier run's JSON (its sustained starts_per_s): goodput_ratio is this run's starts/s ÷ that",
        check=_capacity_file,
        metavar="FILE",
    )
    # None: the broker's own default; the flag is passed only when set (an older broker has no --workers).
    workers: int | None = setting(
        None,
        "processes of the broker this starts (its --workers); none: the broker's own default",
        check=at_least(1),
        metavar="N",
    )
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
        if self.host_lost_after_s <= self.link_ping_s + self.link_ping_timeout_s:
            raise ValueError("--host-lost-after: must be longer than --link-ping plus --link-ping-timeout")
        if self.broker is not None and self.workers is not None:
            raise ValueError("--workers needs the broker this command starts (drop --broker)")
        if self.site_loss is not None and self.site_loss.at_s >= self.duration_s:
            raise ValueError("--site-loss: SECONDS must fall within the window (less than --duration)")


# -- one measured window --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Window:
    """What one run of the window brought back, before loadtest.fleet_summary.summarise."""

    label: str
    solver: str
    scheduled: int = 0
    t_zero: float = 0.0
    patrons: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    agents: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    connect: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    echo: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    cpu: dict[str, float] = dataclasses.field(default_factory=dict)
    # The broker's processes by what they do (fleet_processes.process_role): % of one core over the window, and how
    # many there were.
    cpu_broker_by_process: dict[str, float] = dataclasses.field(default_factory=dict)
    broker_processes: dict[str, int] = dataclasses.field(default_factory=dict)
    # The broker idle before the window (the fleet connected, no sessions): % of one core, all its processes.
    idle_broker_cpu: float | None = None
    idle_broker_cpu_by_process: dict[str, float] = dataclasses.field(default_factory=dict)
    # The broker's gRPC message counter just before and just after the window; why not, when it could not be read.
    messages_before: int | None = None
    messages_after: int | None = None
    messages_note: str = ""
    # The leader's placement rounds (fleet_processes.round_phases) just before and just after the window.
    rounds_before: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    rounds_after: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    site_loss: dict[str, Any] | None = None
    hosts_connected: int = 0
    hosts_connected_min: int = 0
    profile: dict[str, Any] | None = None
    profile_note: str = ""


def _spawn(
    workers: fleet_agents.Workers,
    cfg: FleetConfig,
    region: fleet_region.Region,
    schedule: fleet_venues.Schedule,
    target: str,
    agent_target: str,
) -> str:
    n_agent = cfg.agent_procs or max(1, -(-len(region.hosts) // 10_000))
    epoch = time.time_ns() // 1000  # newer than any earlier run's: a re-registration replaces it
    for i in range(n_agent):
        spec = fleet_agents.AgentWorkerSpec(
            i,
            agent_target,
            PROVIDER,
            region.hosts[i::n_agent],
            epoch,
            streams_per_connection=cfg.streams_per_connection,
        )
        workers.spawn(f"agents-{i}", fleet_agents.main, spec)
    run_id = f"r{epoch:x}"
    for i, (group, sub) in enumerate(fleet_region.partition(region, schedule, cfg.patron_procs)):
        venues = tuple(region.venues[v] for v in group)
        spec2 = fleet_patrons.PatronWorkerSpec(
            i,
            target,
            run_id,
            venues,
            region.games,
            sub,
            wait_for_placement_ms=cfg.wait_for_placement_ms,
            track_sites=cfg.site_loss is not None,
            seed=cfg.seed * 1000 + i,
        )
        workers.spawn(f"patrons-{i}", fleet_patrons.main, spec2)
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
    region: fleet_region.Region,
    schedule: fleet_venues.Schedule,
    target: str,
    *,
    agent_target: str,
    label: str,
    solver: str,
    broker_pid: int | None,
    metrics_url: str | None,
    postmaster: int | None,
    echo_target: str | None,
    profile_to: Path | None,
) -> Window:
    """Agents connect, the patrons play the schedule for the window, everything ends; returns what came back."""
    win = Window(label, solver, scheduled=len(schedule))
    workers = fleet_agents.Workers()
    try:
        _spawn(workers, cfg, region, schedule, target, agent_target)
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
        # Let the registrations' aftermath (host notifications, the scheduler's first reads) settle first.
        await asyncio.sleep(2.0)
        if broker_pid is not None and cfg.idle_cpu_s > 0:
            await _idle_cpu(cfg, broker_pid, win)

        if metrics_url is None:
            win.messages_note = "a broker given with --broker: its /metrics address is not known here"
        else:
            win.messages_before, win.messages_note, win.rounds_before = await fleet_processes.read_grpc_messages(
                metrics_url
            )
        win.t_zero = t_zero = time.monotonic() + 0.5
        roles = {"agent processes": workers.pids("agents-"), "patron processes": workers.pids("patrons-")}
        meter = fleet_processes.CpuMeter(roles, {"broker": broker_pid, "postgres": postmaster})
        workers.send(patrons, ("go", t_zero, cfg.duration_s))
        site_loss = None
        if cfg.site_loss is not None:
            site_loss = asyncio.ensure_future(
                fleet_siteloss.cut(cfg.site_loss, workers, region.sites, t_zero)
            )
        await asyncio.sleep(max(0.0, t_zero - time.monotonic()))
        meter.start()
        profiler = None
        if profile_to is not None and broker_pid is not None:
            profiler = await fleet_processes.pyspy_record(broker_pid, cfg.duration_s, profile_to)
        finals = asyncio.ensure_future(workers.expect("final", patrons, cfg.duration_s + 180))
        try:
            seen = await _watch_window(cfg, workers, finals, t_zero, label, meter, win, metrics_url)
            if site_loss is not None:  # done long before, unless the agents never answered (then soon)
                win.site_loss = await site_loss
        finally:
            if site_loss is not None and not site_loss.done():
                site_loss.cancel()
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


async def _idle_cpu(cfg: FleetConfig, broker_pid: int, win: Window) -> None:
    """The broker's CPU, all its processes, with the fleet connected and no sessions: what holding the fleet costs."""
    meter = fleet_processes.CpuMeter({}, {"broker": broker_pid})
    meter.start()
    await asyncio.sleep(cfg.idle_cpu_s)
    win.idle_broker_cpu = meter.stop()["broker"]
    win.idle_broker_cpu_by_process = meter.by_process.get("broker", {})


async def _window_ends(
    workers: fleet_agents.Workers, meter: fleet_processes.CpuMeter, win: Window, metrics_url: str | None
) -> None:
    """The readings taken when the window ends: CPU, the hosts connected, the broker's message counter."""
    win.cpu, win.hosts_connected = meter.stop(), workers.total("stats", "connected")
    win.cpu_broker_by_process = meter.by_process.get("broker", {})
    win.broker_processes = meter.processes.get("broker", {})
    if metrics_url is not None and win.messages_before is not None:
        win.messages_after, win.messages_note, win.rounds_after = await fleet_processes.read_grpc_messages(
            metrics_url
        )


async def _watch_window(
    cfg: FleetConfig,
    workers: fleet_agents.Workers,
    finals: asyncio.Future[Any],
    t_zero: float,
    label: str,
    meter: fleet_processes.CpuMeter,
    win: Window,
    metrics_url: str | None,
) -> list[int]:
    """The progress bar over the window; takes the readings of the window's end (_window_ends) when it ends.
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
                    await _window_ends(workers, meter, win, metrics_url)
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
                refused=workers.total("progress", "refused"),
                refresh=False,
            )
            bar.refresh()
            last_started, last_t = started, now
    if not win.cpu:
        await _window_ends(workers, meter, win, metrics_url)
    return seen


# -- the run --------------------------------------------------------------------------------------------------


async def run(cfg: FleetConfig) -> tuple[dict[str, Any], dict[str, dict[str, fleet_summary.F64]]]:
    """The whole run; returns the results (the JSON object) and the samples for the report's plots."""
    region = fleet_region.build_region(cfg)
    if not region.venues:
        raise FleetError("no venue has a site within a fresh request's latency target; add hosts or sites")
    if cfg.site_loss is not None and cfg.site_loss.site not in (None, *region.sites):
        some = ", ".join(region.sites[:3])
        raise FleetError(
            f"--site-loss: {cfg.site_loss.site!r} is not a site of this region ({some}, ...; or auto)"
        )
    capacity = None
    if cfg.capacity_ref is not None:
        capacity = fleet_summary.capacity_of(cfg.capacity_ref.read_text(encoding="utf-8"))
    schedule = fleet_region.make_schedule(cfg, region)
    work = Path(tempfile.mkdtemp(prefix="cloudseat-fleet-"))
    out = cfg.report_dir or work
    out.mkdir(parents=True, exist_ok=True)
    pg: Any = None
    brokers: list[fleet_processes.BrokerProcess] = []
    echo: asyncio.subprocess.Process | None = None
    samples: dict[str, dict[str, fleet_summary.F64]] = {}
    ok = False
    try:
        url = cfg.database_url
        if cfg.broker is None and url is None:
            import pgserver

            pg = await asyncio.to_thread(pgserver.get_server, work / "pgdata", cleanup_mode="delete")
            url = str(pg.get_uri())
        echo, echo_target = await fleet_processes.start_echo()
        mode = None
        if cfg.profile:  # py-spy attaches from outside; where ptrace is not allowed, cProfile inside
            why_not = await asyncio.to_thread(fleet_processes.pyspy_works, echo.pid)
            mode = "cProfile" if why_not else "py-spy"
        broker_pid = metrics_url = None
        if cfg.broker is None:
            assert url is not None
            cprofile = out / "broker.cprofile" if mode == "cProfile" else None
            brokers.append(
                await fleet_processes.BrokerProcess.start(cfg, url, "engine", out / "broker.log", cprofile)
            )
            target, broker_pid, metrics_url = brokers[0].target, brokers[0].proc.pid, brokers[0].metrics_url
            agent_target = brokers[0].agent_target
        else:
            target = cfg.broker
            agent_target = cfg.broker_agents or cfg.broker
            await fleet_processes.wait_serving(target, 30)
        postmaster = await fleet_processes.postmaster(url) if url else None
        seed_s = await fleet_venues.seed(
            target, PROVIDER, region.sites, region.games, region.venues, region.esports_seats, region.latency
        )
        win = await run_window(
            cfg,
            region,
            schedule,
            target,
            agent_target=agent_target,
            label="engine" if cfg.broker is None else "broker",
            solver="engine" if cfg.broker is None else "(the broker's own)",
            broker_pid=broker_pid,
            metrics_url=metrics_url,
            postmaster=postmaster,
            echo_target=echo_target,
            profile_to=out / "broker.pyspy.txt" if mode == "py-spy" else None,
        )
        await fleet_processes.stop(echo)
        for b in brokers:
            await fleet_processes.stop(b.proc)
        if mode == "cProfile" and (out / "broker.cprofile").exists():
            from loadtest import report

            win.profile = report.cprofile_summary(out / "broker.cprofile")
            win.profile_note = "py-spy could not attach here; the broker ran under cProfile (the whole run)"
        result, samples["engine"] = fleet_summary.summarise(cfg, region, win, capacity)
        if cfg.compare_greedy:
            assert url is not None
            greedy_broker = await fleet_processes.BrokerProcess.start(
                cfg, url, "greedy", out / "broker-greedy.log", None
            )
            brokers.append(greedy_broker)
            gwin = await run_window(
                cfg,
                region,
                schedule,
                greedy_broker.target,
                agent_target=greedy_broker.agent_target,
                label="greedy",
                solver="greedy",
                broker_pid=greedy_broker.proc.pid,
                metrics_url=greedy_broker.metrics_url,
                postmaster=postmaster,
                echo_target=None,
                profile_to=None,
            )
            await fleet_processes.stop(greedy_broker.proc)
            greedy, samples["greedy"] = fleet_summary.summarise(cfg, region, gwin, capacity)
            result.update(fleet_summary.against_greedy(result, greedy))
        result.update(fleet_summary.about(cfg, region, schedule, seed_s, out))
        result["targets_met"] = fleet_summary.check_targets(result)
        ok = True
        return result, samples
    finally:
        for b in brokers:
            with contextlib.suppress(Exception):
                await fleet_processes.stop(b.proc)
        if echo is not None:
            with contextlib.suppress(Exception):
                await fleet_processes.stop(echo)
        if pg is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(pg.cleanup)
        if ok or cfg.report_dir is not None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"cloudseat-loadtest fleet: the run failed; its logs are in {work}", file=sys.stderr)


def main(cfg: FleetConfig) -> int:
    # gRPC's C core logs a line at every fork while its threads run (this process forks its workers): quiet it.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    from loadtest import report

    logs.configure("console", "warning")
    try:
        result, samples = asyncio.run(run(cfg))
    except (FleetError, fleet_processes.StartError, fleet_agents.WorkerError, fleet_venues.SeedError) as exc:
        print(f"cloudseat-loadtest fleet: {exc}", file=sys.stderr)
        return 1
    print(fleet_summary.one_line(result))
    if cfg.json_path is not None:
        cfg.json_path.write_text(json.dumps(result, indent=2, default=str))
    if cfg.report_dir is not None:
        print(f"report: {report.fleet_report(result, samples, cfg.report_dir)}")
    return 0
