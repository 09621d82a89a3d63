"""The media-only streaming benchmark: N agent-side MediaSessions (demo game) in one process, N receivers in another.

No broker: the receivers' offers reach the sessions over a small negotiation server on 127.0.0.1 (one JSON line
each way per offer), which `serve_negotiation` / `tcp_negotiator` also give to tests. The run:

    parent ──spawn──▶ agent process    N MediaSessions + the negotiation server; samples session stats each second
           ──spawn──▶ receiver process N Receivers: connect, warm up, measure for `seconds`, script input
           reads both processes' CPU time (/proc) over the measured window

    result = run_stream_benchmark(StreamBenchConfig(streams=1, seconds=60))

Per stream it reports delivered fps, capture→decoded p50/p99 (both processes read CLOCK_MONOTONIC on one machine,
so stamp capture times and receive times compare directly), input→photon p50, the encoder's median time per frame
(capture + colour conversion + encode), freezes, and the CPU of each side divided by the number of streams.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import structlog

NEGOTIATION_HOST = "127.0.0.1"
_MAX_LINE = 256 * 1024
_DEMO_KEY = 0x4F  # right arrow: the demo's player moves and changes colour


# -- negotiation over loopback TCP ------------------------------------------------------------------------------


async def serve_negotiation(
    answerers: Mapping[str, Callable[[str], Awaitable[str]]], host: str = NEGOTIATION_HOST
) -> tuple[asyncio.Server, int]:
    """Serve offers for the named answerers: a line ``{"stream": name, "offer": sdp}`` gets ``{"answer": sdp}``
    or ``{"error": text}``. Returns the server and its port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = json.loads(await reader.readline())
            answer = answerers[request["stream"]]
            try:
                reply: dict[str, str] = {"answer": await answer(request["offer"])}
            except Exception as exc:
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, 0, limit=_MAX_LINE)
    return server, server.sockets[0].getsockname()[1]


class NegotiationRefused(Exception):
    """The answering side refused the offer."""


def tcp_negotiator(port: int, stream: str, host: str = NEGOTIATION_HOST) -> Callable[[str], Awaitable[str]]:
    """A ``negotiate(offer_sdp) -> answer_sdp`` for `thin_client.receiver.Receiver` that asks `serve_negotiation`."""

    async def negotiate(offer_sdp: str) -> str:
        reader, writer = await asyncio.open_connection(host, port, limit=_MAX_LINE)
        try:
            writer.write(json.dumps({"stream": stream, "offer": offer_sdp}).encode() + b"\n")
            await writer.drain()
            reply = json.loads(await reader.readline())
        finally:
            writer.close()
        if "error" in reply:
            raise NegotiationRefused(reply["error"])
        return str(reply["answer"])

    return negotiate


# -- configuration and results ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamBenchConfig:
    streams: int = 1
    seconds: float = 60.0
    warmup_s: float = 3.0
    width: int = 1280
    height: int = 720
    fps: int = 60
    bitrate_kbps: int = 10_000
    codec: str = "h264"  # "auto" | "h264" | "vp8"
    media_addresses: tuple[str, ...] = ("127.0.0.1",)
    input_every_s: float = 0.25  # each receiver sends a key this often (for input→photon)
    encoder_threads: int | None = None
    connect_timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class StreamResult:
    stream: int
    frames: int
    fps: float
    latency_p50_ms: float  # capture→decoded
    latency_p99_ms: float
    latency_max_ms: float
    input_to_photon_p50_ms: float
    inputs_sent: int
    inputs_shown: int
    freezes: int
    frames_skipped: int
    unreadable: int
    encode_ms_p50: float  # agent side: capture + conversion + encode per frame
    sent_fps: float
    sent_kbps: float
    target_kbps: float
    agent_cpu_pct: float  # the agent process's CPU over the window / streams
    receiver_cpu_pct: float  # the receiver process's CPU over the window / streams


@dataclass(frozen=True, slots=True)
class StreamBenchResult:
    config: StreamBenchConfig
    streams: tuple[StreamResult, ...]
    agent_cpu_pct: float  # whole process, 100 = one core
    receiver_cpu_pct: float
    cpu_count: int
    window_s: float
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def min_fps(self) -> float:
        return min((s.fps for s in self.streams), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["min_fps"] = self.min_fps
        return out


class StreamBenchError(Exception):
    """The benchmark could not run (a process failed or did not connect in time)."""


# -- the agent process ------------------------------------------------------------------------------------------


def _quiet() -> None:
    """Children log warnings and errors only: the benchmark's output is its result."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def _agent_main(config: StreamBenchConfig, conn: multiprocessing.connection.Connection) -> None:
    _quiet()
    asyncio.run(_agent(config, conn))


async def _agent(config: StreamBenchConfig, conn: multiprocessing.connection.Connection) -> None:
    from gpu_agent.media import MediaConfig, MediaSession
    from gpu_agent.workloads import make_source

    media = MediaConfig(config.media_addresses, codec=config.codec, encoder_threads=config.encoder_threads)
    sessions = [
        MediaSession(
            f"bench-{i}",
            make_source("demo", config.width, config.height, config.fps, {}),
            bitrate_kbps=config.bitrate_kbps,
            config=media,
            on_streaming=lambda: None,
            on_closed=lambda reason: None,
        )
        for i in range(config.streams)
    ]
    server, port = await serve_negotiation({str(i): s.answer for i, s in enumerate(sessions)})
    conn.send(("port", port))
    samples: list[tuple[int, int, dict[str, Any]]] = []

    async def sample() -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic_ns() // 1000
            samples.extend((now, i, asdict(s.stats())) for i, s in enumerate(sessions))

    sampler = asyncio.ensure_future(sample())
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, conn.recv)  # "stop"
    sampler.cancel()
    server.close()
    for s in sessions:
        await s.close()
    conn.send(("samples", samples))


# -- the receiver process ---------------------------------------------------------------------------------------


async def scripted_input(receiver: Any, offset_s: float, every_s: float) -> None:
    """Press and release the demo's right-arrow key every `every_s`, starting after `offset_s` (staggered so that
    several receivers do not all send at once), until cancelled: what input→photon is measured on."""
    from cloudseat import seat_protocol as sp

    await asyncio.sleep(offset_s)
    down = True
    while True:
        await receiver.send(sp.KeyInput(0, 0, _DEMO_KEY, down))
        down = not down
        await asyncio.sleep(every_s)


def _receiver_main(config: StreamBenchConfig, port: int, conn: multiprocessing.connection.Connection) -> None:
    _quiet()
    asyncio.run(_receivers(config, port, conn))


async def _receivers(
    config: StreamBenchConfig, port: int, conn: multiprocessing.connection.Connection
) -> None:
    from thin_client.receiver import Receiver

    receivers = [
        Receiver(host_addresses=config.media_addresses, expected_fps=config.fps)
        for _ in range(config.streams)
    ]
    try:
        async with asyncio.timeout(config.connect_timeout_s):
            await asyncio.gather(*(r.connect(tcp_negotiator(port, str(i))) for i, r in enumerate(receivers)))
    except Exception as exc:
        conn.send(("error", f"receivers did not connect: {type(exc).__name__}: {exc}"))
        return
    conn.send(("connected", None))

    scripts = [
        asyncio.ensure_future(
            scripted_input(r, i * config.input_every_s / max(1, config.streams), config.input_every_s)
        )
        for i, r in enumerate(receivers)
    ]
    await asyncio.sleep(config.warmup_s)
    start_us = time.monotonic_ns() // 1000
    conn.send(("window", start_us))
    await asyncio.sleep(config.seconds)
    end_us = time.monotonic_ns() // 1000
    stats = [asdict(r.stats(since_us=start_us)) for r in receivers]
    conn.send(("stats", (start_us, end_us, stats)))
    for task in scripts:
        task.cancel()
    for r in receivers:
        await r.close()


# -- the parent -------------------------------------------------------------------------------------------------


def _expect(conn: multiprocessing.connection.Connection, kind: str, timeout_s: float, who: str) -> Any:
    if not conn.poll(timeout_s):
        raise StreamBenchError(f"the {who} process sent no {kind!r} within {timeout_s:.0f} s")
    got, payload = conn.recv()
    if got == "error":
        raise StreamBenchError(f"the {who} process failed: {payload}")
    if got != kind:
        raise StreamBenchError(f"the {who} process sent {got!r}, expected {kind!r}")
    return payload


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (Linux /proc; the benchmark machines are Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime: fields 14 and 15 of stat(5)


def run_stream_benchmark(config: StreamBenchConfig) -> StreamBenchResult:
    """Run the benchmark (blocking, for seconds + warm-up + set-up) and return per-stream figures."""
    if config.streams < 1 or config.seconds <= 0:
        raise ValueError("streams must be >= 1 and seconds > 0")
    ctx = multiprocessing.get_context("spawn")
    agent_conn, agent_child = ctx.Pipe()
    recv_conn, recv_child = ctx.Pipe()
    agent = ctx.Process(
        target=_agent_main, args=(config, agent_child), name="stream-bench-agent", daemon=True
    )
    agent.start()
    receiver: multiprocessing.process.BaseProcess | None = None
    try:
        port = _expect(agent_conn, "port", 60, "agent")
        receiver = ctx.Process(
            target=_receiver_main, args=(config, port, recv_child), name="stream-bench-receiver", daemon=True
        )
        receiver.start()
        _expect(recv_conn, "connected", config.connect_timeout_s + 30, "receiver")
        _expect(recv_conn, "window", config.warmup_s + 30, "receiver")
        assert agent.pid is not None and receiver.pid is not None
        agent_ps, recv_ps = agent.pid, receiver.pid
        wall0, agent0, recv0 = time.monotonic(), cpu_seconds(agent_ps), cpu_seconds(recv_ps)
        start_us, end_us, stats = _expect(recv_conn, "stats", config.seconds + 60, "receiver")
        wall, agent_cpu, recv_cpu = (
            time.monotonic() - wall0,
            cpu_seconds(agent_ps) - agent0,
            cpu_seconds(recv_ps) - recv0,
        )
        agent_conn.send("stop")
        samples = _expect(agent_conn, "samples", 60, "agent")
    finally:
        for process in (receiver, agent):
            if process is not None:
                process.join(timeout=10)
                if process.is_alive():
                    process.kill()
    agent_pct, recv_pct = 100 * agent_cpu / wall, 100 * recv_cpu / wall
    n = config.streams
    results = []
    for i, s in enumerate(stats):
        mine = [x for t, j, x in samples if j == i and start_us <= t <= end_us]
        results.append(
            StreamResult(
                stream=i,
                frames=s["frames"],
                fps=s["fps"],
                latency_p50_ms=s["latency_p50_ms"],
                latency_p99_ms=s["latency_p99_ms"],
                latency_max_ms=s["latency_max_ms"],
                input_to_photon_p50_ms=s["input_to_photon_p50_ms"],
                inputs_sent=s["inputs_sent"],
                inputs_shown=s["inputs_shown"],
                freezes=s["freezes"],
                frames_skipped=s["frames_skipped"],
                unreadable=s["unreadable"],
                encode_ms_p50=_median([x["encode_ms"] for x in mine]),
                sent_fps=_median([x["fps_sent"] for x in mine]),
                sent_kbps=_median([x["bitrate_kbps"] for x in mine]),
                target_kbps=_median([x["target_kbps"] for x in mine]),
                agent_cpu_pct=agent_pct / n,
                receiver_cpu_pct=recv_pct / n,
            )
        )
    return StreamBenchResult(
        config=config,
        streams=tuple(results),
        agent_cpu_pct=agent_pct,
        receiver_cpu_pct=recv_pct,
        cpu_count=os.cpu_count() or 0,
        window_s=wall,
    )


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    """``python -m loadtest.stream_media [streams] [seconds]``: run once and print the result as JSON."""
    import sys

    streams = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    codec = sys.argv[3] if len(sys.argv) > 3 else "h264"
    result = run_stream_benchmark(StreamBenchConfig(streams=streams, seconds=seconds, codec=codec))
    print(json.dumps(result.to_dict(), indent=2))


if __name__ == "__main__":
    main()
