"""What an agent that (re)connects and the broker must do to agree on the host's sessions. Pure.

The agent reports what it runs (and how far each session got); the broker holds what the database says. Reports
and commands lost while they were apart (a killed broker, a dropped stream, a restored backup) are made good here:
stops first, so the slots they free are free before any start goes out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from broker import lifecycle
from broker.lifecycle import EndReason, State

_RUNNING_STATES = frozenset({State.STARTING, State.READY, State.STREAMING})


@dataclasses.dataclass(frozen=True, slots=True)
class Held:
    """A session as the broker holds it, to reconcile with a reconnecting agent."""

    session_id: str
    state: State
    host_id: str | None
    end_reason: EndReason | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Reconciliation:
    """What to do when an agent (re)connects, in this order: stop, start, advance, end."""

    # Sessions the agent runs that are not live on its host, each with the reason the broker ended it (HOST_LOST
    # for one the broker does not hold there).
    stops: tuple[tuple[str, EndReason], ...] = ()
    # PLACED sessions on the host that the agent does not run.
    starts: tuple[str, ...] = ()
    # Live sessions on the host that the agent has taken further: one lifecycle step each, in order.
    advances: tuple[tuple[str, State], ...] = ()
    # STARTING, READY or STREAMING sessions on the host that the agent does not run: to end FAILED.
    ends: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.stops or self.starts or self.advances or self.ends)


def plan_reconcile(
    host_id: str, held: Iterable[Held], running: Iterable[tuple[str, State | None]]
) -> Reconciliation:
    """Decide how a reconnecting agent of `host_id` and the broker come to agree. Pure.

    `held`: the sessions the broker holds live on the host, and those the agent claims (whatever their state or
    host); `running`: what the agent says it runs, with the state it says each has reached (one but STARTING, READY
    or STREAMING, or None for a value unknown, moves nothing). A PLACED session the agent does not run is started
    (its start command was lost); one that has got further is ended (its end report was lost); one the agent runs
    further along than the broker knows is advanced (the report was lost); a session the agent runs that is not
    live on this host is stopped.
    """
    claimed = dict(running)
    known = {h.session_id: h for h in held}
    stops: list[tuple[str, EndReason]] = []
    advances: list[tuple[str, State]] = []
    for sid, reported in claimed.items():
        h = known.get(sid)
        if h is None or h.host_id != host_id or h.state not in lifecycle.ON_HOST:
            reason = h.end_reason if h is not None and h.state is State.ENDED else None
            stops.append((sid, reason or EndReason.HOST_LOST))
        elif reported in _RUNNING_STATES:
            advances.extend((sid, to) for to in _steps(h.state, reported))
    missing = [
        h
        for h in known.values()
        if h.host_id == host_id and h.state in lifecycle.ON_HOST and h.session_id not in claimed
    ]
    return Reconciliation(
        stops=tuple(stops),
        starts=tuple(h.session_id for h in missing if h.state is State.PLACED),
        advances=tuple(advances),
        ends=tuple(h.session_id for h in missing if h.state is not State.PLACED),
    )


def _steps(current: State, to: State) -> list[State]:
    """The lifecycle moves, one step at a time, that take a session from `current` to `to` (none when it is there
    or past it already)."""
    steps: list[State] = []
    chain = list(State)
    for nxt in chain[chain.index(current) + 1 : chain.index(to) + 1]:
        if lifecycle.advance(current, nxt) is None:
            break
        steps.append(nxt)
        current = nxt
    return steps
