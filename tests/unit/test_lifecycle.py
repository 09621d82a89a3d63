from __future__ import annotations

import itertools

import pytest
from cloudseat.errors import IllegalTransition
from hypothesis import given
from hypothesis import strategies as st

from broker import lifecycle
from broker.lifecycle import EndReason, State

CHAIN = [State.PENDING, State.PLACED, State.STARTING, State.READY, State.STREAMING]


def test_forward_chain_one_step_at_a_time() -> None:
    for current, nxt in itertools.pairwise(CHAIN):
        move = lifecycle.advance(current, nxt)
        assert move == lifecycle.Move(current, nxt)


@pytest.mark.parametrize(
    ("current", "to"), [(State.PENDING, State.STARTING), (State.PLACED, State.STREAMING)]
)
def test_jumping_a_state_is_illegal(current: State, to: State) -> None:
    with pytest.raises(IllegalTransition):
        lifecycle.advance(current, to)


def test_repeated_or_late_reports_are_no_ops() -> None:
    assert lifecycle.advance(State.READY, State.READY) is None
    assert lifecycle.advance(State.STREAMING, State.STARTING) is None
    assert lifecycle.advance(State.ENDED, State.READY) is None


def test_nothing_moves_back_to_pending() -> None:
    with pytest.raises(IllegalTransition):
        lifecycle.advance(State.PLACED, State.PENDING)
    with pytest.raises(IllegalTransition):
        lifecycle.advance(State.ENDED, State.PENDING)


def test_end_is_idempotent_and_checks_reasons() -> None:
    assert lifecycle.end(State.ENDED, EndReason.ENDED_BY_PATRON) is None
    assert lifecycle.end(State.PENDING, EndReason.ENDED_BY_PATRON) == lifecycle.Move(
        State.PENDING, State.ENDED, EndReason.ENDED_BY_PATRON
    )
    with pytest.raises(IllegalTransition):
        lifecycle.end(State.PENDING, EndReason.HOST_LOST)  # a pending session has no host to lose
    with pytest.raises(IllegalTransition):
        lifecycle.end(State.STREAMING, EndReason.PENDING_TIMEOUT)
    assert lifecycle.end(State.STREAMING, EndReason.HOST_LOST) is not None


def test_timeouts_cover_the_waiting_states_only() -> None:
    t = lifecycle.Timeouts()
    assert t.limit_s(State.STREAMING) is None and t.limit_s(State.ENDED) is None
    assert all(t.limit_s(s) for s in (State.PENDING, State.PLACED, State.STARTING, State.READY))
    assert t.reason_for(State.PENDING) is EndReason.PENDING_TIMEOUT
    assert t.reason_for(State.READY) is EndReason.START_TIMEOUT


events = st.one_of(
    st.tuples(st.just("advance"), st.sampled_from(list(State))),
    st.tuples(st.just("end"), st.sampled_from(list(EndReason))),
)


@given(st.lists(events, max_size=30))
def test_any_sequence_of_events_keeps_the_machine_sound(seq: list[tuple[str, object]]) -> None:
    """Whatever arrives in whatever order: the state only moves forward along the chain or to ENDED, and ENDED is
    final."""
    state = State.PENDING
    visited = [state]
    for kind, arg in seq:
        try:
            move = lifecycle.advance(state, arg) if kind == "advance" else lifecycle.end(state, arg)  # type: ignore[arg-type]
        except IllegalTransition:
            continue
        if move is None:
            continue
        assert move.current is state
        assert state is not State.ENDED
        if move.to is not State.ENDED:
            assert CHAIN.index(move.to) == CHAIN.index(state) + 1
        else:
            assert move.reason is not None
        state = move.to
        visited.append(state)
    assert visited.count(State.ENDED) <= 1
