"""The fleet patrons' pure pieces: how long a refused patron waits before asking again (full jitter over the broker's
hint or a capped doubling backoff), reading the hint from the trailers, and the outcome each lost session gets."""

from __future__ import annotations

import random
from typing import Any

import pytest

from loadtest import fleet_patrons as fp


def _upper(low: float, high: float) -> float:
    assert low == 0.0
    return high


def test_without_a_hint_the_backoff_starts_at_50_ms_doubles_and_stops_at_2_s() -> None:
    bases = [fp.retry_delay_s(n, None, _upper) for n in range(9)]
    assert bases == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0])
    assert fp.retry_delay_s(10_000, None, _upper) == 2.0  # no overflow however long the patron has waited


def test_the_hint_replaces_the_backoff() -> None:
    assert fp.retry_delay_s(7, 120, _upper) == pytest.approx(0.12)
    assert fp.retry_delay_s(0, 0, _upper) == 0.0


@pytest.mark.parametrize(
    ("refusals", "hint", "high"), [(0, None, 0.05), (3, None, 0.4), (9, None, 2.0), (2, 300, 0.3)]
)
def test_full_jitter_stays_within_zero_and_the_base_and_spreads_over_it(
    refusals: int, hint: int | None, high: float
) -> None:
    rng = random.Random(4)
    delays = [fp.retry_delay_s(refusals, hint, rng.uniform) for _ in range(2000)]
    assert all(0.0 <= d <= high for d in delays)
    assert min(delays) < 0.05 * high and max(delays) > 0.95 * high


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ((("grpc-retry-pushback-ms", "250"),), 250),
        ((("other", "x"), ("Grpc-Retry-Pushback-Ms", b"40")), 40),
        ((("grpc-retry-pushback-ms", "-1"),), None),
        ((("grpc-retry-pushback-ms", "soon"),), None),
        ((), None),
        (None, None),
    ],
)
def test_the_pushback_hint_is_read_from_the_trailers(metadata: Any, expected: int | None) -> None:
    assert fp.pushback_ms(metadata) == expected


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
