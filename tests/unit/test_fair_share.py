"""broker.overload's fair share: each tenant's recent calls, and who is shed when the loop runs late."""

from __future__ import annotations

from broker.overload import Admission, Policy, Shares


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
    assert not any(_late(100).admit_tenant(d, 0.1, 5.0) for d in draws)  # drowning: everyone shed
