"""`cloudseat-loadtest stream`: streams through the whole system — a real broker, a real agent process, receivers.

    parent      the broker (in process, on an embedded PostgreSQL in a temporary directory unless --database-url),
                a venue with one seat per stream in a zone of the chosen tier, and N sessions started through it
      ├─ agent process      `cloudseat-agent run` with N slots, the demo game: the code that runs on a GPU host
      └─ receiver process   N receivers (thin_client.receiver) negotiating through SessionService.Negotiate

It measures, over a window after a warm-up: delivered fps and capture→decoded latency per stream (from the frame
stamps; agent and receivers share this machine's CLOCK_MONOTONIC), input→photon, the encoder's time per frame (as the
agent reports it on its heartbeats, read from GetSession), and the CPU of the agent process per stream.

The baseline, measured in the same run because this machine is shared and noisy: the same demo frames encoded with
the same codec and bitrate in a plain loop, no WebRTC, no broker — what one core does when nothing else is in the way.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import multiprocessing
import multiprocessing.connection
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest.stream_media import cpu_seconds, scripted_input

TIERS = {"720p30": "720P30", "720p60": "720P60", "1080p60": "1080P60", "1080p120": "1080P120"}


@dataclass(frozen=True)
class StreamRunConfig:
    streams: int = 1
    duration_s: float = 60.0
    warmup_s: float = 3.0
    tier: str = "720p60"
    codec: str = "h264"
    input_every_s: float = 0.25
    database_url: str | None = None


# -- the receiver process ------------------------------------------------------------------------------------


def _receiver_main(
    target: str,
    sessions: list[tuple[str, str]],
    cfg: StreamRunConfig,
    fps: int,
    conn: multiprocessing.connection.Connection,
) -> None:
    import logging

    logging.disable(logging.WARNING)
    asyncio.run(_receivers(target, sessions, cfg, fps, conn))


async def _receivers(
    target: str,
    sessions: list[tuple[str, str]],
    cfg: StreamRunConfig,
    fps: int,
    conn: multiprocessing.connection.Connection,
) -> None:
    from cloudseat.v1 import common_pb2, session_pb2

    from broker.client import BrokerClient
    from thin_client.receiver import Receiver

    async with BrokerClient(target) as broker:

        def negotiator(session_id: str, token: str) -> Any:
            async def negotiate(offer: str) -> str:
                response = await broker.sessions.Negotiate(
                    session_pb2.NegotiateRequest(
                        session_id=session_id,
                        session_token=token,
                        offer=common_pb2.SessionDescription(type="offer", sdp=offer),
                    )
                )
                return str(response.answer.sdp)

            return negotiate

        receivers = [Receiver(expected_fps=fps) for _ in sessions]
        try:
            async with asyncio.timeout(60):
                await asyncio.gather(
                    *(r.connect(negotiator(*s)) for r, s in zip(receivers, sessions, strict=True))
                )
        except Exception as exc:
            conn.send(("error", f"receivers did not connect: {type(exc).__name__}: {exc}"))
            return
        conn.send(("connected", None))

        scripts = [
            asyncio.create_task(scripted_input(r, i * cfg.input_every_s / len(receivers), cfg.input_every_s))
            for i, r in enumerate(receivers)
        ]
        await asyncio.sleep(cfg.warmup_s)
        start_us = time.monotonic_ns() // 1000
        conn.send(("window", None))
        await asyncio.sleep(cfg.duration_s)
        stats = [dataclasses.asdict(r.stats(since_us=start_us)) for r in receivers]
        conn.send(("stats", stats))
        for task in scripts:
            task.cancel()
        for r in receivers:
            await r.close()


def _expect(conn: multiprocessing.connection.Connection, kind: str, timeout_s: float) -> Any:
    if not conn.poll(timeout_s):
        raise RuntimeError(f"the receiver process sent no {kind!r} within {timeout_s:.0f} s")
    got, payload = conn.recv()
    if got != kind:
        raise RuntimeError(f"the receiver process: {payload if got == 'error' else got}")
    return payload


# -- the baseline ---------------------------------------------------------------------------------------------


def encode_baseline(
    width: int, height: int, fps: int, bitrate_kbps: int, codec: str, seconds: float = 3.0
) -> float:
    """Median ms to render, stamp and encode one demo frame in a plain loop, with the agent's own source and
    encoder (gpu_agent.media.encoder), but no pacing, no WebRTC and no broker."""
    from gpu_agent.media.encoder import VideoEncoder
    from gpu_agent.workloads import DemoGame

    game = DemoGame(width, height, fps)
    encoder = VideoEncoder(codec, width, height, fps, bitrate_kbps * 1000)
    times = []
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        t0 = time.perf_counter()
        encoder.encode(game.next_picture(time.monotonic_ns() // 1000), game.pixel_format, n)
        times.append((time.perf_counter() - t0) * 1000)
        n += 1
    game.close()
    return statistics.median(times)


# -- the run --------------------------------------------------------------------------------------------------


async def run(cfg: StreamRunConfig) -> dict[str, Any]:
    from cloudseat.v1 import common_pb2, fleet_pb2, session_pb2, venue_pb2

    from broker import tiers
    from broker.client import BrokerClient
    from broker.config import BrokerConfig
    from broker.server import Broker
    from broker.store import embedded

    spec = tiers.SPECS[tiers.Tier(TIERS[cfg.tier])]
    baseline_ms = await asyncio.to_thread(
        encode_baseline, spec.width, spec.height, spec.fps, spec.bitrate_kbps, cfg.codec
    )
    with tempfile.TemporaryDirectory(prefix="cloudseat-stream-") as tmp:
        url = cfg.database_url or await asyncio.to_thread(embedded.start, Path(tmp))
        broker = Broker(
            BrokerConfig(listen="127.0.0.1:0", database_url=url, log_format="json", log_level="warning")
        )
        await broker.start()
        agent: asyncio.subprocess.Process | None = None
        try:
            target = f"127.0.0.1:{broker.port}"
            async with BrokerClient(target) as c:
                await c.fleet.CreateProvider(
                    fleet_pb2.CreateProviderRequest(provider_id="bench", name="Bench")
                )
                await c.fleet.CreateSite(
                    fleet_pb2.CreateSiteRequest(site_id="local", provider_id="bench", name="L")
                )
                await c.fleet.PutGame(fleet_pb2.PutGameRequest(game_id="demo", name="Demo"))
                await c.venues.CreateVenue(venue_pb2.CreateVenueRequest(venue_id="bench-cafe", name="Bench"))
                from broker.rpc.convert import TIER_TO_PB

                await c.venues.PutZone(
                    venue_pb2.PutZoneRequest(
                        venue_id="bench-cafe", zone_id="z", tier=TIER_TO_PB[spec.tier], latency_cap_ms=30
                    )
                )
                for i in range(cfg.streams):
                    await c.venues.PutSeat(
                        venue_pb2.PutSeatRequest(venue_id="bench-cafe", seat_id=f"s{i}", zone_id="z")
                    )
                await c.venues.ReportLatency(
                    venue_pb2.ReportLatencyRequest(
                        venue_id="bench-cafe", samples=[venue_pb2.LatencySample(site_id="local", rtt_ms=1)]
                    )
                )
                config_path = Path(tmp) / "agent.toml"
                config_path.write_text(
                    f'host_id = "bench-host"\nprovider_id = "bench"\nsite_id = "local"\nbroker = "{target}"\n'
                    f'slots = {cfg.streams}\ngpu_class = "cpu"\nprice_micros_per_slot_hour = 1000000\n'
                    f'games_cached = ["demo"]\nmedia_addresses = ["127.0.0.1"]\ncodec = "{cfg.codec}"\n'
                    "drain_grace_s = 0\n"
                )
                agent = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "gpu_agent",
                    "run",
                    "--config",
                    str(config_path),
                    "--log-level",
                    "warning",
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
                started = []
                for i in range(cfg.streams):
                    started.append(await c.start_session("bench-cafe", f"s{i}", "demo"))
                for s in started:
                    ready = await c.wait_for(
                        s.session.session_id, common_pb2.SESSION_STATE_READY, timeout_s=60
                    )
                    if ready.state != common_pb2.SESSION_STATE_READY:
                        raise RuntimeError(f"session ended before it was ready: {ready.end_reason}")
                sessions = [(s.session.session_id, s.session_token) for s in started]

                ctx = multiprocessing.get_context("spawn")
                parent, child = ctx.Pipe()
                receiver = ctx.Process(
                    target=_receiver_main, args=(target, sessions, cfg, spec.fps, child), daemon=True
                )
                receiver.start()
                try:
                    await asyncio.to_thread(_expect, parent, "connected", 90)
                    await asyncio.to_thread(_expect, parent, "window", cfg.warmup_s + 30)
                    assert receiver.pid is not None
                    wall0, agent0, recv0 = time.monotonic(), cpu_seconds(agent.pid), cpu_seconds(receiver.pid)
                    encode: dict[str, list[float]] = {sid: [] for sid, _ in sessions}
                    collect = asyncio.create_task(_sample_encode(c, encode, session_pb2))
                    stats = await asyncio.to_thread(_expect, parent, "stats", cfg.duration_s + 60)
                    wall = time.monotonic() - wall0
                    agent_cpu, recv_cpu = cpu_seconds(agent.pid) - agent0, cpu_seconds(receiver.pid) - recv0
                    collect.cancel()
                finally:
                    receiver.join(timeout=15)
                    if receiver.is_alive():
                        receiver.kill()
                for s in started:
                    await c.end_session(s.session.session_id, s.session_token)
        finally:
            if agent is not None and agent.returncode is None:
                agent.terminate()
                await agent.wait()
            await broker.stop(grace_s=1)

    encode_all = [x for values in encode.values() for x in values]
    per_stream = [
        {
            "fps": st["fps"],
            "capture_to_decoded_ms_p50": st["latency_p50_ms"],
            "capture_to_decoded_ms_p99": st["latency_p99_ms"],
            "input_to_photon_ms_p50": st["input_to_photon_p50_ms"],
            "freezes": st["freezes"],
            "frames": st["frames"],
            "encode_ms_p50": _median(encode[sid]),
        }
        for st, (sid, _) in zip(stats, sessions, strict=True)
    ]
    return {
        "streams": cfg.streams,
        "tier": cfg.tier,
        "codec": cfg.codec,
        "duration_s": round(wall, 2),
        "fps_p50": _median([s["fps"] for s in per_stream]),
        "fps_min": min(s["fps"] for s in per_stream),
        # Over all streams: the median of the streams' medians, and the worst stream's p99.
        "capture_to_decoded_ms_p50": _median([s["capture_to_decoded_ms_p50"] for s in per_stream]),
        "capture_to_decoded_ms_p99": max(s["capture_to_decoded_ms_p99"] for s in per_stream),
        "input_to_photon_ms_p50": _median([s["input_to_photon_ms_p50"] for s in per_stream]),
        "encode_ms_p50": _median(encode_all),
        "cpu_per_stream_pct": round(100 * agent_cpu / wall / cfg.streams, 1),
        "receiver_cpu_per_stream_pct": round(100 * recv_cpu / wall / cfg.streams, 1),
        "cpu_count": os.cpu_count(),
        "baseline": {
            "what": "demo frame render+encode in a plain loop, same codec and bitrate",
            "encode_ms_p50": round(baseline_ms, 2),
        },
        "per_stream": per_stream,
    }


async def _sample_encode(c: Any, into: dict[str, list[float]], session_pb2: Any) -> None:
    """Each second, the encode time per frame each session's agent last reported (GetSession.stream_stats)."""
    while True:
        await asyncio.sleep(1.0)
        for sid, values in into.items():
            got = await c.sessions.GetSession(session_pb2.GetSessionRequest(session_id=sid))
            if got.session.HasField("stream_stats") and got.session.stream_stats.encode_ms > 0:
                values.append(got.session.stream_stats.encode_ms)


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 2) if values else float("nan")


def main(cfg: StreamRunConfig, json_path: Path | None) -> int:
    from broker import logs

    logs.configure("console", "warning")
    result = asyncio.run(run(cfg))
    line = (
        f"{result['streams']} x {result['tier']} ({result['codec']}): fps p50 {result['fps_p50']} (min "
        f"{result['fps_min']}), capture→decoded p50 {result['capture_to_decoded_ms_p50']} ms p99 "
        f"{result['capture_to_decoded_ms_p99']} ms, input→photon p50 {result['input_to_photon_ms_p50']} ms, "
        f"encode p50 {result['encode_ms_p50']} ms (baseline loop {result['baseline']['encode_ms_p50']} ms), "
        f"agent CPU {result['cpu_per_stream_pct']}% per stream"
    )
    print(line)
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2))
    return 0
