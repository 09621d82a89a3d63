"""The placement loop: gather pending requests, solve a batch off the event loop, commit it in one transaction.

Runs only on the replica that holds the placement lease (broker.leader). A commit the database refuses (another
writer took a slot this round counted on) re-plans from fresh host state instead of failing the patrons.

The hosts are kept between rounds (`HostCache`): reading and converting every online host each round cost more
than the solve itself at 10,000 hosts. Only the hosts something happened to are read again.

Everything it reads and writes goes through a `scheduler_store.SchedulerStore` (PostgreSQL in production), so the
logic here is unit-tested on an in-memory store; the clock the host cache goes by is passed in for the same reason.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import structlog
from cloudseat import errors

from broker import metering, placement
from broker.counters import Counters
from broker.placement.host_table import HostColumns, HostTable
from broker.scheduler_store import HostRow, PendingRequest, Placement, SchedulerStore
from broker.site_watch import SiteWatch

log = structlog.get_logger(__name__)

# Even with nothing happening, a round runs this often: waiting requests' latency targets loosen with time.
_TICK_S = 0.5
# A refused commit is re-planned this many times in one round before the round gives up (the next round retries).
_REPLANS = 3
# The host cache reads every online host again this often, a safety net: every change a round acts on is told
# (see HostCache). Each full read cost the leader ~200 ms of CPU at 10,000 hosts and held up the round it fell in.
_HOSTS_REFRESH_S = 60.0
# Every this many full reads, the host table is rebuilt whole, which numbers its names (sites, classes, what hosts
# hold) afresh, so names no host uses any more do not pile up; the others rewrite only the changed hosts.
_RENUMBER_EVERY = 10
# While a site is watched (broker.site_watch), the hosts per site are counted again at most this often.
_SITE_SIZES_REFRESH_S = 1.0
# The price cache reads the prices at least this often (it is told of a set price by the store's stamp).
_PRICES_REFRESH_S = 2.0

Solver = Callable[[placement.Problem], placement.Solution]


def host_from_row(h: HostRow, prices: Mapping[tuple[str, str], int], *, usable: bool = True) -> placement.Host:
    """A host row as the placement problem sees it, at its site's price in force for its class (`prices`, by
    (site, class)), else at the price it declared. Not `usable` (its site is failing, broker.site_watch) or with its
    agent's link seen dead, it is not online to placement: nothing new goes there."""
    return placement.Host(
        id=h.host_id,
        site_id=h.site_id,
        gpu_class=h.gpu_class,
        free_slots=h.free_slots,
        total_slots=h.slots,
        price_micros=prices.get((h.site_id, h.gpu_class), h.declared_price_micros),
        games=frozenset(h.games_cached),
        drained=h.drained,
        online=usable and not h.link_lost,
        images=frozenset(h.images_cached),
    )


def build_problem(
    pending: Sequence[PendingRequest],
    hosts: Sequence[placement.Host],
    latency: Mapping[tuple[str, str], int],
    params: placement.Params,
    leases: Sequence[placement.Lease] = (),
    host_columns: HostColumns | None = None,
    images: Mapping[str, placement.GameImage] | None = None,
) -> placement.Problem:
    """The pure placement problem of a batch (targets loosened by how long each request waited). `latency` is
    best a LatencyMatrix (LatencyCache); `leases` are the leases in force, every one of them, so their slots are
    kept for their venues whoever is in the batch; `images` the games' current images (ImageCache), which price
    a cold start by the bytes a host lacks."""
    requests = [
        placement.Request(
            id=r.session_id,
            venue_id=r.venue_id,
            game_id=r.game_id,
            cap_ms=r.latency_cap_ms,
            # A resume was playing a moment ago: anywhere within the cap beats waiting for a near host.
            target_ms=(
                r.latency_cap_ms
                if r.resumed
                else params.latency_policy.target_ms(r.latency_cap_ms, r.waited_ms)
            ),
            arrival_ms=-r.waited_ms,
            slots=r.slots,
        )
        for r in pending
    ]
    return placement.Problem(
        requests=requests,
        hosts=list(hosts),
        latency=latency,
        leases=list(leases),
        params=params,
        host_columns=host_columns,
        images=images or {},
    )


class HostCache:
    """The online hosts as the last rounds saw them, read again only where something happened.

    It reads every online host once, then only the hosts it is told about: a session placed on or ended from them
    (every replica's session changes reach this one as hub notifications), any process's change to what a round
    reads of a host (registered, lost, offline, a new epoch or link, other cached images, drained or draining:
    the hosts' notifications), a commit that placed on them; a price through PriceCache. Everything is read again
    every `_HOSTS_REFRESH_S` as a safety net, and where it matters: a commit places only on hosts that are online
    and not drained at that moment (SchedulerStore.commit); a refused commit reads everything again, a partly
    skipped one the hosts it planned on. A stale entry can cost a re-plan or a slightly worse choice for a
    moment, never a wrong placement. A full read rewrites only the hosts whose rows changed, so it costs the
    read, not a rebuild.

    A host whose agent's link was seen dead is kept but not online to placement until its link is back (or it is
    declared lost and leaves), and with `site_watch` so is every host of a site failing whole (broker.site_watch).
    """

    def __init__(self, site_watch: SiteWatch | None = None) -> None:
        self._table = HostTable()  # the hosts and their placement columns (broker.placement.host_table)
        self._rows: dict[str, HostRow] = {}  # the row each host was built from
        self._dirty: set[str] = set()
        self._read_at: float | None = None  # None: read every host on the next use
        self._full_reads = 0
        self._prices: dict[tuple[str, str], int] = {}  # the prices in force the table's hosts were built at
        # Slots a commit still in flight takes on each host (claim): the table shows them taken until it lands.
        self._claims: dict[str, int] = {}
        self._site_watch = site_watch
        self._failing: frozenset[str] = frozenset()  # the sites failing as of the last snapshot
        self._site_sizes: tuple[float, Counter[str]] | None = None  # (when counted, hosts per site)

    def changed(self, host_id: str) -> None:
        self._dirty.add(host_id)

    def lost(self, host_ids: Sequence[str], now: float) -> None:
        """These hosts were declared lost: read again (they leave), and each counts against its site as a link seen
        dead — when no round ran between its link's end and its loss (a quiet broker runs no round), this is the
        first the site watch hears of it."""
        for host_id in host_ids:
            self._dirty.add(host_id)
            row = self._rows.get(host_id)
            if row is not None and self._site_watch is not None:
                self._site_watch.link_lost(row.site_id, host_id, now)

    def claim(self, host_id: str, slots: int) -> None:
        """A commit on its way places `slots` on `host_id`: the next rounds see them taken, whatever the database
        says before the commit lands (a row read meanwhile has them taken off too)."""
        self._claims[host_id] = self._claims.get(host_id, 0) + slots
        self._rebuild(host_id)

    def release(self, host_id: str, slots: int) -> None:
        """The commit that claimed them landed (or failed): the host is read again, as the database has it now."""
        left = self._claims.get(host_id, 0) - slots
        if left > 0:
            self._claims[host_id] = left
        else:
            self._claims.pop(host_id, None)
        self._rebuild(host_id)
        self._dirty.add(host_id)

    def _rebuild(self, host_id: str) -> None:
        row = self._rows.get(host_id)
        if row is not None:
            self._table.put(self._host(row))

    def invalidate(self) -> None:
        """Read every host on the next use."""
        self._read_at = None

    async def hosts(
        self, store: SchedulerStore, now: float, prices: Mapping[tuple[str, str], int] | None = None
    ) -> list[placement.Host]:
        """The online hosts; `now` is a monotonic clock in seconds (the scheduler's), for the periodic full read;
        `prices` the sites' prices in force by (site, class) (PriceCache; none: every host at its declared price)."""
        hosts, _ = await self.snapshot(store, now, prices or {})
        return hosts

    async def snapshot(
        self, store: SchedulerStore, now: float, prices: Mapping[tuple[str, str], int]
    ) -> tuple[list[placement.Host], HostColumns]:
        """The online hosts and the same hosts as placement columns (for Problem.host_columns)."""
        repriced = prices != self._prices
        self._prices = dict(prices)
        if self._read_at is None or now - self._read_at >= _HOSTS_REFRESH_S:
            # Marks that arrive while reading stay for the next round (the read may predate their change).
            self._dirty.clear()
            rows = await store.online_hosts()
            self._full_reads += 1
            if not self._rows or repriced or self._full_reads % _RENUMBER_EVERY == 0:
                self._table.replace([self._host(r) for r in rows])
            else:
                fresh = {r.host_id: r for r in rows}
                for host_id in [h for h in self._rows if h not in fresh]:
                    self._table.remove(host_id)
                for read in rows:
                    if self._rows.get(read.host_id) != read:
                        self._table.put(self._host(read))
            self._rows = {r.host_id: r for r in rows}
            self._read_at = now
            self._watch(rows, now)
        else:
            if repriced:
                # A price was set or a band edge passed: every host again from the rows it was read from.
                self._table.replace(self._host(r) for r in self._rows.values())
            if self._dirty:
                dirty, self._dirty = sorted(self._dirty), set()
                fresh = {r.host_id: r for r in await store.hosts_by_id(dirty)}
                self._watch(fresh.values(), now)
                for host_id in dirty:
                    row = fresh.get(host_id)
                    if row is not None:
                        self._table.put(self._host(row))
                        self._rows[host_id] = row
                    else:  # no longer online
                        self._table.remove(host_id)
                        self._rows.pop(host_id, None)
        self._judge_sites(now)
        return self._table.snapshot()

    def _watch(self, rows: Iterable[HostRow], now: float) -> None:
        """Tell the site watch which of the hosts just read have their links seen dead, and which are back."""
        if self._site_watch is None:
            return
        for row in rows:
            if row.link_lost:
                self._site_watch.link_lost(row.site_id, row.host_id, now)
            else:
                self._site_watch.link_back(row.site_id, row.host_id)

    def _judge_sites(self, now: float) -> None:
        """The failing sites as of `now`; the hosts of a site that started or stopped failing are rebuilt."""
        if self._site_watch is None:
            return
        if not self._site_watch.watching:
            self._site_sizes = None
        elif self._site_sizes is None or now - self._site_sizes[0] >= _SITE_SIZES_REFRESH_S:
            # Counting 10,000 rows every round while a site is watched cost the leader ~10 ms a round.
            self._site_sizes = (now, Counter(r.site_id for r in self._rows.values()))
        failing = self._site_watch.failing(now, self._site_sizes[1] if self._site_sizes else {})
        changed, self._failing = failing ^ self._failing, failing
        if changed:
            log.warning("placement avoids sites failing whole", failing=sorted(failing), changed=sorted(changed))
            for row in self._rows.values():
                if row.site_id in changed:
                    self._table.put(self._host(row))

    def host(self, host_id: str) -> placement.Host | None:
        """The host of `host_id` as the last snapshot had it (until the next snapshot)."""
        return self._table.get(host_id)

    def _host(self, row: HostRow) -> placement.Host:
        """The host of `row` at the prices in force; the one built before when neither changed (most rows, most
        reads)."""
        free = max(0, row.free_slots - self._claims.get(row.host_id, 0))
        usable = row.site_id not in self._failing
        known = self._table.get(row.host_id)
        if (
            known is not None
            and known.free_slots == free
            and known.online == (usable and not row.link_lost)
            and self._rows.get(row.host_id) == row
            and known.price_micros == self._prices.get((row.site_id, row.gpu_class), row.declared_price_micros)
        ):
            return known
        return host_from_row(
            row if free == row.free_slots else row._replace(free_slots=free), self._prices, usable=usable
        )


class PriceCache:
    """The sites' prices in force, by (site, GPU class), by the store's clock.

    Reads the prices only when one was set (the store's stamp moved) or every `_PRICES_REFRESH_S` anyway, and works
    the prices in force out again only when the store's clock passes the next band edge. A price was a function
    call per host in the host read before (host_view): 110 of the 128 ms of a full read at 10,000 hosts.
    """

    def __init__(self) -> None:
        self._stamp: object = None
        self._read_at: float | None = None
        self._schedules: dict[tuple[str, str], metering.Schedule] = {}
        self._in_force: dict[tuple[str, str], int] = {}
        self._until: dt.datetime | None = None  # the prices in force hold until then (None: recompute)

    async def in_force(self, store: SchedulerStore, now: float) -> dict[tuple[str, str], int]:
        """`now`: the scheduler's monotonic clock in seconds, for the periodic read."""
        at, stamp = await store.price_stamp()
        if stamp != self._stamp or self._read_at is None or now - self._read_at >= _PRICES_REFRESH_S:
            schedules = {
                (r.site_id, r.gpu_class): metering.Schedule.from_row(r.base_micros, r.bands, r.utc_offset_minutes)
                for r in await store.prices()
            }
            if schedules != self._schedules:
                self._schedules, self._until = schedules, None
            self._stamp, self._read_at = stamp, now
        if self._until is None or at >= self._until:
            self._in_force = {key: s.price_at(at) for key, s in self._schedules.items()}
            edges = [e for e in (s.next_edge(at) for s in self._schedules.values()) if e is not None]
            self._until = min(edges) if edges else dt.datetime.max.replace(tzinfo=dt.UTC)
        return self._in_force


class ImageCache:
    """The games' current images and what earlier versions lack of them (what a cold start costs), read again only
    when a game was put (the store's stamp moved): a publish happens a few times a day, a round many times a
    second."""

    def __init__(self) -> None:
        self._images: Mapping[str, placement.GameImage] = {}
        self._stamp: object = None
        self._read = False

    async def images(self, store: SchedulerStore) -> Mapping[str, placement.GameImage]:
        stamp = await store.games_stamp()
        if not self._read or stamp != self._stamp:
            self._images = await store.game_images()
            self._stamp, self._read = stamp, True
        return self._images


class LatencyCache:
    """Venue→site round trips as one dense LatencyMatrix, which the solver reads whole rows of.

    Rebuilding the mapping from rows every round cost more than the solve at hundreds of venues. Each round asks
    the database only when the batch's venues' measurements last changed (one small row per venue), and reads the
    rows of the venues whose stamp moved, and rewrites only their rows of the matrix (whole when a site is new). So
    it is never staler than a fresh read.
    """

    def __init__(self) -> None:
        self._rows: dict[str, dict[str, int]] = {}
        self._stamps: dict[str, object] = {}
        self._matrix = placement.LatencyMatrix((), (), np.zeros((0, 0), dtype=np.int64))

    async def matrix(self, store: SchedulerStore, venues: Sequence[str]) -> placement.LatencyMatrix:
        stamps = await store.venue_latency_stamps(venues)
        changed = [v for v in venues if stamps.get(v) != self._stamps.get(v) or v not in self._rows]
        if changed:
            fresh: dict[str, dict[str, int]] = {v: {} for v in changed}
            for r in await store.venue_latency(changed):
                fresh[r.venue_id][r.site_id] = r.rtt_ms
            self._rows.update(fresh)
            self._stamps.update({v: stamps.get(v) for v in changed})
            self._matrix = self._updated(fresh)
        return self._matrix

    def _updated(self, fresh: Mapping[str, dict[str, int]]) -> placement.LatencyMatrix:
        """The matrix with the rows of `fresh` rewritten (a copy: a round may still be reading the old one); built
        whole when a site is new to it. A venue's report rewrote all 500 × 100 cells every time before."""
        old = self._matrix
        if any(s not in old.site_index for row in fresh.values() for s in row):
            return self._build()
        venues = list(old.venues) + [v for v in fresh if v not in old.venue_index]
        ms = np.full((len(venues), len(old.sites)), placement.UNREACHABLE_MS, dtype=np.int64)
        ms[: len(old.venues)] = old.ms
        at = {v: i for i, v in enumerate(venues)}
        for venue, row in fresh.items():
            i = at[venue]
            ms[i] = placement.UNREACHABLE_MS
            if row:
                ms[i, [old.site_index[s] for s in row]] = list(row.values())
        return placement.LatencyMatrix(venues, old.sites, ms)

    def _build(self) -> placement.LatencyMatrix:
        venues = list(self._rows)
        sites = sorted({s for row in self._rows.values() for s in row})
        column = {s: i for i, s in enumerate(sites)}
        ms = np.full((len(venues), len(sites)), placement.UNREACHABLE_MS, dtype=np.int64)
        for i, row in enumerate(self._rows.values()):
            if row:
                ms[i, [column[s] for s in row]] = list(row.values())
        return placement.LatencyMatrix(venues, sites, ms)


class Scheduler:
    """Places the pending requests of `store` in batches; `clock` (monotonic seconds) times the host cache's full
    reads."""

    def __init__(
        self,
        store: SchedulerStore,
        *,
        solver: Solver,
        window_s: float,
        batch_max: int,
        params: placement.Params | None = None,
        clock: Callable[[], float] = time.monotonic,
        counters: Counters | None = None,
        shares_loop: bool = True,
        site_watch_s: float | None = None,
    ) -> None:
        """`site_watch_s`: place nothing on a site failing whole, for this long after its last link seen dead
        (broker.site_watch; the broker's --host-lost-after); None: judge each host alone."""
        self._store = store
        # Whether RPCs are served on this process's loop too (a broker in one process) or not (the leader's own).
        self._shares_loop = shares_loop
        self._clock = clock
        self._counters = counters or Counters()
        self._solver = solver
        self._window_s = window_s
        self._batch_max = batch_max
        self._params = params or placement.Params()
        self._wake = asyncio.Event()
        self._cache = HostCache(None if site_watch_s is None else SiteWatch(site_watch_s))
        self._prices = PriceCache()
        self._latency = LatencyCache()
        self._images = ImageCache()
        self._last_solve_s = 0.0
        # The placement commit still on its way (run's rounds overlap: the next batch is read and solved while the
        # last one commits), and the sessions it places, which the next batch leaves out until it lands.
        self._committing: asyncio.Task[None] | None = None
        self._inflight: set[str] = set()
        self.rounds = 0
        self.replans = 0

    def wake(self) -> None:
        self._wake.set()

    def resync(self) -> None:
        """Session changes may have been missed: read every host again, and run a round."""
        self._cache.invalidate()
        self._wake.set()

    def host_changed(self, host_id: str) -> None:
        """Something about a host changed on this replica (it registered, went offline): a round may use it."""
        self._cache.changed(host_id)
        self._wake.set()

    def hosts_lost(self, host_ids: list[str]) -> None:
        """The liveness duty declared these hosts lost (on this replica, the leader's)."""
        self._cache.lost(host_ids, self._clock())

    def on_change(self, change: Mapping[str, Any]) -> None:
        """A new request arrived, or a session let go of its host's slots: a round may place something."""
        host_id = change.get("host_id")
        if host_id and change["state"] in ("PLACED", "ENDED"):
            self._cache.changed(host_id)  # its free slots moved
        if (change["state"] == "PENDING" and change["seq"] == 1) or (change["state"] == "ENDED" and host_id):
            self._wake.set()

    async def run(self) -> None:
        """Place until cancelled (the caller cancels when this replica loses the lease); a commit still on its way
        is cancelled with it."""
        try:
            await self._rounds()
        finally:
            # Cleared too: this scheduler runs again if the lease comes back, and its next round must not wait on
            # (and be cancelled by) a commit cancelled here.
            task, self._committing = self._committing, None
            if task is not None:
                task.cancel()

    async def _rounds(self) -> None:
        while True:
            try:
                async with asyncio.timeout(_TICK_S):
                    await self._wake.wait()
                # Gather: let a burst of requests join the same batch — for the window, and, where RPCs share
                # this process, for as long as the last solve took. A solve costs about the same for one request as
                # for hundreds (it frames every host) and runs in a thread that holds the GIL: back-to-back rounds
                # would take the whole process from the RPCs, so the solver gets at most about half of it there.
                # The leader's own process has nothing else to serve: it goes again as soon as the window closes,
                # so a request waits about one round, not two.
                await asyncio.sleep(max(self._window_s, self._last_solve_s if self._shares_loop else 0.0))
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                while await self.round(overlap=True) >= self._batch_max:
                    pass
            except errors.CloudseatError as exc:
                log.warning("placement round failed", error=str(exc))
                await asyncio.sleep(_TICK_S)
            except Exception:
                # A bug, or an error the store did not translate: a scheduler that stops would never place again.
                log.exception("placement round failed unexpectedly")
                await asyncio.sleep(_TICK_S)

    async def round(self, *, overlap: bool = False) -> int:
        """One batch: returns how many pending requests it considered.

        Resumes (sessions a lost host took from their seats) are placed first, on their own: a joint solve would
        weigh them against the rest by cost alone, and they must win any scarce slot.

        With `overlap` the round returns once its commit is on its way, and the next round reads and solves while
        it lands: a round's commit was about as long as its read and solve together (docs/loadtest-fleet.md), and
        every request waiting meanwhile waited for both. One commit is in flight at a time, in order; the slots it
        takes are claimed in the host cache and its sessions are left out of the next batch until it lands. A
        refused commit leaves its sessions pending and wakes the next round, which reads every host again."""
        asked = time.perf_counter()
        if not overlap:
            await self._settle()
        inflight = set(self._inflight)
        pending = await self._store.pending_batch(self._batch_max + len(inflight))
        if inflight:
            pending = [r for r in pending if r.session_id not in inflight][: self._batch_max]
        if not pending:
            return 0
        self.rounds += 1
        batch_read_s = time.perf_counter() - asked
        resumes = [r for r in pending if r.resumed]
        others = [r for r in pending if not r.resumed]
        for part in (resumes, others):
            if part:
                await self._place(part, batch_read_s, overlap=overlap)
                batch_read_s = 0.0
        return len(pending)

    async def _settle(self) -> None:
        """Wait for the commit on its way, if any, to land (or fail: it reports for itself, see _landed). A commit
        task that was cancelled does not cancel the round that waits for it."""
        if self._committing is not None:
            task, self._committing = self._committing, None
            await asyncio.gather(task, return_exceptions=True)

    async def _place(
        self, pending: Sequence[PendingRequest], batch_read_s: float = 0.0, *, overlap: bool = False
    ) -> None:
        """Solve and commit `pending`; `batch_read_s` is what reading the batch took (counted as this part's read).
        With `overlap`, returns once the commit is on its way (round)."""
        read_at = time.perf_counter()
        venues = sorted({r.venue_id for r in pending})
        for attempt in range(1 if overlap else _REPLANS):
            began = time.perf_counter() - (batch_read_s if attempt == 0 else 0.0)
            prices = await self._prices.in_force(self._store, self._clock())
            hosts, columns = await self._cache.snapshot(self._store, self._clock(), prices)
            latency = await self._latency.matrix(self._store, venues)
            leases = await self._store.leases_in_force()
            images = await self._images.images(self._store)
            problem = build_problem(pending, hosts, latency, self._params, leases, columns, images)
            started = time.perf_counter()
            solution = await asyncio.to_thread(self._solver, problem)
            self._last_solve_s = time.perf_counter() - started
            planned = self._placements(problem, solution, self._cache.host)
            phases = {"read": started - began, "solve": self._last_solve_s}
            if overlap:
                await self._settle()  # commits land one at a time, in order
                slots = {r.id: r.slots for r in problem.requests}
                for p in planned:
                    self._cache.claim(p.host_id, slots[p.session_id])
                self._inflight.update(p.session_id for p in planned)
                self._committing = asyncio.create_task(
                    self._landed(pending, solution, planned, slots, read_at, phases), name="placement-commit"
                )
                return
            if await self._commit(pending, solution, planned, read_at, phases):
                return
            log.info("batch refused by the database; re-planning", attempt=attempt + 1)
        log.warning("batch refused repeatedly; leaving it for the next round", pending=len(pending))

    async def _landed(
        self,
        pending: Sequence[PendingRequest],
        solution: placement.Solution,
        planned: Sequence[Placement],
        slots: Mapping[placement.RequestId, int],
        read_at: float,
        phases: dict[str, float],
    ) -> None:
        """An overlapping round's commit, on its own task: its claims go back once it lands or fails."""
        try:
            if not await self._commit(pending, solution, planned, read_at, phases):
                log.info("batch refused by the database; the next round re-plans it")
                self._wake.set()
        except errors.CloudseatError as exc:
            log.warning("placement commit failed", error=str(exc))
            self._cache.invalidate()
            self._wake.set()
        except Exception:
            log.exception("placement commit failed unexpectedly")
            self._cache.invalidate()
            self._wake.set()
        finally:
            for p in planned:
                self._cache.release(p.host_id, slots[p.session_id])
            self._inflight.difference_update(p.session_id for p in planned)

    async def _commit(
        self,
        pending: Sequence[PendingRequest],
        solution: placement.Solution,
        planned: Sequence[Placement],
        read_at: float,
        phases: dict[str, float],
    ) -> bool:
        """Commit a solved batch; False when the database refused it whole (re-plan from every host read again)."""
        committing = time.perf_counter()
        try:
            placed = await self._store.commit(planned, self._leased(solution))
        except errors.FailedPrecondition:
            self._counters.round_phases({**phases, "commit": time.perf_counter() - committing})
            self.replans += 1
            self._cache.invalidate()
            return False
        for p in planned:
            self._cache.changed(p.host_id)
        # What the placed requests waited, by the database clock: as read, plus this round since.
        since_read_ms = (time.perf_counter() - read_at) * 1000
        waited = {r.session_id: r.waited_ms for r in pending}
        for sid in placed:
            self._counters.placed((waited.get(sid, 0) + since_read_ms) / 1000)
        if len(placed) < len(planned):
            # Some sessions ended meanwhile, or their host went offline or was drained since it was read:
            # those stay pending for the next round, which reads their hosts again (marked above; a host no
            # longer online drops out), not every host: sessions ending while the leader placed them are
            # common past capacity, and a full read costs ~40 ms of the leader's CPU at 10,000 hosts.
            self._wake.set()
        # Only the reasons that changed: past capacity most of the queue waits for the same reason round after
        # round, and writing (and locking) each of those every round made a round's commit grow with the queue.
        recorded = {r.session_id: r.pending_reason for r in pending}
        changed = {rid: why for rid, why in solution.unplaced.items() if recorded.get(rid) != why}
        if changed:
            await self._store.set_pending_reasons(changed)
        self._counters.round_phases({**phases, "commit": time.perf_counter() - committing})
        log.debug(
            "placement round",
            pending=len(pending),
            placed=len(placed),
            read_ms=round(phases["read"] * 1000, 2),
            solve_ms=round(phases["solve"] * 1000, 2),
            commit_ms=round((time.perf_counter() - committing) * 1000, 2),
        )
        return True

    @staticmethod
    def _leased(solution: placement.Solution) -> dict[placement.RequestId, tuple[str, int]]:
        """The sessions the solution places under a lease: session id -> (lease id, slots the lease pays)."""
        return {
            rid: (lease_id, solution.lease_slots[rid])
            for rid, lease_id in solution.lease_use.items()
            if solution.lease_slots.get(rid, 0) > 0
        }

    @staticmethod
    def _placements(
        problem: placement.Problem,
        solution: placement.Solution,
        host_of: Callable[[str], placement.Host | None],
    ) -> list[Placement]:
        """The solution's placements; `host_of` finds a host of the problem by id (indexing all of them for a
        batch's few placements cost 2 ms a round at 10,000 hosts)."""
        venue_of = {r.id: r.venue_id for r in problem.requests}
        out = []
        for rid, host_id in solution.assignments.items():
            host = host_of(host_id)
            if host is None:
                raise AssertionError(f"the solver placed {rid} on {host_id}, which the problem does not have")
            latency_ms = problem.latency[(venue_of[rid], host.site_id)]
            out.append(Placement(rid, host_id, host.site_id, latency_ms, host.price_micros))
        return out
