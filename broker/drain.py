"""A provider's drain, pure: the deadline's bounds, the warnings a patron gets ahead of it, and what they say.

The rule (one behaviour, the contract's FleetService.DrainHost): a drained host takes no new session at once
(placement skips it); its running sessions go on until they end, or until the drain's deadline when the drain has
one. The database keeps the deadline (hosts.drain_deadline, by its own clock, migration 0017); at the deadline the
placement leader's liveness duty ends the sessions still on the host HOST_DRAINED (a broker restart changes nothing),
the agent is told to stop them, and each seat resumes its session on another host at the front of the queue with
the paid time it had left (cloudseat.resume; resume_paid_time, migration 0023). Watchers of a session on such a host
are warned when the time before the deadline crosses each threshold (5 and 1 minutes by default), as paid time
warns them (broker.patron_time, whose countdown this reuses).

The agent's own `drain_grace_s` is for its shutdown (SIGTERM) only; a provider's drain never ends a session at the
agent.

No I/O, no clock: callers pass the seconds left (negative once the deadline has passed) and what was announced.
"""

from __future__ import annotations

import dataclasses
import math

from cloudseat import errors

from broker import patron_time

# The furthest deadline a drain may set, in seconds from now: a week (maintenance is planned, not open-ended; a
# drain with no deadline is the open-ended one).
MAX_DEADLINE_S = 7 * 86_400


def deadline_s(value: object, field: str = "deadline_s") -> int | None:
    """A drain's deadline as asked (seconds from now, a whole number 0 to MAX_DEADLINE_S), None for none (0);
    InvalidArgument naming `field` otherwise. The RPC and the console's drain button both take it this way."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise errors.InvalidArgument(field, f"must be a whole number of seconds, not {type(value).__name__}")
    if not 0 <= value <= MAX_DEADLINE_S:
        raise errors.InvalidArgument(
            field, f"must be 0 to {MAX_DEADLINE_S} seconds (a week); 0 means no deadline"
        )
    return value or None


@dataclasses.dataclass(frozen=True, slots=True)
class DrainConfig:
    # Warn a drained host's patrons when the time before its deadline falls to each of these (seconds).
    warnings_s: tuple[float, ...] = (300.0, 60.0)

    def __post_init__(self) -> None:
        if any(w <= 0 for w in self.warnings_s):
            raise ValueError("drain warnings must be positive seconds")

    @property
    def countdown(self) -> patron_time.PatronTimeConfig:
        """The same countdown as paid time's, with no grace: at the deadline the session moves."""
        return patron_time.PatronTimeConfig(warnings_s=self.warnings_s, grace_s=0.0)


def read(
    left_s: float, config: DrainConfig, announced: frozenset[float] = frozenset()
) -> patron_time.Reading:
    """Judge `left_s` seconds before the drain's deadline (negative: it passed that long ago), as
    broker.patron_time.read does paid time: each threshold announced once, a moved deadline re-arming those it
    lifts the time back above. `time_up` means the move is due (the liveness duty makes it)."""
    return patron_time.read(left_s, config.countdown, announced)


def warning_text(threshold_s: float) -> str:
    """What a seat shows ahead of the move: 'this game host closes for maintenance in 5 minutes: ...'."""
    if threshold_s >= 60 and threshold_s % 60 == 0:
        minutes = int(threshold_s // 60)
        when = f"{minutes} minute{'s' if minutes != 1 else ''}"
    else:
        seconds = math.ceil(threshold_s)
        when = f"{seconds} second{'s' if seconds != 1 else ''}"
    return (
        f"this game host closes for maintenance in {when}: the game then restarts on another host, ahead of the "
        "queue, and the paid time left is kept"
    )


# Kept in the session's history (end_detail) when the deadline moves it; the seat's resume follows.
MOVED_DETAIL = "the host's drain deadline passed: resume on another host (paid time kept)"
