"""The placement benchmark: replay one arrival trace through each solver and compare them.

Each solver replays the trace with its own evolving host state: every `window_ms` of trace time the broker
takes the pending requests (oldest first, at most `batch`), loosens each one's target by how long it has
waited, solves, and starts the placed sessions; sessions end after their duration and give their slots back
(to the lease, when they were on one). A request whose pending reason is NO_SITE_WITHIN_CAP can never be
placed and leaves at once; any other leaves after `abandon_ms` of waiting.

Only the solve call is timed (time.perf_counter around it, graph building included); building the Problem
from the replay's state (the hosts' columns kept between batches, as the broker's HostTable keeps them), validating
the answer and applying it are not.
"""

from __future__ import annotations

import dataclasses
import heapq
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from broker.placement import (
    Host,
    Lease,
    Params,
    PendingReason,
    Problem,
    Request,
    Solution,
    engine,
    exact,
    greedy,
    validate_solution,
)
from broker.placement.host_table import HostTable, host_columns
from loadtest.instance import Instance, TraceRequest

Solver = Callable[[Problem], Solution]


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    """How the trace is cut into batches."""

    batch: int = 1000
    window_ms: int = 2000
    abandon_ms: int = 30_000


@dataclass(slots=True)
class BatchRecord:
    """One solved batch."""

    time_ms: int
    requests: int
    placed: int
    solve_ms: float
    cost_micros: int
    violations: int
    cap_violations: int
    solver: str
    # cost_micros without the pending penalties: what the placed sessions cost
    placement_cost_micros: int = 0
    # the engine's answer to this same problem (exact replay only): its objective, placement cost and placements;
    # and whether CP-SAT proved its own answer optimal
    engine_cost_micros: int | None = None
    engine_placement_cost_micros: int | None = None
    engine_placed: int | None = None
    proven_optimal: bool = False
    multi_slot: int = 0
    # with `bound`: the batch's lower bound (engine.lower_bound): no answer leaving `bound_pending` pending
    # places the rest for less than `bound_placement_micros`
    bound_placement_micros: int | None = None
    bound_pending: int | None = None

    @property
    def gap_bound_pct(self) -> float | None:
        """How far above the optimum this answer's placement cost can be at most, by the lower bound (None without
        one, or where the answer left more pending than the bound)."""
        if self.bound_placement_micros is None or self.requests - self.placed != self.bound_pending:
            return None
        return _pct(self.placement_cost_micros, self.bound_placement_micros) or 0.0


@dataclass(slots=True)
class ReplayResult:
    """A solver's whole replay."""

    name: str
    batches: list[BatchRecord] = field(default_factory=list)
    requests: int = 0
    placed: int = 0
    abandoned: int = 0
    unreachable: int = 0
    placement_cost_micros: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    violation_samples: list[str] = field(default_factory=list)
    assignments: dict[str, str] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)  # with keep_problems: each batch's problem

    @property
    def solve_s(self) -> float:
        return sum(b.solve_ms for b in self.batches) / 1000

    @property
    def cost_micros(self) -> int:
        return sum(b.cost_micros for b in self.batches)

    @property
    def unplaced(self) -> int:
        return self.abandoned + self.unreachable

    @property
    def cap_violations(self) -> int:
        return sum(b.cap_violations for b in self.batches)

    @property
    def violations(self) -> int:
        return sum(b.violations for b in self.batches)

    @property
    def placements_per_s(self) -> float:
        return self.placed / self.solve_s if self.solve_s else 0.0

    def batch_ms(self, q: float) -> float:
        """A quantile of solve times per batch (nearest rank)."""
        times = sorted(b.solve_ms for b in self.batches)
        if not times:
            return 0.0
        return times[min(len(times) - 1, max(0, round(q * len(times) + 0.5) - 1))]


class _State:
    """Hosts, leases and running sessions as one replay sees them."""

    def __init__(self, instance: Instance) -> None:
        self.hosts: list[Host] = list(instance.hosts)
        self.position = {h.id: i for i, h in enumerate(self.hosts)}
        # The hosts as placement columns, kept between batches as the broker's HostTable keeps them (only the
        # hosts a batch changed are rewritten); each problem gets a snapshot.
        self.table = HostTable()
        self.table.replace(self.hosts)
        self.free = [h.free_slots for h in self.hosts]
        self.lease_base = {lease.id: lease for lease in instance.leases}
        self.unused = {lease.id: lease.unused_slots for lease in instance.leases}
        self.running: list[tuple[int, int, int, int, str, int]] = []  # end, seq, host, slots, lease, leased
        self.seq = 0
        for session in instance.running:
            self._push(session.end_ms, self.position[session.host_id], session.slots, "", 0)

    def _push(self, end_ms: int, host: int, slots: int, lease: str, leased: int) -> None:
        self.seq += 1
        heapq.heappush(self.running, (end_ms, self.seq, host, slots, lease, leased))

    def _set_free(self, host: int, free: int) -> None:
        self.free[host] = free
        self.hosts[host] = dataclasses.replace(self.hosts[host], free_slots=free)
        self.table.put(self.hosts[host])

    def release(self, now_ms: int) -> None:
        """End every session due by now."""
        while self.running and self.running[0][0] <= now_ms:
            _, _, host, slots, lease, leased = heapq.heappop(self.running)
            self._set_free(host, self.free[host] + slots)
            if lease:
                self.unused[lease] += leased

    def leases(self) -> list[Lease]:
        return [
            dataclasses.replace(base, unused_slots=self.unused[lid]) for lid, base in self.lease_base.items()
        ]

    def start(self, now_ms: int, solution: Solution, requests: dict[str, TraceRequest]) -> None:
        """Start the placed sessions."""
        for rid, host_id in solution.assignments.items():
            tr = requests[rid]
            host = self.position[host_id]
            self._set_free(host, self.free[host] - tr.slots)
            lease = solution.lease_use.get(rid, "")
            leased = solution.lease_slots.get(rid, 0)
            if lease:
                self.unused[lease] -= leased
            self._push(now_ms + tr.duration_ms, host, tr.slots, lease, leased)


def placement_cost(solution: Solution, params: Params) -> int:
    """What the placed sessions cost: the objective without the pending penalties (which would drown a gap in
    placement cost: 10^9 µ per pending request against a few million per placement)."""
    return solution.cost_micros - params.stay_pending_cost_micros * len(solution.unplaced)


def _cap_violations(errors: list[str]) -> int:
    return sum(1 for e in errors if "latency" in e)


def replay(
    instance: Instance,
    name: str,
    solve: Solver,
    config: ReplayConfig,
    *,
    keep_assignments: bool = False,
    keep_problems: bool = False,
    compare: Solver | None = None,
    bound: Callable[[Problem], engine.Bound] | None = None,
    progress: bool = False,
) -> ReplayResult:
    """Replay the trace through `solve`; with `compare`, also solve every batch with it (untimed) to compare;
    with `bound`, work out each batch's lower bound where it has multi-slot requests (untimed)."""
    policy = instance.params.latency_policy
    state = _State(instance)
    trace = sorted(instance.requests, key=lambda r: (r.arrival_ms, r.id))
    by_id = {r.id: r for r in trace}
    result = ReplayResult(name)
    pending: list[TraceRequest] = []
    nxt = 0
    now = 0
    while nxt < len(trace) or pending:
        if not pending and trace[nxt].arrival_ms > now:
            # nothing to do until the next arrival: skip to the window it falls in
            now = -(-trace[nxt].arrival_ms // config.window_ms) * config.window_ms
        while nxt < len(trace) and trace[nxt].arrival_ms <= now:
            pending.append(trace[nxt])
            nxt += 1
        state.release(now)
        kept = [r for r in pending if now - r.arrival_ms <= config.abandon_ms]
        result.abandoned += len(pending) - len(kept)
        pending = kept
        batch, rest = pending[: config.batch], pending[config.batch :]
        if batch:
            requests = [
                Request(
                    r.id,
                    r.venue_id,
                    r.game_id,
                    r.cap_ms,
                    policy.target_ms(r.cap_ms, now - r.arrival_ms),
                    r.arrival_ms,
                    r.slots,
                )
                for r in batch
            ]
            hosts, columns = state.table.snapshot()
            problem = Problem(
                requests,
                hosts,
                instance.latency,
                state.leases(),
                instance.params,
                host_columns=columns,
                images=instance.images,
            )
            t0 = time.perf_counter()
            solution = solve(problem)
            solve_ms = (time.perf_counter() - t0) * 1000
            errors = validate_solution(problem, solution)
            if errors and len(result.violation_samples) < 5:
                result.violation_samples.extend(errors[: 5 - len(result.violation_samples)])
            record = BatchRecord(
                time_ms=now,
                requests=len(batch),
                placed=len(solution.assignments),
                solve_ms=solve_ms,
                cost_micros=solution.cost_micros,
                violations=len(errors),
                cap_violations=_cap_violations(errors),
                solver=solution.solver,
                placement_cost_micros=placement_cost(solution, instance.params),
                proven_optimal=solution.proven_optimal,
                multi_slot=sum(1 for r in requests if r.slots > 1),
            )
            if bound is not None and record.multi_slot:
                lower = bound(problem)
                record.bound_placement_micros, record.bound_pending = lower.placement_micros, lower.pending
            if compare is not None:
                theirs = compare(problem)
                record.engine_cost_micros = theirs.cost_micros
                record.engine_placement_cost_micros = placement_cost(theirs, instance.params)
                record.engine_placed = len(theirs.assignments)
            result.batches.append(record)
            result.requests += len(batch)
            result.placed += len(solution.assignments)
            result.placement_cost_micros += record.placement_cost_micros
            if keep_assignments:
                result.assignments.update(solution.assignments)
            if keep_problems:
                result.problems.append(problem)
            state.start(now, solution, by_id)
            still: list[TraceRequest] = []
            for r in batch:
                reason = solution.unplaced.get(r.id)
                if reason is None:
                    continue
                result.reasons[reason.value] += 1
                if reason is PendingReason.NO_SITE_WITHIN_CAP:
                    result.unreachable += 1
                else:
                    still.append(r)
            pending = still + rest
            if progress:
                print(
                    f"\r{name}: {nxt}/{len(trace)} arrived, {result.placed} placed", end="", file=sys.stderr
                )
        now += config.window_ms
    if progress:
        print(file=sys.stderr)
    return result


def headline(instance: Instance, solve: Solver, batch: int, batches: int) -> dict[str, Any]:
    """Solver-only placements/s on `batches` batches of `batch` fresh requests against the initial hosts."""
    policy = instance.params.latency_policy
    trace = sorted(instance.requests, key=lambda r: (r.arrival_ms, r.id))
    placed = 0
    requests = 0
    times: list[float] = []
    columns = host_columns(instance.hosts)  # made once, as the broker's HostTable keeps them
    for b in range(batches):
        chunk = trace[b * batch : (b + 1) * batch]
        if not chunk:
            break
        reqs = [
            Request(
                r.id, r.venue_id, r.game_id, r.cap_ms, policy.target_ms(r.cap_ms, 0), r.arrival_ms, r.slots
            )
            for r in chunk
        ]
        problem = Problem(
            reqs,
            instance.hosts,
            instance.latency,
            instance.leases,
            instance.params,
            host_columns=columns,
            images=instance.images,
        )
        t0 = time.perf_counter()
        solution = solve(problem)
        times.append(time.perf_counter() - t0)
        placed += len(solution.assignments)
        requests += len(reqs)
    total = sum(times)
    return {
        "batches": len(times),
        "requests_per_batch": batch,
        "hosts": len(instance.hosts),
        "placements_per_s": placed / total if total else 0.0,
        "requests_per_s": requests / total if total else 0.0,
        "batch_ms_p50": statistics.median(times) * 1000 if times else 0.0,
        "batch_ms_max": max(times) * 1000 if times else 0.0,
    }


def exact_sample(run: ReplayResult, exact_solve: Solver, count: int) -> list[dict[str, Any]]:
    """CP-SAT on `count` of the engine's own batch problems, spread over the trace (the peak included)."""
    n = len(run.problems)
    if n == 0 or count <= 0:
        return []
    picks = sorted({min(n - 1, round((i + 1) * n / (count + 1))) for i in range(count)})
    out = []
    for i in picks:
        t0 = time.perf_counter()
        solution = exact_solve(run.problems[i])
        batch = run.batches[i]
        problem = run.problems[i]
        exact_placement = placement_cost(solution, problem.params)
        out.append(
            {
                "batch": i,
                "requests": batch.requests,
                "multi_slot_requests": sum(1 for r in problem.requests if r.slots > 1),
                "engine_cost": batch.cost_micros,
                "engine_placement_cost": batch.placement_cost_micros,
                "engine_placed": batch.placed,
                "engine_proven_optimal": batch.proven_optimal,
                "engine_path": batch.solver,
                "exact_cost": solution.cost_micros,
                "exact_placement_cost": exact_placement,
                "exact_placed": len(solution.assignments),
                "exact_proven_optimal": solution.proven_optimal,
                # On placement cost, and only comparable when both placed as many (else see the counts).
                "gap_pct": _pct(batch.placement_cost_micros, exact_placement)
                if batch.placed == len(solution.assignments)
                else None,
                "objective_gap_pct": _pct(batch.cost_micros, solution.cost_micros),
                "exact_s": time.perf_counter() - t0,
            }
        )
    return out


def lower_bound(problem: Problem) -> engine.Bound:
    """The batch's lower bound (broker.placement.engine.lower_bound), what the replay measures gaps against."""
    return engine.lower_bound(problem)


def gap_bound(run: ReplayResult, target_pct: float = engine.GAP_TARGET_PCT) -> dict[str, Any] | None:
    """The engine's batches with multi-slot requests against their lower bounds: how many it proved optimal, how
    many are within `target_pct` of the bound (so of the optimum), the largest and mean gap bound."""
    batches = [b for b in run.batches if b.bound_placement_micros is not None]
    if not batches:
        return None
    gaps = [g for g in (b.gap_bound_pct for b in batches) if g is not None]
    return {
        "batches": len(batches),
        "proven_optimal": sum(1 for b in batches if b.proven_optimal),
        "within_target": sum(1 for g in gaps if g <= target_pct),
        "target_pct": target_pct,
        "more_pending_than_bound": len(batches) - len(gaps),
        "max_gap_bound_pct": max(gaps, default=0.0),
        "mean_gap_bound_pct": statistics.fmean(gaps) if gaps else 0.0,
    }


def _pct(a: float, b: float) -> float | None:
    return (a - b) / b * 100 if b else None


def _summary(r: ReplayResult) -> dict[str, Any]:
    return {
        "placements_per_s": r.placements_per_s,
        "batch_ms_p50": r.batch_ms(0.5),
        "batch_ms_p99": r.batch_ms(0.99),
        "batches": len(r.batches),
        "requests_solved": r.requests,
        "placed": r.placed,
        "unplaced": r.unplaced,
        "abandoned": r.abandoned,
        "unreachable": r.unreachable,
        "cost_total": r.cost_micros,
        "placement_cost_total": r.placement_cost_micros,
        "cap_violations": r.cap_violations,
        "violations": r.violations,
        "violation_samples": r.violation_samples,
        "pending_reasons": dict(r.reasons),
        "solver_paths": dict(Counter(b.solver for b in r.batches)),
    }


def report(
    engine_run: ReplayResult,
    greedy_run: ReplayResult,
    exact_run: ReplayResult | None,
    head: dict[str, Any],
    config: dict[str, Any],
    sample: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The benchmark's JSON object (see docs/placement.md for the fields)."""
    exact_check: dict[str, Any] | None = None
    if exact_run is not None:
        proven = [b for b in exact_run.batches if b.proven_optimal and b.engine_cost_micros is not None]
        # Gaps on placement cost, over the batches where the engine placed as many as the optimum; a batch where
        # it placed fewer is counted apart (it is worse, not cheaper).
        same = [b for b in proven if b.engine_placed == b.placed]
        gaps = [_pct(b.engine_placement_cost_micros or 0, b.placement_cost_micros) or 0.0 for b in same]
        exact_check = {
            "batches": len(exact_run.batches),
            "proven_optimal": len(proven),
            "engine_equal_to_optimum": sum(1 for b in proven if b.engine_cost_micros == b.cost_micros),
            "engine_placed_fewer": sum(1 for b in proven if (b.engine_placed or 0) < b.placed),
            "engine_max_gap_pct": max(gaps, default=0.0),
            "engine_mean_gap_pct": statistics.fmean(gaps) if gaps else 0.0,
        }
    return {
        "placements_per_s": engine_run.placements_per_s,
        "batch_ms_p50": engine_run.batch_ms(0.5),
        "batch_ms_p99": engine_run.batch_ms(0.99),
        "cost_total_engine": engine_run.cost_micros,
        "cost_total_greedy": greedy_run.cost_micros,
        "cost_vs_greedy_pct": _pct(engine_run.cost_micros, greedy_run.cost_micros),
        "placement_cost_vs_greedy_pct": _pct(
            engine_run.placement_cost_micros, greedy_run.placement_cost_micros
        ),
        # On placement cost (pending penalties left out), with the placements of each beside it.
        "gap_vs_exact_pct": _pct(engine_run.placement_cost_micros, exact_run.placement_cost_micros)
        if exact_run
        else None,
        "placed_engine": engine_run.placed,
        "placed_exact": exact_run.placed if exact_run else None,
        "objective_gap_vs_exact_pct": _pct(engine_run.cost_micros, exact_run.cost_micros) if exact_run else None,
        "cap_violations": engine_run.cap_violations,
        "unplaced": engine_run.unplaced,
        "baseline": {"solver": "greedy", **_summary(greedy_run)},
        "solvers": {
            "engine": _summary(engine_run),
            "greedy": _summary(greedy_run),
            "exact": _summary(exact_run) if exact_run else None,
        },
        "exact_check": exact_check,
        "gap_bound": gap_bound(engine_run),
        "exact_sample": sample or [],
        "headline": head,
        "config": config,
    }


def table(engine_run: ReplayResult, greedy_run: ReplayResult, exact_run: ReplayResult | None) -> str:
    """The comparison as a fixed-width text table."""
    head = (
        f"{'solver':<8} {'placements/s':>12} {'batch ms p50':>12} {'p99':>8} {'total cost':>18} "
        f"{'vs greedy':>9} {'vs exact':>9} {'cap viol.':>9} {'unplaced':>8}"
    )
    lines = [head, "-" * len(head)]
    for run in (engine_run, greedy_run, exact_run):
        if run is None:
            lines.append(f"{'exact':<8} (replay skipped: --batch is larger than --exact-max-requests)")
            continue
        vs_greedy = _pct(run.cost_micros, greedy_run.cost_micros)
        # vs exact: on placement cost (pending penalties left out); the unplaced column says who placed fewer
        vs_exact = _pct(run.placement_cost_micros, exact_run.placement_cost_micros) if exact_run else None
        lines.append(
            f"{run.name:<8} {run.placements_per_s:>12,.0f} {run.batch_ms(0.5):>12.1f} {run.batch_ms(0.99):>8.1f} "
            f"{run.cost_micros:>18,} {_fmt_pct(vs_greedy):>9} {_fmt_pct(vs_exact):>9} {run.cap_violations:>9} "
            f"{run.unplaced:>8}"
        )
    return "\n".join(lines)


def _fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}%"


def engine_solver(time_limit_s: float, *, prove: bool = False) -> Solver:
    """The engine as a one-argument solver (`prove`: every mixed batch the split does not prove goes to the
    pattern model, not only those far above the split's bound)."""
    return lambda problem: engine.solve(problem, time_limit_s=time_limit_s, prove=prove)


def exact_solver(time_limit_s: float, workers: int) -> Solver:
    """CP-SAT as a one-argument solver."""
    return lambda problem: exact.solve(problem, time_limit_s=time_limit_s, workers=workers)


GREEDY: Solver = greedy.solve
