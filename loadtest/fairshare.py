"""Fair share under load: one venue floods the broker, another's latency is measured beside its unloaded baseline.

    python -m loadtest.fairshare [--seconds 8] [--times 10] [--processes 4] [--connections 4] [--flood 64]
                                 [--workers 0] [--max-inflight 256] [--max-streams 100] [--shed-lag-ms 20]
                                 [--accept-ahead 0] [--admission both|all|on|on-ahead|off] [--out DIR]
                                 [--flood-priority idle|nice] [--broker-cpus CPUS] [--flood-cpus CPUS]

A real broker (`cloudseat-broker serve`, security on, an embedded PostgreSQL in a temporary folder; `--workers N`
tenant worker processes sharing the port, 0: one process) with two venues. Phases, each `--seconds` long, all in
one run so the figures compare:

1. quiet: venue "quiet" alone calls GetVenue at a steady 50/s (open loop, one connection): its unloaded p50/p99;
2. capacity: venue "flood" alone, closed loop (`--flood` calls in flight on each of its connections, asking again
   at once): the broker's capacity in calls answered per second; a fair share is half of the largest capacity
   measured in the run (admission off runs first: admission on answers a flood that ignores its hints less than it
   could), or of `--capacity`;
3. flood: both at once, the quiet venue as in 1, the flood open loop at `--times` fair shares a second (10: five
   times the capacity), whatever the answers, each call with a 2 s deadline: the quiet venue's p50/p99 flooded,
   and what became of the flood's calls (answered, refused, expired: a call that waited past its deadline, in the
   flood's own client behind the broker's bound per connection or in the broker).

The flood comes from `--processes` generator processes with `--connections` connections each (a separate HTTP/2
connection per client), ignoring every retry hint (the worst-behaved client). A real flood comes from other
machines; here the generators share the broker's cores, so by default they run at idle CPU priority
(`--flood-priority idle`, SCHED_IDLE: a core only when nothing of normal priority wants it), using only the CPU the
broker and the quiet venue leave; `--flood-priority nice` is the old mode (niceness 10: they take a share of the
cores). That holds only if this process (and so the broker and the quiet venue) runs at normal priority: started
under `chrt -i 0` everything is SCHED_IDLE alike and the run says so. `--flood-cpus` pins the generators,
`--broker-cpus` this process, the broker and its embedded PostgreSQL.

Each phase also reports, per second, the CPU the broker (with its PostgreSQL), the generators and the quiet venue's
client used, and how long their threads were runnable but waiting for a core (/proc/.../schedstat): the machine's
part of the delays, beside the broker's. The flood's achieved rate is given in fair shares (`times_fair_share`,
`at_least_10x`), the share from the capacities measured in the same run.

The broker is started twice: admission off first, then on (the defaults: the fair share of the calls in progress,
`--max-inflight`, and of the recent calls while the loop runs late, `--shed-lag-ms`, refusals held, at most
`--max-streams` calls per connection, new calls taken `--accept-ahead` at a time, 0: one at a time as grpc.aio
alone, the broker's default), so the result shows what they buy (off: `--max-inflight 0 --shed-lag-ms 0
--max-streams-per-connection 0 --accept-ahead 0`); `--admission all` also runs admission on with new calls taken
64 at a time (`on-ahead`, broker.intake), last. Timings are this machine's, now: the report is the comparison
within a run, not the absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

import grpc
from cloudseat import tls
from cloudseat.client import BrokerClient
from cloudseat.v1 import venue_pb2
from grpc import aio

from broker import issuing

QUIET_RATE = 50.0
# The generators' niceness with `--flood-priority nice` (the old mode): below the broker and the quiet venue's client.
FLOOD_NICE = 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tasks_of(pids: set[int]) -> set[int]:
    """`pids` and every process below them (the broker's embedded PostgreSQL and its backends), from /proc."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(entry.path, "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found = set(pids) & set(parents)
    grew = True
    while grew:
        below = {p for p, parent in parents.items() if parent in found} - found
        found |= below
        grew = bool(below)
    return found


def _postmasters(folder: Path) -> set[int]:
    """The PostgreSQL server of the broker whose data is in `folder` (pgserver starts it apart from the broker)."""
    out = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if str(folder).encode() in Path(entry.path, "cmdline").read_bytes():
                    out.add(int(entry.name))
    return out


def sched_totals(pids: set[int]) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for one) summed over every thread of `pids`, from
    /proc/PID/task/TID/schedstat (its first two fields). The second is the machine's part of any delay: time the
    process could have run and was not given a core."""
    cpu = wait = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError, ValueError):
                    fields = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
                    cpu += int(fields[0])
                    wait += int(fields[1])
    return cpu / 1e9, wait / 1e9


class _Meter:
    """CPU used and time waiting for a CPU, per second of a phase, by the broker (with its PostgreSQL; and its event
    loop's thread alone) and by this process (the quiet venue's client)."""

    def __init__(self, broker: int, folder: Path) -> None:
        self._broker = broker
        self._folder = folder

    def _now(self) -> tuple[float, tuple[float, float], tuple[float, float], tuple[float, float]]:
        pids = _tasks_of({self._broker, *_postmasters(self._folder)})
        return time.perf_counter(), sched_totals(pids), sched_totals({os.getpid()}), _thread(self._broker)

    def start(self) -> tuple[float, tuple[float, float], tuple[float, float], tuple[float, float]]:
        return self._now()

    def per_s(
        self, since: tuple[float, tuple[float, float], tuple[float, float], tuple[float, float]]
    ) -> dict[str, float]:
        t1, (bc1, bw1), (qc1, qw1), (lc1, lw1) = self._now()
        t0, (bc0, bw0), (qc0, qw0), (lc0, lw0) = since
        span = max(1e-9, t1 - t0)
        return {
            "broker_cpu_s_per_s": round((bc1 - bc0) / span, 3),
            "broker_wait_s_per_s": round((bw1 - bw0) / span, 3),
            "broker_loop_cpu_s_per_s": round((lc1 - lc0) / span, 3),
            "broker_loop_wait_s_per_s": round((lw1 - lw0) / span, 3),
            "quiet_client_cpu_s_per_s": round((qc1 - qc0) / span, 3),
            "quiet_client_wait_s_per_s": round((qw1 - qw0) / span, 3),
        }


def _thread(pid: int) -> tuple[float, float]:
    """(CPU, waiting for a CPU) of process `pid`'s main thread: the broker's event loop."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()
        return int(fields[0]) / 1e9, int(fields[1]) / 1e9
    return 0.0, 0.0


async def _broker(
    folder: Path, creds: issuing.Credentials, port: int, admission: dict[str, int], workers: int, log: IO[str] | None
) -> asyncio.subprocess.Process:
    limits = [
        "--max-inflight", str(admission["max_inflight"]), "--shed-lag-ms", str(admission["shed_lag_ms"]),
        "--max-streams-per-connection", str(admission["max_streams"]),
        "--accept-ahead", str(admission["accept_ahead"]),
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "broker", "serve", "--workers", str(workers), "--listen", f"127.0.0.1:{port}",
        "--agent-listen", "127.0.0.1:0", "--data-dir", str(folder / "data"),
        "--log-level", "warning" if log is None else "info", "--log-format", "json",
        "--tls-cert", str(creds.broker.cert), "--tls-key", str(creds.broker.key), "--tls-ca", str(creds.ca),
        "--token-key", str(creds.token_key), "--rate-limit", "1000000", *limits,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL if log is None else log,
    )  # fmt: skip
    return proc


def _client(ca: Path, port: int, token: str) -> BrokerClient:
    # Each client its own connection (its own subchannel pool), as separate machines' would be.
    return BrokerClient(
        f"127.0.0.1:{port}",
        token=token,
        credentials=tls.client_credentials(ca),
        options=[("grpc.use_local_subchannel_pool", 1)],
    )


async def _ready(op: BrokerClient) -> None:
    async with asyncio.timeout(90):
        while True:
            with contextlib.suppress(aio.AioRpcError):
                await op.venues.CreateVenue(venue_pb2.CreateVenueRequest(venue_id="quiet", name="Q"), timeout=2)
                await op.venues.CreateVenue(venue_pb2.CreateVenueRequest(venue_id="flood", name="F"), timeout=2)
                return
            await asyncio.sleep(0.3)


async def _quiet(client: BrokerClient, seconds: float) -> dict[str, Any]:
    """GetVenue at QUIET_RATE/s, each call on its own task (open loop): latencies of the answered, and refusals."""
    latencies: list[float] = []
    refused: Counter[str] = Counter()
    why: list[str] = []  # the first few refusals' details
    tasks: list[asyncio.Task[None]] = []

    async def one() -> None:
        t0 = time.perf_counter()
        try:
            await client.venues.GetVenue(venue_pb2.GetVenueRequest(venue_id="quiet"), timeout=10)
            latencies.append((time.perf_counter() - t0) * 1000)
        except aio.AioRpcError as exc:
            refused[exc.code().name] += 1
            if len(why) < 3 and exc.details() not in why:
                why.append(exc.details() or "")

    start = time.perf_counter()
    n = 0
    while (now := time.perf_counter()) - start < seconds:
        tasks.append(asyncio.create_task(one()))
        n += 1
        await asyncio.sleep(max(0.0, start + n / QUIET_RATE - now))
    await asyncio.gather(*tasks)
    return {**_summary(latencies, refused), "refused_why": why}


async def _flood_here(
    ca: Path, port: int, token: str, connections: int, inflight: int, seconds: float, rate: float
) -> dict[str, Any]:
    """One generator process on `connections` connections of its own. `rate` 0: closed loop, `inflight` callers on
    each connection asking again at once, refused or not. `rate` > 0: open loop, that many calls a second dealt
    over the connections whatever the answers, each with a 2 s deadline (a call that waits past it in this
    process, behind the broker's bound on calls per connection, expires here). Counts of the answered, refused,
    expired and failed, the calls sent, and the hints seen (the shortest and longest, ms)."""
    counts = {"sent": 0, "ok": 0, "refused": 0, "expired": 0, "failed": 0}
    cpu0, wait0 = sched_totals({os.getpid()})
    hints: list[int] = []
    failures: list[str] = []
    clients = [_client(ca, port, token) for _ in range(connections)]
    request = venue_pb2.GetVenueRequest(venue_id="flood")

    async def one(client: BrokerClient, deadline_s: float) -> None:
        counts["sent"] += 1
        try:
            await client.venues.GetVenue(request, timeout=deadline_s)
            counts["ok"] += 1
        except aio.AioRpcError as exc:
            code = exc.code()
            if code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED):
                counts["refused"] += 1
                hint = dict(exc.trailing_metadata() or ()).get("grpc-retry-pushback-ms")
                if hint is not None and len(hints) < 10_000:
                    hints.append(int(hint))
            elif code is grpc.StatusCode.DEADLINE_EXCEEDED:
                counts["expired"] += 1
            else:
                counts["failed"] += 1  # a lost connection: not a refusal, counted apart
                if len(failures) < 3:
                    failures.append(f"{code.name}: {exc.details()}")

    try:
        start = time.perf_counter()
        deadline = start + seconds
        if rate <= 0:

            async def caller(client: BrokerClient) -> None:
                while time.perf_counter() < deadline:
                    await one(client, 10.0)

            await asyncio.gather(*(caller(c) for c in clients for _ in range(inflight)))
        else:
            tasks: set[asyncio.Task[None]] = set()
            n = 0
            while (now := time.perf_counter()) < deadline:
                due = int((now - start) * rate)
                while n < due:
                    task = asyncio.create_task(one(clients[n % len(clients)], 2.0))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    n += 1
                await asyncio.sleep(0.005)
            await asyncio.gather(*tasks)
    finally:
        for c in clients:
            await c.close()
    cpu1, wait1 = sched_totals({os.getpid()})
    return {
        **counts, "hint_min_ms": min(hints, default=0), "hint_max_ms": max(hints, default=0), "failures": failures,
        "cpu_s": cpu1 - cpu0, "wait_s": wait1 - wait0,
    }  # fmt: skip


async def _flood(
    args: argparse.Namespace, ca: Path, port: int, token_file: Path, seconds: float, rate: float = 0.0
) -> dict[str, Any]:
    """The flood from `args.processes` generator processes at once (`rate` in all, 0: closed loop), per second."""
    command = [
        sys.executable, "-m", "loadtest.fairshare", "generate", "--ca", str(ca), "--port", str(port),
        "--token-file", str(token_file), "--connections", str(args.connections), "--flood", str(args.flood),
        "--seconds", str(seconds), "--rate", str(rate / args.processes), "--cpus", args.flood_cpus,
        "--priority", args.flood_priority,
    ]  # fmt: skip
    procs = [
        await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE) for _ in range(args.processes)
    ]
    outs = [json.loads((await p.communicate())[0]) for p in procs]
    hints = [o for o in outs if o["refused"]]
    hint_range = [min((o["hint_min_ms"] for o in hints), default=0), max((o["hint_max_ms"] for o in hints), default=0)]
    per_s = {f"{k}_per_s": round(sum(o[k] for o in outs) / seconds) for k in ("sent", "ok", "refused", "expired")}
    failures = sorted({f for o in outs for f in o["failures"]})[:3]
    used = {k: round(sum(o[k] for o in outs) / seconds, 3) for k in ("cpu_s", "wait_s")}
    return {
        **per_s, "failed": sum(o["failed"] for o in outs), "failures": failures, "hint_ms": hint_range,
        "generators_cpu_s_per_s": used["cpu_s"], "generators_wait_s_per_s": used["wait_s"],
    }  # fmt: skip


def _summary(latencies: list[float], refused: Counter[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"calls": len(latencies), "refused": sum(refused.values()), "refused_by": dict(refused)}
    if len(latencies) >= 2:
        q = statistics.quantiles(latencies, n=100)
        out |= {"p50_ms": round(q[49], 2), "p99_ms": round(q[98], 2)}
    return out


async def _run(
    args: argparse.Namespace, label: str, admission: dict[str, int], folder: Path, measured: list[int]
) -> dict[str, Any]:
    """One broker's three phases. `measured`: the capacities measured so far in this run (this one's is added);
    the fair share is half the largest, `--capacity` if given."""
    creds = issuing.make(folder / "creds", [])
    port = _free_port()
    log = None if args.broker_log is None else (args.broker_log.parent / f"{args.broker_log.name}.{label}").open("w")
    proc = await _broker(folder / label, creds, port, admission, args.workers, log)
    token_file = folder / "flood.token"
    token_file.write_text(issuing.issue_token(creds.token_key, "venue", ttl_s=3600, venue_id="flood"))
    clients: list[BrokerClient] = []
    try:
        op = _client(creds.ca, port, issuing.issue_token(creds.token_key, "operator", ttl_s=3600))
        quiet = _client(creds.ca, port, issuing.issue_token(creds.token_key, "venue", ttl_s=3600, venue_id="quiet"))
        clients += [op, quiet]
        await _ready(op)
        await _quiet(quiet, 1.0)  # warm the connection and the broker
        meter = _Meter(proc.pid, folder / label)
        seconds = args.seconds
        since = meter.start()
        unloaded = {**await _quiet(quiet, seconds), **meter.per_s(since)}
        since = meter.start()
        capacity = await _flood(args, creds.ca, port, token_file, seconds)
        capacity_use = meter.per_s(since)
        measured.append(capacity["ok_per_s"])
        # The broker's capacity is the most it answered: admission on answers a closed-loop flood that ignores
        # its hints less than it could (refusals held), and this machine's noise can starve one phase, so the
        # largest capacity measured in this run (admission off runs first) or the one given.
        base = args.capacity if args.capacity > 0 else max(measured)
        fair = max(1.0, base / 2)
        since = meter.start()
        flooded, flood_got = await asyncio.gather(
            _quiet(quiet, seconds), _flood(args, creds.ca, port, token_file, seconds, rate=args.times * fair)
        )
        flooded |= meter.per_s(since)
        times = round(flood_got["sent_per_s"] / fair, 1)
        # Issue 15's goal: with one tenant at 10x its share, the others' p99 within 2x of their unloaded p99.
        p99_unloaded, p99_flooded = unloaded.get("p99_ms"), flooded.get("p99_ms")
        within = None if p99_unloaded is None or p99_flooded is None else p99_flooded <= 2 * p99_unloaded
        return {
            "admission": label,
            "settings": admission,
            "flood_priority": args.flood_priority,
            "broker_policy": _policy(os.sched_getscheduler(0)),
            "quiet_unloaded": unloaded,
            "capacity_ok_per_s": capacity["ok_per_s"],
            "capacity_phase": {**capacity_use, "generators_cpu_s_per_s": capacity["generators_cpu_s_per_s"]},
            "fair_share_per_s": fair,
            "fair_share_from": "--capacity" if args.capacity > 0 else "the largest capacity measured in this run",
            "flood": {**flood_got, "times_fair_share": times, "at_least_10x": times >= 10.0},
            "quiet_flooded": flooded,
            "p99_within_2x_unloaded": within,
        }
    finally:
        for c in clients:
            await c.close()
        proc.terminate()
        await proc.wait()
        if log is not None:
            log.close()


def _policy(policy: int) -> str:
    names = {os.SCHED_OTHER: "SCHED_OTHER", os.SCHED_BATCH: "SCHED_BATCH", os.SCHED_IDLE: "SCHED_IDLE"}
    return names.get(policy, str(policy))


def lower_priority(how: str) -> None:
    """This process at the flood's CPU priority: `idle`, SCHED_IDLE (a core only when nothing else of normal
    priority wants it: the flood then uses only what the broker and the quiet venue leave, as a flood from other
    machines would), or `nice`, niceness FLOOD_NICE (the old mode: it still takes a share of the cores)."""
    if how == "idle":
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    elif how == "nice":
        os.nice(FLOOD_NICE)
    else:
        raise ValueError(f"priority: 'idle' or 'nice', not {how!r}")


def _cpus(text: str) -> set[int]:
    return {int(c) for c in text.split(",")}


def _generate(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.fairshare generate")
    parser.add_argument("--ca", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token-file", type=Path, required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--flood", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--cpus", default="")
    parser.add_argument("--priority", choices=("idle", "nice"), default="idle")
    args = parser.parse_args(argv)
    lower_priority(args.priority)
    if args.cpus:
        os.sched_setaffinity(0, _cpus(args.cpus))
    token = args.token_file.read_text().strip()
    out = asyncio.run(_flood_here(args.ca, args.port, token, args.connections, args.flood, args.seconds, args.rate))
    print(json.dumps(out))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["generate"]:
        return _generate(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m loadtest.fairshare", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--processes", type=int, default=4, help="flood generator processes")
    parser.add_argument("--connections", type=int, default=4, help="connections per generator process")
    parser.add_argument("--flood", type=int, default=64, help="calls in flight per flood connection (capacity)")
    parser.add_argument("--times", type=float, default=10.0, help="the flood's rate, in fair shares of the capacity")
    parser.add_argument(
        "--capacity", type=int, default=0,
        help="the capacity (calls/s) a fair share is half of; 0: the largest measured in this run",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=0, help="tenant worker processes (serve --workers; 0: one)")
    parser.add_argument("--max-inflight", type=int, default=256, help="the broker's --max-inflight, admission on")
    parser.add_argument("--max-streams", type=int, default=100, help="--max-streams-per-connection, admission on")
    parser.add_argument("--shed-lag-ms", type=int, default=20, help="the broker's --shed-lag-ms, admission on")
    parser.add_argument(
        "--accept-ahead", type=int, default=0, help="the broker's --accept-ahead, admission on (off: 0)"
    )
    parser.add_argument(
        "--admission",
        choices=("both", "all", "on", "on-ahead", "off"),
        default="both",
        help="which brokers to run: on and off (both), or also on-ahead (admission on, new calls taken 64 at a time, "
        "--accept-ahead 64) (all)",
    )
    parser.add_argument(
        "--flood-priority",
        choices=("idle", "nice"),
        default="idle",
        help="the generators' CPU priority: idle (SCHED_IDLE, only the CPU the broker and the quiet venue leave, as "
        "a flood from other machines) or nice (niceness 10, the old mode: they share the cores)",
    )
    parser.add_argument("--broker-cpus", default="", help="CPUs (e.g. 0) for the broker and the quiet venue")
    parser.add_argument("--flood-cpus", default="", help="CPUs (e.g. 1) for the flood's generators")
    parser.add_argument("--out", type=Path, default=None, help="also write fairshare.json here")
    parser.add_argument("--broker-log", type=Path, default=None, help="the broker's log (info, JSON) to FILE.on|off")
    args = parser.parse_args(argv)
    if args.broker_cpus:
        os.sched_setaffinity(0, _cpus(args.broker_cpus))  # the broker, started from here, inherits them
    on = {
        "max_inflight": args.max_inflight, "shed_lag_ms": args.shed_lag_ms, "max_streams": args.max_streams,
        "accept_ahead": args.accept_ahead,
    }  # fmt: skip
    off = {"max_inflight": 0, "shed_lag_ms": 0, "max_streams": 0, "accept_ahead": 0}

    async def both() -> list[dict[str, Any]]:
        with tempfile.TemporaryDirectory(prefix="fairshare-") as tmp:
            chosen = {"both": ("off", "on"), "all": ("off", "on", "on-ahead")}.get(args.admission, (args.admission,))
            brokers = {"on": on, "on-ahead": {**on, "accept_ahead": 64}, "off": off}
            runs = [(label, brokers[label]) for label in chosen]
            measured: list[int] = []
            return [await _run(args, label, settings, Path(tmp), measured) for label, settings in runs]

    if args.flood_priority == "idle" and os.sched_getscheduler(0) == os.SCHED_IDLE:
        print(
            "note: this run is itself at SCHED_IDLE (e.g. under chrt -i 0), and so are the broker and the quiet "
            "venue: the flood's idle priority is then no lower than theirs",
            file=sys.stderr,
        )
    results = asyncio.run(both())
    for r in results:
        u, f, fl = r["quiet_unloaded"], r["quiet_flooded"], r["flood"]
        print(
            f"admission {r['admission']:8}: quiet venue p50/p99 {u.get('p50_ms')}/{u.get('p99_ms')} ms unloaded -> "
            f"{f.get('p50_ms')}/{f.get('p99_ms')} ms flooded ({f['refused']} of {f['calls'] + f['refused']} "
            f"refused {f['refused_by']}); capacity {r['capacity_ok_per_s']}/s; flood sent {fl['sent_per_s']}/s "
            f"({fl['times_fair_share']}x its share): {fl['ok_per_s']}/s answered, {fl['refused_per_s']}/s refused "
            f"(hints {fl['hint_ms']} ms), {fl['expired_per_s']}/s expired, {fl['failed']} failed {fl['failures']}; "
            f"flood at {r['flood_priority']} priority (broker {r['broker_policy']}), CPU s/s flooded: broker "
            f"{f['broker_cpu_s_per_s']} (waiting for a core {f['broker_wait_s_per_s']}; its loop's thread "
            f"{f['broker_loop_cpu_s_per_s']}, waiting {f['broker_loop_wait_s_per_s']}), generators "
            f"{fl['generators_cpu_s_per_s']} (waiting {fl['generators_wait_s_per_s']}), quiet client "
            f"{f['quiet_client_cpu_s_per_s']} (waiting {f['quiet_client_wait_s_per_s']}); quiet p99 within 2x of "
            f"unloaded: {r['p99_within_2x_unloaded']}"
        )
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "fairshare.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    sys.exit(main())
