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


def test_a_call_that_waits_gives_its_slot_back_once() -> None:
    """A held StartSession (waiting for its placement) is no work in progress: its slot goes back for the wait, and
    the call's end does not give it back a second time."""
    import contextvars

    from broker import guard as guard_module

    guard = Guard(None, max_inflight=1)

    def held_call() -> None:
        assert guard.enter(START)
        release = guard.hold()
        guard_module.waiting()
        assert guard.inflight == 0
        assert guard.enter(START)  # another call fits while this one waits
        guard_module.waiting()  # again: nothing more to give back
        release()  # the held call ends
        assert guard.inflight == 1  # the second call's slot stands

    contextvars.copy_context().run(held_call)
    guard_module.waiting()  # outside any call: nothing held
    assert guard.inflight == 1


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


def test_a_tenant_at_its_share_of_the_calls_in_progress_is_shed_while_another_goes_in() -> None:
    guard = Guard(None, max_inflight=4, shared_inflight=4)
    for _ in range(4):
        assert guard.enter(START, "venue:flood", now=0.0)
    assert guard.enter(START, "venue:quiet", now=0.0)  # under its share (2 of 4) though all 4 are held
    with pytest.raises(ResourceExhausted, match="venue:flood holds 4 calls in progress here, its share") as shed:
        guard.enter(START, "venue:flood", now=0.0)
    assert shed.value.retry_after_ms == 400  # twice its share held: four times the base hint
    assert guard.enter(END, "venue:flood") is False  # ending is never shed
    guard.leave("venue:flood")
    guard.leave("venue:quiet")
    assert guard.inflight == 3 and guard.shed == 1


def test_a_tenant_alone_is_refused_at_once_and_one_sharing_is_held() -> None:
    """Past the capacity a tenant alone is answered at once (a refusal must cost less than the call); one over its
    share beside another tenant has its refusal held for the hint (broker.overload.Slots.hold)."""
    guard = Guard(None, max_inflight=2, shared_inflight=2)
    assert guard.enter(START, "venue:a") and guard.enter(START, "venue:a")
    assert not guard.sharing("venue:a")
    assert guard.hold_refusal("venue:a", 100, time_left_s=10.0) > 0  # what a hold would be, if asked
    guard.release_refusal("venue:a")
    assert guard.enter(START, "venue:b")
    assert guard.sharing("venue:a") and guard.sharing("venue:b")
    assert guard.hold_refusal("venue:a", 100, time_left_s=0.01) == 0.0  # never past the caller's deadline


def test_the_door_knows_a_tenant_only_from_a_token_checked_before() -> None:
    """Guard.known_tenant, which the door (broker.rpc.interceptor) asks for every new call to count it against its
    tenant's share: a lookup, never a signature check."""
    from broker import auth

    key = auth.new_signing_key()
    guard = Guard(auth.TokenVerifier([key.public_key()]), max_inflight=4)
    token = auth.TokenIssuer(key).issue(auth.Role.VENUE, ttl_s=60, venue_id="cafe")
    metadata = (("user-agent", "x"), ("authorization", f"Bearer {token}"))
    assert guard.known_tenant(START, metadata) is None  # not checked yet
    guard.authenticate(START, metadata, {})
    assert guard.known_tenant(START, metadata) == "venue:cafe"
    assert guard.known_tenant(START, (("authorization", "Bearer another"),)) is None
    assert guard.known_tenant(START, ()) is None
    assert guard.known_tenant("/cloudseat.v1.AgentService/Link", metadata) is None  # agents: their certificate
    assert Guard(None).known_tenant(START, ()) == auth.TRUSTED.tenant  # authentication off: one tenant


def test_a_tenant_with_refusals_held_is_known_to_the_others() -> None:
    """Guard.others_held / holding: the door spares a tenant holding no refusals while another holds some (it is
    over its share of the calls in progress, however slowly its calls now arrive)."""
    guard = Guard(None, max_inflight=4)
    assert not guard.others_held("venue:quiet") and not guard.holding("venue:flood")
    assert guard.hold_refusal("venue:flood", 100, time_left_s=None) > 0
    assert guard.others_held("venue:quiet") and guard.holding("venue:flood")
    assert not guard.others_held("venue:flood") and not guard.holding("venue:quiet")
    guard.release_refusal("venue:flood")
    assert not guard.others_held("venue:quiet")
