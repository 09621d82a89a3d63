"""The session state machine: which moves are legal, and which end reasons fit which states.

Pure: no I/O, no clock. The store applies what this module decides, with a compare-and-set on the state it read,
and the database records each move (with its own clock) as the session's history.

    PENDING ──placed──▶ PLACED ──accepted──▶ STARTING ──workload up──▶ READY ──first frame──▶ STREAMING
       └──────────────── any live state ──── ended (with a reason) ────────────────────────▶ ENDED
"""

from __future__ import annotations

import dataclasses
import enum

from cloudseat import resume
from cloudseat.errors import FailedPrecondition, IllegalTransition


class State(enum.StrEnum):
    PENDING = "PENDING"
    PLACED = "PLACED"
    STARTING = "STARTING"
    READY = "READY"
    STREAMING = "STREAMING"
    ENDED = "ENDED"


class EndReason(enum.StrEnum):
    ENDED_BY_PATRON = "ENDED_BY_PATRON"
    ENDED_BY_VENUE = "ENDED_BY_VENUE"
    PENDING_TIMEOUT = "PENDING_TIMEOUT"
    START_TIMEOUT = "START_TIMEOUT"
    HOST_LOST = "HOST_LOST"
    FAILED = "FAILED"
    UNKNOWN_GAME = "UNKNOWN_GAME"
    TIME_UP = "TIME_UP"
    HOST_DRAINED = "HOST_DRAINED"
    REFUSED_BY_HOST = "REFUSED_BY_HOST"


# The forward chain; a session moves one step at a time.
_NEXT: dict[State, State] = {
    State.PENDING: State.PLACED,
    State.PLACED: State.STARTING,
    State.STARTING: State.READY,
    State.READY: State.STREAMING,
}
_ORDER = {s: i for i, s in enumerate(State)}

LIVE: frozenset[State] = frozenset(s for s in State if s is not State.ENDED)
# States in which the session holds slots on a host.
ON_HOST: frozenset[State] = frozenset({State.PLACED, State.STARTING, State.READY, State.STREAMING})

# Reasons only the host side can give: they need a host.
_HOST_REASONS = frozenset(
    {
        EndReason.HOST_LOST,
        EndReason.FAILED,
        EndReason.UNKNOWN_GAME,
        EndReason.HOST_DRAINED,
        EndReason.REFUSED_BY_HOST,
        EndReason.START_TIMEOUT,
    }
)
# Reasons an agent may report in a SessionEvent (the rest are the broker's or a caller's to give).
AGENT_REASONS: frozenset[EndReason] = frozenset(
    {EndReason.FAILED, EndReason.UNKNOWN_GAME, EndReason.HOST_DRAINED, EndReason.REFUSED_BY_HOST}
)


# Endings that were not the seat's doing: the seat may resume such a session, ahead of the queue, within
# RESUME_WINDOW_S of its end (the contract's rule, cloudseat.resume).
RESUMABLE: frozenset[EndReason] = frozenset(EndReason(r) for r in resume.RESUMABLE_REASONS)
RESUME_WINDOW_S = resume.RESUME_WINDOW_S


def check_resumable(state: State, reason: EndReason | None, ended_s_ago: float) -> None:
    """Raise FailedPrecondition (naming the field) unless a session in `state`, ended for `reason` `ended_s_ago`
    seconds ago, may be resumed."""
    if state is not State.ENDED or reason is None:
        raise FailedPrecondition(f"resume.session_id: the session is {state}, not ended; keep playing it")
    if reason not in RESUMABLE:
        raise FailedPrecondition(
            f"resume.session_id: the session ended {reason}; only a session ended by "
            f"{', '.join(sorted(RESUMABLE))} can be resumed"
        )
    if ended_s_ago > RESUME_WINDOW_S:
        raise FailedPrecondition(
            f"resume.session_id: the session ended {ended_s_ago:.0f} s ago; resuming is possible for "
            f"{RESUME_WINDOW_S:.0f} s — start a new session instead"
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Move:
    """A decided move: from `current` to `to`, with the reason when `to` is ENDED."""

    current: State
    to: State
    reason: EndReason | None = None


def advance(current: State, to: State) -> Move | None:
    """Decide a forward move to `to`.

    Returns None when the session is already at `to` or past it (a repeated or late report: nothing to do), and
    raises IllegalTransition for a jump over a state, a move out of ENDED, or a move to PENDING.
    """
    if to is State.ENDED:
        raise IllegalTransition("use end() to end a session")
    if to is State.PENDING:
        raise IllegalTransition(f"cannot move from {current} back to {to}")
    if current is State.ENDED:
        return None
    if _ORDER[to] <= _ORDER[current]:
        return None
    if _NEXT[current] is not to:
        raise IllegalTransition(f"cannot move from {current} to {to}: {_NEXT[current]} comes first")
    return Move(current, to)


def catch_up(current: State, to: State) -> list[Move]:
    """The moves, one step at a time, that bring a session from `current` up to `to`: what an agent's report of its
    latest state means when it reports only the last of several moves made in a moment (READY right after the
    start: STARTING, then READY). Empty when the session is at `to` already, or past it, or ended; IllegalTransition
    for a move to PENDING or ENDED (use end())."""
    if to is State.ENDED:
        raise IllegalTransition("use end() to end a session")
    if to is State.PENDING:
        raise IllegalTransition(f"cannot move from {current} back to {to}")
    moves: list[Move] = []
    while current is not State.ENDED and _ORDER[current] < _ORDER[to]:
        moves.append(Move(current, _NEXT[current]))
        current = _NEXT[current]
    return moves


def end(current: State, reason: EndReason) -> Move | None:
    """Decide ending the session for `reason`; None when it has ended already (ending is idempotent)."""
    if current is State.ENDED:
        return None
    if reason in _HOST_REASONS and current not in ON_HOST:
        raise IllegalTransition(f"{reason} cannot end a session that is {current}")
    if reason is EndReason.PENDING_TIMEOUT and current is not State.PENDING:
        raise IllegalTransition(f"{reason} cannot end a session that is {current}")
    return Move(current, State.ENDED, reason)


@dataclasses.dataclass(frozen=True, slots=True)
class Timeouts:
    """How long a session may sit in each waiting state before the broker ends it (seconds)."""

    pending_s: float = 900.0
    placed_s: float = 30.0
    starting_s: float = 60.0
    ready_s: float = 120.0

    def limit_s(self, state: State) -> float | None:
        """The time a session may stay in `state`; None for states without a limit."""
        return {
            State.PENDING: self.pending_s,
            State.PLACED: self.placed_s,
            State.STARTING: self.starting_s,
            State.READY: self.ready_s,
        }.get(state)

    @staticmethod
    def reason_for(state: State) -> EndReason:
        return EndReason.PENDING_TIMEOUT if state is State.PENDING else EndReason.START_TIMEOUT
