"""`cloudseat-loadtest`: benchmarks and load tests, one subcommand each (`placement`, `stream`, `fleet`).

Every flag falls back to an environment variable named in its help text (CLOUDSEAT_LOADTEST_<FLAG>), so a CI
job can pin a run without long command lines. Bad input (a malformed instance file, a bad flag or variable)
ends with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from loadtest import instance as instance_file
from loadtest import placement, synthetic

PROG = "cloudseat-loadtest"
T = TypeVar("T")


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line (argparse's default prints the whole usage first)."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _env(flag: str) -> str:
    return "CLOUDSEAT_LOADTEST_" + flag.lstrip("-").upper().replace("-", "_")


def _option(
    parser: argparse.ArgumentParser, flag: str, kind: Callable[[str], T], default: T | None, help_text: str
) -> None:
    """Add `flag`, defaulting to its environment variable, then to `default`."""
    name = _env(flag)
    raw = os.environ.get(name)
    value: T | None = default
    if raw is not None:
        try:
            value = kind(raw)
        except (TypeError, ValueError):
            parser.error(f"{name}={raw!r}: not a valid value for {flag}")
    shown = "none" if default is None else default
    parser.add_argument(flag, type=kind, default=value, help=f"{help_text} (env {name}; default {shown})")


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(text)
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(text)
    return value


@dataclass(frozen=True, slots=True)
class PlacementConfig:
    """Everything one `placement` run was asked to do, built once from the command line."""

    seed: int
    hosts: int
    sites: int
    venues: int
    requests: int
    duration_ms: int
    batch: int
    window_ms: int
    abandon_ms: int
    instance: Path | None
    write_instance: Path | None
    exact_max_requests: int
    exact_sample: int
    exact_time_limit: float
    exact_workers: int
    time_limit: float
    headline_batches: int
    json: Path | None
    assignments: Path | None
    progress: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> PlacementConfig:
        return cls(**{f: getattr(args, f) for f in cls.__dataclass_fields__})


def _add_placement(sub: Any) -> None:
    p = sub.add_parser(
        "placement",
        help="placement solvers: engine vs greedy vs the CP-SAT optimum",
        description="Replay a synthetic (or given) region and trace through the engine, greedy and, "
        "where batches are small enough, CP-SAT; print a table and optionally JSON.",
    )
    _option(p, "--seed", int, 1, "seed of the synthetic region and trace")
    _option(p, "--hosts", _positive, 10_000, "GPU hosts in the synthetic region")
    _option(p, "--sites", _positive, 100, "edge sites in the synthetic region")
    _option(p, "--venues", _positive, 500, "venues in the synthetic region")
    _option(p, "--requests", _non_negative, 24_000, "requests in the synthetic trace")
    _option(p, "--duration-ms", _positive, 40_000, "trace length: the evening compressed into this many ms")
    _option(p, "--batch", _positive, 1000, "most requests per batch")
    _option(p, "--window-ms", _positive, 2000, "a batch is formed every this many ms of trace time")
    _option(p, "--abandon-ms", _non_negative, 30_000, "a request waiting longer than this leaves")
    _option(p, "--instance", Path, None, "read the region and trace from this JSON file (docs/placement.md)")
    _option(p, "--write-instance", Path, None, "write the region and trace used to this JSON file")
    _option(
        p,
        "--exact-max-requests",
        _non_negative,
        250,
        "replay with CP-SAT too when no batch is larger than this (0: never)",
    )
    _option(
        p,
        "--exact-sample",
        _non_negative,
        2,
        "also solve this many of the engine's own batches (spread over the trace) with CP-SAT",
    )
    _option(
        p, "--exact-time-limit", _seconds, 60.0, "CP-SAT time limit per batch in the exact replay, seconds"
    )
    _option(p, "--exact-workers", _positive, 2, "CP-SAT search workers in the exact replay")
    _option(p, "--time-limit", _seconds, 1.0, "the engine's CP-SAT time limit per batch, seconds")
    _option(
        p,
        "--headline-batches",
        _non_negative,
        5,
        "batches of --batch fresh requests against the initial hosts for the headline throughput",
    )
    _option(p, "--json", Path, None, "write the results as one JSON object to this file")
    _option(
        p, "--assignments", Path, None, "write the engine's request id -> host id map (JSON) to this file"
    )
    p.add_argument("--progress", action="store_true", help="show progress on stderr")
    p.set_defaults(run=run_placement)


def run_placement(args: argparse.Namespace) -> int:
    """The `placement` subcommand."""
    cfg = PlacementConfig.from_args(args)
    try:
        if cfg.instance is not None:
            inst = instance_file.read(cfg.instance)
        else:
            inst = synthetic.generate(
                seed=cfg.seed,
                hosts=cfg.hosts,
                sites=cfg.sites,
                venues=cfg.venues,
                requests=cfg.requests,
                duration_ms=cfg.duration_ms,
            )
    except instance_file.InstanceError as exc:
        print(f"{PROG} placement: error: {exc}", file=sys.stderr)
        return 2
    if cfg.write_instance is not None:
        instance_file.write(inst, cfg.write_instance)
    replay_cfg = placement.ReplayConfig(batch=cfg.batch, window_ms=cfg.window_ms, abandon_ms=cfg.abandon_ms)
    engine = placement.engine_solver(cfg.time_limit)
    engine_run = placement.replay(
        inst,
        "engine",
        engine,
        replay_cfg,
        keep_assignments=cfg.assignments is not None,
        keep_problems=cfg.exact_sample > 0,
        progress=cfg.progress,
    )
    greedy_run = placement.replay(inst, "greedy", placement.GREEDY, replay_cfg, progress=cfg.progress)
    exact = placement.exact_solver(cfg.exact_time_limit, cfg.exact_workers)
    exact_run = None
    if 0 < cfg.batch <= cfg.exact_max_requests:
        exact_run = placement.replay(inst, "exact", exact, replay_cfg, compare=engine, progress=cfg.progress)
    sample = placement.exact_sample(engine_run, exact, cfg.exact_sample)
    head: dict[str, Any] = {}
    if cfg.headline_batches:
        head = placement.headline(inst, engine, cfg.batch, cfg.headline_batches)
        head["baseline_greedy"] = placement.headline(inst, placement.GREEDY, cfg.batch, cfg.headline_batches)
    summary = {
        **asdict(cfg),
        "instance_hosts": len(inst.hosts),
        "instance_requests": len(inst.requests),
        "instance_leases": len(inst.leases),
    }
    result = placement.report(engine_run, greedy_run, exact_run, head, _jsonable(summary), sample)

    print(placement.table(engine_run, greedy_run, exact_run))
    if head:
        base = head["baseline_greedy"]
        print(
            f"\nheadline: {head['batches']} batches of {cfg.batch} requests over {len(inst.hosts)} hosts: "
            f"engine {head['placements_per_s']:,.0f} placements/s (p50 {head['batch_ms_p50']:.1f} ms/batch), "
            f"greedy {base['placements_per_s']:,.0f} placements/s"
        )
    if result["exact_check"]:
        check = result["exact_check"]
        print(
            f"per batch: CP-SAT proved {check['proven_optimal']}/{check['batches']} batches optimal; the engine "
            f"matched the optimum on {check['engine_equal_to_optimum']} of them "
            f"(max gap {check['engine_max_gap_pct']:.4f}%)"
        )
    for item in sample:
        proven = "proven optimal" if item["exact_proven_optimal"] else "not proven in the time limit"
        print(
            f"sampled batch {item['batch']} ({item['requests']} requests): engine {item['engine_cost']:,} vs "
            f"CP-SAT {item['exact_cost']:,} ({proven}, {item['exact_s']:.0f} s): gap "
            f"{placement._fmt_pct(item['gap_pct'])}"
        )
    print(
        f"placement cost only (no pending penalties): engine vs greedy "
        f"{placement._fmt_pct(result['placement_cost_vs_greedy_pct'])}"
    )
    if cfg.json is not None:
        cfg.json.write_text(json.dumps(result, indent=2))
    if cfg.assignments is not None:
        cfg.assignments.write_text(json.dumps(engine_run.assignments, indent=0, sort_keys=True))
    return 0


def _jsonable(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in obj.items()}


def build_parser() -> argparse.ArgumentParser:
    """The command line: one subparser per benchmark."""
    parser = _Parser(prog=PROG, description="cloudseat benchmarks and load tests")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_placement(sub)
    _add_stream(sub)
    _add_fleet(sub)
    return parser


def _add_stream(sub: Any) -> None:
    from loadtest import stream

    p = sub.add_parser(
        "stream",
        help="streams through a real broker and agent to real seats (Python client or browser kiosk)",
        description="Start a broker, an agent and seats on this machine; measure session ready, fps, latency, "
        "freezes and CPU.",
    )
    _option(p, "--streams", _positive, 1, "concurrent streams")
    _option(p, "--duration", float, 60.0, "seconds measured, after a 3 s warm-up")
    p.add_argument(
        "--tier",
        choices=sorted(stream.TIERS),
        default=os.environ.get(_env("--tier"), "720p60"),
        help=f"the zone's tier (env {_env('--tier')}; default 720p60)",
    )
    p.add_argument(
        "--codec",
        choices=("h264", "vp8"),
        default=os.environ.get(_env("--codec"), "h264"),
        help=f"software codec (env {_env('--codec')}; default h264)",
    )
    p.add_argument(
        "--client",
        choices=("python", "browser"),
        default=os.environ.get(_env("--client"), "python"),
        help=f"the seats: cloudseat-client play processes, or the kiosk page in headless Chromium "
        f"(env {_env('--client')}; default python)",
    )
    _option(
        p, "--ready-probes", _non_negative, 10, "short sessions started one by one to measure session ready"
    )
    _option(p, "--json", Path, None, "write the results here as JSON")
    _option(p, "--database-url", str, None, "PostgreSQL for the broker (default: an embedded one, temporary)")

    def run(args: argparse.Namespace) -> int:
        if args.duration <= 0:
            p.error("--duration must be > 0")
        cfg = stream.StreamRunConfig(
            streams=args.streams,
            duration_s=args.duration,
            tier=args.tier,
            codec=args.codec,
            database_url=args.database_url,
            client=args.client,
            ready_probes=args.ready_probes,
        )
        return stream.main(cfg, args.json)

    p.set_defaults(run=run)


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise ValueError(text)
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise ValueError(text)
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError(text)
    return value


def _log_level(text: str) -> str:
    if text not in ("debug", "info", "warning", "error"):
        raise ValueError(text)
    return text


def _address(text: str) -> str:
    """HOST:PORT with a port in 1..65535."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(text)
    return text


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _flag(parser: argparse.ArgumentParser, flag: str, help_text: str) -> None:
    """A switch that its environment variable (1/true/yes/on or 0/false/no/off) can also turn on."""
    name = _env(flag)
    raw = os.environ.get(name)
    value = False
    if raw is not None:
        if raw.strip().lower() not in _TRUE | _FALSE:
            parser.error(f"{name}={raw!r}: not a valid value for {flag} (use 1 or 0)")
        value = raw.strip().lower() in _TRUE
    parser.add_argument(flag, action="store_true", default=value, help=f"{help_text} (env {name})")


def _add_fleet(sub: Any) -> None:
    p = sub.add_parser(
        "fleet",
        help="a simulated fleet and venues against a real broker on PostgreSQL",
        description="Start (or, with --broker, target) a broker on PostgreSQL; connect --hosts simulated agents "
        "on the real AgentService protocol; let --venues venues' patrons start, watch and end sessions on an "
        "evening-peak curve (or --rate starts per second) for --duration seconds; print the figures, and write "
        "JSON (--json) and a report with plots (--report). docs/loadtest-fleet.md explains every figure.",
    )
    _option(p, "--hosts", _positive, 10_000, "simulated GPU hosts (agents)")
    _option(p, "--sites", _positive, 100, "edge sites")
    _option(
        p, "--venues", _positive, 500, "venues (internet cafes); their seats follow the capacity near them"
    )
    _option(
        p, "--rate", _seconds, None, "StartSession calls per second (Poisson) instead of the evening curve"
    )
    _option(p, "--duration", _seconds, 60.0, "seconds measured (the evening is compressed into them)")
    _option(p, "--broker", _address, None, "HOST:PORT of a running broker to target instead of starting one")
    _option(
        p,
        "--database-url",
        str,
        None,
        "PostgreSQL for the broker this starts (default: an embedded, temporary one)",
    )
    _option(p, "--json", Path, None, "write the results as one JSON object to this file")
    _option(p, "--report", Path, None, "write report.md and PNG plots into this directory")
    _flag(p, "--profile", "record where the broker's time goes (py-spy, else cProfile) into the report")
    _flag(
        p, "--compare-greedy", "run the window again with the broker on the greedy solver; compare the cost"
    )
    _option(p, "--seed", int, 1, "seed of the region and the arrivals")
    _option(p, "--heartbeat-interval", _seconds, 5.0, "seconds between heartbeats (the broker this starts)")
    _option(p, "--host-lost-after", _seconds, 13.0, "seconds of silence before a host is lost (the broker)")
    _option(p, "--agent-procs", _non_negative, 0, "processes for the simulated agents (0: one per 10,000)")
    _option(p, "--patron-procs", _positive, 1, "processes for the patrons")
    _option(p, "--streams-per-connection", _positive, 1, "agent streams sharing one HTTP/2 connection")
    _option(p, "--seats-per-slot", _seconds, 0.9, "seats per slot of capacity near each venue")
    _option(p, "--peak-occupancy", _fraction, 0.85, "share of seats taken at the evening's peak")
    _option(p, "--occupancy", _fraction, 0.5, "with --rate: share of the fleet's slots busy at steady state")
    _option(p, "--multi-slot-share", _share, 0.02, "share of sessions that need two slots on one host")
    _option(p, "--echo-s", _non_negative_float, 5.0, "seconds of the bare gRPC echo baseline")
    _option(
        p,
        "--broker-log-level",
        _log_level,
        "info",
        "log level of the broker this starts (info: one line per RPC)",
    )
    _flag(p, "--no-progress", "no progress bar")

    def run(args: argparse.Namespace) -> int:
        from loadtest import fleet

        if args.broker is not None and (args.profile or args.compare_greedy):
            p.error("--profile and --compare-greedy need the broker this command starts (drop --broker)")
        if args.host_lost_after <= args.heartbeat_interval:
            p.error("--host-lost-after must be longer than --heartbeat-interval")
        cfg = fleet.FleetConfig(
            hosts=args.hosts,
            sites=args.sites,
            venues=args.venues,
            rate=args.rate,
            duration_s=args.duration,
            broker=args.broker,
            database_url=args.database_url,
            json_path=args.json,
            report_dir=args.report,
            profile=args.profile,
            compare_greedy=args.compare_greedy,
            seed=args.seed,
            heartbeat_interval_s=args.heartbeat_interval,
            host_lost_after_s=args.host_lost_after,
            agent_procs=args.agent_procs,
            patron_procs=args.patron_procs,
            streams_per_connection=args.streams_per_connection,
            seats_per_slot=args.seats_per_slot,
            peak_occupancy=args.peak_occupancy,
            occupancy=args.occupancy,
            multi_slot_share=args.multi_slot_share,
            echo_s=args.echo_s,
            broker_log_level=args.broker_log_level,
            progress=not args.no_progress,
        )
        return fleet.main(cfg)

    p.set_defaults(run=run)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `cloudseat-loadtest` console script."""
    args = build_parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
