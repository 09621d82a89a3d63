"""The seat's WebRTC receiver: offer, take the agent's answer, decode, read the frame stamps, send input.

What the thin client builds on and what the streaming benchmarks run; no window here. One `Receiver` plays one
session:

    receiver = Receiver(host_addresses=("127.0.0.1",))
    await receiver.connect(negotiate)          # negotiate(offer_sdp) -> answer_sdp, sync or async
    await receiver.send(KeyInput(0, 0, key=0x4F, down=True))   # id and send time are assigned here
    print(receiver.stats())
    await receiver.close()

The offer has a recvonly video transceiver and the two input channels of `cloudseat.seat_protocol` (pointer motion
unordered without retransmission, the rest reliable), bundled on one transport.

Per frame it records when it was decoded (this process's CLOCK_MONOTONIC) and the stamp: frame number, capture time
and last input applied. From those:

- capture→decoded latency = decoded time - stamp capture time. Both are CLOCK_MONOTONIC readings, which is one
  clock for every process on one machine: valid for tests and benchmarks on one host, meaningless across hosts.
- input→photon latency: input N is sent at t0; the first decoded frame whose stamp carries last-input >= N shows
  it; the latency is that frame's decoded time - t0 (same clock, same process).
- freezes: gaps between consecutive decoded frames longer than ``freeze_intervals`` frame intervals.

aiortc's receiver holds each video frame until the first packet of the *next* frame arrives (its jitter buffer
completes a frame on a timestamp change), which adds a whole frame interval of latency. We give the receiver a
jitter buffer that also completes a frame on its RTP marker bit (set on a frame's last packet), as browsers do.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

import av
import numpy as np
import structlog
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCSessionDescription,
)
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtp import RtpPacket
from cloudseat import ice
from cloudseat import seat_protocol as sp

log = structlog.get_logger(__name__)

Negotiate = Callable[[str], Awaitable[str] | str]
FrameCallback = Callable[[av.VideoFrame, sp.Stamp | None], None]


class ReceiverError(Exception):
    """The receiver could not connect or lost its connection."""


def monotonic_us() -> int:
    return time.monotonic_ns() // 1000


@dataclass(frozen=True, slots=True)
class FrameRecord:
    decoded_us: int
    frame_number: int
    capture_us: int
    last_input_id: int

    @property
    def latency_ms(self) -> float:
        return (self.decoded_us - self.capture_us) / 1000


@dataclass(slots=True)
class InputRecord:
    input_id: int
    channel: str
    sent_us: int
    photon_us: int | None = None  # decoded time of the first frame that reflects it


@dataclass(frozen=True, slots=True)
class ReceiverStats:
    frames: int  # decoded frames with a readable stamp
    unreadable: int  # decoded frames whose stamp did not read
    fps: float  # delivered
    latency_p50_ms: float  # capture→decoded
    latency_p95_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    frames_skipped: int  # gaps in the frame numbers (not sent, lost, or dropped by the decoder)
    freezes: int  # gaps longer than freeze_intervals frame intervals
    longest_gap_ms: float
    inputs_sent: int
    inputs_shown: int
    input_to_photon_p50_ms: float
    input_to_photon_p95_ms: float
    input_to_photon_p99_ms: float


class MarkerJitterBuffer(JitterBuffer):
    """aiortc's jitter buffer, but a frame is complete as soon as its marker packet and all before it are in."""

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        assert self._origin is not None
        packets: list[RtpPacket] = []
        timestamp = None
        for count in range(self.capacity):
            packet = self._packets[(self._origin + count) % self._capacity]
            if packet is None:
                return None  # a hole: wait for the retransmission
            if timestamp is None:
                timestamp = packet.timestamp
            elif packet.timestamp != timestamp:
                # The next frame began without a marker on this one: complete it anyway (aiortc's rule).
                return self._take(packets, timestamp, count)
            packets.append(packet)
            if packet.marker:
                return self._take(packets, timestamp, count + 1)
        return None

    def _take(self, packets: list[RtpPacket], timestamp: int, count: int) -> JitterFrame:
        frame = JitterFrame(data=b"".join(p._data for p in packets), timestamp=timestamp)  # type: ignore[attr-defined]
        self.remove(count)
        return frame


def _use_marker_jitter_buffer(receiver: RTCRtpReceiver) -> None:
    attribute = "_RTCRtpReceiver__jitter_buffer"
    current = getattr(receiver, attribute, None)
    if type(current) is JitterBuffer:
        setattr(receiver, attribute, MarkerJitterBuffer(capacity=current.capacity, is_video=True))
    else:  # another aiortc: keep its buffer (one frame interval more latency) rather than break
        log.warning("aiortc receiver internals changed; keeping its jitter buffer")


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


class Receiver:
    def __init__(
        self,
        *,
        host_addresses: Iterable[str] = ("127.0.0.1",),
        ice_servers: Sequence[RTCIceServer] = (),
        expected_fps: float = 60.0,
        freeze_intervals: float = 3.0,
        on_frame: FrameCallback | None = None,
    ) -> None:
        self._addresses = ice.check_addresses(host_addresses)
        self._ice_servers = list(ice_servers)
        self.expected_fps = expected_fps
        self.freeze_intervals = freeze_intervals
        self._on_frame = on_frame
        self._pc: RTCPeerConnection | None = None
        self._channels: dict[str, RTCDataChannel] = {}
        self._consumer: asyncio.Task[None] | None = None
        self._next_input_id = 1
        self.frames: list[FrameRecord] = []
        self.unreadable = 0
        self.inputs: list[InputRecord] = []
        self._unshown: collections.deque[InputRecord] = collections.deque()
        self._frame_event = asyncio.Event()
        self.connection_state = "new"

    # -- connection ---------------------------------------------------------------------------------------

    async def connect(self, negotiate: Negotiate, *, timeout_s: float = 20.0) -> None:
        """A fresh peer connection: offer, answer, and wait until it is connected and the input channels are open.
        Called again, it starts over (what a seat does after losing its connection; the agent sees new ICE
        credentials and builds a new peer connection too)."""
        await self._close_pc()
        pc = RTCPeerConnection(
            RTCConfiguration(iceServers=self._ice_servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self._pc = pc
        transceiver = pc.addTransceiver("video", direction="recvonly")
        _use_marker_jitter_buffer(transceiver.receiver)
        opened = {label: asyncio.Event() for label in (sp.MOTION_CHANNEL, sp.RELIABLE_CHANNEL)}
        self._channels = {
            sp.MOTION_CHANNEL: pc.createDataChannel(sp.MOTION_CHANNEL, ordered=False, maxRetransmits=0),
            sp.RELIABLE_CHANNEL: pc.createDataChannel(sp.RELIABLE_CHANNEL, ordered=True),
        }
        for label, channel in self._channels.items():
            channel.on("open", opened[label].set)
        connected = asyncio.Event()

        @pc.on("connectionstatechange")
        def _state() -> None:
            if pc is self._pc:
                self.connection_state = pc.connectionState
            if pc.connectionState in ("connected", "failed", "closed"):
                connected.set()

        @pc.on("track")
        def _track(track: MediaStreamTrack) -> None:
            if track.kind == "video" and pc is self._pc:
                self._consumer = asyncio.ensure_future(self._consume(track))

        await self._offer_answer(pc, negotiate)
        try:
            async with asyncio.timeout(timeout_s):
                await connected.wait()
                if pc.connectionState != "connected":
                    raise ReceiverError(f"the connection {pc.connectionState}")
                for event in opened.values():
                    await event.wait()
        except TimeoutError:
            raise ReceiverError(f"not connected after {timeout_s} s (state {pc.connectionState})") from None

    async def renegotiate(self, negotiate: Negotiate) -> None:
        """A new offer on the running peer connection (same ICE credentials): the agent renegotiates in place."""
        if self._pc is None:
            raise ReceiverError("not connected")
        await self._offer_answer(self._pc, negotiate)

    async def _offer_answer(self, pc: RTCPeerConnection, negotiate: Negotiate) -> None:
        with ice.host_addresses(self._addresses):
            await pc.setLocalDescription(await pc.createOffer())
        answer = negotiate(pc.localDescription.sdp)
        if inspect.isawaitable(answer):
            answer = await answer
        assert isinstance(answer, str)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    @property
    def local_sdp(self) -> str:
        return self._pc.localDescription.sdp if self._pc is not None and self._pc.localDescription else ""

    @property
    def remote_sdp(self) -> str:
        return self._pc.remoteDescription.sdp if self._pc is not None and self._pc.remoteDescription else ""

    # -- frames -------------------------------------------------------------------------------------------

    async def _consume(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            decoded_us = monotonic_us()
            assert isinstance(frame, av.VideoFrame)
            stamp = _read_stamp(frame)
            if stamp is None:
                self.unreadable += 1
            else:
                self.frames.append(
                    FrameRecord(decoded_us, stamp.frame_number, stamp.capture_us, stamp.last_input_id)
                )
                while self._unshown and self._unshown[0].input_id <= stamp.last_input_id:
                    self._unshown.popleft().photon_us = decoded_us
            self._frame_event.set()
            if self._on_frame is not None:
                self._on_frame(frame, stamp)

    async def wait_frames(self, count: int, *, timeout_s: float = 10.0) -> None:
        """Wait until ``count`` more stamped frames have been decoded."""
        target = len(self.frames) + count
        async with asyncio.timeout(timeout_s):
            while len(self.frames) < target:
                self._frame_event.clear()
                await self._frame_event.wait()

    async def wait_shown(self, record: InputRecord, *, timeout_s: float = 10.0) -> int:
        """Wait until a frame reflects ``record``; its decoded time."""
        async with asyncio.timeout(timeout_s):
            while record.photon_us is None:
                self._frame_event.clear()
                await self._frame_event.wait()
        return record.photon_us

    # -- input --------------------------------------------------------------------------------------------

    async def send(self, msg: sp.InputMessage) -> InputRecord:
        """Send ``msg`` with the next input id and the send time filled in, on the channel its kind travels on."""
        input_id, self._next_input_id = self._next_input_id, self._next_input_id + 1
        sent_us = monotonic_us()
        msg = dataclasses.replace(msg, input_id=input_id, sent_us=sent_us)
        label = sp.channel_for(msg)
        record = InputRecord(input_id, label, sent_us)
        self.send_raw(label, sp.encode_input(msg))
        self.inputs.append(record)
        self._unshown.append(record)
        return record

    def send_raw(self, label: str, data: bytes | str) -> None:
        """Put ``data`` on an input channel as is (tests send malformed input this way)."""
        channel = self._channels.get(label)
        if channel is None or channel.readyState != "open":
            raise ReceiverError(f"input channel {label!r} is not open")
        channel.send(data)

    # -- stats and end ------------------------------------------------------------------------------------

    def stats(self, *, since_us: int | None = None) -> ReceiverStats:
        """Figures over the frames decoded (and inputs sent) at or after ``since_us`` (default: all)."""
        frames = [f for f in self.frames if since_us is None or f.decoded_us >= since_us]
        inputs = [i for i in self.inputs if since_us is None or i.sent_us >= since_us]
        latencies = [f.latency_ms for f in frames]
        fps = longest_gap = 0.0
        freezes = skipped = 0
        if len(frames) >= 2:
            span_s = (frames[-1].decoded_us - frames[0].decoded_us) / 1e6
            fps = (len(frames) - 1) / span_s if span_s > 0 else 0.0
            gaps = np.diff([f.decoded_us for f in frames]) / 1000
            longest_gap = float(gaps.max())
            freezes = int((gaps > self.freeze_intervals * 1000 / self.expected_fps).sum())
            numbers = np.array([f.frame_number for f in frames], dtype=np.int64)
            steps = np.diff(numbers) % 2**32
            skipped = int((steps[(steps > 1) & (steps < 2**31)] - 1).sum())
        shown = [(i.photon_us - i.sent_us) / 1000 for i in inputs if i.photon_us is not None]
        return ReceiverStats(
            frames=len(frames),
            unreadable=self.unreadable,
            fps=fps,
            latency_p50_ms=_percentile(latencies, 50),
            latency_p95_ms=_percentile(latencies, 95),
            latency_p99_ms=_percentile(latencies, 99),
            latency_max_ms=max(latencies, default=float("nan")),
            frames_skipped=skipped,
            freezes=freezes,
            longest_gap_ms=longest_gap,
            inputs_sent=len(inputs),
            inputs_shown=len(shown),
            input_to_photon_p50_ms=_percentile(shown, 50),
            input_to_photon_p95_ms=_percentile(shown, 95),
            input_to_photon_p99_ms=_percentile(shown, 99),
        )

    async def bytes_received(self) -> int:
        """Bytes the peer connection's transport has received so far (media, RTCP, data channels); 0 before."""
        pc = self._pc
        if pc is None:
            return 0
        report = await pc.getStats()
        return sum(int(getattr(s, "bytesReceived", 0) or 0) for s in report.values() if s.type == "transport")

    @property
    def last_frame_us(self) -> int | None:
        """When the newest stamped frame was decoded (CLOCK_MONOTONIC µs); None before the first."""
        return self.frames[-1].decoded_us if self.frames else None

    async def _close_pc(self) -> None:
        pc, consumer = self._pc, self._consumer
        self._pc = self._consumer = None
        self._channels = {}
        if pc is not None:
            await pc.close()
        if consumer is not None:
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer

    async def close(self) -> None:
        await self._close_pc()


def _read_stamp(frame: av.VideoFrame) -> sp.Stamp | None:
    """The stamp of a decoded frame, read from its luma plane where there is one (no colour conversion)."""
    if frame.width < sp.STAMP_WIDTH or frame.height < sp.STAMP_HEIGHT:
        return None
    if frame.format.name in ("yuv420p", "yuvj420p", "nv12", "yuv444p"):
        plane = frame.planes[0]
        luma = np.frombuffer(memoryview(plane), dtype=np.uint8, count=plane.line_size * frame.height).reshape(
            frame.height, plane.line_size
        )[:, : frame.width]
        return sp.read_stamp(luma)
    return sp.read_stamp(frame.to_ndarray(format="rgb24"))
