"""broker.overload's fair share: each tenant's recent calls, and who is shed when the loop runs late."""

from __future__ import annotations

import pytest

from broker.overload import Admission, Policy, Shares, Slots


def _late(lag_ms: float) -> Admission:
    admission = Admission(Policy(target_ms=20, smoothing=1))
    admission.observe(lag_ms)
    return admission


def test_shares_tell_the_heavy_tenant_from_the_light() -> None:
    shares = Shares(half_life_s=1.0)
    for i in range(100):
        shares.note("venue:flood", i * 0.001)
    for i in range(10):
        shares.note("venue:quiet", i * 0.01)
    flood, heaviest = shares.ratio("venue:flood", 0.1)
    quiet, _ = shares.ratio("venue:quiet", 0.1)
    assert flood == heaviest and flood > 1.5 and quiet < 0.5
    assert shares.active(0.1) == 2
    assert shares.active(60.0) == 0  # all decayed away


def test_when_late_the_tenants_over_their_share_are_shed_and_the_others_spared() -> None:
    admission = _late(30)  # half-way to drowning
    assert 0 < admission.shed_share < 1
    draws = [i / 100 for i in range(100)]
    quiet = sum(admission.admit_tenant(d, ratio=0.2, heaviest=1.8) for d in draws)
    flood = sum(admission.admit_tenant(d, ratio=1.8, heaviest=1.8) for d in draws)
    alone = sum(admission.admit_tenant(d, ratio=1.0, heaviest=1.0) for d in draws)
    assert quiet == 100
    assert flood < alone < 100  # the heavy one sheds more than a tenant alone would, which sheds as before
    assert alone == sum(admission.admit(d) for d in draws)
    assert all(_late(0).admit_tenant(d, 5.0, 5.0) for d in draws)  # on time: everyone in
    assert not any(_late(100).admit_tenant(d, 5.0, 5.0) for d in draws)  # drowning: the tenant over its share shed
    assert all(_late(100).admit_tenant(d, 0.1, 5.0) for d in draws)  # ... and the one under it spared
    assert not any(_late(100).admit_tenant(d, 1.0, 1.0) for d in draws)  # nobody over: everyone shed


def test_a_tenant_alone_may_hold_the_whole_capacity() -> None:
    slots = Slots(4)
    assert [slots.take("venue:a") for _ in range(5)] == [True, True, True, True, False]
    assert slots.total == 4 and slots.share("venue:a") == 4


def test_a_second_tenant_gets_its_share_even_while_the_first_holds_everything() -> None:
    slots = Slots(4)
    for _ in range(4):
        assert slots.take("venue:flood")
    # The flood took the whole capacity alone; a newcomer is under its share (4 / 2) and goes in regardless.
    assert slots.take("venue:quiet") and slots.take("venue:quiet")
    assert not slots.take("venue:quiet")  # at its share now
    assert slots.total == 6  # past the capacity, by no more than the newcomer's share
    # The flood is over its share: refused until its calls in progress drop under it, whatever it asks.
    assert not slots.take("venue:flood")
    slots.give("venue:flood")
    slots.give("venue:flood")
    assert not slots.take("venue:flood")  # 2 held, the share is 2
    slots.give("venue:flood")
    assert slots.take("venue:flood")
    assert slots.held == {"venue:flood": 2, "venue:quiet": 2}


def test_shares_follow_the_tenants_holding_calls() -> None:
    slots = Slots(9)
    assert slots.share("a") == 9
    slots.take("a")
    slots.take("b")
    assert slots.share("a") == slots.share("b") == 4  # 9 // 2
    assert slots.share("c") == 3  # a third tenant would make three
    slots.give("b")
    assert "b" not in slots.held and slots.share("a") == 9


def test_every_tenant_gets_at_least_one_call_in_progress() -> None:
    slots = Slots(2)
    assert all(slots.take(f"venue:{i}") for i in range(5))
    assert not slots.take("venue:0")
    assert slots.total == 5


def test_the_hint_grows_with_how_far_over_its_share_a_tenant_is() -> None:
    slots = Slots(10)
    for _ in range(10):
        slots.take("flood")
    assert slots.retry_after_ms("flood", 100) == 100  # alone, at its share
    slots.take("quiet")
    assert slots.retry_after_ms("flood", 100) == 200  # holds 10, its share is 5
    assert slots.retry_after_ms("quiet", 100) == 100


def test_giving_back_what_was_not_taken_is_a_bug_that_says_so() -> None:
    slots = Slots(1)
    with pytest.raises(ValueError, match="no call in progress"):
        slots.give("venue:a")
    with pytest.raises(ValueError, match="capacity"):
        Slots(0)
