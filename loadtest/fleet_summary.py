"""A fleet run's figures: one measured window (loadtest.fleet.Window) into the results JSON and the samples the
report plots (loadtest.report.fleet_report), the comparison with greedy, what was run on what, the targets and
whether this run met them, and the line for the terminal. Computation only (`about` also looks at the machine);
docs/loadtest-fleet.md explains every figure.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from loadtest import fleet_agents, fleet_patrons, fleet_region, fleet_venues

if TYPE_CHECKING:
    from loadtest import fleet

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
    "broker_msgs_per_session",
    "idle_broker_cpu_pct",
    "refused_calls",
    "rejected_ms_p99",
)
F64 = npt.NDArray[np.float64]

#: The tracker's numbers to reach, and the run each one is judged on (`when`; none: every run). They supersede the
#: first targets (3,000 starts/s, request→placed p99 ≤ 100 ms on one broker process).
SUSTAINED_SHARE = 0.8  # "at 80% of the sustained rate": --rate over --capacity-ref's starts_per_s
SITE_LOSS_SESSIONS = 300
TARGETS: dict[str, dict[str, Any]] = {
    "starts_per_echo_rps": {"at_least": 0.08},
    "placed_ms_p99": {
        "at_most": 250,
        "when": "at 80% of the sustained rate (--rate ÷ --capacity-ref's starts/s)",
    },
    "goodput_ratio": {"at_least": 0.9, "when": "--rate 3000, with --capacity-ref"},
    "deadline_exceeded": {"at_most": 0, "when": "--rate 3000"},
    "rejected_ms_p99": {"at_most": 50, "when": "--rate 3000"},
    "idle_broker_cpu_pct": {"at_most": 15, "when": "10,000 hosts"},
    "broker_msgs_per_session": {"at_most": 8},
    "resumes_lost": {"at_most": 0, "when": "--site-loss of a site holding ≥ 300 sessions, --rate 300"},
    "resume_to_placed_ms_p99": {
        "at_most": 2000,
        "when": "--site-loss of a site holding ≥ 300 sessions, --rate 300",
    },
    "hosts_connected": {"at_least": 10_000, "when": "10,000 hosts"},
}


def _q(values: F64, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values.size else None


def _mean(values: F64) -> float | None:
    return round(float(values.mean()), 1) if values.size else None


def _per_second(times: F64, length: int) -> list[int]:
    idx = np.floor(times).astype(np.int64)
    counts: list[int] = np.bincount(idx[(idx >= 0) & (idx < length)], minlength=length).tolist()
    return counts


def _utilisation(
    region: fleet_region.Region, win: fleet.Window, d: float
) -> tuple[dict[str, float], float, list[float]]:
    """Per site: busy slots ÷ slots, averaged over the window; the fleet's; busy slots per second (plot)."""
    site_slots = region.site_slots()
    busy: dict[str, float] = {}
    grid = np.arange(0, int(np.ceil(d)) + 1, dtype=np.float64)
    fleet_busy = np.zeros(grid.size)
    for a in win.agents:  # each agent process samples its own hosts' busy slots once a second
        samples = [(t - win.t_zero, b) for t, b in a["busy_samples"]]
        inside = [b for t, b in samples if 0 <= t <= d]
        for site in {s for b in inside for s in b}:
            busy[site] = busy.get(site, 0.0) + float(np.mean([b.get(site, 0) for b in inside]))
        if samples:
            ts = np.array([t for t, _ in samples])
            fleet_busy += np.interp(
                grid, ts, np.array([sum(b.values()) for _, b in samples], dtype=float), left=0.0
            )
    per_site = {s: round(busy.get(s, 0.0) / n, 4) for s in region.sites if (n := site_slots.get(s, 0)) > 0}
    return per_site, round(sum(busy.values()) / max(1, region.slots), 4), fleet_busy.round(1).tolist()


def capacity_of(text: str) -> float:
    """An earlier run's sustained starts/s, from its JSON (--capacity-ref); ValueError saying what is wrong."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"is not JSON ({exc.msg})") from None
    value = data.get("starts_per_s") if isinstance(data, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError("has no starts_per_s above 0 (not a fleet run's JSON?)")
    return float(value)


def refusals(patrons: list[dict[str, Any]]) -> dict[str, Any]:
    """Admission control as the patrons met it: StartSession calls answered RESOURCE_EXHAUSTED, and how long each
    refusal took from sending to the answer."""
    ms = np.array([x for p in patrons for x in p["refused_ms"]], dtype=np.float64)
    return {"refused_calls": int(ms.size), "rejected_ms_p50": _q(ms, 50), "rejected_ms_p99": _q(ms, 99)}


def resumes(patrons: list[dict[str, Any]], site_loss: dict[str, Any] | None) -> dict[str, Any]:
    """A site lost (--site-loss) and what became of its sessions; the figures are None without one, and the
    resume counts None when the patrons were never told (the agents did not cut the site)."""
    records = [r for p in patrons for r in p["resumes"]]
    told = [s for p in patrons for s in p["site_loss"]]
    outcomes = Counter(str(r["outcome"]) for r in records)
    resume_ms = np.array(
        [r["resume_to_placed_ms"] for r in records if r["resume_to_placed_ms"] is not None], dtype=np.float64
    )
    cut_at = site_loss.get("cut_at_s") if site_loss else None
    detect = np.array(
        [
            (r["seen_ended_at"] - cut_at) * 1000
            for r in records
            if cut_at is not None and r["end_reason"] == "HOST_LOST" and r["seen_ended_at"] is not None
        ],
        dtype=np.float64,
    )
    summary = None
    if site_loss is not None:
        summary = {
            **{k: site_loss.get(k) for k in ("site", "at_s", "hosts_dropped")},
            "sessions_on_site": sum(s["sessions"] for s in told) if told else None,
            "placed_there_after": sum(1 for r in records if not r["on_site_when_told"]),
            **{k: site_loss.get(k) for k in ("cut_at_s", "chosen_by", "held_by_site_then", "note")},
        }
    return {
        "site_loss": summary,
        "resumed": sum(p["resumed"] for p in patrons) if told else None,
        "resumes_lost": sum(n for k, n in outcomes.items() if k.startswith("lost:")) if told else None,
        "resume_outcomes": dict(outcomes),
        "resume_to_placed_ms_p50": _q(resume_ms, 50),
        "resume_to_placed_ms_p99": _q(resume_ms, 99),
        "host_lost_detect_ms_p50": _q(detect, 50),
        "host_lost_detect_ms_p99": _q(detect, 99),
    }


def messages_per_session(before: int | None, after: int | None, started: int) -> float | None:
    """The broker's gRPC messages (in and out, all its processes) over the window ÷ the sessions started in it."""
    if before is None or after is None or started <= 0:
        return None
    return round((after - before) / started, 2)


def placement_rounds(
    before: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]], seconds: float
) -> dict[str, Any] | None:
    """The leader's placement rounds in the window, from its round histogram read before and after
    (fleet_processes.round_phases): rounds, rounds/s, and per phase the mean and the p50/p99 as the upper bound of
    the bucket they fall in (ms). None when the broker does not time its rounds or ran none."""
    if not after:
        return None
    out: dict[str, Any] = {}
    rounds = 0
    for phase, now in after.items():
        was = before.get(phase, {"buckets": [], "sum_s": 0.0, "count": 0})
        earlier = dict(was["buckets"])
        cum = [(bound, n - earlier.get(bound, 0)) for bound, n in now["buckets"]]
        count = now["count"] - was["count"]
        rounds = max(rounds, count)
        if count <= 0:
            continue

        def upper(q: float, cum: list[tuple[float, int]] = cum, count: int = count) -> float | None:
            for bound, n in cum:
                if n >= q * count:
                    return None if bound == float("inf") else round(bound * 1000, 1)
            return None

        out[phase] = {
            "mean_ms": round((now["sum_s"] - was["sum_s"]) / count * 1000, 2),
            "p50_ms_le": upper(0.5),
            "p99_ms_le": upper(0.99),
        }
    if rounds <= 0:
        return None
    return {"rounds": rounds, "rounds_per_s": round(rounds / seconds, 1), **out}


def summarise(
    cfg: fleet.FleetConfig, region: fleet_region.Region, win: fleet.Window, capacity: float | None = None
) -> tuple[dict[str, Any], dict[str, F64]]:
    """The window's figures (the JSON object) and the samples the report plots. `capacity`: the sustained
    starts/s of an earlier run (--capacity-ref), for goodput_ratio."""
    from broker.placement import Params

    params = Params()
    d = cfg.duration_s
    n = len(fleet_patrons.RECORD_FIELDS)
    rec = np.array([r for p in win.patrons for r in p["records"]], dtype=np.float64).reshape(-1, n)
    t_start, placed_ms, queue_ms, lat, cap, price, slots, to_created, from_placed = (rec[:, i] for i in range(n))
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
    starts_per_s = round(in_window / d, 1)
    msgs = messages_per_session(win.messages_before, win.messages_after, in_window)
    result: dict[str, Any] = {
        "starts_per_s": starts_per_s,
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
        "goodput_ratio": round(starts_per_s / capacity, 3) if capacity else None,
        "capacity_ref_starts_per_s": capacity,
        "offered_vs_capacity": round(cfg.rate / capacity, 3) if capacity and cfg.rate else None,
        "broker_msgs_per_session": msgs,
        "broker_msgs_in_window": (
            win.messages_after - win.messages_before
            if win.messages_after is not None and win.messages_before is not None
            else None
        ),
        "broker_msgs_note": ""
        if msgs is not None
        else win.messages_note or "no session started in the window",
        "placement_rounds": placement_rounds(win.rounds_before, win.rounds_after, d),
        "idle_broker_cpu_pct": win.idle_broker_cpu,
        "idle_broker_cpu_by_process": win.idle_broker_cpu_by_process,
        **refusals(win.patrons),
        **resumes(win.patrons, win.site_loss),
        "solver": win.solver,
        "requested_starts_per_s": cfg.rate,
        "starts_per_s_worst_5s": worst5,
        "placed_per_s": round(int(((placed_at >= 0) & (placed_at < d)).sum()) / d, 1),
        "placed_ms_p90": _q(placed_ms, 90),
        "placed_ms_p999": _q(placed_ms, 99.9),
        "placed_ms_max": _q(placed_ms, 100),
        # request→placed in three parts (each percentile on its own): the way in, the queue, the way out.
        "to_created_ms_p50": _q(to_created, 50),
        "to_created_ms_p99": _q(to_created, 99),
        "from_placed_ms_p50": _q(from_placed, 50),
        "from_placed_ms_p99": _q(from_placed, 99),
        "utilisation_fleet": fleet_utilisation,
        "sessions": {
            "scheduled": win.scheduled,
            "requested": sum(p["issued"] for p in win.patrons),
            "started": sum(p["started"] for p in win.patrons),
            "placed": int(rec.shape[0]),
            "placed_in_start_answer": sum(p["placed_at_start"] for p in win.patrons),
            "ended": sum(p["ended"] for p in win.patrons),
            "never_ended": sum(p["end_failed"] for p in win.patrons),
            "not_placed": sum(p["not_placed"] for p in win.patrons),
            "gave_up_refused": sum(p["gave_up_refused"] for p in win.patrons),
            "watch_refused": sum(p.get("watch_refused", 0) for p in win.patrons),
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
        "cpu_broker_by_process": win.cpu_broker_by_process,
        "broker_processes": win.broker_processes,
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


def against_greedy(engine: Mapping[str, Any], greedy: Mapping[str, Any]) -> dict[str, Any]:
    """The fields a run with --compare-greedy adds: greedy's headline figures and the cost difference."""
    g_cost, e_cost = greedy["cost_per_session"], engine["cost_per_session"]
    return {
        "greedy": {k: greedy[k] for k in (*HEADLINE, "cost", "sessions", "cpu_pct_of_one_core")},
        "cost_vs_greedy_pct": round((e_cost - g_cost) / g_cost * 100, 3) if g_cost and e_cost else None,
    }


def about(
    cfg: fleet.FleetConfig,
    region: fleet_region.Region,
    schedule: fleet_venues.Schedule,
    seed_s: float,
    out: Path,
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
            # The cores this run may use (taskset, a container's CPU set); the machine's beside them.
            "cpu_count": len(os.sched_getaffinity(0)),
            "machine_cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
        },
        "targets": TARGETS,
    }


def _applies(when: str | None, result: Mapping[str, Any]) -> bool:
    """Whether this run is the one a target is judged on (TARGETS' `when`)."""
    rate = result["config"].get("rate")
    if when is None:
        return True
    if when.startswith("at 80%"):
        offered = result.get("offered_vs_capacity")
        return offered is not None and abs(offered - SUSTAINED_SHARE) <= 0.05
    if when.startswith("--rate 3000"):
        return rate == 3000 and ("capacity" not in when or result.get("goodput_ratio") is not None)
    if when == "10,000 hosts":
        return int(result["region"]["hosts"]) >= 10_000
    if when.startswith("--site-loss"):
        loss = result.get("site_loss") or {}
        return rate == 300 and (loss.get("sessions_on_site") or 0) >= SITE_LOSS_SESSIONS
    raise ValueError(f"no rule for a target's condition {when!r}")


def check_targets(
    result: Mapping[str, Any], targets: Mapping[str, Mapping[str, Any]] = TARGETS
) -> dict[str, Any]:
    """Each target beside this run's figure: whether the run is one it is judged on, and whether it was met
    (None: not judged here, or not measured)."""
    out = {}
    for name, target in targets.items():
        measured = (
            result["errors"].get("DEADLINE_EXCEEDED", 0) if name == "deadline_exceeded" else result.get(name)
        )
        applies = _applies(target.get("when"), result)
        met = None
        if applies and measured is not None:
            met = measured >= target["at_least"] if "at_least" in target else measured <= target["at_most"]
        bound = f"≥ {target['at_least']:,}" if "at_least" in target else f"≤ {target['at_most']:,}"
        out[name] = {
            "measured": measured,
            "target": bound,
            "when": target.get("when"),
            "applies": applies,
            "met": met,
        }
    return out


def one_line(result: Mapping[str, Any]) -> str:
    """The run in one line, for the terminal."""
    line = (
        f"{result['hosts_connected']:,} hosts connected ({result['heartbeats_per_s']:,.0f} heartbeats/s): "
        f"{result['starts_per_s']:,.1f} starts/s (echo {result['echo_rps'] or 0:,.0f} rps, ratio "
        f"{result['starts_per_echo_rps'] or 0:.4f}), request→placed p50 {result['placed_ms_p50']} ms "
        f"p99 {result['placed_ms_p99']} ms, queue wait p99 {result['queue_wait_ms_p99']} ms, "
        f"{sum(result['errors'].values())} errors, cost/session {result['cost_per_session'] or 0:,.0f} µ, "
        f"{result['cap_violations']} cap violations; {result['refused_calls']:,} refused "
        f"(p99 {result['rejected_ms_p99']} ms), {result['broker_msgs_per_session']} broker messages/session, "
        f"idle broker CPU {result['idle_broker_cpu_pct']}%"
    )
    if result.get("goodput_ratio") is not None:
        line += f", goodput {result['goodput_ratio']:.3f} of {result['capacity_ref_starts_per_s']:,.1f}/s"
    loss = result.get("site_loss")
    if loss is not None and loss["sessions_on_site"] is None:
        line += f"; site {loss['site']} not lost: {loss['note']}"
    elif loss is not None:
        line += (
            f"; site {loss['site']} lost ({loss['hosts_dropped']} hosts, {loss['sessions_on_site']} sessions): "
            f"{result['resumed']} resumed, {result['resumes_lost']} lost, resume→placed p99 "
            f"{result['resume_to_placed_ms_p99']} ms"
        )
    if result.get("cost_vs_greedy_pct") is not None:
        line += f"; cost vs greedy {result['cost_vs_greedy_pct']:+.2f}%"
    if "targets_met" in result:
        judged = [v["met"] for v in result["targets_met"].values() if v["met"] is not None]
        line += f"; targets judged on this run: {sum(judged)}/{len(judged)} met"
    return line
