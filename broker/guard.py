"""The door of every RPC: who is calling (a tenant token, or an agent's client certificate) and whether its tenant
still has rate to spend. The interceptor asks the guard before any servicer runs; servicers then authorise what the
caller touches with `broker.auth.caller()`.

Rate limits are token buckets per tenant (a provider, a venue with its seats and patrons, an operator): a burst is
allowed, a sustained overload answers RESOURCE_EXHAUSTED with the time to wait. Long-lived streams are counted per
tenant too (a quota on concurrent WatchSession streams), so one venue cannot hold the broker's memory.
"""

from __future__ import annotations

import contextvars
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

from cloudseat.errors import PermissionDenied, ResourceExhausted, Unauthenticated

from broker import auth
from broker.overload import Slots

AGENT_METHOD_PREFIX = "/cloudseat.v1.AgentService/"


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """Per tenant: calls per second sustained, the burst above it, and concurrent server streams."""

    rate_per_s: float = 1000.0
    burst: float = 2000.0
    streams: int = 10_000


# Calls that end or serve a session already placed: shedding them would hold capacity longer, not free it.
ALWAYS_ADMITTED = ("/EndSession", "/Negotiate")
# Tokens whose verification is remembered (a few MB at most); past it, the memory starts afresh.
_VERIFIED_MAX = 20_000
# A call shed for too many in progress here (its tenant's share of them) may try again this soon, or later the
# further over its share it is (broker.overload.Slots.retry_after_ms).
_INFLIGHT_RETRY_MS = 100
# A held refusal is answered at least this long before the call's deadline.
_HOLD_MARGIN_S = 0.05


class RateLimiter:
    """Token buckets keyed by tenant. Pure: the caller passes the clock."""

    def __init__(self, rate_per_s: float, burst: float) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("a rate limit needs rate_per_s > 0 and burst >= 1")
        self.rate = rate_per_s
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}  # tenant -> (tokens, at)

    def take(self, key: str, now: float) -> float:
        """Spend one call for `key`: 0.0 if allowed, else the seconds until one is available."""
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)


# The in-flight slot of the call being served, when it holds one (Guard.enter): a call that goes on to wait for
# something done elsewhere (StartSession holding its answer for the placement) gives it back for the wait.
_slot: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "inflight_slot", default=None
)


def waiting() -> None:
    """The current call now waits without work in progress here: its in-flight slot goes back (once). The slots
    bound the work a process has started, not the answers it holds: a held StartSession costs a future, and counting
    it would refuse new calls at a rate × wait of 256 (250 starts/s held 1 s), long before the process is busy."""
    release = _slot.get()
    if release is not None:
        _slot.set(None)
        release()


class Guard:
    """Authenticates calls and meters them per tenant. Without a verifier every caller is `auth.TRUSTED` (the
    broker then runs with authentication off, which it logs loudly at start)."""

    def __init__(
        self,
        verifier: auth.TokenVerifier | None,
        limits: Limits | None = None,
        *,
        max_inflight: int = 0,
        shared_inflight: int | None = None,
    ) -> None:
        self.verifier = verifier
        self.limits = limits or Limits()
        self._rate = RateLimiter(self.limits.rate_per_s, self.limits.burst)
        self._streams: dict[str, int] = {}
        # Overload: at most this many unary calls in this replica at once (0: no limit), `shared_inflight` of them
        # shared among the tenants active at once (broker.overload.Slots); see enter().
        self.max_inflight = max_inflight
        self._slots = Slots(max_inflight, shared_inflight) if max_inflight > 0 else None
        self.shed = 0
        # Every refusal answered (the error, the method or path, the peer), for broker.alarms to watch for probing.
        self.on_refusal: Callable[[BaseException, str, str], None] | None = None
        self._verified: dict[str, auth.Principal] = {}

    def refused(self, exc: BaseException, method: str, peer: str) -> None:
        if self.on_refusal is not None:
            self.on_refusal(exc, method, peer)

    @property
    def inflight(self) -> int:
        return self._slots.total if self._slots is not None else 0

    def enter(self, method: str, tenant: str = "", now: float | None = None, *, light: bool = False) -> bool:
        """Admit one unary call of `tenant` to this replica's work, or shed it with ResourceExhausted. Past its
        capacity a broker that takes every call slows every call down until they all miss their deadlines
        (measured: 43 starts/s out of 3,000 offered, p50 25 s); shedding the excess at once keeps the admitted ones
        fast and tells the others to retry. The calls in progress are shared among the tenants active at once
        (broker.overload.Slots): a tenant at its share is shed, whatever the others do, so one tenant's flood
        cannot hold the work the others' calls need. Calls that finish or serve a session already placed
        (EndSession, Negotiate) are always admitted, and a `light` tenant (well under its share of the recent calls)
        is bounded by max_inflight alone. True when the call counts (leave() it afterwards)."""
        if self._slots is None or method.endswith(ALWAYS_ADMITTED):
            return False
        now = time.monotonic() if now is None else now
        if not self._slots.take(tenant, now, light):
            self.shed += 1
            held, share = self._slots.held.get(tenant, 0), self._slots.share(tenant, now)
            retry_ms = self._slots.retry_after_ms(tenant, _INFLIGHT_RETRY_MS, now)
            if share >= self.max_inflight:
                reason = f"{held} calls in progress here"
            else:
                reason = f"{tenant or 'this tenant'} holds {held} calls in progress here, its share"
            raise ResourceExhausted(f"overloaded: {reason}; retry in {retry_ms} ms", retry_after_ms=retry_ms)
        return True

    def hold_refusal(self, tenant: str, retry_after_ms: int, time_left_s: float | None) -> float:
        """How long to hold a refusal of `tenant` for being over its share before answering it (broker.overload.
        Slots.hold): its hint, or longer the more the tenant holds (Slots.retry_after_ms), but never past the
        call's deadline (less a margin, so the caller reads the refusal, not its own timeout); 0: answer at once.
        A returned hold > 0 is `release_refusal`d once answered."""
        if self._slots is None:
            return 0.0
        now = time.monotonic()
        hold_s = max(retry_after_ms, self._slots.retry_after_ms(tenant, _INFLIGHT_RETRY_MS, now)) / 1000
        if time_left_s is not None:
            hold_s = min(hold_s, time_left_s - _HOLD_MARGIN_S)
        if hold_s <= 0 or not self._slots.hold(tenant):
            return 0.0
        return hold_s

    def others_held(self, tenant: str) -> bool:
        """Whether another tenant has refusals held now (hold_refusal): it is over its share of the calls in
        progress, beside others, whatever its rate of calls looks like (held, its calls arrive no faster than its
        holds end)."""
        return self._slots is not None and any(t != tenant for t in self._slots.holding)

    def holding(self, tenant: str) -> bool:
        """Whether `tenant` has refusals held now."""
        return self._slots is not None and tenant in self._slots.holding

    def sharing(self, tenant: str) -> bool:
        """Whether `tenant` shares this process with other active tenants: then a refusal of its calls in progress
        is for being over its share, and held (hold_refusal); alone, it is past the capacity, answered at once."""
        return self._slots is not None and self._slots.active(tenant, time.monotonic()) > 1

    def release_refusal(self, tenant: str) -> None:
        if self._slots is not None:
            self._slots.unhold(tenant)

    def leave(self, tenant: str = "") -> None:
        if self._slots is not None:
            self._slots.give(tenant, time.monotonic())

    def hold(self, tenant: str = "") -> Callable[[], None]:
        """The slot the call just entered (in this context), as a function that gives it back once, whoever calls
        it first: the call's end, or the call itself through `waiting()`."""
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                self.leave(tenant)

        _slot.set(release)
        return release

    def authenticate(
        self, method: str, metadata: Sequence[tuple[str, Any]], peer: dict[str, Any]
    ) -> auth.Principal:
        """The caller of `method`. `metadata` is the call's invocation metadata; `peer` its TLS auth context."""
        if self.verifier is None:
            return auth.TRUSTED
        if method.startswith(AGENT_METHOD_PREFIX):
            return _agent(peer)
        values = [str(v) for k, v in metadata if k == "authorization"]
        if not values:
            raise Unauthenticated("authorization: this call needs a token ('authorization: Bearer <token>')")
        scheme, _, token = values[0].partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("authorization: expected 'Bearer <token>'")
        token = token.strip()
        # A token verified before is its principal until it expires: the signature check is the costliest step
        # of a small call, and per-tenant admission (broker.overload) needs the tenant before any work.
        known = self._verified.get(token)
        if known is not None and known.expires_at > time.time():
            return known
        principal = self.verifier.verify(token)
        if len(self._verified) >= _VERIFIED_MAX:
            self._verified.clear()
        self._verified[token] = principal
        return principal

    def known_tenant(self, method: str, metadata: Sequence[tuple[str, Any]] | None) -> str | None:
        """The tenant of a call whose caller is already known, from its metadata alone (a token verified before and
        not expired, or everyone's when authentication is off); None when it would take a check (a new token, an
        agent's certificate). A dictionary lookup: the door (broker.rpc.interceptor) asks it for every new call."""
        if self.verifier is None:
            return auth.TRUSTED.tenant
        if method.startswith(AGENT_METHOD_PREFIX):
            return None
        for key, value in metadata or ():
            if key == "authorization":
                scheme, _, token = str(value).partition(" ")
                known = self._verified.get(token.strip()) if scheme.lower() == "bearer" else None
                if known is not None and known.expires_at > time.time():
                    return known.tenant
                return None
        return None

    def spend(self, principal: auth.Principal, now: float | None = None) -> None:
        """One call's worth of the caller's tenant rate; ResourceExhausted when there is none left."""
        if principal.trusted:
            return
        wait = self._rate.take(principal.tenant, time.monotonic() if now is None else now)
        if wait > 0:
            raise ResourceExhausted(
                f"rate limit: {principal.tenant} is over {self.limits.rate_per_s:g} calls/s; retry in {wait:.2f} s",
                retry_after_ms=max(1, round(wait * 1000)),
            )

    def open_stream(self, principal: auth.Principal) -> None:
        if principal.trusted:
            return
        held = self._streams.get(principal.tenant, 0)
        if held >= self.limits.streams:
            raise ResourceExhausted(f"quota: {principal.tenant} holds {held} streams, the most allowed")
        self._streams[principal.tenant] = held + 1

    def close_stream(self, principal: auth.Principal) -> None:
        if principal.trusted:
            return
        held = self._streams.get(principal.tenant, 1) - 1
        if held <= 0:
            self._streams.pop(principal.tenant, None)
        else:
            self._streams[principal.tenant] = held


def _agent(peer: dict[str, Any]) -> auth.Principal:
    """An agent is who its client certificate says: CN = its host id, OU = 'agent' (cloudseat.tls issues them)."""
    names = [_text(v) for v in peer.get("x509_common_name", [])]
    pem = b"".join(v if isinstance(v, bytes) else str(v).encode() for v in peer.get("x509_pem_cert", []))
    if not names or not pem:
        raise Unauthenticated("agent: connect with the host's client certificate (mutual TLS)")
    from cloudseat import tls

    role, host_id = tls.identity(pem)
    if role != "agent":
        raise PermissionDenied(f"agent: the certificate is a {role!r} certificate, not an agent's")
    return auth.Principal(role=auth.Role.AGENT, subject=f"agent:{host_id}", host_id=host_id)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
