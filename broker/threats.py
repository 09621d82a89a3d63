"""Security events: refusals that, repeated from one peer, look like someone probing, counted and raised. Pure.

Three kinds are watched, each per peer address (its host, not its port: a prober opens new connections):

- `refused_token`: calls refused for their credentials (no token, a forged or expired one; Unauthenticated);
- `refused_registration`: agents' registrations refused (not enrolled, another provider's site or host);
- `cross_tenant`: calls that reached for another tenant's objects (PermissionDenied, and Concealed: an id of
  another tenant's answered as unknown).

A peer that reaches `threshold` events of one kind within `window_s` raises an alert, once per window while it goes
on: the broker logs it, counts it (cloudseat_security_alerts_total{kind}) and writes an audit row (security.alert),
all within the minute, well inside the pilots' guideline of threats detected within 15 minutes.
"""

from __future__ import annotations

import collections
import dataclasses

from cloudseat import errors

KINDS = ("refused_token", "refused_registration", "cross_tenant")
# Past this many peers watched at once, the quietest are forgotten (memory stays bounded under a spray of peers).
_MAX_PEERS = 10_000


@dataclasses.dataclass(frozen=True, slots=True)
class Policy:
    window_s: float = 60.0
    threshold: int = 10


@dataclasses.dataclass(frozen=True, slots=True)
class Alert:
    kind: str
    peer: str
    events: int
    window_s: float


def kind_of(exc: BaseException, method: str) -> str | None:
    """Which watched kind a refusal is (None: not one of them)."""
    if isinstance(exc, errors.Unauthenticated):
        return "refused_token"
    if method.startswith("/cloudseat.v1.AgentService/") and isinstance(exc, errors.PermissionDenied):
        return "refused_registration"
    if isinstance(exc, errors.PermissionDenied | errors.Concealed):
        return "cross_tenant"
    return None


def peer_host(peer: str) -> str:
    """'ipv4:10.0.0.7:51234' -> 'ipv4:10.0.0.7'; '[::1]:5' and 'ipv6:[::1]:5' keep their address too."""
    head, sep, tail = peer.rpartition(":")
    return head if sep and tail.isdigit() else peer


class Watch:
    """Per (kind, peer): the times of recent events, and when an alert was last raised."""

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy or Policy()
        self._events: collections.OrderedDict[tuple[str, str], collections.deque[float]] = collections.OrderedDict()
        self._raised: dict[tuple[str, str], float] = {}

    def note(self, kind: str, peer: str, now: float) -> Alert | None:
        """One event; the alert it raises, if any."""
        key = (kind, peer_host(peer))
        times = self._events.pop(key, None) or collections.deque()
        self._events[key] = times  # most recently active last
        times.append(now)
        horizon = now - self.policy.window_s
        while times and times[0] <= horizon:
            times.popleft()
        while len(self._events) > _MAX_PEERS:
            old, _ = self._events.popitem(last=False)
            self._raised.pop(old, None)
        if len(times) < self.policy.threshold:
            return None
        last = self._raised.get(key)
        if last is not None and now - last < self.policy.window_s:
            return None
        self._raised[key] = now
        return Alert(kind, key[1], len(times), self.policy.window_s)
