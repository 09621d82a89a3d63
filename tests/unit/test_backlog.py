"""The placement queue's backlog as a tenant worker hears it (broker.backlog): new starts are refused only while
the leader places and the oldest request no round has looked at is older than the limit."""

from __future__ import annotations

from broker.backlog import ACTIVE_S, FORGET_S, MAX_RETRY_MS, MIN_RETRY_MS, Backlog


def _new(sid: str) -> dict[str, object]:
    return {"session_id": sid, "state": "PENDING", "pending_reason": None, "resumed": False}


def _placed(sid: str) -> dict[str, object]:
    return {"session_id": sid, "state": "PLACED", "pending_reason": None, "resumed": False}


def test_nothing_is_refused_while_every_request_is_looked_at_in_time() -> None:
    b = Backlog(limit_ms=2000)
    b.on_change(_new("a"), 0.0)
    b.on_change(_placed("a"), 0.5)
    b.on_change(_new("b"), 1.0)
    assert b.age_ms(2.5) == 1500.0
    assert b.refusal(2.5) is None
    assert b.refused == 0


def test_starts_are_refused_while_the_placing_leader_is_behind_the_hint_how_far() -> None:
    b = Backlog(limit_ms=2000)
    b.on_change(_new("old"), 0.0)
    b.on_change(_new("newer"), 1.0)
    b.on_change(_placed("x"), 2.5)  # the leader is placing, but has not reached "old"
    assert b.refusal(3.0) == 1000  # 3 s old, 1 s past the limit
    assert b.refused == 1
    # A reason means a round looked at it: it waits for capacity, not for the broker.
    b.on_change({"session_id": "old", "state": "PENDING", "pending_reason": "NO_CAPACITY_WITHIN_CAP"}, 3.1)
    assert b.age_ms(3.2) == 2200.0 and b.refusal(3.2) == MIN_RETRY_MS
    b.on_change({"session_id": "newer", "state": "ENDED", "pending_reason": None}, 3.3)
    assert len(b) == 0 and b.refusal(3.4) is None


def test_a_leader_that_is_away_refuses_nothing() -> None:
    """A failover: requests queue for the next leader as before, whatever their age."""
    b = Backlog(limit_ms=2000)
    b.on_change(_placed("x"), 0.0)
    b.on_change(_new("a"), 0.5)
    assert b.refusal(0.5 + ACTIVE_S + 3) is None


def test_resumes_never_count_and_the_hint_is_bounded() -> None:
    b = Backlog(limit_ms=100)
    b.on_change({**_new("r"), "resumed": True}, 0.0)
    b.on_change(_placed("x"), 0.0)
    assert len(b) == 0
    b.on_change(_new("a"), 0.0)
    b.on_change(_placed("y"), 0.15)
    assert b.refusal(0.15) == MIN_RETRY_MS
    b.on_change(_placed("z"), 30.0)
    assert b.refusal(30.0) == MAX_RETRY_MS


def test_an_entry_never_heard_of_again_is_forgotten_and_a_resync_clears_all() -> None:
    b = Backlog(limit_ms=100)
    b.on_change(_new("lost"), 0.0)
    b.on_change(_new("kept"), FORGET_S)
    assert b.age_ms(FORGET_S + 1) == 1000.0 and len(b) == 1
    b.resync()
    assert len(b) == 0 and b.age_ms(FORGET_S + 2) == 0.0


def test_off_refuses_nothing() -> None:
    b = Backlog(limit_ms=0)
    b.on_change(_new("a"), 0.0)
    b.on_change(_placed("x"), 10.0)
    assert b.refusal(10.0) is None
