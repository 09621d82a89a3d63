"""Any FFmpeg-readable source through PyAV: a file (looped), a capture device or a screen grab.

``AvSourceSpec(url, format, options)`` is what ``av.open(url, format=format or None, options=options)`` takes, e.g.
``("/srv/trailer.mp4")``, ``("/dev/video0", "v4l2", {"framerate": "60"})``, ``(":0.0", "x11grab", {...})``.
Frames are scaled to the tier's size (stretched; no letterbox) straight into I420, one conversion for scale and
pixel format together, and stamped like the demo's.

Two modes, chosen by whether the container knows its duration (``live`` overrides):

- a file is played on the caller's clock: ``next_frame(now_us)`` decodes up to the frame due at ``now_us`` since
  the first call and converts only that one; at the end it reopens the file and plays it again;
- a live source (device, grab, stream; anything without a duration) is read by a thread that keeps only the latest
  decoded frame (latest wins, never a queue), pacing itself by the frames' timestamps like ``ffmpeg -re`` so a
  generator does not spin; ``next_frame`` converts the latest frame when it is new.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import av
import av.error
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from gpu_agent.workloads.base import FrameSource, SourceFailed, i420_planes

_REOPEN_BACKOFF_S = 1.0
_MAX_CATCH_UP_S = 1.0


class SourceSpec(Protocol):
    """How to open a source: what the agent's config gives for a game id."""

    @property
    def url(self) -> str: ...

    @property
    def format(self) -> str: ...

    @property
    def options(self) -> Mapping[str, str] | tuple[tuple[str, str], ...]: ...


@dataclass(frozen=True, slots=True)
class AvSourceSpec:
    url: str
    format: str = ""
    options: Mapping[str, str] | tuple[tuple[str, str], ...] = field(default_factory=dict)
    live: bool | None = None  # None: live when the container has no duration


class AvSource(FrameSource):
    pixel_format = "yuv420p"

    def __init__(self, spec: SourceSpec, width: int, height: int, fps: int) -> None:
        super().__init__(width, height, fps)
        self._spec = spec
        self._options = dict(spec.options.items() if isinstance(spec.options, Mapping) else spec.options)
        self._reformatter = VideoReformatter()
        self._picture = np.zeros((height * 3 // 2, width), dtype=np.uint8)
        self._picture[height * width :] = 128  # black until the first frame
        self._planes = i420_planes(self._picture, width, height)
        self._closed = False
        self._container = self._open()
        live = getattr(spec, "live", None)
        self.live = self._container.duration is None if live is None else bool(live)
        # file mode
        self._frames: Iterator[av.VideoFrame] | None = None
        self._start_us: int | None = None
        self._loop_offset_s = 0.0
        self._pending: av.VideoFrame | None = None
        self._pending_t = 0.0
        self._last_end_s = 0.0
        # live mode
        self._lock = threading.Lock()
        self._latest: av.VideoFrame | None = None
        self._latest_new = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if self.live:
            self._thread = threading.Thread(target=self._read_live, name=f"av-source {spec.url}", daemon=True)
            self._thread.start()
        else:
            self._frames = self._decode(self._container)

    def _open(self) -> av.container.InputContainer:
        try:
            container = av.open(
                self._spec.url, mode="r", format=self._spec.format or None, options=self._options
            )
        except (av.error.FFmpegError, OSError) as exc:
            raise SourceFailed(f"cannot open {self._spec.url!r}: {exc}") from exc
        if not container.streams.video:
            container.close()
            raise SourceFailed(f"{self._spec.url!r} has no video stream")
        return container

    @staticmethod
    def _decode(container: av.container.InputContainer) -> Iterator[av.VideoFrame]:
        yield from container.decode(video=0)

    def _convert(self, frame: av.VideoFrame) -> None:
        scaled = self._reformatter.reformat(
            frame,
            width=self.width,
            height=self.height,
            format="yuv420p",
            interpolation=Interpolation.BILINEAR,
        )
        for plane, out in zip(scaled.planes, self._planes, strict=True):
            rows, columns = out.shape
            data = np.frombuffer(memoryview(plane), dtype=np.uint8, count=plane.line_size * rows)
            np.copyto(out, data.reshape(rows, plane.line_size)[:, :columns])

    # -- file mode ----------------------------------------------------------------------------------------

    def _next_file_frame(self) -> tuple[av.VideoFrame, float]:
        """The next decoded frame and its time in the looped timeline (s), reopening the file at its end."""
        for _attempt in range(2):
            assert self._frames is not None
            try:
                frame = next(self._frames)
            except StopIteration:
                # End of file: play it again after the last frame's end.
                self._container.close()
                self._container = self._open()
                self._frames = self._decode(self._container)
                self._loop_offset_s = self._last_end_s
                continue
            except av.error.FFmpegError as exc:
                raise SourceFailed(f"reading {self._spec.url!r}: {exc}") from exc
            stream = self._container.streams.video[0]
            rate = float(stream.average_rate or self.fps)
            t = self._loop_offset_s + (frame.time if frame.time is not None else 0.0)
            self._last_end_s = max(self._last_end_s, t + 1.0 / rate)
            return frame, t
        raise SourceFailed(f"{self._spec.url!r} has no frames")

    def _render_file(self, now_us: int) -> None:
        if self._start_us is None:
            self._start_us = now_us
        # Half a file frame of slack: show the frame nearest to now (and rounded clocks land on the frame).
        rate = float(self._container.streams.video[0].average_rate or self.fps)
        position = (now_us - self._start_us) / 1e6 + 0.5 / rate
        if self._pending is not None and position - self._pending_t > _MAX_CATCH_UP_S:
            # Far behind (the caller stalled): skip ahead instead of decoding everything in between.
            self._start_us = now_us - int(self._pending_t * 1e6)
            position = self._pending_t
        due: av.VideoFrame | None = None
        while True:
            if self._pending is None:
                self._pending, self._pending_t = self._next_file_frame()
            if self._pending_t > position and (due is not None or self._frame_number > 0):
                break
            due, self._pending = self._pending, None
        if due is not None:
            self._convert(due)

    # -- live mode ----------------------------------------------------------------------------------------

    def _read_live(self) -> None:
        """The reader thread: it owns the container from here on and closes it when it ends."""
        container: av.container.InputContainer | None = self._container
        try:
            while not self._closed:
                if container is None:
                    try:
                        container = self._open()
                    except SourceFailed as exc:
                        self._set_error(exc)
                        time.sleep(_REOPEN_BACKOFF_S)
                        continue
                try:
                    self._pump(container)
                except (av.error.FFmpegError, OSError) as exc:
                    self._set_error(exc)
                # The stream ended or broke: open it again (a device that went away, a stream that restarted).
                container.close()
                container = None
                if not self._closed:
                    time.sleep(_REOPEN_BACKOFF_S)
        finally:
            if container is not None:
                container.close()

    def _pump(self, container: av.container.InputContainer) -> None:
        first: tuple[float, float] | None = None  # (frame time, monotonic time) of the first frame
        for frame in container.decode(video=0):
            if self._closed:
                return
            if frame.time is not None:
                if first is None:
                    first = (frame.time, time.monotonic())
                ahead = (frame.time - first[0]) - (time.monotonic() - first[1])
                if ahead > 0:
                    time.sleep(min(ahead, 1.0))
            with self._lock:
                self._latest, self._latest_new, self._error = frame, True, None

    def _set_error(self, exc: BaseException) -> None:
        with self._lock:
            self._error = exc

    def _render_live(self) -> None:
        with self._lock:
            frame, new = self._latest, self._latest_new
            self._latest_new = False
            error = self._error
        if frame is None and error is not None:
            raise SourceFailed(f"reading {self._spec.url!r}: {error}") from error
        if frame is not None and new:
            self._convert(frame)

    # -- FrameSource --------------------------------------------------------------------------------------

    def _render(self, now_us: int) -> np.ndarray:
        if self._closed:
            raise SourceFailed("the source is closed")
        if self.live:
            self._render_live()
        else:
            self._render_file(now_us)
        return self._picture

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            # The reader closes its container itself; a read blocked on a device ends with the next frame.
            self._thread.join(timeout=0.5)
        else:
            self._container.close()
