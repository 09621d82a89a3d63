"""The frame-source interface every workload implements, and the workload errors.

    WorkloadError          the root: a workload could not start or stopped working
    ├── UnknownGame        the game id is neither built in nor configured on this host
    └── SourceFailed       an FFmpeg-readable source could not be opened or read

A source renders (or grabs) frames on demand and stamps each with its frame number, capture time and the highest
input id applied before it (`cloudseat.seat_protocol`). The media track calls `next_picture` from one worker thread
at the tier's pace; `apply_input` is called from the event loop thread and only queues the message, which the next
frame applies first, so a source's state is touched by one thread only and "the last input applied" is exact for
every frame.

Pictures come in the source's native layout, which the encoder takes as is:

- ``"rgb24"``: RGB, shape (height, width, 3);
- ``"yuv420p"``: I420 in one array of shape (height * 3 // 2, width): the Y plane, then U, then V (each chroma
  plane half size in both directions), the layout FFmpeg and PyAV use. The demo and the FFmpeg source render I420:
  an encoder wants it, and converting RGB to I420 costs about 2 ms of CPU per 720p frame (a sixth of a core at
  60 fps).

`next_frame` gives RGB whatever the native layout (for tools and tests; it converts).
"""

from __future__ import annotations

import abc
import collections
from typing import ClassVar

import av
import numpy as np
from cloudseat import seat_protocol

# A seat that floods input faster than frames are rendered loses the oldest messages, not the agent's memory.
MAX_QUEUED_INPUTS = 1024
MAX_FPS = 240
PIXEL_FORMATS = ("rgb24", "yuv420p")


class WorkloadError(Exception):
    """The workload failed."""


class UnknownGame(WorkloadError):
    """The game is neither built in nor configured on this host."""


class SourceFailed(WorkloadError):
    """The FFmpeg-readable source could not be opened or read."""


def i420_planes(picture: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of the Y, U and V planes of an I420 picture (height * 3 // 2, width)."""
    flat = picture.reshape(-1)
    luma, chroma = width * height, (width // 2) * (height // 2)
    return (
        flat[:luma].reshape(height, width),
        flat[luma : luma + chroma].reshape(height // 2, width // 2),
        flat[luma + chroma : luma + 2 * chroma].reshape(height // 2, width // 2),
    )


def stamp_picture(
    picture: np.ndarray, pixel_format: str, width: int, height: int, stamp: seat_protocol.Stamp
) -> None:
    """Paint ``stamp`` into a picture of either layout, in place."""
    if pixel_format == "rgb24":
        seat_protocol.write_stamp(picture, stamp)
        return
    y, u, v = i420_planes(picture, width, height)
    seat_protocol.write_stamp(y, stamp)
    # Grey chroma under the cells: black and white, also for a reader that converts to RGB.
    u[: seat_protocol.STAMP_HEIGHT // 2, : seat_protocol.STAMP_WIDTH // 2] = 128
    v[: seat_protocol.STAMP_HEIGHT // 2, : seat_protocol.STAMP_WIDTH // 2] = 128


def to_rgb(picture: np.ndarray, pixel_format: str) -> np.ndarray:
    """An RGB copy of a picture of either layout."""
    if pixel_format == "rgb24":
        return picture.copy()
    rgb: np.ndarray = av.VideoFrame.from_ndarray(picture, format="yuv420p").to_ndarray(format="rgb24")
    return rgb


class FrameSource(abc.ABC):
    """Frames of one session's workload at the tier's size.

    Subclasses set `pixel_format` and implement `_render` (and `_apply` if they react to input). The array a source
    returns may be a buffer it reuses: it is valid until the next call.
    """

    pixel_format: ClassVar[str] = "rgb24"

    def __init__(self, width: int, height: int, fps: int) -> None:
        if width < seat_protocol.STAMP_WIDTH or height < seat_protocol.STAMP_HEIGHT:
            raise WorkloadError(
                f"{width}x{height} is smaller than the frame stamp "
                f"({seat_protocol.STAMP_WIDTH}x{seat_protocol.STAMP_HEIGHT})"
            )
        if width % 2 or height % 2:
            raise WorkloadError(f"{width}x{height}: 4:2:0 video needs an even width and height")
        if not 1 <= fps <= MAX_FPS:
            raise WorkloadError(f"fps {fps} is outside 1..{MAX_FPS}")
        assert self.pixel_format in PIXEL_FORMATS
        self.width = width
        self.height = height
        self.fps = fps
        self._inputs: collections.deque[seat_protocol.InputMessage] = collections.deque(
            maxlen=MAX_QUEUED_INPUTS
        )
        self._frame_number = 0
        self._last_input_id = 0

    @property
    def last_input_id(self) -> int:
        """The highest input id applied so far (0: none)."""
        return self._last_input_id

    def apply_input(self, msg: seat_protocol.InputMessage) -> None:
        """Queue ``msg``; the next frame applies it. Safe to call from any thread."""
        self._inputs.append(msg)

    def next_picture(self, now_us: int) -> np.ndarray:
        """The picture captured at ``now_us`` (monotonic clock, µs) in `pixel_format`, queued input applied
        first, stamped. What the media track encodes."""
        while self._inputs:
            msg = self._inputs.popleft()
            self._apply(msg, now_us)
            # The highest id, not the latest: motion travels unordered, so an older id may arrive after a newer one.
            self._last_input_id = max(self._last_input_id, msg.input_id)
        picture = self._render(now_us)
        stamp = seat_protocol.Stamp(self._frame_number % 2**32, now_us, self._last_input_id)
        stamp_picture(picture, self.pixel_format, self.width, self.height, stamp)
        self._frame_number += 1
        return picture

    def next_frame(self, now_us: int) -> np.ndarray:
        """Like `next_picture`, as RGB (height, width, 3)."""
        picture = self.next_picture(now_us)
        return picture if self.pixel_format == "rgb24" else to_rgb(picture, self.pixel_format)

    @abc.abstractmethod
    def _render(self, now_us: int) -> np.ndarray:
        """The unstamped picture at ``now_us`` in `pixel_format`; it may be a buffer the source reuses."""

    def _apply(self, msg: seat_protocol.InputMessage, now_us: int) -> None:  # noqa: B027 - optional hook
        """React to one input message (default: none, though its id still counts as applied)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the source holds (files, devices, threads). Idempotent."""
