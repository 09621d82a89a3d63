"""Patron time, pure: how much of the patron's paid time is left, which warnings are due, when to look again.

The rule: a session's paid time (StartSessionRequest.paid_time_s, plus whatever the venue adds with AddTime) counts
from the moment it is STREAMING — waiting in the queue and starting up are not the patron's time. The database keeps
the deadline (sessions.paid_until = streaming_at + paid_time_s, by its own clock); the placement leader's liveness
duty ends the session TIME_UP once the deadline is `grace_s` behind, so a broker restart changes nothing. Watchers
of the session are warned when the time left crosses each threshold (5 and 1 minutes by default), and told when the
time is up (the grace runs, and the venue can still add time). A session resumed after its host was lost keeps
what the lost one had left (resume_paid_time, migration 0023: worked out where the resume is inserted).

No I/O, no clock: callers pass the seconds left (negative once the deadline has passed) and what was announced.
"""

from __future__ import annotations

import dataclasses
import math

# The most paid time a session can have in all (the database's check paid_time_in_range says the same).
MAX_PAID_TIME_S = 30 * 86_400
# What StartSession accepts at once, and AddTime per call.
MAX_START_S = 7 * 86_400
MAX_ADD_S = 86_400


@dataclasses.dataclass(frozen=True, slots=True)
class PatronTimeConfig:
    # Warn when the time left falls to each of these (seconds); 5 and 1 minutes.
    warnings_s: tuple[float, ...] = (300.0, 60.0)
    # After the paid time runs out, the session goes on this long (a last save, the venue adding time).
    grace_s: float = 30.0

    def __post_init__(self) -> None:
        if any(w <= 0 for w in self.warnings_s):
            raise ValueError("patron time warnings must be positive seconds")
        if self.grace_s < 0:
            raise ValueError("patron time grace must not be negative")


# The pseudo-threshold for "the time is up", announced once like a warning.
TIME_UP = 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class Reading:
    """What a watcher should show now, and what it has announced so far."""

    # Whole seconds left, rounded up (0 once the time is up).
    time_left_s: int
    # The warning threshold crossed just now (the most urgent when several were), else None.
    warning_s: float | None
    # The time is up (announce it when `announce_time_up`).
    time_up: bool
    announce_time_up: bool
    # Whole seconds of grace left once the time is up, else 0.
    grace_left_s: int
    # Thresholds announced (TIME_UP included), after this reading.
    announced: frozenset[float]
    # Seconds until something is next due (a warning, the time up, the end of the grace); None when nothing is.
    next_due_s: float | None


def read(left_s: float, config: PatronTimeConfig, announced: frozenset[float] = frozenset()) -> Reading:
    """Judge `left_s` seconds of paid time left (negative: the deadline passed that long ago).

    A threshold is announced once; time added that lifts the time left above it again re-arms it. Thresholds
    crossed together (a session that starts with 2 minutes paid) give one warning, the most urgent."""
    # Re-arm what added time moved back above.
    still = frozenset(t for t in announced if left_s <= t)
    due = [t for t in config.warnings_s if left_s <= t and t not in still]
    warning = min(due) if due and left_s > 0 else None
    time_up = left_s <= 0
    announce_time_up = time_up and TIME_UP not in still
    now_announced = still | frozenset(due) | (frozenset({TIME_UP}) if time_up else frozenset())
    upcoming = [left_s - t for t in config.warnings_s if left_s > t]
    if not time_up:
        upcoming.append(left_s)
    elif left_s + config.grace_s > 0:
        upcoming.append(left_s + config.grace_s)
    return Reading(
        time_left_s=max(0, math.ceil(left_s)),
        warning_s=warning,
        time_up=time_up,
        announce_time_up=announce_time_up,
        grace_left_s=max(0, math.ceil(left_s + config.grace_s)) if time_up else 0,
        announced=now_announced,
        next_due_s=min(upcoming) if upcoming else None,
    )


def warning_text(threshold_s: float) -> str:
    """What a seat shows for a warning: '5 minutes left', '1 minute left', '30 seconds left'."""
    if threshold_s >= 60 and threshold_s % 60 == 0:
        minutes = int(threshold_s // 60)
        return f"{minutes} minute{'s' if minutes != 1 else ''} left"
    seconds = math.ceil(threshold_s)
    return f"{seconds} second{'s' if seconds != 1 else ''} left"


def time_up_text(grace_left_s: int) -> str:
    return f"paid time is up: the session ends in {grace_left_s} s"
