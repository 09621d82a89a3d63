"""`cloudseat-loadtest`: benchmarks and load tests, one subcommand each (`placement`, `stream`, `fleet`, `commits`,
`lifecycle`, `images`).

Each subcommand's flags are the settings of its config dataclass (PlacementConfig here, loadtest.stream's
StreamRunConfig, loadtest.fleet's FleetConfig), derived by cloudseat.settings: every flag falls back to an
environment variable named in its help text (CLOUDSEAT_LOADTEST_<FLAG>), so a CI job can pin a run without long
command lines. Bad input (a malformed instance file, a bad flag or variable) ends with one line on stderr and exit
code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cloudseat import settings
from cloudseat.settings import above, at_least, setting

from loadtest import commits, fleet, images, lifecycle, placement, stream, synthetic
from loadtest import instance as instance_file

PROG = "cloudseat-loadtest"
ENV_PREFIX = "CLOUDSEAT_LOADTEST_"


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line (argparse's default prints the whole usage first)."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {message}\n")


@dataclass(frozen=True, slots=True)
class PlacementConfig:
    """Everything one `placement` run was asked to do; its settings are the subcommand's flags."""

    seed: int = setting(1, "seed of the synthetic region and trace")
    hosts: int = setting(10_000, "GPU hosts in the synthetic region", check=at_least(1))
    sites: int = setting(100, "edge sites in the synthetic region", check=at_least(1))
    venues: int = setting(500, "venues in the synthetic region", check=at_least(1))
    requests: int = setting(24_000, "requests in the synthetic trace", check=at_least(0))
    duration_ms: int = setting(
        40_000, "trace length: the evening compressed into this many ms", check=at_least(1)
    )
    multi_slot_pct: float = setting(
        2.0,
        "percent of the synthetic trace's sessions that need 2 or 4 slots on one host",
        check=lambda v: None if 0 <= v <= 100 else "must be between 0 and 100",
    )
    batch: int = setting(1000, "most requests per batch", check=at_least(1))
    window_ms: int = setting(2000, "a batch is formed every this many ms of trace time", check=at_least(1))
    abandon_ms: int = setting(30_000, "a request waiting longer than this leaves", check=at_least(0))
    instance: Path | None = setting(None, "read the region and trace from this JSON file (docs/placement.md)")
    write_instance: Path | None = setting(None, "write the region and trace used to this JSON file")
    exact_max_requests: int = setting(
        250, "replay with CP-SAT too when no batch is larger than this (0: never)", check=at_least(0)
    )
    exact_sample: int = setting(
        2,
        "also solve this many of the engine's own batches (spread over the trace) with CP-SAT",
        check=at_least(0),
    )
    exact_time_limit: float = setting(
        60.0, "CP-SAT time limit per batch in the exact replay, seconds", check=above(0)
    )
    exact_workers: int = setting(2, "CP-SAT search workers in the exact replay", check=at_least(1))
    time_limit: float = setting(
        1.0, "the engine's CP-SAT and pattern-model time limit per batch, seconds", check=above(0)
    )
    prove: bool = setting(
        False, "send every mixed batch the split does not prove to the pattern model (engine.solve(prove=True))"
    )
    headline_batches: int = setting(
        5,
        "batches of --batch fresh requests against the initial hosts for the headline throughput",
        check=at_least(0),
    )
    json: Path | None = setting(None, "write the results as one JSON object to this file")
    assignments: Path | None = setting(
        None, "write the engine's request id -> host id map (JSON) to this file"
    )
    progress: bool = setting(False, "show progress on stderr")


def run_placement(cfg: PlacementConfig) -> int:
    """The `placement` subcommand."""
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
                multi_share=cfg.multi_slot_pct / 100,
            )
    except instance_file.InstanceError as exc:
        print(f"{PROG} placement: error: {exc}", file=sys.stderr)
        return 2
    if cfg.write_instance is not None:
        instance_file.write(inst, cfg.write_instance)
    replay_cfg = placement.ReplayConfig(batch=cfg.batch, window_ms=cfg.window_ms, abandon_ms=cfg.abandon_ms)
    engine = placement.engine_solver(cfg.time_limit, prove=cfg.prove)
    engine_run = placement.replay(
        inst,
        "engine",
        engine,
        replay_cfg,
        keep_assignments=cfg.assignments is not None,
        keep_problems=cfg.exact_sample > 0,
        bound=placement.lower_bound,
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
            f"matched the optimum on {check['engine_equal_to_optimum']} of them, placed fewer on "
            f"{check['engine_placed_fewer']} (placement cost gap where it placed as many: max "
            f"{check['engine_max_gap_pct']:.4f}%, mean {check['engine_mean_gap_pct']:.4f}%)"
        )
    if result["gap_bound"]:
        gb = result["gap_bound"]
        print(
            f"multi-slot batches: {gb['batches']}; the engine proved {gb['proven_optimal']} optimal; "
            f"{gb['within_target']} within {gb['target_pct']}% of the lower bound (so of the optimum); placement "
            f"cost above the bound: max {gb['max_gap_bound_pct']:.3f}%, mean {gb['mean_gap_bound_pct']:.3f}%"
            f" ({gb['more_pending_than_bound']} batches left more pending than the bound)"
        )
    for item in sample:
        proven = "proven optimal" if item["exact_proven_optimal"] else "not proven in the time limit"
        print(
            f"sampled batch {item['batch']} ({item['requests']} requests, {item['multi_slot_requests']} multi-slot): "
            f"placement cost engine {item['engine_placement_cost']:,} ({item['engine_placed']} placed) vs CP-SAT "
            f"{item['exact_placement_cost']:,} ({item['exact_placed']} placed; {proven}, {item['exact_s']:.0f} s): "
            f"gap {placement._fmt_pct(item['gap_pct'])}"
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


@dataclass(frozen=True, slots=True)
class _Subcommand:
    summary: str
    description: str
    config: type[Any]  # its settings are the subcommand's flags
    run: Callable[[Any], int]  # given the config built from them


_SUBCOMMANDS = {
    "placement": _Subcommand(
        "placement solvers: engine vs greedy vs the CP-SAT optimum",
        "Replay a synthetic (or given) region and trace through the engine, greedy and, where batches are small "
        "enough, CP-SAT; print a table and optionally JSON.",
        PlacementConfig,
        run_placement,
    ),
    "stream": _Subcommand(
        "streams through a real broker and agent to real seats (Python client or browser kiosk)",
        "Start a broker, an agent and seats on this machine; measure session ready, fps, latency, freezes and CPU.",
        stream.StreamRunConfig,
        stream.main,
    ),
    "fleet": _Subcommand(
        "a simulated fleet and venues against a real broker on PostgreSQL",
        "Start (or, with --broker, target) a broker on PostgreSQL; connect --hosts simulated agents on the real "
        "AgentService protocol; let --venues venues' patrons start, watch and end sessions on an evening-peak "
        "curve (or --rate starts per second) for --duration seconds; print the figures, and write JSON (--json) "
        "and a report with plots (--report). docs/loadtest-fleet.md explains every figure.",
        fleet.FleetConfig,
        fleet.main,
    ),
    "commits": _Subcommand(
        "session starts and ends on PostgreSQL: one commit each vs grouped per process",
        "Start and end sessions from --callers seats through the broker's store on a real PostgreSQL, in phases "
        "alternating between one statement per write (the baseline) and the broker's grouped writes; print "
        "sessions/s of each and their ratio, and write JSON (--json). docs/loadtest-fleet.md#group-commit.",
        commits.CommitsConfig,
        commits.main,
    ),
    "lifecycle": _Subcommand(
        "PostgreSQL's CPU for a session's whole life (start, place, report, end) vs a bare table's",
        "Run sessions through their whole life on a real PostgreSQL by the broker's store, in rounds of each of "
        "--sizes sessions, alternating with the same statements on a table with only a primary key (the baseline); "
        "print the database's CPU per session of each and their ratio, and write JSON (--json). "
        "docs/loadtest-fleet.md#the-databases-cpu-per-session.",
        lifecycle.LifecycleConfig,
        lifecycle.main,
    ),
    "images": _Subcommand(
        "game images: publish, fetch, a 5% update and a site sharing chunks, through the real registry",
        "Make a synthetic game (--size) and a v2 with ~5% changed; publish both to the embedded Distribution "
        "registry; fetch with the agent's code against plain GETs of the same blobs; update a host holding v1; "
        "let --hosts hosts of one site install at once; inject corrupt chunks. docs/images.md explains the figures.",
        images.ImagesConfig,
        images.main,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The command line: one subparser per benchmark. Raises settings.SettingsError when a CLOUDSEAT_LOADTEST_*
    variable holds a bad value (they are read here, so that --help shows them)."""
    parser = _Parser(prog=PROG, description="cloudseat benchmarks and load tests")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, command in _SUBCOMMANDS.items():
        p = sub.add_parser(name, help=command.summary, description=command.description)
        settings.add_arguments(p, command.config, env_prefix=ENV_PREFIX)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `cloudseat-loadtest` console script."""
    where = PROG
    try:
        args = build_parser().parse_args(argv)
        where = f"{PROG} {args.command}"
        command = _SUBCOMMANDS[args.command]
        cfg = settings.build(command.config, args, env_prefix=ENV_PREFIX)
    except settings.SettingsError as exc:
        print(f"{where}: error: {exc}", file=sys.stderr)
        return 2
    return command.run(cfg)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
