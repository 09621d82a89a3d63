"""The video track of one peer connection: paced by us, rendered on demand, encoded by us, handed over as packets.

Each `recv()` (the sender asks for the next frame as soon as it has sent the previous one) waits for the next slot
of the `Pacer`, then, in the session's worker thread, asks the source for the frame of *now* (the demo renders it,
a live source gives its latest), encodes it, and returns the encoded `av.Packet`. Nothing is queued between
capture and send, so a slow moment drops slots instead of delaying every later frame (latest frame wins).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import time
from collections.abc import Callable
from dataclasses import dataclass

import av
import structlog
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from gpu_agent.media.encoder import EncoderError, Packet, VideoEncoder
from gpu_agent.media.pacing import Pacer
from gpu_agent.workloads import FrameSource, WorkloadError

log = structlog.get_logger(__name__)

STATS_WINDOW_US = 2_000_000
MAX_ENCODER_FAILURES = 10


def monotonic_us() -> int:
    """The clock frame stamps use: CLOCK_MONOTONIC in µs, shared by every process on the machine."""
    return time.monotonic_ns() // 1000


@dataclass(frozen=True, slots=True)
class SentFrame:
    sent_us: int
    size: int
    encode_ms: float  # capture + colour conversion + encode, in the worker thread


class SourceTrack(MediaStreamTrack):
    kind = "video"

    def __init__(
        self,
        session_id: str,
        source: FrameSource,
        encoder: VideoEncoder,
        executor: concurrent.futures.Executor,
        *,
        on_first_frame_sent: Callable[[], None],
        on_failed: Callable[[str], None],
    ) -> None:
        super().__init__()
        self._session_id = session_id
        self._source = source
        self.encoder = encoder
        self._executor = executor
        self._on_first_frame_sent: Callable[[], None] | None = on_first_frame_sent
        self._on_failed = on_failed
        self._pacer: Pacer | None = None
        self._pending: collections.deque[Packet] = collections.deque()
        self._returned = 0
        self._failures = 0
        self.sent: collections.deque[SentFrame] = collections.deque()

    async def recv(self) -> Packet:  # a track may return packets: the sender only packetizes them
        if self.readyState != "live":
            raise MediaStreamError
        if self._returned == 1 and self._on_first_frame_sent is not None:
            # The sender asks for the next frame only after sending every packet of this one.
            callback, self._on_first_frame_sent = self._on_first_frame_sent, None
            callback()
        if not self._pending:
            await self._next_packets()
        self._returned += 1
        return self._pending.popleft()

    async def _next_packets(self) -> None:
        loop = asyncio.get_running_loop()
        if self._pacer is None:
            self._pacer = Pacer(self._source.fps, monotonic_us())
        while not self._pending:
            index, due_us = self._pacer.next_slot(monotonic_us())
            wait_us = due_us - monotonic_us()
            if wait_us > 0:
                await asyncio.sleep(wait_us / 1e6)
            if self.readyState != "live":
                raise MediaStreamError
            try:
                packets, encode_ms = await loop.run_in_executor(
                    self._executor, self._capture_and_encode, index
                )
            except EncoderError as exc:
                self._failures += 1
                log.warning(
                    "encode failed", session_id=self._session_id, error=str(exc), failures=self._failures
                )
                if self._failures >= MAX_ENCODER_FAILURES:
                    self._fail(f"the encoder keeps failing: {exc}")
                continue
            except WorkloadError as exc:
                self._fail(f"the workload failed: {exc}")
            self._failures = 0
            if not packets:
                continue  # the encoder dropped this frame (rate control)
            self._record(packets, encode_ms)
            if self.encoder.codec == "h264" and len(packets) > 1:
                # Annex B units concatenate; one RTP timestamp for the lot.
                joined = av.Packet(b"".join(bytes(p) for p in packets))
                joined.pts, joined.time_base = packets[0].pts, packets[0].time_base
                packets = [joined]
            self._pending.extend(packets)

    def _capture_and_encode(self, index: int) -> tuple[list[Packet], float]:
        """In the worker thread: the frame of now, encoded."""
        started = time.perf_counter()
        now_us = monotonic_us()
        picture = self._source.next_picture(now_us)
        packets = self.encoder.encode(picture, self._source.pixel_format, index, now_us)
        return packets, (time.perf_counter() - started) * 1e3

    def _record(self, packets: list[Packet], encode_ms: float) -> None:
        now = monotonic_us()
        self.sent.append(SentFrame(now, sum(p.size for p in packets), encode_ms))
        while self.sent and self.sent[0].sent_us < now - STATS_WINDOW_US:
            self.sent.popleft()

    def _fail(self, reason: str) -> None:
        log.error("video track stopped", session_id=self._session_id, reason=reason)
        self.stop()
        self._on_failed(reason)
        raise MediaStreamError(reason)

    def stop(self) -> None:
        super().stop()
        self.encoder.close()
