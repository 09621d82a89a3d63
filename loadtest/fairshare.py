"""Fair share under load: one venue floods the broker, another's latency is measured beside its unloaded baseline.

    python -m loadtest.fairshare [--seconds 8] [--flood 500] [--out DIR]

A real broker (`cloudseat-broker serve`, one process, security on, an embedded PostgreSQL in a temporary folder) with
two venues. Phases, each `--seconds` long, all in one run so the figures compare:

1. quiet: venue "quiet" alone calls GetVenue at a steady 50/s (open loop): its unloaded p50/p99;
2. capacity: venue "flood" alone, `--flood` calls in flight (closed loop): the broker's capacity in calls/s;
3. flood: both at once, "flood" with `--flood` in flight, ignoring every refusal and asking again at once (the
   worst-behaved client), "quiet" as in 1: the quiet venue's p50/p99, and what the flood got through.

The broker is started twice: with admission on (the default, `--shed-lag-ms 20`, per-tenant fair share) and with
it off (`--shed-lag-ms 0`), so the result shows what the fair share buys. The flood's offered rate is what this
one generator process can push, reported beside the capacity (its multiple of a fair share, capacity / 2). Timings
are this machine's, now: the report is the comparison within a run, not the absolute figures.
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
from pathlib import Path
from typing import Any

import grpc
from cloudseat import tls
from cloudseat.client import BrokerClient
from cloudseat.v1 import venue_pb2
from grpc import aio

from broker import issuing

QUIET_RATE = 50.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _broker(folder: Path, creds: issuing.Credentials, port: int, shed_lag_ms: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "broker", "serve", "--workers", "0", "--listen", f"127.0.0.1:{port}",
        "--agent-listen", "127.0.0.1:0", "--data-dir", str(folder / "data"), "--log-level", "warning",
        "--tls-cert", str(creds.broker.cert), "--tls-key", str(creds.broker.key), "--tls-ca", str(creds.ca),
        "--token-key", str(creds.token_key), "--shed-lag-ms", str(shed_lag_ms), "--rate-limit", "100000",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    return proc


async def _client(creds: issuing.Credentials, port: int, role: str, **claims: str) -> BrokerClient:
    token = issuing.issue_token(creds.token_key, role, ttl_s=3600, **claims)
    return BrokerClient(f"127.0.0.1:{port}", token=token, credentials=tls.client_credentials(creds.ca))


async def _ready(op: BrokerClient) -> None:
    async with asyncio.timeout(60):
        while True:
            with contextlib.suppress(aio.AioRpcError):
                await op.venues.CreateVenue(venue_pb2.CreateVenueRequest(venue_id="quiet", name="Q"), timeout=2)
                await op.venues.CreateVenue(venue_pb2.CreateVenueRequest(venue_id="flood", name="F"), timeout=2)
                return
            await asyncio.sleep(0.3)


async def _quiet(client: BrokerClient, seconds: float) -> dict[str, Any]:
    """GetVenue at QUIET_RATE/s, each call on its own task (open loop): latencies of the answered, and refusals."""
    latencies: list[float] = []
    refused = 0
    tasks: list[asyncio.Task[None]] = []

    async def one() -> None:
        nonlocal refused
        t0 = time.perf_counter()
        try:
            await client.venues.GetVenue(venue_pb2.GetVenueRequest(venue_id="quiet"), timeout=10)
            latencies.append((time.perf_counter() - t0) * 1000)
        except aio.AioRpcError:
            refused += 1

    start = time.perf_counter()
    n = 0
    while (now := time.perf_counter()) - start < seconds:
        tasks.append(asyncio.create_task(one()))
        n += 1
        await asyncio.sleep(max(0.0, start + n / QUIET_RATE - now))
    await asyncio.gather(*tasks)
    return _summary(latencies, refused)


async def _flood(client: BrokerClient, inflight: int, seconds: float) -> dict[str, Any]:
    """`inflight` callers each asking again at once, refused or not: calls answered OK and refused, per second."""
    ok = refused = 0
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal ok, refused
        while time.perf_counter() < deadline:
            try:
                await client.venues.GetVenue(venue_pb2.GetVenueRequest(venue_id="flood"), timeout=10)
                ok += 1
            except aio.AioRpcError as exc:
                if exc.code() not in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED):
                    raise
                refused += 1

    await asyncio.gather(*(caller() for _ in range(inflight)))
    return {"ok_per_s": round(ok / seconds), "refused_per_s": round(refused / seconds)}


def _summary(latencies: list[float], refused: int) -> dict[str, Any]:
    if len(latencies) < 2:
        return {"calls": len(latencies), "refused": refused}
    q = statistics.quantiles(latencies, n=100)
    return {"calls": len(latencies), "refused": refused, "p50_ms": round(q[49], 2), "p99_ms": round(q[98], 2)}


async def _run(seconds: float, inflight: int, shed_lag_ms: int, folder: Path) -> dict[str, Any]:
    creds = issuing.make(folder / "creds", [])
    port = _free_port()
    proc = await _broker(folder / f"lag{shed_lag_ms}", creds, port, shed_lag_ms)
    clients: list[BrokerClient] = []
    try:
        op = await _client(creds, port, "operator")
        quiet = await _client(creds, port, "venue", venue_id="quiet")
        flood = await _client(creds, port, "venue", venue_id="flood")
        clients += [op, quiet, flood]
        await _ready(op)
        await _quiet(quiet, 1.0)  # warm both connections
        await _flood(flood, 8, 1.0)
        unloaded = await _quiet(quiet, seconds)
        capacity = await _flood(flood, inflight, seconds)
        flooded, flood_got = await asyncio.gather(_quiet(quiet, seconds), _flood(flood, inflight, seconds))
        offered = flood_got["ok_per_s"] + flood_got["refused_per_s"]
        fair = capacity["ok_per_s"] / 2
        return {
            "shed_lag_ms": shed_lag_ms,
            "quiet_unloaded": unloaded,
            "capacity_ok_per_s": capacity["ok_per_s"],
            "flood": {**flood_got, "offered_per_s": offered, "times_fair_share": round(offered / fair, 1)},
            "quiet_flooded": flooded,
        }
    finally:
        for c in clients:
            await c.close()
        proc.terminate()
        await proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.fairshare", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--flood", type=int, default=500, help="the flooding venue's calls in flight")
    parser.add_argument("--out", type=Path, default=None, help="also write fairshare.json here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fairshare-") as tmp:
        results = [asyncio.run(_run(args.seconds, args.flood, lag, Path(tmp))) for lag in (20, 0)]
    for r in results:
        u, f = r["quiet_unloaded"], r["quiet_flooded"]
        label = "fair share on " if r["shed_lag_ms"] else "admission off"
        print(
            f"{label}: quiet venue p50/p99 {u.get('p50_ms')}/{u.get('p99_ms')} ms unloaded -> "
            f"{f.get('p50_ms')}/{f.get('p99_ms')} ms flooded ({f['refused']} refused); capacity "
            f"{r['capacity_ok_per_s']}/s; flood offered {r['flood']['offered_per_s']}/s "
            f"({r['flood']['times_fair_share']}x its share), {r['flood']['ok_per_s']}/s answered"
        )
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "fairshare.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    sys.exit(main())
