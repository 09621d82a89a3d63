"""Benchmark reports: a Markdown file with tables and PNG plots beside it, for any benchmark in loadtest/.

    report = Report(directory, "Fleet load test")
    report.table(["what", "value"], [["starts/s", 812.4]])
    report.cdf("placed_cdf.png", "Request → placed", {"engine": samples_ms}, xlabel="ms")
    report.timeseries("throughput.png", "Throughput", t, {"starts/s": starts}, ylabel="per s")
    report.write()      # directory/report.md

Plots use matplotlib's Agg backend (no display), imported on first use: it is slow to import and only reports
need it. Profiles: `pyspy_summary` and `cprofile_summary` turn a py-spy raw (collapsed stacks) file or a cProfile
stats file into the tables a report shows (hot functions, and time by component).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

#: Where a frame's file puts its time: the first rule whose fragment is in the path wins.
COMPONENTS: tuple[tuple[str, str], ...] = (
    ("/broker/placement/", "placement solver"),
    ("/ortools/", "placement solver"),
    ("/numpy/", "placement solver"),
    ("/broker/", "broker code"),
    ("/asyncpg/", "asyncpg (database driver)"),
    ("/structlog/", "structlog (logging)"),
    ("/logging/", "structlog (logging)"),
    ("/grpc/", "grpc (aio + C-core)"),
    ("/grpc_health/", "grpc (aio + C-core)"),
    ("/google/protobuf/", "protobuf"),
    ("_pb2", "protobuf"),
    ("/json/", "json"),
    ("/asyncio/", "asyncio event loop"),
    ("/selectors.py", "asyncio event loop"),
    ("/uuid.py", "uuid"),
    ("/threading.py", "threads (solver pool, gRPC)"),
    ("/concurrent/", "threads (solver pool, gRPC)"),
)


def _mpl() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fmt(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        return (
            f"{value:,.0f}" if abs(value) >= 1000 else f"{value:,.3g}" if abs(value) < 10 else f"{value:,.1f}"
        )
    return str(value)


class Report:
    """A Markdown report under construction in `directory` (created); plots are written as they are added."""

    def __init__(self, directory: Path, title: str) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.parts: list[str] = [f"# {title}\n"]
        self.figures: list[Path] = []

    # -- text --

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"{'#' * level} {text}\n")

    def text(self, markdown: str) -> None:
        self.parts.append(markdown.rstrip() + "\n")

    def table(
        self, header: Sequence[str], rows: Sequence[Sequence[object]], *, right: Sequence[int] = ()
    ) -> None:
        """A Markdown table; numbers are formatted with thousands separators; `right` columns align right (by
        default every column after the first)."""
        cols = len(header)
        align = set(right) if right else set(range(1, cols))
        lines = [
            "| " + " | ".join(header) + " |",
            "| " + " | ".join("---:" if i in align else "---" for i in range(cols)) + " |",
        ]
        lines += ["| " + " | ".join(_fmt(cell) for cell in row) + " |" for row in rows]
        self.parts.append("\n".join(lines) + "\n")

    # -- figures --

    def _figure(
        self, name: str, caption: str, draw: Callable[[Any, Any], None], size: tuple[float, float]
    ) -> Path:
        plt = _mpl()
        fig, ax = plt.subplots(figsize=size, dpi=110)
        try:
            draw(fig, ax)
            ax.set_title(caption)
            fig.tight_layout()
            path = self.directory / name
            fig.savefig(path)
        finally:
            plt.close(fig)
        self.figures.append(path)
        self.parts.append(f"![{caption}]({name})\n")
        return path

    def cdf(
        self,
        name: str,
        caption: str,
        series: Mapping[str, Sequence[float]],
        *,
        xlabel: str,
        log_x: bool = True,
        marks: Sequence[float] = (0.5, 0.99),
    ) -> Path:
        """Empirical CDFs of one or more samples, with dotted lines at the `marks` quantiles."""

        def draw(_fig: Any, ax: Any) -> None:
            import numpy as np

            for label, values in series.items():
                data = np.sort(np.asarray(values, dtype=float))
                if data.size == 0:
                    continue
                y = np.arange(1, data.size + 1) / data.size
                quantiles = ", ".join(f"p{q * 100:g} {float(np.quantile(data, q)):.3g}" for q in marks)
                line = ax.plot(data, y, label=f"{label} ({quantiles})", drawstyle="steps-post")[0]
                for q in marks:
                    ax.axvline(
                        float(np.quantile(data, q)), color=line.get_color(), linestyle=":", linewidth=0.8
                    )
            if log_x:
                ax.set_xscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("fraction ≤ x")
            ax.set_ylim(0, 1.01)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(loc="lower right")

        return self._figure(name, caption, draw, (7.0, 4.2))

    def timeseries(
        self,
        name: str,
        caption: str,
        t: Sequence[float],
        series: Mapping[str, Sequence[float]],
        *,
        ylabel: str,
        xlabel: str = "seconds into the run",
        secondary: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
        secondary_label: str = "",
        shade: tuple[float, float] | None = None,
    ) -> Path:
        """Lines over time; `secondary` series (label -> (t, values)) go on a right-hand axis; `shade` marks an
        interval (the measured window, say)."""

        def draw(_fig: Any, ax: Any) -> None:
            for label, values in series.items():
                ax.plot(t[: len(values)], values, label=label, drawstyle="steps-post")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(True, alpha=0.3)
            if shade is not None:
                ax.axvspan(shade[0], shade[1], color="grey", alpha=0.08, label="measured window")
            handles, labels = ax.get_legend_handles_labels()
            if secondary:
                ax2 = ax.twinx()
                for label, (t2, values) in secondary.items():
                    ax2.plot(t2, values, label=label, color="tab:red", alpha=0.7, linewidth=0.9)
                ax2.set_ylabel(secondary_label)
                h2, l2 = ax2.get_legend_handles_labels()
                handles, labels = handles + h2, labels + l2
            ax.legend(handles, labels, loc="upper left", fontsize=8)

        return self._figure(name, caption, draw, (8.0, 4.2))

    def bars(
        self,
        name: str,
        caption: str,
        labels: Sequence[str],
        series: Mapping[str, Sequence[float]],
        *,
        ylabel: str,
        rotate: bool = False,
    ) -> Path:
        """Grouped bars: one group per label, one bar per series."""

        def draw(fig: Any, ax: Any) -> None:
            import numpy as np

            x = np.arange(len(labels))
            width = 0.8 / max(1, len(series))
            for k, (label, values) in enumerate(series.items()):
                ax.bar(x + (k - (len(series) - 1) / 2) * width, values, width, label=label)
            ax.set_xticks(x)
            ax.set_xticklabels(labels, rotation=90 if rotate else 0, fontsize=6 if rotate else 9)
            ax.set_ylabel(ylabel)
            ax.grid(True, axis="y", alpha=0.3)
            if len(series) > 1:
                ax.legend(fontsize=8)

        width = min(16.0, max(6.0, 0.12 * len(labels) * max(1, len(series)) + 3))
        return self._figure(name, caption, draw, (width, 4.2))

    def write(self, name: str = "report.md") -> Path:
        path = self.directory / name
        path.write_text("\n".join(self.parts), encoding="utf-8")
        return path


# -- profiles -------------------------------------------------------------------------------------------------


def component_of(filename: str) -> str:
    for fragment, component in COMPONENTS:
        if fragment in filename:
            return component
    return "other (stdlib, interpreter)"


def _frame(text: str) -> tuple[str, str]:
    """'func (path/to/file.py:123)' -> ('func (to/file.py)', '/path/to/file.py'). py-spy shortens paths under
    sys.path to relative ones; a leading '/' makes the component rules match either form."""
    name, _, rest = text.partition(" (")
    path = rest.rsplit(":", 1)[0] if rest else ""
    short = "/".join(path.split("/")[-2:])
    return f"{name} ({short})", path if path.startswith("/") else "/" + path


def pyspy_summary(path: Path, top: int = 25) -> dict[str, Any]:
    """Hot spots from py-spy's raw output (one 'frame;frame;... count' line per distinct stack).

    Returns the sample count, the functions with the most samples on top of the stack (self) and anywhere in it
    (total, each function counted once per stack), and the share of samples by component (`COMPONENTS`)."""
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    components: Counter[str] = Counter()
    samples = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        samples += count
        leaf, leaf_path = frames[-1]
        self_counts[leaf] += count
        components[component_of(leaf_path)] += count
        for name in {name for name, _ in frames}:
            total_counts[name] += count
    return _summary("py-spy", samples, self_counts, total_counts, components, top)


def cprofile_summary(path: Path, top: int = 25) -> dict[str, Any]:
    """Hot spots from a cProfile stats file, in the same shape as `pyspy_summary` (times in ms for counts)."""
    import pstats

    stats: Any = pstats.Stats(str(path))
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    components: Counter[str] = Counter()
    for (filename, line, func), (_cc, _nc, tottime, cumtime, _callers) in stats.stats.items():
        short = "/".join(str(filename).split("/")[-2:])
        name = f"{func} ({short}:{line})"
        self_counts[name] += int(tottime * 1000)
        total_counts[name] += int(cumtime * 1000)
        components[component_of(str(filename))] += int(tottime * 1000)
    samples = sum(self_counts.values())
    return _summary("cProfile (ms)", samples, self_counts, total_counts, components, top)


def _summary(
    tool: str,
    samples: int,
    self_counts: Counter[str],
    total_counts: Counter[str],
    components: Counter[str],
    top: int,
) -> dict[str, Any]:
    def share(n: int) -> float:
        return round(100 * n / samples, 2) if samples else 0.0

    return {
        "tool": tool,
        "samples": samples,
        "self": [(name, n, share(n)) for name, n in self_counts.most_common(top)],
        "total": [(name, n, share(n)) for name, n in total_counts.most_common(top)],
        "components": [(name, n, share(n)) for name, n in components.most_common()],
    }


def profile_section(report: Report, summary: Mapping[str, Any], *, what: str, top: int = 15) -> None:
    """Add a profile summary to `report`: time by component, then the hottest functions."""
    report.text(
        f"{what}: {summary['samples']:,} samples ({summary['tool']}). Share of the samples by component (the "
        "function on top of the stack decides), then the functions with the most samples on top of the stack "
        "(self) and anywhere on it (total)."
    )
    report.table(["component", "samples", "%"], summary["components"])
    report.table(["function (self)", "samples", "%"], summary["self"][:top])
    report.table(["function (total)", "samples", "%"], summary["total"][:top])


# -- the fleet load test's report -----------------------------------------------------------------------------


def _sum_if_dict(value: Any) -> Any:
    return sum(value.values()) if isinstance(value, dict) else value


def _judged(targets_met: Mapping[str, Any], name: str) -> tuple[str, str]:
    """A target's bound and the verdict for the report's table: met or missed, or the run it is judged on."""
    check = targets_met.get(name)
    if check is None:
        return "", ""
    if not check["applies"]:
        return check["target"], f"— (judged on: {check['when']})"
    return check["target"], {True: "met", False: "**missed**", None: "not measured"}[check["met"]]


def _site_loss_section(r: Report, result: Mapping[str, Any]) -> None:
    t, loss = result["targets_met"], result["site_loss"]
    r.heading("A site lost")
    r.text(
        f"At {loss['at_s']} s into the window every host of **{loss['site']}** was cut off at once "
        f"({loss['chosen_by']}); the seats whose sessions were there resumed them. {loss['note']}"
    )
    r.table(
        ["what", "measured", "target", "judged on this run"],
        [
            ["hosts cut", loss["hosts_dropped"], "", ""],
            ["sessions playing there when it went", loss["sessions_on_site"], "≥ 300 for the target", ""],
            [
                "sessions placed there after it went (before the broker knew)",
                loss["placed_there_after"],
                "",
                "",
            ],
            ["resume requests answered OK", result["resumed"], "", ""],
            [
                "sessions lost: never placed again nor refused with a reason",
                result["resumes_lost"],
                *_judged(t, "resumes_lost"),
            ],
            ["resume → placed p50 (ms)", result["resume_to_placed_ms_p50"], "", ""],
            [
                "resume → placed p99 (ms)",
                result["resume_to_placed_ms_p99"],
                *_judged(t, "resume_to_placed_ms_p99"),
            ],
            [
                "cut → the patron sees HOST_LOST p50 / p99 (ms)",
                f"{result['host_lost_detect_ms_p50']} / {result['host_lost_detect_ms_p99']}",
                "",
                "",
            ],
        ],
        right=(1,),
    )
    r.text(f"Outcomes: {result['resume_outcomes'] or 'none'}.")


def fleet_report(
    result: Mapping[str, Any], samples: Mapping[str, Mapping[str, Any]], directory: Path
) -> Path:
    """report.md and its plots for `cloudseat-loadtest fleet` (loadtest.fleet's result and samples)."""
    cfg, region, sched, t = result["config"], result["region"], result["schedule"], result["targets_met"]
    r = Report(directory, "Fleet load test")
    mode = (
        f"`--rate {cfg['rate']:g}` StartSession calls/s (Poisson)"
        if cfg["rate"]
        else "the evening-peak curve"
    )
    r.text(
        f"{region['hosts']:,} simulated hosts ({region['slots']:,} slots) in {region['sites']} sites; "
        f"{region['venues']} venues with {region['seats']:,} seats, arriving on {mode} for {cfg['duration_s']:g} s "
        f"({sched['arrivals']:,} arrivals; sessions {sched['mean_session_s']} s on average, real lengths compressed "
        f"{sched['compression']:g}×). Broker solver: {result['solver']}; heartbeats every "
        f"{cfg['heartbeat_interval_s']:g} s. Machine: {result['machine']['cpu_count']} CPUs, Python "
        f"{result['machine']['python']}; the load generator, PostgreSQL and the broker all ran on it."
    )
    r.heading("Figures")
    r.text(
        "Targets are the tracker's; each is judged on the run its condition names (the last column says whether "
        "this run is one, and whether it met it). docs/loadtest-fleet.md says how each figure is measured."
    )
    s, h = result["sessions"], result["hosts"]
    started = s["started"] or 1
    rows: list[list[object]] = [
        ["starts/s, sustained over the window", result["starts_per_s"], "", ""],
        ["starts/s, worst 5 s", result["starts_per_s_worst_5s"], "", ""],
        ["bare gRPC echo, same client stack, same run (calls/s)", result["echo_rps"], "the yardstick", ""],
        ["starts/s ÷ echo calls/s", result["starts_per_echo_rps"], *_judged(t, "starts_per_echo_rps")],
        [
            f"goodput: starts/s ÷ the sustained {result['capacity_ref_starts_per_s'] or '—'}/s of --capacity-ref",
            result["goodput_ratio"],
            *_judged(t, "goodput_ratio"),
        ],
        ["offered rate ÷ that sustained rate", result["offered_vs_capacity"], "", ""],
        ["request → placed p50 (ms, as the patron sees it)", result["placed_ms_p50"], "", ""],
        ["request → placed p99 (ms)", result["placed_ms_p99"], *_judged(t, "placed_ms_p99")],
        [
            "placed in StartSession's own answer (one round trip)",
            f"{s['placed_in_start_answer']:,} of {s['placed']:,}",
            "",
            "",
        ],
        [
            "queue wait p50 / p99 (ms, database clock)",
            f"{result['queue_wait_ms_p50']} / {result['queue_wait_ms_p99']}",
            "",
            "",
        ],
        ["StartSession refused (RESOURCE_EXHAUSTED, retried)", result["refused_calls"], "", ""],
        ["refusal: send → answer p50 (ms)", result["rejected_ms_p50"], "", ""],
        ["refusal: send → answer p99 (ms)", result["rejected_ms_p99"], *_judged(t, "rejected_ms_p99")],
        ["patrons who gave up refused", s["gave_up_refused"], "", ""],
        ["errors (refusals retried are not errors)", sum(result["errors"].values()), "0", ""],
        ["DEADLINE_EXCEEDED", result["errors"].get("DEADLINE_EXCEEDED", 0), *_judged(t, "deadline_exceeded")],
        [
            "broker gRPC messages per session started",
            result["broker_msgs_per_session"],
            *_judged(t, "broker_msgs_per_session"),
        ],
        [
            "broker CPU idle: fleet connected, no sessions (% of a core)",
            result["idle_broker_cpu_pct"],
            *_judged(t, "idle_broker_cpu_pct"),
        ],
        [
            "hosts connected at the end of the window",
            result["hosts_connected"],
            *_judged(t, "hosts_connected"),
        ],
        ["heartbeats/s", result["heartbeats_per_s"], "", ""],
        [
            "cost per session (µ)",
            result["cost_per_session"],
            "vs greedy below" if "greedy" in result else "",
            "",
        ],
        ["latency-cap violations", result["cap_violations"], "0", ""],
        ["fleet utilisation (time average)", result["utilisation_fleet"], "", ""],
    ]
    r.table(["what", "measured", "target", "judged on this run"], rows, right=(1,))
    if result["broker_msgs_note"]:
        r.text(f"Broker messages: {result['broker_msgs_note']}.")
    r.text(
        f"Sessions: {s['requested']:,} requested, {s['started']:,} started "
        f"({100 * s['placed_in_start_answer'] / started:.0f}% placed in the start's own answer), "
        f"{s['placed']:,} placed, {s['ended']:,} ended; {s['not_placed']} not placed within the patron's patience, "
        f"{s['gave_up_refused']} gave up refused, {s['ended_before_placed']} ended before placement, "
        f"{s['turned_away']} patrons found their venue full. "
        f"Errors by method: {result['errors_by_method'] or 'none'}.\n\n"
        f"Hosts: {h['registered']:,} registered in {h['register_s']} s before the window; "
        f"{h['streams_lost']} streams lost; fewest connected during the window: {h['connected_min_in_window']:,}."
    )
    if result.get("site_loss"):
        _site_loss_section(r, result)
    r.heading("Where the CPU went (% of one core, over the window)")
    cpu: list[tuple[str, float]] = sorted(
        result["cpu_pct_of_one_core"].items(), key=lambda kv: kv[1], reverse=True
    )
    r.table(["process", "% of a core"], cpu)
    by_process = result.get("cpu_broker_by_process") or {}
    if by_process:
        counts = result.get("broker_processes") or {}
        idle = result.get("idle_broker_cpu_by_process") or {}
        r.text("The broker's processes by role (`broker` above is all of them):")
        r.table(
            ["broker role", "processes", "% of a core, window", "% of a core, idle"],
            [[k, counts.get(k, 0), v, idle.get(k)] for k, v in by_process.items()],
        )

    r.heading("Plots")
    series = {
        "request → placed (engine)": samples["engine"]["placed_ms"],
        "queue wait (engine)": samples["engine"]["queue_wait_ms"],
    }
    if "greedy" in samples:
        series["request → placed (greedy)"] = samples["greedy"]["placed_ms"]
    r.cdf("placed_cdf.png", "Request → placed latency (CDF)", series, xlabel="milliseconds")
    ts = result["timeseries"]
    r.timeseries(
        "throughput.png",
        "Throughput and queue over time",
        ts["t_s"],
        {"starts/s": ts["starts_per_s"], "placed/s": ts["placed_per_s"], "ended/s": ts["ended_per_s"]},
        ylabel="sessions per second",
        secondary={"requests waiting for PLACED": (ts["waiting_t_s"], ts["waiting"])},
        secondary_label="requests waiting",
        shade=(0.0, float(cfg["duration_s"])),
    )
    util = result["utilisation"]
    sites = sorted(util, key=lambda k: -util[k])
    r.bars(
        "utilisation.png",
        "Utilisation per site (busy ÷ slots, window average)",
        sites,
        {"utilisation": [util[k] for k in sites]},
        ylabel="fraction of slots busy",
        rotate=len(sites) > 12,
    )
    if "greedy" in result:
        g = result["greedy"]
        parts = ("price", "latency", "cold_start")
        pct = result.get("cost_vs_greedy_pct")
        r.bars(
            "cost_vs_greedy.png",
            f"Cost per session, engine vs greedy ({'—' if pct is None else f'{pct:+.2f}%'})",
            ["price × slots", "λ·latency", "cold start", "total"],
            {
                "engine": [*(result["cost"][p] or 0 for p in parts), result["cost_per_session"] or 0],
                "greedy": [*(g["cost"][p] or 0 for p in parts), g["cost_per_session"] or 0],
            },
            ylabel="micros per session",
        )
        keys = [k for k in g if k not in ("cost", "sessions", "cpu_pct_of_one_core")]
        r.table(["", "engine", "greedy"], [[k, _sum_if_dict(result[k]), _sum_if_dict(g[k])] for k in keys])
    if result.get("profile"):
        r.heading("Profile of the broker")
        profile_section(r, result["profile"], what="The broker process over the window")
        if result.get("profile_note"):
            r.text(result["profile_note"])
    elif result.get("profile_note"):
        r.text(f"Profile: {result['profile_note']}")
    if result["error_samples"]:
        r.heading("Error samples")
        r.text("\n".join(f"- `{e}`" for e in result["error_samples"]))
    return r.write()
