"""broker.overload's fair share: each tenant's recent calls, and who is shed when the loop runs late."""

from __future__ import annotations

import pytest

from broker.overload import ACTIVE_S, Admission, Policy, Shares, Slots


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
    slots = Slots(4, shared=2)
    assert [slots.take("venue:a", 0.0) for _ in range(5)] == [True, True, True, True, False]
    assert slots.total == 4 and slots.share("venue:a", 0.0) == 4


def test_a_second_tenant_gets_its_share_even_while_the_first_holds_everything() -> None:
    slots = Slots(8, shared=4)
    for _ in range(8):
        assert slots.take("venue:flood", 0.0)
    # The flood took the whole capacity alone; a newcomer is under its share (4 shared by 2) and goes in regardless.
    assert slots.take("venue:quiet", 0.1) and slots.take("venue:quiet", 0.1)
    assert not slots.take("venue:quiet", 0.1)  # at its share, and the shared part is all held
    assert slots.total == 10
    # The flood is over its share: refused until its calls in progress drop under it, whatever it asks.
    for _ in range(6):
        assert not slots.take("venue:flood", 0.2)
        slots.give("venue:flood", 0.2)
    assert slots.held == {"venue:flood": 2, "venue:quiet": 2}
    assert not slots.take("venue:flood", 0.2)  # 2 held, its share is 2, and the 4 shared are held
    slots.give("venue:quiet", 0.2)
    assert slots.take("venue:flood", 0.2)  # the total is under the shared part: no one is refused


def test_below_the_shared_part_nobody_is_refused() -> None:
    slots = Slots(8, shared=4)
    slots.take("venue:quiet", 0.0)
    assert all(slots.take("venue:burst", 0.0) for _ in range(3))  # 1 + 3: a burst over its share of 2 goes in
    assert not slots.take("venue:burst", 0.0)


def test_a_tenant_stays_active_a_while_after_its_last_call() -> None:
    slots = Slots(9, shared=6)
    assert slots.take("a", 0.0)
    slots.give("a", 0.0)
    assert slots.share("b", 0.5) == 3  # "a" called half a second ago: two tenants
    assert slots.share("b", 0.5 + ACTIVE_S) == 9  # long gone: "b" is alone
    slots.take("c", 10.0)
    assert slots.share("c", 60.0) == 9  # holding a call: active however long ago it started... and alone
    assert slots.share("d", 60.0) == 3  # two with "d"


def test_a_light_tenant_is_bounded_by_the_capacity_alone() -> None:
    """A tenant calling well under its share of the recent calls whose calls are slowed (by a flood's) holds more
    of them in progress: it is not refused for that, up to the whole capacity."""
    slots = Slots(6, shared=4)
    assert slots.take("venue:flood", 0.0) and slots.take("venue:flood", 0.0)
    assert slots.take("venue:quiet", 0.0) and slots.take("venue:quiet", 0.0)
    assert not slots.take("venue:quiet", 0.0)  # at its share (2), all 4 shared held
    assert slots.take("venue:quiet", 0.0, light=True) and slots.take("venue:quiet", 0.0, light=True)
    assert slots.take("venue:quiet", 0.0, light=True) and slots.take("venue:quiet", 0.0, light=True)
    assert not slots.take("venue:quiet", 0.0, light=True)  # the capacity is its bound
    assert not slots.take("venue:flood", 0.0)


def test_light_means_well_under_the_share_while_someone_is_over_it() -> None:
    shares = Shares(half_life_s=1.0)
    for i in range(100):
        shares.note("venue:flood", i * 0.001)
    for i in range(5):
        shares.note("venue:quiet", i * 0.01)
    assert shares.light("venue:quiet", 0.1) and not shares.light("venue:flood", 0.1)
    alone = Shares(half_life_s=1.0)
    alone.note("venue:a", 0.0)
    assert not alone.light("venue:a", 0.0)  # alone: at its share, not under it


def test_every_tenant_gets_at_least_one_call_in_progress() -> None:
    slots = Slots(2)
    assert all(slots.take(f"venue:{i}", 0.0) for i in range(5))
    assert not slots.take("venue:0", 0.0)
    assert slots.total == 5


def test_the_hint_grows_with_the_square_of_how_far_over_its_share_a_tenant_is() -> None:
    slots = Slots(10)
    for _ in range(10):
        slots.take("flood", 0.0)
    assert slots.retry_after_ms("flood", 100, 0.0) == 100  # alone, at its share
    slots.take("quiet", 0.0)
    assert slots.retry_after_ms("flood", 100, 0.0) == 400  # holds 10, its share is 5: twice, squared
    assert slots.retry_after_ms("quiet", 100, 0.0) == 100
    # Its refusals held count too: a flood that keeps asking is told to wait longer, not answered faster.
    for _ in range(20):
        assert slots.hold("flood")
    assert slots.retry_after_ms("flood", 100, 0.0) == 3600  # (10 + 20) / 5 = 6, squared
    for _ in range(100):
        slots.hold("flood")
    assert slots.retry_after_ms("flood", 100, 0.0) == 10_000  # at most 100 × base
    slots.unhold("flood")
    assert slots.holding == {"flood": 119}


def test_refusals_held_are_bounded_per_tenant() -> None:
    slots = Slots(1)
    assert slots.hold_max == 16
    assert all(slots.hold("flood") for _ in range(16))
    assert not slots.hold("flood")
    assert slots.hold("quiet")


def test_giving_back_what_was_not_taken_is_a_bug_that_says_so() -> None:
    slots = Slots(1)
    with pytest.raises(ValueError, match="no call in progress"):
        slots.give("venue:a", 0.0)
    with pytest.raises(ValueError, match="capacity"):
        Slots(0)


def test_a_busy_loop_sheds_the_tenants_over_their_share_and_nobody_else() -> None:
    """A loop that never rests takes new calls out of gRPC's queue no faster than its turns come, though it runs
    on time: then the tenants over their share are shed, the others spared, and alike tenants not shed at all."""
    admission = Admission(Policy(target_ms=20, smoothing=1, busy_target=0.8))
    for _ in range(100):
        admission.observe(1.0, busy=1.0)  # on time, never idle
    assert admission.shed_share == 0 and admission.busy_share > 0.99 and admission.pressed
    draws = [i / 100 for i in range(100)]
    assert not any(admission.admit_tenant(d, ratio=1.9, heaviest=1.9) for d in draws)
    assert all(admission.admit_tenant(d, ratio=0.1, heaviest=1.9) for d in draws)
    assert all(admission.admit_tenant(d, ratio=1.0, heaviest=1.0) for d in draws)  # alike: lateness decides
    for _ in range(100):
        admission.observe(1.0, busy=0.5)
    assert admission.busy_share == 0 and not admission.pressed
