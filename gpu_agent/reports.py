"""What the agent tells the broker, and when: its sessions' moves, coalesced over a short window, and its load and
stream stats (Heartbeat) only while there is something to say. Pure: no I/O, time comes in as an argument.

Liveness is the link itself (the broker pings the connection below Python), so nothing here exists to keep the host
alive; each message is one the broker needs. Both the real agent (gpu_agent.link) and the fleet simulator
(loadtest.fleet_agents) decide with these classes, so the load a simulated fleet puts on the broker is a real
fleet's.

Session moves. A session often moves twice or three times in a moment (STARTING and READY when the workload comes up
at once); the contract lets an agent report only the latest, and the broker records every step in between. So the
moves of a window are gathered and flushed as one report per session: its furthest state (STARTING < READY <
STREAMING; ENDED supersedes all and keeps its reason and detail), in the order the sessions first moved. A move
back (a late READY after STREAMING) is dropped: the broker would ignore it anyway.

Heartbeats. Every `interval_s` (the broker's `Registered.heartbeat_interval_ms`) while the host runs a session, with
the per-session stats; at once when the cached images or the draining flag change; and when the CPU or GPU load
moved by LOAD_STEP or more since the last one sent, but not more often than the interval. An idle host whose load
holds still sends nothing after registering.
"""

from __future__ import annotations

import dataclasses
import enum

# How long session moves are gathered before they go (seconds). A report held this long delays the seat's READY by
# at most this (the seat-ready target is 2 s at p95), while a workload that comes up within it costs one message to
# the broker instead of two or three (STARTING, READY, STREAMING). 50 ms also covers the fleet simulator's
# compressed start-up (20 ms), so it sends one report per start as a fast real host would.
REPORT_WINDOW_S = 0.05

# A load change at least this large (on the 0..1 scale, CPU or GPU) is worth telling the broker between the
# heartbeats of a busy host; smaller drifts wait for the next one, or for ever on an idle host.
LOAD_STEP = 0.15


class Step(enum.IntEnum):
    """A session's state as an agent reports it, in lifecycle order. The numbers are the contract's SessionState
    values (tests/unit/test_reports.py holds them so), so an edge converts with int() and Step()."""

    STARTING = 3
    READY = 4
    STREAMING = 5
    ENDED = 6


@dataclasses.dataclass(frozen=True, slots=True)
class Report:
    """One session's report: its furthest state in the window; with ENDED, why (the contract's EndReason number,
    not read here) and the detail."""

    session_id: str
    step: Step
    end_reason: int = 0
    detail: str = ""


class SessionReports:
    """Session moves gathered over a window of `window_s` that opens with the first move after a flush."""

    def __init__(self, window_s: float = REPORT_WINDOW_S) -> None:
        self.window_s = window_s
        # Insertion order is the order sessions first moved in this window.
        self._pending: dict[str, Report] = {}
        self._opened_at: float | None = None

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def due_at(self) -> float | None:
        """When the pending moves are to be flushed; None when there are none."""
        return None if self._opened_at is None else self._opened_at + self.window_s

    def move(self, session_id: str, step: Step, now: float, end_reason: int = 0, detail: str = "") -> None:
        """A session moved to `step` (at `now`)."""
        held = self._pending.get(session_id)
        if held is not None and (held.step is Step.ENDED or step <= held.step):
            return  # ended already (the first end is the real one), or not a move forward
        if step is not Step.ENDED:
            end_reason, detail = 0, ""
        # Replacing a key keeps its place: the session keeps its first-move order.
        self._pending[session_id] = Report(session_id, step, end_reason, detail)
        if self._opened_at is None:
            self._opened_at = now

    def flush(self) -> list[Report]:
        """Every pending report, in first-move order; the window closes and the next move opens a new one."""
        out = list(self._pending.values())
        self._pending.clear()
        self._opened_at = None
        return out

    def take_due(self, now: float) -> list[Report]:
        """flush() if the window has run out at `now`, else nothing."""
        due = self.due_at
        return self.flush() if due is not None and now >= due else []


class HeartbeatSchedule:
    """When this host sends its next Heartbeat. Made at registration with the load then (what the broker is taken
    to know; it has been told no load yet, and an idle host need not tell it); told of every heartbeat sent."""

    def __init__(self, interval_s: float, now: float, cpu: float = 0.0, gpu: float = 0.0) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, not {interval_s}")
        self.interval_s = interval_s
        self._sent_at = now
        self._cpu, self._gpu = cpu, gpu
        # A registration clears the draining flag on the broker's side.
        self.draining = False

    def interval_passed(self, now: float) -> bool:
        """Whether a heartbeat for sessions or load may go at `now` (flag changes may go at any time)."""
        return now - self._sent_at >= self.interval_s

    def due(
        self,
        now: float,
        *,
        sessions: int,
        cpu: float,
        gpu: float,
        games_changed: bool = False,
        draining: bool = False,
    ) -> bool:
        """Whether to send a heartbeat at `now`, for a host running `sessions` at load (`cpu`, `gpu`)."""
        if games_changed or draining != self.draining:
            return True
        if not self.interval_passed(now):
            return False
        if sessions > 0:
            return True
        return abs(cpu - self._cpu) >= LOAD_STEP or abs(gpu - self._gpu) >= LOAD_STEP

    def sent(self, now: float, *, cpu: float, gpu: float, draining: bool = False) -> None:
        """A heartbeat with these figures went at `now`."""
        self._sent_at = now
        self._cpu, self._gpu = cpu, gpu
        self.draining = draining
