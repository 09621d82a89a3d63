"""Frame pacing on a monotonic clock: when the next frame is due. Pure: time comes in as an argument.

aiortc's own video pacing (`VideoStreamTrack.next_timestamp`) is fixed at 30 fps; a track that returns packets
is paced by nobody, so the track asks a `Pacer` for each frame's slot and sleeps until it. Slots are
``start + index / fps``; a caller late by a whole slot or more skips to the slot due now rather than catching up
with a burst of stale frames (latest frame wins).
"""

from __future__ import annotations


class Pacer:
    def __init__(self, fps: int, start_us: int) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, not {fps}")
        self.fps = fps
        self.start_us = start_us
        self._next = 0
        self.skipped = 0  # slots given up because the caller was late

    def due_us(self, index: int) -> int:
        """When slot ``index`` is due."""
        return self.start_us + index * 1_000_000 // self.fps

    def next_slot(self, now_us: int) -> tuple[int, int]:
        """The next frame's slot index and due time; the caller waits until then (no wait if it is past)."""
        index = self._next
        if now_us >= self.due_us(index + 1):
            # Late by at least a whole slot: take the latest slot that is due, never a backlog.
            current = (now_us - self.start_us) * self.fps // 1_000_000
            self.skipped += current - index
            index = current
        self._next = index + 1
        return index, self.due_us(index)
