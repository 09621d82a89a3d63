"""The placement queue's backlog as each tenant worker hears it, and the new starts it turns away past capacity.

Past capacity the calls a broker lets in must still finish within their callers' patience (issue 14: "no call
should burn its whole deadline in a queue"). The door's admission (broker.overload) watches the tenant worker's own
loop, but the queue that grows past capacity is the placement queue: measured at `--rate 3000`, the tenant workers
let 9,290 starts in, the leader's rounds fell to 0.8 a second (a commit of a thousand placements took 1.4 s on the
starved machine), and 6,067 of those sessions were never placed within their patrons' 30 s.

So a new StartSession is refused, before it writes anything, while the placement queue is behind: while the oldest
request no round has looked at yet (PENDING, no pending reason yet, not a resume) has waited longer than `limit_ms`
and the leader is placing (it placed, or gave a reason, within the last `ACTIVE_S`). A leader that is away (a
failover) refuses nothing: requests queue for the next leader as before. A request a round looked at and could not
place (no capacity within its cap) has a reason: it waits for capacity, not for the broker, and holds nothing up.
Resumes are never refused here: they go first in every round.

Every tenant worker hears every session change (broker.hub), so the backlog is kept from them, without a query: a
new request joins it as its first change is heard, and leaves once it is placed, ends or gets a reason. A lost
notification connection clears it (broker.hub resyncs); an entry never heard of again is dropped after `FORGET_S`.
Pure: the caller passes the clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The leader counts as placing while it placed or gave a reason this recently.
ACTIVE_S = 2.0
# An entry older than this is dropped: no round left a request unread this long without something being wrong that
# refusing starts would not mend (and a lost notification must not close the door for good).
FORGET_S = 60.0
# The hint: how far past the limit the backlog is, within these bounds.
MIN_RETRY_MS = 250
MAX_RETRY_MS = 5_000


class Backlog:
    def __init__(self, limit_ms: float) -> None:
        self.limit_ms = limit_ms
        self._waiting: dict[str, float] = {}  # session id -> when its request was first heard (insertion order)
        self._active_at = float("-inf")
        self.refused = 0

    def on_change(self, change: Mapping[str, Any], now: float) -> None:
        sid = str(change["session_id"])
        if change["state"] == "PENDING" and not change.get("pending_reason") and not change.get("resumed"):
            self._waiting.setdefault(sid, now)
            return
        if change["state"] == "PLACED" or change.get("pending_reason"):
            self._active_at = now
        self._waiting.pop(sid, None)

    def resync(self) -> None:
        """Changes may have been missed: start again from what is heard next."""
        self._waiting.clear()

    def age_ms(self, now: float) -> float:
        """How long the oldest request no round has looked at has waited (0: none)."""
        while self._waiting:
            sid, at = next(iter(self._waiting.items()))
            if now - at <= FORGET_S:
                return (now - at) * 1000
            del self._waiting[sid]
        return 0.0

    def refusal(self, now: float) -> int | None:
        """None: let a new start in. Else the milliseconds to tell its caller to wait: how far past the limit the
        backlog is, within MIN_RETRY_MS and MAX_RETRY_MS (the door opens again once the rounds catch up, and a
        hint as long as the whole backlog kept patrons away longer than the queue would have: measured at
        --rate 500 with a 2-s limit and the age as the hint, request→placed p99 went from 0.9 to 3.9 s)."""
        if self.limit_ms <= 0 or now - self._active_at > ACTIVE_S:
            return None
        age = self.age_ms(now)
        if age <= self.limit_ms:
            return None
        self.refused += 1
        return int(min(MAX_RETRY_MS, max(MIN_RETRY_MS, age - self.limit_ms)))

    def __len__(self) -> int:
        return len(self._waiting)
