"""When to ask the broker again after it refused a StartSession: the delay, from the refusal's status, its
pushback trailer and how many calls were refused so far. Pure (aiortc `rate.py`'s way): the random source is passed
in, the status comes as its name, nothing here sleeps or imports grpc; `cloudseat.client.BrokerClient.start_session`
acts on the answer.

Three refusals are worth another try, always with the same request id (StartSession is idempotent on it, so a refusal
that raced a success can never start a second session):

- RESOURCE_EXHAUSTED, the broker is busy: past its capacity it refuses early and cheaply, with the time to wait in
  the trailing metadata `grpc-retry-pushback-ms` (gRPC's own key for server pushback: an integer of milliseconds).
  The seat waits that long plus up to half as much again; without a hint, 50 ms doubling up to 2 s, the same way.
- CANCELLED, the broker's gRPC refused the call before the broker took it up (past capacity, a call its loop has
  not taken up within `--accept-wait` is refused there, below Python, with this code and no hint): busy, no hint.
  A seat's own cancellation never arrives here (it is the caller's asyncio cancellation, not a status).
- UNAVAILABLE, the broker cannot be reached (a replica restarting, the network): 50 ms doubling up to 1 s, no
  jitter, as the client always did.

Why "the hint plus up to 50%" rather than full or decorrelated jitter: a refused seat must not come back sooner than
the broker asked (it sized the hint to when it expects room, and coming back early only buys another refusal), so
the hint is a floor; and seats refused in the same instant must not all come back in the same instant either, so
each adds its own random share on top. The share is bounded (at most half the wait again), so a patron never waits
much longer than the broker asked, and it needs no state beyond the attempt number, unlike decorrelated jitter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

PUSHBACK_KEY: Final = "grpc-retry-pushback-ms"

# Why the seat waits (what `Wait.reason` and the client's on_wait callback say).
BUSY: Final = "busy"  # RESOURCE_EXHAUSTED or CANCELLED: the broker is there, and past its capacity
UNREACHABLE: Final = "unreachable"  # UNAVAILABLE: no broker answered

# The refusals of a broker that is there but past its capacity (gRPC status names): ask again, same request.
BUSY_CODES: Final = frozenset({"RESOURCE_EXHAUSTED", "CANCELLED"})
# A watch that ended with one of these was not answered or was refused by a busy broker: the session goes on, so
# the watch is opened again (the seat's, and the load test's patrons').
WATCH_AGAIN_CODES: Final = frozenset({"UNAVAILABLE", "CANCELLED"})

FIRST_S: Final = 0.05  # the first wait when the broker gave no hint
BUSY_CAP_S: Final = 2.0  # busy waits without a hint stop doubling here (before the jitter)
UNREACHABLE_CAP_S: Final = 1.0
JITTER: Final = 0.5  # a busy wait is its floor times 1 to 1 + JITTER
# A hint this large is taken as this: past it no StartSession budget would wait anyway, and it keeps the arithmetic
# finite whatever the trailer says.
MAX_HINT_MS: Final = 3_600_000


@dataclass(frozen=True, slots=True)
class Wait:
    """Ask again after `delay_s`. `floor_s` is the part that may not be cut short (the broker's hint, or the
    backoff's step): a caller whose budget ends before the floor gives up rather than come back early."""

    delay_s: float
    floor_s: float
    reason: str


def pushback_ms(trailing: Iterable[tuple[str, str | bytes]] | None) -> int | None:
    """The broker's hint in milliseconds, or None when the trailer has none or one that is not an integer.
    A negative hint is returned as it is: in gRPC's convention it means "do not retry"."""
    for key, value in trailing or ():
        if key.lower() != PUSHBACK_KEY:
            continue
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        try:
            return min(int(text.strip()), MAX_HINT_MS)
        except ValueError:
            return None
    return None


def next_wait(
    code: str,
    trailing: Iterable[tuple[str, str | bytes]] | None,
    attempt: int,
    random: Callable[[], float],
) -> Wait | None:
    """How long to wait before asking again, after the `attempt`-th refused call (1 for the first), or None when
    this refusal is not worth another try. `code` is the gRPC status's name ("RESOURCE_EXHAUSTED"); `random`
    returns a number in [0, 1), e.g. `random.random`."""
    step = min(attempt - 1, 16)  # 2**16 steps past the first is far beyond any cap: no growth past it
    if code == "UNAVAILABLE":
        delay = min(FIRST_S * 2**step, UNREACHABLE_CAP_S)
        return Wait(delay_s=delay, floor_s=delay, reason=UNREACHABLE)
    if code not in BUSY_CODES:
        return None
    hint = pushback_ms(trailing) if code == "RESOURCE_EXHAUSTED" else None
    if hint is not None and hint < 0:
        return None  # the broker says not to come back (gRPC: a negative pushback means no retry)
    # A trailer that cannot be read is taken as no hint: a garbled hint should not cost the patron the retry.
    floor = hint / 1000 if hint is not None else min(FIRST_S * 2**step, BUSY_CAP_S)
    share = min(max(random(), 0.0), 1.0)  # a source that strays outside [0, 1) still keeps the bounds
    return Wait(delay_s=floor * (1 + JITTER * share), floor_s=floor, reason=BUSY)
