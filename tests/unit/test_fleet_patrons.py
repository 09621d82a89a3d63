"""The fleet patrons' pure pieces: a refused patron asks again when a real seat would (cloudseat.retry's rule,
tested in tests/unit/test_retry.py), and the outcome each lost session gets."""

from __future__ import annotations

from typing import Any

import pytest

from loadtest import fleet_patrons as fp


def test_a_refused_patron_waits_as_a_seat_does() -> None:
    trailer = (("grpc-retry-pushback-ms", "200"),)
    busy = "RESOURCE_EXHAUSTED"
    assert fp.retry_delay_s(busy, 1, trailer, lambda: 0.0) == pytest.approx(0.2)  # the hint is a floor
    assert fp.retry_delay_s(busy, 1, trailer, lambda: 0.999) == pytest.approx(0.3, abs=0.001)  # plus up to half again
    assert fp.retry_delay_s(busy, 1, None, lambda: 0.0) == pytest.approx(0.05)  # no hint: the backoff
    assert fp.retry_delay_s(busy, 1, (("grpc-retry-pushback-ms", "-1"),), lambda: 0.0) is None  # "do not retry"
    assert fp.retry_delay_s("CANCELLED", 2, None, lambda: 0.0) == pytest.approx(0.1)  # refused inside gRPC: backoff


@pytest.mark.parametrize(
    ("args", "outcome"),
    [
        (("HOST_LOST", True, "", True, None), "placed"),
        ((None, False, "", False, None), "lost:never_ended"),
        (("ENDED_BY_VENUE", False, "", False, None), "not_resumable:ENDED_BY_VENUE"),
        (("HOST_LOST", True, "REFUSED", False, None), "lost:refused_until_patience"),
        (("HOST_LOST", True, "FAILED_PRECONDITION", False, None), "refused:FAILED_PRECONDITION"),
        (("HOST_LOST", True, "DEADLINE_EXCEEDED", False, None), "lost:DEADLINE_EXCEEDED"),
        (("HOST_LOST", True, "", False, None), "lost:not_placed"),
        (("HOST_LOST", True, "", False, None, "NO_SITE_WITHIN_CAP"), "lost:not_placed:NO_SITE_WITHIN_CAP"),
        (("HOST_LOST", True, "", True, "PENDING_TIMEOUT"), "lost:ended_before_placed:PENDING_TIMEOUT"),
    ],
)
def test_each_lost_session_gets_one_outcome(args: tuple[Any, ...], outcome: str) -> None:
    assert fp.resume_outcome(*args) == outcome
