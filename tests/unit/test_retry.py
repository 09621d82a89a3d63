"""When a seat asks the broker again after a refused StartSession (cloudseat.retry): the broker's hint is a floor,
jitter adds at most half again, the backoff without a hint doubles to its cap, and only busy and unreachable
refusals are tried again."""

from __future__ import annotations

import subprocess
import sys

import pytest
from cloudseat import retry
from hypothesis import given
from hypothesis import strategies as st

LOW = lambda: 0.0  # noqa: E731  (the random source at its ends)
HIGH = lambda: 0.999999  # noqa: E731


def _hint(ms: object) -> list[tuple[str, str | bytes]]:
    return [("x-other", "1"), (retry.PUSHBACK_KEY, str(ms))]


def test_the_hint_is_honoured_and_jitter_adds_at_most_half() -> None:
    low = retry.next_wait("RESOURCE_EXHAUSTED", _hint(400), 1, LOW)
    high = retry.next_wait("RESOURCE_EXHAUSTED", _hint(400), 1, HIGH)
    assert low == retry.Wait(delay_s=0.4, floor_s=0.4, reason=retry.BUSY)
    assert high is not None and 0.4 < high.delay_s < 0.6 and high.floor_s == 0.4
    # The hint holds whatever the attempt: the broker knows its load better than the seat's count of refusals.
    late = retry.next_wait("RESOURCE_EXHAUSTED", _hint(30), 9, LOW)
    assert late is not None and late.delay_s == pytest.approx(0.03)


def test_without_a_hint_the_wait_doubles_from_50_ms_to_its_cap() -> None:
    floors = [retry.next_wait("RESOURCE_EXHAUSTED", (), n, LOW) for n in range(1, 9)]
    assert [w.floor_s if w else None for w in floors] == pytest.approx(
        [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    )
    assert all(w is not None and w.reason == retry.BUSY for w in floors)
    capped = retry.next_wait("RESOURCE_EXHAUSTED", None, 10_000, HIGH)  # no overflow, however many
    assert capped is not None and retry.BUSY_CAP_S <= capped.delay_s < retry.BUSY_CAP_S * (1 + retry.JITTER)


def test_a_call_refused_inside_grpc_is_busy_and_backs_off_without_a_hint() -> None:
    """CANCELLED from the broker: its gRPC refused the call before the broker took it up (--accept-wait). It carries
    no hint; a trailer on it is not one (the code that sets hints never saw the call)."""
    waits = [retry.next_wait("CANCELLED", _hint(5000), n, LOW) for n in range(1, 4)]
    assert [w.floor_s if w else None for w in waits] == pytest.approx([0.05, 0.1, 0.2])
    assert all(w is not None and w.reason == retry.BUSY for w in waits)


def test_unreachable_keeps_its_old_backoff_without_jitter() -> None:
    waits = [retry.next_wait("UNAVAILABLE", _hint(5000), n, HIGH) for n in range(1, 8)]
    assert [w.delay_s if w else None for w in waits] == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert all(w is not None and w.reason == retry.UNREACHABLE and w.floor_s == w.delay_s for w in waits)


@pytest.mark.parametrize(
    "code", ["INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "DEADLINE_EXCEEDED", "PERMISSION_DENIED"]
)
def test_other_refusals_are_final(code: str) -> None:
    assert retry.next_wait(code, _hint(10), 1, LOW) is None


def test_the_trailer_read_as_grpc_means_it() -> None:
    assert retry.pushback_ms(None) is None and retry.pushback_ms([("x", "1")]) is None
    assert retry.pushback_ms([("Grpc-Retry-Pushback-Ms", b" 250 ")]) == 250
    assert retry.pushback_ms(_hint(10**12)) == retry.MAX_HINT_MS
    # Negative: gRPC's "do not retry", and the seat does not.
    assert retry.pushback_ms(_hint(-1)) == -1
    assert retry.next_wait("RESOURCE_EXHAUSTED", _hint(-1), 1, LOW) is None
    # Unreadable: as if there were none (the backoff), not a lost retry.
    assert retry.pushback_ms(_hint("soon")) is None
    garbled = retry.next_wait("RESOURCE_EXHAUSTED", _hint("soon"), 3, LOW)
    assert garbled is not None and garbled.floor_s == pytest.approx(0.2)


@given(
    attempt=st.integers(1, 10_000),
    hint=st.one_of(st.none(), st.integers(0, 10 * retry.MAX_HINT_MS)),
    share=st.floats(-1.0, 2.0, allow_nan=False),
)
def test_bounds_hold_for_any_hint_attempt_and_random_draw(
    attempt: int, hint: int | None, share: float
) -> None:
    wait = retry.next_wait(
        "RESOURCE_EXHAUSTED", _hint(hint) if hint is not None else (), attempt, lambda: share
    )
    assert wait is not None
    floor = (
        min(hint, retry.MAX_HINT_MS) / 1000
        if hint is not None
        else min(0.05 * 2 ** min(attempt - 1, 20), 2.0)
    )
    assert wait.floor_s == pytest.approx(floor)
    # Never sooner than asked, never more than half again.
    assert wait.floor_s <= wait.delay_s <= wait.floor_s * (1 + retry.JITTER)


def test_pure() -> None:
    code = (
        "import sys, cloudseat.retry; "
        "bad = [m for m in ('asyncio', 'grpc', 'random') if m in sys.modules]; "
        "assert not bad and not any(m.endswith('_pb2') for m in sys.modules), bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
