"""`cloudseat-loadtest stream`: streams through the whole system — a real broker, a real agent process, real seats.

    parent      the broker (in process, on an embedded PostgreSQL in a temporary directory unless --database-url),
                a venue with one seat per stream in a zone of the chosen tier
      ├─ agent process          `cloudseat-agent run` with N slots, the demo game: the code that runs on a GPU host
      └─ seats, --client python: `cloudseat-client play --headless` processes, one per stream (the seat's program)
               --client browser: the kiosk page in headless Chromium (the distribution's), driven by Playwright

Before the streams, --ready-probes short sessions are started one after another on a probe seat: each measures
session ready, StartSession → first decoded frame, as the patron waits it (the demo game is always on the host:
"cached"). Then the streams play for the warm-up plus --duration, with a scripted input pattern. Figures: delivered
fps and capture→decoded latency per stream (from the frame stamps; agent and seats share this machine's
CLOCK_MONOTONIC), input→photon, freezes, the encoder's time per frame (as the agent reports it on its heartbeats,
read from GetSession), and the CPU of the agent and of the seats per stream.

Browser seats take extra Chromium flags (--chromium-flags) and page parameters (--page-query), to measure the
receiver's knobs and the seat's flags one by one (docs/kiosk.md). --link-loss-pct and --link-rate-mbit run the whole
benchmark in a network namespace of its own whose loopback loses UDP and queues packets (loadtest/stream_link.py).

The baseline, measured in the same run because this machine is shared and noisy: the same demo frames encoded with
the same codec and bitrate in a plain loop, no WebRTC, no broker — what one core does when nothing else is in the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudseat.settings import above, at_least, setting

from loadtest.stream_media import cpu_seconds

TIERS = {"720p30": "720P30", "720p60": "720P60", "1080p60": "1080P60", "1080p120": "1080P120"}


@dataclass(frozen=True)
class StreamRunConfig:
    """One `stream` run. The settings are the subcommand's flags and CLOUDSEAT_LOADTEST_* variables (loadtest.cli)."""

    streams: int = setting(1, "concurrent streams", check=at_least(1))
    duration_s: float = setting(
        60.0,
        "seconds measured, after a 3 s warm-up",
        flag="--duration",
        env="CLOUDSEAT_LOADTEST_DURATION",
        check=above(0),
    )
    tier: str = setting("720p60", "the zone's tier", choices=sorted(TIERS))
    codec: str = setting("h264", "software codec", choices=("h264", "vp8"))
    client: str = setting(
        "python",
        "the seats: cloudseat-client play processes, or the kiosk page in headless Chromium",
        choices=("python", "browser"),
    )
    playout: str = setting(
        "auto",
        "the zone's playout mode (docs/streaming.md#the-stream): how long a browser seat is asked to hold frames",
        choices=("auto", "low_latency", "smooth"),
    )
    page_query: str = setting(
        "",
        "query added to the kiosk page's URL (browser seats), e.g. jitter_target_ms=0 (docs/kiosk.md#latency-knobs)",
    )
    chromium_flags: str = setting(
        "",
        "extra Chromium flags for browser seats, after the seat's own (docs/kiosk.md#chromium-flags-measured)",
    )
    link_loss_pct: float = setting(
        0.0,
        "a bad link: this % of UDP packets lost at random, the run in a network namespace of its own "
        "(loadtest/stream_link.py)",
        check=lambda v: None if 0 <= v <= 100 else "must be within 0..100",
    )
    link_rate_mbit: float = setting(
        0.0,
        "a bad link: the namespace's loopback shaped to this rate, which makes the packets' delay jitter; 0: none",
        check=at_least(0),
    )
    ready_probes: int = setting(
        10, "short sessions started one by one to measure session ready", check=at_least(0)
    )
    json_path: Path | None = setting(
        None, "write the results here as JSON", flag="--json", env="CLOUDSEAT_LOADTEST_JSON"
    )
    # None: an embedded PostgreSQL in a temporary directory.
    database_url: str | None = setting(
        None, "PostgreSQL for the broker; none: an embedded, temporary one", parse=lambda text: text or None
    )
    warmup_s: float = 3.0
    input_every_s: float = 0.25


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
    from cloudseat.client import BrokerClient
    from cloudseat.v1 import fleet_pb2, venue_pb2

    from broker import tiers
    from broker.config import BrokerConfig
    from broker.rpc.convert import TIER_TO_PB
    from broker.server import Broker
    from broker.store import embedded

    spec = tiers.SPECS[tiers.Tier(TIERS[cfg.tier])]
    baseline_ms = await asyncio.to_thread(
        encode_baseline, spec.width, spec.height, spec.fps, spec.bitrate_kbps, cfg.codec
    )
    with tempfile.TemporaryDirectory(prefix="cloudseat-stream-") as tmp:
        url = cfg.database_url or await asyncio.to_thread(embedded.start, Path(tmp))
        broker = Broker(
            # Agents on the tenant port (one process, no security); stats every second, as the figures read them.
            # No shedding on event-loop lag: the broker shares two cores with the agent and Chromium, whose bursts
            # make it late without its being overloaded, and a refused call here only spoils a run.
            BrokerConfig(
                listen="127.0.0.1:0",
                database_url=url,
                insecure=True,
                agent_listen=None,
                heartbeat_interval_s=1.0,
                shed_lag_ms=0,
            )
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
                await c.venues.CreateVenue(venue_pb2.CreateVenueRequest(venue_id=VENUE, name="Bench"))
                await c.venues.PutZone(
                    venue_pb2.PutZoneRequest(
                        venue_id=VENUE,
                        zone_id="z",
                        tier=TIER_TO_PB[spec.tier],
                        latency_cap_ms=30,
                        playout=f"PLAYOUT_MODE_{cfg.playout.upper()}",
                    )
                )
                for seat in [PROBE_SEAT, *(f"s{i}" for i in range(cfg.streams))]:
                    await c.venues.PutSeat(
                        venue_pb2.PutSeatRequest(venue_id=VENUE, seat_id=seat, zone_id="z")
                    )
                await c.venues.ReportLatency(
                    venue_pb2.ReportLatencyRequest(
                        venue_id=VENUE, samples=[venue_pb2.LatencySample(site_id="local", rtt_ms=1)]
                    )
                )
                config_path = Path(tmp) / "agent.toml"
                config_path.write_text(
                    f'host_id = "bench-host"\nprovider_id = "bench"\nsite_id = "local"\nbroker = "{target}"\n'
                    f'slots = {cfg.streams}\ngpu_class = "cpu"\nprice_micros_per_slot_hour = 1000000\n'
                    f'games_cached = ["demo"]\nmedia_addresses = ["127.0.0.1"]\ncodec = "{cfg.codec}"\n'
                    "drain_grace_s = 0\ninsecure = true\n"
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
                await _host_online(c, "bench-host")
                seats = PythonSeats(target, cfg, spec.fps, Path(tmp)) if cfg.client == "python" else None
                if seats is None:
                    from loadtest import stream_browser

                    browser = stream_browser.BrowserSeats(target, VENUE, cfg, spec.fps, Path(tmp))
                    ready = await browser.probe_ready(PROBE_SEAT, cfg.ready_probes)
                    encode: dict[str, list[float]] = {}
                    collect = asyncio.create_task(_sample_encode(c, encode))
                    wall0, agent0 = time.monotonic(), cpu_seconds(agent.pid)
                    per_seat, seat_cpu = await browser.play([f"s{i}" for i in range(cfg.streams)])
                else:
                    ready = await seats.probe_ready(PROBE_SEAT, cfg.ready_probes)
                    encode = {}
                    collect = asyncio.create_task(_sample_encode(c, encode))
                    wall0, agent0 = time.monotonic(), cpu_seconds(agent.pid)
                    per_seat, seat_cpu = await seats.play([f"s{i}" for i in range(cfg.streams)])
                wall = time.monotonic() - wall0
                agent_cpu = cpu_seconds(agent.pid) - agent0
                collect.cancel()
        finally:
            if agent is not None and agent.returncode is None:
                agent.terminate()
                await agent.wait()
            await broker.stop(grace_s=1)

    ready += [r for seat in per_seat for r in seat.get("session_ready_ms", [])]
    encode_all = [x for values in encode.values() for x in values]
    per_stream = [
        {
            "fps": seat["fps_p50"],
            "capture_to_decoded_ms_p50": seat["capture_to_decoded_ms_p50"],
            "capture_to_decoded_ms_p99": seat["capture_to_decoded_ms_p99"],
            "input_to_photon_ms_p50": seat["input_to_photon_ms_p50"],
            "input_to_photon_ms_p99": seat["input_to_photon_ms_p99"],
            "freezes": seat["freezes"],
            "frames": seat["frames"],
            "session_ready_ms": seat.get("session_ready_ms", []),
            # The browser seat's own: how many presented frames it timed, freezes per minute, the network's
            # jitter, the receiver's knobs as negotiated (stream_browser.py).
            **{k: seat[k] for k in BROWSER_EXTRAS if k in seat},
        }
        for seat in per_seat
    ]
    return {
        "client": cfg.client,
        "streams": cfg.streams,
        "tier": cfg.tier,
        "playout": cfg.playout,
        "codec": cfg.codec,
        "duration_s": round(wall, 2),
        "session_ready_ms_p50": _percentile(ready, 50),
        "session_ready_ms_p95": _percentile(ready, 95),
        "session_ready_samples": len(ready),
        "fps_p50": _median([s["fps"] for s in per_stream]),
        "fps_min": min(s["fps"] for s in per_stream),
        # Over all streams: the median of the streams' medians, and the worst stream's p99.
        "capture_to_decoded_ms_p50": _median([s["capture_to_decoded_ms_p50"] for s in per_stream]),
        "capture_to_decoded_ms_p99": max(s["capture_to_decoded_ms_p99"] for s in per_stream),
        "input_to_photon_ms_p50": _median([s["input_to_photon_ms_p50"] for s in per_stream]),
        "input_to_photon_ms_p99": max(s["input_to_photon_ms_p99"] for s in per_stream),
        "freezes": sum(s["freezes"] for s in per_stream),
        "freezes_per_min": round(sum(s["freezes"] for s in per_stream) * 60 / cfg.duration_s / cfg.streams, 2),
        # Browser seats: the worst stream's share of decoded frames that were timed (loadtest.stream_browser).
        "measured_pct": min((s["measured_pct"] for s in per_stream if "measured_pct" in s), default=None),
        "encode_ms_p50": _median(encode_all),
        "cpu_per_stream_pct": round(100 * agent_cpu / wall / cfg.streams, 1),
        "seat_cpu_per_stream_pct": round(100 * seat_cpu / wall / cfg.streams, 1),
        "cpu_count": os.cpu_count(),
        "baseline": {
            "what": "demo frame render+encode in a plain loop, same codec and bitrate",
            "encode_ms_p50": round(baseline_ms, 2),
        },
        "per_stream": per_stream,
    }


BROWSER_EXTRAS = (
    "frames_presented", "frames_superseded", "frames_measured", "measured_pct", "frames_timed_presented",
    "frames_processed", "presented_measured_pct", "capture_to_frame_ms_p50", "capture_to_frame_ms_p99",
    "capture_to_processed_ms_p50", "capture_to_processed_ms_p99", "presented_minus_processed_ms_p50",
    "freezes_per_min", "jitter_ms", "jitter_buffer_ms", "decode_ms", "capture_to_received_ms_p50",
    "capture_to_display_ms_p50", "stamps_read",
    "stamps_unreadable", "stamps_disagreeing", "stamps_rebased", "frames_dropped", "receiver", "chromium",
)  # fmt: skip
VENUE = "bench-cafe"
PROBE_SEAT = "probe"


async def _host_online(c: Any, host_id: str, timeout_s: float = 60.0) -> None:
    import grpc
    from cloudseat.v1 import fleet_pb2

    async with asyncio.timeout(timeout_s):
        while True:
            try:
                hosts = await c.fleet.ListHosts(fleet_pb2.ListHostsRequest())
            except grpc.aio.AioRpcError as exc:
                # A broker on a busy machine sheds load (its overload guard): ask again after a pause.
                if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                await asyncio.sleep(0.5)
                continue
            if any(h.host_id == host_id and h.status == fleet_pb2.HOST_STATUS_ONLINE for h in hosts.hosts):
                return
            await asyncio.sleep(0.1)


class PythonSeats:
    """Seats that run the real Python client, `cloudseat-client play --headless`, each in its own process."""

    def __init__(self, target: str, cfg: StreamRunConfig, fps: int, tmp: Path) -> None:
        self.target, self.cfg, self.fps, self.tmp = target, cfg, fps, tmp
        self._n = 0

    async def _play(self, seat: str, duration_s: float) -> tuple[dict[str, Any], float]:
        """One client run to its end: (its --json, its CPU seconds)."""
        self._n += 1
        out = self.tmp / f"seat-{seat}-{self._n}.json"
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "thin_client",
            "play",
            *("--broker", self.target, "--venue", VENUE, "--seat", seat, "--game", "demo"),
            *("--headless", "--ice-address", "127.0.0.1", "--duration", str(duration_s)),
            *("--input-hz", str(1 / self.cfg.input_every_s), "--fps", str(self.fps), "--json", str(out)),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        cpu = 0.0
        with contextlib.suppress(OSError):
            while proc.returncode is None:
                cpu = max(cpu, cpu_seconds(proc.pid))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 0.5)
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(
                f"seat {seat}: cloudseat-client exited {proc.returncode}: {err.decode()[-2000:]}"
            )
        return json.loads(out.read_text()), cpu

    async def probe_ready(self, seat: str, count: int) -> list[float]:
        """Start `count` short sessions one after another; each one's StartSession → first frame, in ms."""
        ready: list[float] = []
        for _ in range(count):
            result, _ = await self._play(seat, 0.3)
            ready += result["session_ready_ms"]
        return ready

    async def play(self, seats: list[str]) -> tuple[list[dict[str, Any]], float]:
        """All seats at once for the warm-up plus the duration: their results, and their CPU seconds together."""
        runs = await asyncio.gather(*(self._play(s, self.cfg.warmup_s + self.cfg.duration_s) for s in seats))
        return [r for r, _ in runs], sum(c for _, c in runs)


async def _sample_encode(c: Any, into: dict[str, list[float]]) -> None:
    """Each second, the encode time per frame each live session's agent last reported (GetSession.stream_stats)."""
    from cloudseat.v1 import common_pb2, session_pb2, venue_pb2

    while True:
        await asyncio.sleep(1.0)
        listed = await c.venues.ListSessions(venue_pb2.ListSessionsRequest(venue_id=VENUE))
        for session in listed.sessions:
            if session.state != common_pb2.SESSION_STATE_STREAMING:
                continue
            got = await c.sessions.GetSession(session_pb2.GetSessionRequest(session_id=session.session_id))
            if got.session.HasField("stream_stats") and got.session.stream_stats.encode_ms > 0:
                into.setdefault(session.session_id, []).append(got.session.stream_stats.encode_ms)


def _median(values: list[float]) -> float:
    clean = [v for v in values if v is not None]
    return round(statistics.median(clean), 2) if clean else float("nan")


def _percentile(values: list[float], q: float) -> float:
    clean = sorted(v for v in values if v is not None)
    if not clean:
        return float("nan")
    rank = (len(clean) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(clean) - 1)
    return round(clean[low] + (clean[high] - clean[low]) * (rank - low), 2)


def main(cfg: StreamRunConfig) -> int:
    from cloudseat import logs

    from loadtest import stream_link

    if (cfg.link_loss_pct or cfg.link_rate_mbit) and not os.environ.get(stream_link.IN_NAMESPACE):
        return stream_link.run_in_namespace(sys.argv[1:])
    if os.environ.get(stream_link.IN_NAMESPACE):
        stream_link.apply(cfg.link_loss_pct, cfg.link_rate_mbit)
    logs.configure("console", "warning")
    result = asyncio.run(run(cfg))
    result["link"] = {"loss_pct": cfg.link_loss_pct, "rate_mbit": cfg.link_rate_mbit}
    line = (
        f"{result['streams']} x {result['tier']} ({result['codec']}, {result['client']} seats): session ready p50 "
        f"{result['session_ready_ms_p50']} ms p95 {result['session_ready_ms_p95']} ms, "
        f"fps p50 {result['fps_p50']} (min "
        f"{result['fps_min']}), capture→decoded p50 {result['capture_to_decoded_ms_p50']} ms p99 "
        f"{result['capture_to_decoded_ms_p99']} ms, input→photon p50 {result['input_to_photon_ms_p50']} ms p99 "
        f"{result['input_to_photon_ms_p99']} ms, freezes {result['freezes']}, "
        + (
            f"frames measured {result['measured_pct']}% of those decoded (capture→frame p50 "
            f"{result['per_stream'][0].get('capture_to_frame_ms_p50')} ms p99 "
            f"{result['per_stream'][0].get('capture_to_frame_ms_p99')} ms), "
            if result["measured_pct"] is not None
            else ""
        )
        + f"encode p50 {result['encode_ms_p50']} ms (baseline loop {result['baseline']['encode_ms_p50']} ms), "
        f"agent CPU {result['cpu_per_stream_pct']}% per stream"
    )
    print(line)
    if cfg.json_path is not None:
        cfg.json_path.write_text(json.dumps(result, indent=2))
    return 0
