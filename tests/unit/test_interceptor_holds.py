"""Which refusals the door holds (broker.rpc.interceptor._Fair.holds): only those of a tenant that shares the
process and asks for more than its fair share. Past capacity, 500 venues each at its one call in progress had every
refusal held for up to its caller's deadline, and the held calls filled the seats' connections."""

from __future__ import annotations

import time

from broker.counters import Counters
from broker.guard import Guard
from broker.overload import Admission
from broker.rpc.interceptor import _Fair

START = "/cloudseat.v1.SessionService/StartSession"


def _fair() -> _Fair:
    guard = Guard(None, max_inflight=4, shared_inflight=2)
    return _Fair(Admission(), Counters(), guard)


def test_tenants_asking_alike_are_answered_at_once() -> None:
    fair = _fair()
    now = time.monotonic()
    for tenant in ("venue:a", "venue:b", "venue:c"):
        assert fair.guard.enter(START, tenant)
        for _ in range(20):
            fair.shares.note(tenant, now)
    assert fair.guard.sharing("venue:a")
    assert not any(fair.holds(t) for t in ("venue:a", "venue:b", "venue:c"))


def test_a_tenant_asking_for_more_than_its_share_is_held() -> None:
    fair = _fair()
    now = time.monotonic()
    assert fair.guard.enter(START, "venue:flood") and fair.guard.enter(START, "venue:quiet")
    for _ in range(200):
        fair.shares.note("venue:flood", now)
    for _ in range(5):
        fair.shares.note("venue:quiet", now)
    assert fair.holds("venue:flood")
    assert not fair.holds("venue:quiet")


def test_a_tenant_alone_is_never_held() -> None:
    fair = _fair()
    now = time.monotonic()
    assert fair.guard.enter(START, "venue:a")
    for _ in range(200):
        fair.shares.note("venue:a", now)
    assert not fair.holds("venue:a")
