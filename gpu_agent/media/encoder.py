"""The video encoder a session's track owns: RGB frames in, encoded `av.Packet`s out, which aiortc only packetizes.

We encode instead of letting aiortc do it because aiortc's encoders are made for video calls: they clamp the bitrate
(H.264 0.5-3 Mbps, VP8 0.25-1.5 Mbps, in their ``target_bitrate`` setters), tell the codec 30 fps, use x264's
default (medium) preset, and run in aiortc's shared executor. Handing packets to the sender bypasses all of that
(`RTCRtpSender` calls ``Encoder.pack`` on packets), and is the same path NVENC takes.

- H.264 in software: libx264, ultrafast + zerolatency (no lookahead, no B-frames, sliced threads), Baseline
  profile, one slice per thread, VBV of a few frames so a frame never bursts far past the link.
- H.264 on an NVIDIA GPU: h264_nvenc, preset p1, ultra-low-latency tuning, zero delay, CBR. Used only when PyAV
  has the encoder *and* opening a tiny session on the device works (`nvenc_available`).
- VP8: libvpx realtime at its fastest (cpu-used 16), one thread, no lag, CBR: about 6.5 ms of CPU per 720p frame
  here, against 12.7 ms at cpu-used 8 with two threads.

Bitrate changes (REMB) reach libx264 and NVENC without a new keyframe where they can: FFmpeg's wrappers reconfigure
the running encoder when ``bit_rate`` changes between frames (PyAV cannot change ``rc_max_rate`` after opening, so
the VBV stays at the opening rate). A target below half the opening rate or above it, and any VP8 change (libvpx
cannot reconfigure through FFmpeg), reopens the encoder (a keyframe), and only for a change of more than a quarter.
"""

from __future__ import annotations

import fractions
import functools
import os
import threading
from typing import TYPE_CHECKING, Any, Final

import av
import av.error
import numpy as np
import structlog
from av.video.reformatter import VideoReformatter

if TYPE_CHECKING:
    Packet = av.Packet[Any]
else:
    Packet = av.Packet

log = structlog.get_logger(__name__)

RTP_TIME_BASE: Final = fractions.Fraction(1, 90_000)
VBV_FRAMES: Final = 3  # the largest frame the rate control allows, in average frames
KEYFRAME_INTERVAL_S: Final = 4  # a lost keyframe request is repaired at least this often
_REOPEN_CHANGE: Final = 0.25  # reopening costs a keyframe: not for small changes
_REOPEN_BELOW: Final = (
    0.5  # x264 and NVENC follow a lower target in flight down to this share of the opening one
)


class EncoderError(Exception):
    """The encoder could not be opened or failed."""


@functools.cache
def nvenc_available() -> bool:
    """Whether h264_nvenc can encode here: PyAV has it and an NVIDIA device with an NVENC engine opens.

    Checked once per process; cheap and silent where there is no NVIDIA device node (no CUDA library is loaded).
    A GPU without NVENC (e.g. H100) or a driver mismatch fails the trial open and counts as not available.
    """
    if "h264_nvenc" not in av.codecs_available or not os.path.exists("/dev/nvidiactl"):
        return False
    try:
        ctx = av.CodecContext.create("h264_nvenc", "w")
        ctx.width, ctx.height, ctx.pix_fmt = 256, 144, "yuv420p"
        ctx.time_base = fractions.Fraction(1, 30)
        ctx.open()
        frame = av.VideoFrame(256, 144, "yuv420p")
        frame.pts = 0
        ctx.encode(frame)
        ctx.encode(None)
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        log.info("nvenc not available", error=str(exc))
        return False
    return True


def encoder_name(codec: str, hardware: bool) -> str:
    """The FFmpeg encoder for a negotiated codec ("h264" or "vp8")."""
    if codec == "vp8":
        return "libvpx"
    if codec == "h264":
        return "h264_nvenc" if hardware else "libx264"
    raise EncoderError(f"no encoder for codec {codec!r}")


class VideoEncoder:
    """One stream's encoder. Not thread-safe: one worker thread calls `encode`; `request_keyframe` and
    `set_bitrate` may come from the event loop thread (they only set flags read at the next frame)."""

    def __init__(
        self,
        codec: str,
        width: int,
        height: int,
        fps: int,
        bitrate_bps: int,
        *,
        hardware: bool = False,
        threads: int | None = None,
    ) -> None:
        self.codec = codec
        self.name = encoder_name(codec, hardware)
        self.width, self.height, self.fps = width, height, fps
        # x264's sliced threads cut latency at no extra CPU; libvpx's threads cost half again as much CPU.
        default_threads = 1 if codec == "vp8" else min(2, os.cpu_count() or 1)
        self._threads = threads if threads is not None else default_threads
        self._lock = threading.Lock()
        self._bitrate = bitrate_bps
        self._keyframe = True
        self._ctx: av.VideoCodecContext | None = None
        self._ctx_bitrate = self._open_bitrate = 0
        # Input frames are allocated once and filled in place: a fresh 1.4 MB (I420) or 2.7 MB (RGB) frame per
        # picture costs more in page faults than the copy. Encoders copy their input before `encode` returns
        # (x264, libvpx, NVENC's upload); two I420 frames taken in turn leave a margin all the same.
        self._i420 = [_FrameView(av.VideoFrame(width, height, "yuv420p")) for _ in range(2)]
        self._turn = 0
        self._rgb = _FrameView(av.VideoFrame(width, height, "rgb24"))
        self._reformatter = VideoReformatter()

    @property
    def bitrate_bps(self) -> int:
        return self._bitrate

    def request_keyframe(self) -> None:
        self._keyframe = True

    def set_bitrate(self, bitrate_bps: int) -> None:
        with self._lock:
            self._bitrate = bitrate_bps

    def _open(self) -> av.VideoCodecContext:
        ctx = av.CodecContext.create(self.name, "w")
        assert isinstance(ctx, av.VideoCodecContext)
        ctx.width, ctx.height, ctx.pix_fmt = self.width, self.height, "yuv420p"
        ctx.time_base = fractions.Fraction(1, self.fps)
        ctx.framerate = fractions.Fraction(self.fps, 1)
        ctx.bit_rate = self._bitrate
        ctx.gop_size = self.fps * KEYFRAME_INTERVAL_S
        bufsize = str(self._bitrate * VBV_FRAMES // self.fps)
        if self.name == "libx264":
            ctx.profile = "Baseline"
            ctx.thread_count = self._threads
            ctx.options = {
                "preset": "ultrafast", "tune": "zerolatency", "maxrate": str(self._bitrate), "bufsize": bufsize,
                "forced-idr": "1",
            }  # fmt: skip
        elif self.name == "h264_nvenc":
            # NVENC takes its profile as a private option, not the generic one PyAV's ``profile`` sets.
            ctx.options = {
                "preset": "p1", "tune": "ull", "zerolatency": "1", "delay": "0", "rc": "cbr",
                "profile": "baseline", "maxrate": str(self._bitrate), "bufsize": bufsize, "forced-idr": "1",
            }  # fmt: skip
        else:
            ctx.thread_count = self._threads
            ctx.qmin, ctx.qmax = 4, 56
            ctx.options = {
                "deadline": "realtime", "cpu-used": "16", "lag-in-frames": "0", "error-resilient": "1",
                "minrate": str(self._bitrate), "maxrate": str(self._bitrate), "bufsize": bufsize,
                "undershoot-pct": "95", "overshoot-pct": "15", "static-thresh": "0", "max-intra-rate": "300",
            }  # fmt: skip
        try:
            ctx.open()
        except (av.error.FFmpegError, ValueError) as exc:
            raise EncoderError(f"cannot open {self.name} at {self.width}x{self.height}: {exc}") from exc
        self._ctx_bitrate = self._open_bitrate = self._bitrate
        self._keyframe = True
        log.debug("encoder opened", encoder=self.name, size=f"{self.width}x{self.height}", fps=self.fps,
                  bitrate_kbps=self._bitrate // 1000)  # fmt: skip
        return ctx

    def _context(self) -> av.VideoCodecContext:
        with self._lock:
            bitrate = self._bitrate
        if self._ctx is not None and bitrate != self._ctx_bitrate:
            if (
                self.name == "libvpx"
                or not _REOPEN_BELOW * self._open_bitrate <= bitrate <= self._open_bitrate
            ):
                # libvpx cannot change its rate in flight, and the others keep the VBV (maxrate, bufsize) they
                # opened with, which must stay near the target to keep frames small: reopen (a keyframe).
                if abs(bitrate - self._ctx_bitrate) > _REOPEN_CHANGE * self._ctx_bitrate:
                    self._ctx = None
            else:
                # libx264 and nvenc take a new bit_rate before the next frame (x264_encoder_reconfig, nvenc
                # reconfigure), without a keyframe.
                self._ctx.bit_rate = bitrate
                self._ctx_bitrate = bitrate
        if self._ctx is None:
            self._ctx = self._open()
        return self._ctx

    def encode(
        self, picture: np.ndarray, pixel_format: str, index: int, capture_us: int | None = None
    ) -> list[Packet]:
        """Encode one picture ("yuv420p": I420 (height * 3 // 2, width), or "rgb24": (height, width, 3)), number
        ``index`` of the pacer, captured at ``capture_us`` (the stamps' monotonic clock). The packets carry its
        capture time on the 90 kHz RTP clock, the sampling instant RFC 3550 asks for (without ``capture_us``: the
        slot's nominal time, index / fps). So a receiver's RTP timestamps are capture times, offset by aiortc's
        random origin: the kiosk page times frames whose stamp it cannot read from them (docs/kiosk.md)."""
        ctx = self._context()
        if pixel_format == "yuv420p":
            view = self._i420[self._turn]
            self._turn ^= 1
            view.fill(picture, self.width, self.height)
            frame = view.frame
        else:
            self._rgb.fill(picture, self.width, self.height)
            frame = self._reformatter.reformat(self._rgb.frame, format="yuv420p")
        frame.pts = index
        frame.time_base = ctx.time_base
        keyframe, self._keyframe = self._keyframe, False
        frame.pict_type = av.video.frame.PictureType.I if keyframe else av.video.frame.PictureType.NONE
        try:
            packets = ctx.encode(frame)
        except av.error.FFmpegError as exc:
            self._ctx = None  # reopen at the next frame
            raise EncoderError(f"{self.name} failed: {exc}") from exc
        rtp_pts = index * 90_000 // self.fps if capture_us is None else capture_us * 9 // 100
        for packet in packets:
            packet.pts = packet.dts = rtp_pts
            packet.time_base = RTP_TIME_BASE
        return packets

    def close(self) -> None:
        self._ctx = None


class _FrameView:
    """An `av.VideoFrame` with NumPy views of its planes (which may have padded rows)."""

    def __init__(self, frame: av.VideoFrame) -> None:
        self.frame = frame
        self.planes = [
            np.frombuffer(memoryview(p), dtype=np.uint8, count=p.line_size * p.height).reshape(
                p.height, p.line_size
            )
            for p in frame.planes
        ]

    def fill(self, picture: np.ndarray, width: int, height: int) -> None:
        if self.frame.format.name == "rgb24":
            np.copyto(self.planes[0][:, : width * 3], picture.reshape(height, width * 3))
            return
        flat = picture.reshape(-1)
        start = 0
        for plane, (w, h) in zip(
            self.planes, ((width, height), (width // 2, height // 2), (width // 2, height // 2)), strict=True
        ):
            np.copyto(plane[:, :w], flat[start : start + w * h].reshape(h, w))
            start += w * h
