"""Admission past capacity: refuse early and cheaply, so the calls let in finish within their deadlines.

A broker offered more than it can do must not queue the excess: every call it takes then waits behind the others,
until all of them miss their deadlines and the work done is wasted (measured before this existed: 30 starts/s out of
3,000 offered, against 140 sustained). What grows in an overloaded asyncio process is the wait of every callback for
the loop, so that wait is the signal (CoDel's idea: judge the time work spends queued, not the queue's length). A
probe measures how late the loop runs a timer; when that lateness stays above the target, new work is refused —
with a probability that grows with the overshoot, so admission settles where the loop keeps up rather than swinging
between all and nothing — before any of its work is done, with RESOURCE_EXHAUSTED and a retry hint that grows with
the overload too (`grpc-retry-pushback-ms`, gRPC's own trailer for it), so seats come back more slowly the busier
the broker is. The lateness counted is the broker's own: the time the loop's thread was runnable but not given a
core (the kernel's run_delay) is taken off (`LoopProbe`), so a machine busy with something else sheds nobody.

Two more layers make it hold (docs/loadtest-fleet.md#admission measures them):

- Below Python. grpc.aio alone takes a new call out of gRPC's core one per turn or two of the loop, so past
  capacity calls queue in the core, where this code cannot see them, up to gRPC's default of 30 s: every call the
  probe then judged had already spent its deadline. The tenant port keeps many requests for new calls outstanding
  (broker.intake, `BrokerConfig.accept_ahead`), so new calls reach the door in batches and that queue stays short;
  and it bounds the wait (`BrokerConfig.accept_wait_s`, gRPC's `grpc.server_max_unrequested_time_in_server`): a
  call not taken up within it is refused there, CANCELLED, which costs no Python at all and which the clients
  treat as busy (cloudseat.retry). gRPC's count-based limit on that queue (`grpc.server.max_pending_requests`) did
  not refuse anything on this server in our measurement.
- What is counted. `Guard.enter`'s in-flight bound counts work started, not answers held: a StartSession waiting
  for its placement gives its slot back (broker.guard.waiting), or the bound would refuse at rate × wait.

Fair share. Refusing at random by the loop's lateness alone makes every tenant pay for one tenant's flood: the
quiet venue's calls were shed as often as the flooding one's, and waited behind them (measured: 1.6 ms → 402 ms
p50). So the same mechanism is per tenant: the broker keeps each tenant's recent calls (`Shares`, decaying over
about a second) and, when the loop runs late, sheds the tenants above their fair share of that traffic (the total
over the tenants active), with a probability that grows with how far above it they are, and spares the ones at or
below it — even once the loop runs twice the target late (drowning), when the ones above are shed entirely. Only
when every active tenant is at its share (one tenant alone, or all alike) is everyone shed alike, as before (and,
drowning, before the caller is even checked). A tenant is known only once its caller is: the token check is cached
per token (broker.guard), so knowing it costs a lookup.

A rate share sees a flood only once the loop is late; by then the flood's calls fill every queue a call passes
through in arrival order — gRPC's queue of new calls, the loop's, the database pool's — and the others wait behind
them. So the fair share has three more parts, per tenant, whatever the connections:

- The calls in progress (`Slots`, the same bound as `--max-inflight`): the tenants active in the last second share
  about what the process works on at once without queueing (twice its database connections); a tenant at its
  share is refused at once while one under it goes in. A tenant alone may still take the whole bound.
- Refusals held (`Slots.hold`): a tenant over its share is answered only once its hint has passed, so a caller that
  ignores the hint and asks again at once keeps waiting on its own connection; the hint grows with the square of
  how far over its share the tenant is, so more connections buy it longer waits, not more refusals a second.
- At the transport (broker.server): at most `--max-streams-per-connection` calls at once per connection, so what a
  flood has in flight past it waits in its own client, not in the broker's gRPC.
- At the door (broker.rpc.interceptor): every call whose tenant is known from its token alone counts against its
  share before any handler runs, whatever becomes of it; and while a tenant has refusals held (over its share of
  the calls in progress, its calls arriving only as fast as its holds end), the tenants holding none are not shed
  for the loop's lateness.

Pure: `Admission`, `Shares` and `Slots` take the lag measurements, the clock and the random draws; `LoopProbe` is
the asyncio edge that measures, broker.guard and broker.rpc.interceptor the edges that count and answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
from collections.abc import Callable

# How often the probe looks at the loop.
PROBE_S = 0.01
# A tenant counts as active this long after its last call (Slots): a quiet tenant between two calls is still there.
ACTIVE_S = 1.0


@dataclasses.dataclass(frozen=True, slots=True)
class Policy:
    """Where admission starts refusing (the loop's lateness it tolerates) and how it answers."""

    target_ms: float = 20.0
    # Lateness is smoothed over about this many probes, so one slow callback does not refuse a burst of calls.
    smoothing: int = 5
    # The retry hint: this much at the target, growing with the overshoot up to the most.
    retry_min_ms: int = 100
    retry_max_ms: int = 5_000
    # The share of its time the loop's thread may spend working before the tenants over their share are shed (not
    # the others): a loop that is never idle takes new calls out of gRPC's queue no faster than its turns come, and
    # every tenant's new call then waits there behind the flood's, while the loop itself runs on time (lateness
    # does not see it). Smoothed over about 20 probes (0.2 s).
    busy_target: float = 0.8


class Admission:
    """Whether to let a new call in, judged from the loop's recent lateness, and for a tenant over its share, from
    how busy the loop's thread is too."""

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy or Policy()
        self.lag_ms = 0.0
        self.busy = 0.0
        # How long the loop's thread waited for a core per probe (smoothed as lag_ms): the machine's lateness, left
        # out of lag_ms (LoopProbe) and kept for the record.
        self.waited_ms = 0.0

    def observe(self, lag_ms: float, busy: float | None = None) -> None:
        """One probe's measure of how late the loop ran it, and of the share of the time since the last probe the
        loop's thread spent working (on the CPU)."""
        alpha = 2.0 / (self.policy.smoothing + 1)
        self.lag_ms += alpha * (max(0.0, lag_ms) - self.lag_ms)
        if busy is not None:
            self.busy += (2.0 / 21) * (min(1.0, max(0.0, busy)) - self.busy)

    def note_waited(self, waited_ms: float) -> None:
        """One probe's time without a core (LoopProbe): recorded, never a reason to refuse."""
        self.waited_ms += (2.0 / (self.policy.smoothing + 1)) * (max(0.0, waited_ms) - self.waited_ms)

    @property
    def busy_share(self) -> float:
        """The share of an over-share tenant's calls to refuse for the loop's busyness: none up to the target, all
        when the loop never rests (none ever with a target of 1)."""
        target = self.policy.busy_target
        if target >= 1.0:
            return 0.0
        return min(1.0, max(0.0, (self.busy - target) / (1.0 - target)))

    @property
    def pressed(self) -> bool:
        """Whether anyone may be refused now (late, or busy for the tenants over their share)."""
        return self.shed_share > 0.0 or self.busy_share > 0.0

    @property
    def shed_share(self) -> float:
        """The share of new calls to refuse now: none up to the target, all at twice it."""
        target = self.policy.target_ms
        return min(1.0, max(0.0, (self.lag_ms - target) / target))

    def admit(self, draw: float) -> bool:
        """Let a call in? `draw` is uniform in [0, 1)."""
        return draw >= self.shed_share

    def retry_after_ms(self) -> int:
        """How long a refused caller should wait: longer the deeper the overload."""
        p = self.policy
        return min(p.retry_max_ms, round(p.retry_min_ms * (1 + 4 * self.shed_share) + self.lag_ms))

    def admit_tenant(self, draw: float, ratio: float, heaviest: float) -> bool:
        """Let a call of a tenant in, the tenant's recent calls being `ratio` × the fair share (Shares.ratio), the
        heaviest active tenant's `heaviest` ×. A tenant at or under its share is let in while another is over it,
        however late the loop runs (its calls are the few; the flood's are what makes the loop late); one over it
        is shed with a probability that grows with its excess, all of them once the loop is drowning; when nobody
        is over (`heaviest` ≤ 1), all alike, as `admit`."""
        late = self.shed_share
        if heaviest <= OVER:
            return draw >= late
        if ratio <= OVER:
            return True
        share = max(late, self.busy_share)
        if share <= 0.0:
            return True
        if share >= 1.0:
            return False
        # The excess over the fair share is what is shed first: a tenant at 10× its share sheds ~90% of its calls
        # at the first sign of lateness, one at 2× half of them, scaled up to all as the lateness grows.
        excess = 1.0 - 1.0 / ratio
        return draw >= min(1.0, excess + share * (1.0 - excess))


# A tenant counts as over its share past this ratio (a little above 1: shares of equal tenants wobble), and as
# light below LIGHT (Slots.take).
OVER = 1.25
LIGHT = 0.8


class Shares:
    """Each tenant's recent calls, decaying exponentially (half-life `half_life_s`), and its ratio to the fair
    share: the sum over the tenants active divided by how many they are."""

    def __init__(self, half_life_s: float = 1.0, max_tenants: int = 10_000) -> None:
        self._decay = math.log(2) / half_life_s
        self._max = max_tenants
        self._weights: dict[str, tuple[float, float]] = {}  # tenant -> (weight, at)
        self._total = 0.0
        self._at = 0.0

    def _decayed(self, weight: float, at: float, now: float) -> float:
        return weight * math.exp(-self._decay * max(0.0, now - at))

    def note(self, tenant: str, now: float) -> None:
        """One call of `tenant` let in."""
        weight, at = self._weights.get(tenant, (0.0, now))
        self._weights[tenant] = (self._decayed(weight, at, now) + 1.0, now)
        self._total = self._decayed(self._total, self._at, now) + 1.0
        self._at = now
        if len(self._weights) > self._max:
            self._forget(now)

    def ratio(self, tenant: str, now: float) -> tuple[float, float]:
        """(this tenant's recent calls, the heaviest's), each over the fair share; (0, 0) with no traffic."""
        total = self._decayed(self._total, self._at, now)
        active = sum(1 for w, at in self._weights.values() if self._decayed(w, at, now) >= 0.5)
        if total <= 0.0 or active == 0:
            return 0.0, 0.0
        fair = total / active
        weight, at = self._weights.get(tenant, (0.0, now))
        heaviest = max(self._decayed(w, a, now) for w, a in self._weights.values())
        return self._decayed(weight, at, now) / fair, heaviest / fair

    def light(self, tenant: str, now: float) -> bool:
        """Whether `tenant` calls well under its fair share of the recent calls (below LIGHT of it), while
        another tenant is active."""
        ratio, heaviest = self.ratio(tenant, now)
        return ratio < LIGHT and heaviest > OVER

    def anyone_over(self, now: float) -> bool:
        """Whether some tenant's recent calls are above its fair share (then the others are spared)."""
        return self.ratio("", now)[1] > OVER

    def active(self, now: float) -> int:
        """Tenants with calls in the last second or so."""
        return sum(1 for w, at in self._weights.values() if self._decayed(w, at, now) >= 0.5)

    def _forget(self, now: float) -> None:
        """Drop the tenants whose calls have all but decayed away."""
        self._weights = {t: (w, a) for t, (w, a) in self._weights.items() if self._decayed(w, a, now) >= 0.5}


class Slots:
    """The calls in progress per tenant, and each tenant's share of them.

    A rate share (`Shares`) reacts only once the loop runs late, and a rate says nothing of what a tenant holds: a
    flood's calls in progress queue for the database pool (first come, first served) long before the loop is
    late, and every other tenant's call then waits behind all of them (measured: 128 of a flood's GetVenue in
    progress put 350 ms ahead of the quiet venue's). So the calls in progress are shared:

    - A tenant alone (no other tenant has called in the last `ACTIVE_S`) may hold `capacity` (--max-inflight), as
      before: nobody else waits behind it.
    - With n tenants active, each may hold `shared / n` (at least one), `shared` being about what the process can
      work on at once without queueing (twice its database connections): past it, calls in progress only wait
      for each other. Below `shared` in all, nobody is refused (bursts go in); past it, a tenant at its share is
      refused at once, and one under it is let in however much the others hold — so the total passes `shared`
      by at most the shares of the tenants under theirs, while a tenant that took more while alone drains.

    Counted per tenant, not per connection: a flood over many connections holds one tenant's share. Pure: the
    caller passes the clock; `take` answers whether the call may go in.
    """

    def __init__(self, capacity: int, shared: int | None = None) -> None:
        if capacity < 1:
            raise ValueError("capacity: at least 1 call in progress")
        self.capacity = capacity
        self.shared = max(1, min(capacity, shared if shared is not None else capacity))
        self.held: dict[str, int] = {}
        self.total = 0
        self.holding: dict[str, int] = {}  # refusals held, per tenant (hold)
        self.hold_max = 16 * capacity
        self._seen: dict[str, float] = {}  # tenant -> its last call's start or end
        self._pruned = 0.0

    def active(self, tenant: str, now: float) -> int:
        """The tenants active now (holding calls, or with one started or ended in the last ACTIVE_S), `tenant`
        counted in."""
        if now - self._pruned > ACTIVE_S / 4:
            self._pruned = now
            self._seen = {t: at for t, at in self._seen.items() if now - at <= ACTIVE_S or t in self.held}
        return len(self._seen) + (0 if tenant in self._seen else 1)

    def share(self, tenant: str, now: float) -> int:
        """How many calls `tenant` may hold now."""
        active = self.active(tenant, now)
        return self.capacity if active == 1 else max(1, self.shared // active)

    def take(self, tenant: str, now: float, light: bool = False) -> bool:
        """One call of `tenant` goes in (True; `give` it back when it ends) or is refused (False). A `light` tenant
        (one calling well under its fair share of the recent calls, Shares.light) goes in at its share too, up to
        `capacity`: its calls in progress grow when they are slowed by a flood's, and refusing them then would
        make it pay for the flood; its rate, not its calls in progress, bounds it."""
        held = self.held.get(tenant, 0)
        if held >= self.capacity or (
            not light and held >= self.share(tenant, now) and self.total >= self.shared
        ):
            return False
        self.held[tenant] = held + 1
        self.total += 1
        self._seen[tenant] = now
        return True

    def give(self, tenant: str, now: float) -> None:
        """A call of `tenant` ended (or waits without work here)."""
        held = self.held.get(tenant, 0) - 1
        if held < 0:
            raise ValueError(f"tenant {tenant!r}: no call in progress to give back")
        if held == 0:
            del self.held[tenant]
        else:
            self.held[tenant] = held
        self.total -= 1
        self._seen[tenant] = now

    def hold(self, tenant: str) -> bool:
        """Whether a refusal of `tenant` is to be held (answered only after its hint) rather than answered at once:
        while it holds fewer than `capacity` such refusals (`unhold` each once answered).

        A refused caller that asks again at once (a flood ignores the hint) would otherwise turn each refusal into
        another call in gRPC's one queue of new calls, ahead of every other tenant's. Held, the refusal keeps its
        place on the caller's connection (one of its `max_streams_per_connection`) for the hint's time, so the
        caller's next calls wait in the caller, and the hint is obeyed whether the caller honours it or not; a
        held refusal costs a timer and a call's memory (a few KB). At most `hold_max` per tenant (16 × capacity:
        4,096 by default, as many as 41 connections at the default 100 calls each): past it, answered at once."""
        holding = self.holding.get(tenant, 0)
        if holding >= self.hold_max:
            return False
        self.holding[tenant] = holding + 1
        return True

    def unhold(self, tenant: str) -> None:
        holding = self.holding.get(tenant, 0) - 1
        if holding <= 0:
            self.holding.pop(tenant, None)
        else:
            self.holding[tenant] = holding

    def retry_after_ms(self, tenant: str, base_ms: int, now: float) -> int:
        """A refused tenant's hint, which is also how long its refusal is held: `base_ms` × the square of how many
        times its share it holds, counting its refusals held (1× to 100× base). Held, a tenant's refusals are
        answered more slowly the more calls it keeps asking: a flood over more connections is not refused faster,
        it is told to wait longer (a tenant a little over its share waits about the base)."""
        over = (self.held.get(tenant, 0) + self.holding.get(tenant, 0)) / self.share(tenant, now)
        return round(base_ms * min(_HOLD_MAXOVER, max(1.0, over * over)))


# A refused tenant's hint stops growing at this many times the base (10 s at 100 ms).
_HOLD_MAXOVER = 100.0


def thread_waited_s() -> float:
    """Seconds the calling thread has been runnable but not on a CPU since it started (the kernel's run_delay,
    /proc/thread-self/schedstat's second field); 0.0 where the kernel does not say."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


class LoopProbe:
    """Measures the event loop's lateness and its thread's busyness every PROBE_S and feeds `admission`.

    Only the broker's own lateness counts: the time the loop's thread was runnable but not given a core (the
    kernel's run_delay, `waited`) is taken off. A loop late because the machine ran something else — another
    process, a load generator, a noisy neighbour — is not a broker behind its work, and shedding for it refused
    even a lone quiet tenant (measured: loadtest.fairshare, unloaded, on a shared 2-core machine). What stays: work
    in the loop (callbacks queued behind each other), which is what a flood of calls adds. The busyness stays the
    share of the wall time the thread worked: not of the time it had a core, because a thread kept off its core
    finds the work that arrived meanwhile waiting and never rests while it has one — that read ~1 under any load on
    a starved machine and shed the quiet venue as soon as a starved flood's calls came in bursts (measured, the
    first build of this). (With `serve --workers N` on fewer cores than workers, one worker waiting for another's
    core is discounted too; the busyness still sees that, for the tenants over their share.)

    The clocks are arguments so that the rule can be tested with fake ones: `clock` the wall (perf_counter),
    `cpu` the thread's CPU time, `waited` its run_delay (thread_waited_s)."""

    def __init__(
        self,
        admission: Admission,
        *,
        clock: Callable[[], float] = time.perf_counter,
        cpu: Callable[[], float] = time.thread_time,
        waited: Callable[[], float] = thread_waited_s,
    ) -> None:
        self.admission = admission
        self._clock, self._cpu, self._waited = clock, cpu, waited
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="loop-probe")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def mark(self) -> tuple[float, float, float]:
        """Now, by the three clocks: a probe's start, for `observe`."""
        return self._clock(), self._cpu(), self._waited()

    def observe(self, since: tuple[float, float, float], expected_s: float) -> tuple[float, float, float]:
        """One probe that asked to be woken `expected_s` after `since` (mark()) and runs now: its lateness less the
        time the thread waited for a core, and the share of the wall time it worked. Returns now by the three
        clocks (the next probe's start)."""
        now, worked, waited = mark = self.mark()
        elapsed = max(0.0, now - since[0])
        without_core = min(elapsed, max(0.0, waited - since[2]))
        lag_ms = (elapsed - expected_s - without_core) * 1000
        busy = (worked - since[1]) / elapsed if elapsed > 0 else None
        self.admission.observe(lag_ms, busy)
        self.admission.note_waited(without_core * 1000)
        return mark

    async def _run(self) -> None:
        # One reading of the clocks a probe, each probe's end the next one's start: a hundred probes a second read
        # the kernel's schedstat twice each before (py-spy: ~3% of a tenant worker's time at 300 starts/s).
        since = self.mark()
        while True:
            await asyncio.sleep(PROBE_S)
            since = self.observe(since, PROBE_S)
