"""Overload shedding (broker.guard.Guard.enter): past max_inflight unary calls, new work is refused at once."""

from __future__ import annotations

import pytest
from cloudseat.errors import ResourceExhausted

from broker.guard import Guard

START = "/cloudseat.v1.SessionService/StartSession"
END = "/cloudseat.v1.SessionService/EndSession"
NEGOTIATE = "/cloudseat.v1.SessionService/Negotiate"


def test_calls_beyond_the_limit_are_shed_and_admitted_again_once_others_leave() -> None:
    guard = Guard(None, max_inflight=2)
    assert guard.enter(START) and guard.enter(START)
    with pytest.raises(ResourceExhausted, match="overloaded: 2 calls in progress"):
        guard.enter(START)
    assert (guard.inflight, guard.shed) == (2, 1)
    guard.leave()
    assert guard.enter(START)
    assert guard.inflight == 2


def test_ending_and_negotiating_are_never_shed_nor_counted() -> None:
    guard = Guard(None, max_inflight=1)
    assert guard.enter(START)
    assert guard.enter(END) is False
    assert guard.enter(NEGOTIATE) is False
    assert (guard.inflight, guard.shed) == (1, 0)


def test_no_limit_counts_nothing() -> None:
    guard = Guard(None)
    for _ in range(1000):
        assert guard.enter(START) is False
    assert guard.inflight == 0


class _Deadline:
    """Only what _check_not_expired reads of a servicer context (a real one needs a call in flight)."""

    def __init__(self, left: float | None) -> None:
        self.left = left

    def time_remaining(self) -> float | None:
        return self.left


def test_a_call_whose_deadline_passed_while_it_waited_is_not_served() -> None:
    from cloudseat.errors import DeadlineExceeded

    from broker.rpc.interceptor import _check_not_expired

    _check_not_expired(_Deadline(None))  # type: ignore[arg-type]  # no deadline
    _check_not_expired(_Deadline(0.5))  # type: ignore[arg-type]
    with pytest.raises(DeadlineExceeded, match="deadline passed before it was served"):
        _check_not_expired(_Deadline(0.0))  # type: ignore[arg-type]
