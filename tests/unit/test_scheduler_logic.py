"""The scheduler's own logic on an in-memory store, with the real solvers: resumes first, re-planning a refused
batch, the host, price and latency caches, what wakes a round, and the batch loop."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence

import pytest
from cloudseat import errors

from broker import placement
from broker import scheduler as scheduler_module
from broker.scheduler import HostCache, LatencyCache, PriceCache, Scheduler
from broker.scheduler_store import HostRow, LatencyRow, PendingRequest, Placement, PriceRow, SchedulerStore

SOLVERS = [placement.solve, placement.greedy.solve]
LIVE = ("PLACED", "STARTING", "READY", "STREAMING")


@dataclasses.dataclass
class _Session:
    id: placement.RequestId
    venue_id: str
    cap_ms: int
    slots: int
    resumed: bool
    created_ms: int
    state: str = "PENDING"
    host_id: str | None = None
    reason: str | None = None
    lease_id: str | None = None
    lease_slots: int = 0


@dataclasses.dataclass
class _Host:
    id: str
    site_id: str
    slots: int
    free_slots: int
    price_micros: int  # declared: the price where its site has none for its class
    games: tuple[str, ...] = ("demo",)
    gpu_class: str = "rtx"
    online: bool = True
    drained: bool = False
    images: tuple[str, ...] = ()  # GAME@VERSION held, older versions too
    link_lost: bool = False  # its agent's link seen dead, not yet declared lost

    def row(self) -> HostRow:
        return HostRow(
            self.id, self.site_id, self.gpu_class, self.free_slots, self.slots, self.price_micros,
            list(self.games), self.drained, list(self.images), self.link_lost,
        )  # fmt: skip


@dataclasses.dataclass
class _Lease:
    id: str
    venue_id: str
    gpu_class: str
    site_id: str
    slots: int


class MemoryStore:
    """The scheduler's store in memory, keeping the contract of the PostgreSQL one (broker.store.placement's
    queries, its triggers and constraints), which tests/integration/test_scheduler.py covers on a real database.

    The queue is resumes first, then oldest first, then by id; `now_ms` is its clock. A commit skips sessions no
    longer PENDING and hosts not online, drained or with their links seen dead, takes a session's slots from its
    host, and refuses the whole batch (FailedPrecondition, nothing placed) when a host would go below zero free
    slots, as the slot trigger and free_slots_in_range do. Placing clears a pending reason; a reason is written
    only for a session still PENDING whose reason changed (what the database would notify). `calls` records every
    call, `reason_writes` every reason written. Other writers (another replica, an agent, an operator) act through
    `place`, `end`, `drain`, `go_offline`, `lose_link` and `report_latency`, which tell the scheduler nothing: that
    is the hub's job, played by the tests.
    """

    def __init__(self) -> None:
        self.now_ms = 1_000_000
        self.clock = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)  # the store's clock (prices in force)
        self.price_rows: dict[tuple[str, str], PriceRow] = {}
        self.price_sets = 0
        self.committed: list[Placement] = []  # every placement handed to commit
        self.sessions: dict[placement.RequestId, _Session] = {}
        self.hosts: dict[str, _Host] = {}
        self.latency: dict[tuple[str, str], int] = {}
        self.stamps: dict[str, int] = {}
        self.leases: dict[str, _Lease] = {}
        self.images: dict[str, placement.GameImage] = {}  # games' current images (games.sql, 0019's table)
        self.calls: list[tuple[str, object]] = []
        self.reason_writes: list[tuple[placement.RequestId, str]] = []
        #: Commits to refuse before looking at them, as when other writers keep taking the slots a plan counted
        #: on (and let go of them before the next read).
        self.refuse_next = 0
        #: While an unset Event, each commit waits for it before looking at anything: a commit on its way.
        self.gate: asyncio.Event | None = None

    # -- set-up and other writers ----------------------------------------------------------------------------

    def add_host(self, host_id: str, slots: int = 1, site_id: str = "site-a", price: int = 1_000_000) -> None:
        self.hosts[host_id] = _Host(host_id, site_id, slots, slots, price)

    def add_request(
        self, rid: str, venue_id: str = "cafe", waited_ms: int = 0, resumed: bool = False, slots: int = 1
    ) -> placement.RequestId:
        self.sessions[rid] = _Session(rid, venue_id, 30, slots, resumed, self.now_ms - waited_ms)
        return rid

    def report_latency(self, venue_id: str, site_id: str, rtt_ms: int) -> None:
        self.latency[(venue_id, site_id)] = rtt_ms
        self.stamps[venue_id] = self.stamps.get(venue_id, 0) + 1

    def add_lease(self, lease_id: str, venue_id: str, site_id: str, slots: int) -> None:
        self.leases[lease_id] = _Lease(lease_id, venue_id, "rtx", site_id, slots)

    def place(self, rid: placement.RequestId, host_id: str) -> None:
        """Another writer places a session (a stale scheduler on another replica)."""
        session, host = self.sessions[rid], self.hosts[host_id]
        assert host.free_slots >= session.slots
        host.free_slots -= session.slots
        session.state, session.host_id, session.reason = "PLACED", host_id, None

    def end(self, rid: placement.RequestId) -> None:
        session = self.sessions[rid]
        if session.state in LIVE and session.host_id is not None:
            self.hosts[session.host_id].free_slots += session.slots
        session.state, session.reason = "ENDED", None

    def set_price(
        self, site_id: str, price: int, bands: Sequence[tuple[int, int, int]] = (), gpu_class: str = "rtx"
    ) -> None:
        self.price_rows[(site_id, gpu_class)] = PriceRow(site_id, gpu_class, price, [list(b) for b in bands], 0)
        self.price_sets += 1

    def drain(self, host_id: str) -> None:
        self.hosts[host_id].drained = True

    def go_offline(self, host_id: str) -> None:
        self.hosts[host_id].online = False

    def lose_link(self, host_id: str, lost: bool = True) -> None:
        """The host's agent link is seen dead (or back, with `lost` false)."""
        self.hosts[host_id].link_lost = lost

    def state(self, rid: placement.RequestId) -> tuple[str, str | None]:
        return self.sessions[rid].state, self.sessions[rid].host_id

    def called(self, name: str) -> list[object]:
        return [arg for call, arg in self.calls if call == name]

    # -- SchedulerStore --------------------------------------------------------------------------------------

    async def pending_batch(self, limit: int) -> list[PendingRequest]:
        pending = sorted(
            (s for s in self.sessions.values() if s.state == "PENDING"),
            key=lambda s: (not s.resumed, s.created_ms, s.id),
        )[:limit]
        self.calls.append(("pending_batch", len(pending)))
        return [
            PendingRequest(
                s.id, s.venue_id, "demo", s.cap_ms, s.slots, s.resumed, self.now_ms - s.created_ms, s.reason or ""
            )
            for s in pending
        ]

    async def online_hosts(self) -> list[HostRow]:
        self.calls.append(("online_hosts", None))
        return [h.row() for h in self.hosts.values() if h.online]

    async def hosts_by_id(self, host_ids: Sequence[str]) -> list[HostRow]:
        self.calls.append(("hosts_by_id", list(host_ids)))
        return [self.hosts[h].row() for h in host_ids if h in self.hosts and self.hosts[h].online]

    async def price_stamp(self) -> tuple[dt.datetime, object]:
        return self.clock, self.price_sets

    async def prices(self) -> list[PriceRow]:
        self.calls.append(("prices", None))
        return list(self.price_rows.values())

    async def venue_latency_stamps(self, venue_ids: Sequence[str]) -> dict[str, object]:
        return {v: self.stamps[v] for v in venue_ids if v in self.stamps}

    async def venue_latency(self, venue_ids: Sequence[str]) -> list[LatencyRow]:
        self.calls.append(("venue_latency", list(venue_ids)))
        return [LatencyRow(v, s, ms) for (v, s), ms in self.latency.items() if v in venue_ids]

    async def games_stamp(self) -> object:
        return sorted(self.images.items())

    async def game_images(self) -> dict[str, placement.GameImage]:
        self.calls.append(("game_images", None))
        return dict(self.images)

    async def leases_in_force(self) -> list[placement.Lease]:
        used = Counter[str]()
        for s in self.sessions.values():
            if s.state in LIVE and s.lease_id is not None:
                used[s.lease_id] += s.lease_slots
        return [
            placement.Lease(
                lease.id, lease.venue_id, lease.gpu_class, max(lease.slots - used[lease.id], 0), lease.site_id
            )
            for lease in self.leases.values()
        ]

    async def commit(
        self, placements: Sequence[Placement], leased: Mapping[placement.RequestId, tuple[str, int]]
    ) -> list[placement.RequestId]:
        self.calls.append(("commit", [p.session_id for p in placements]))
        if self.gate is not None:
            await self.gate.wait()
        self.committed.extend(placements)
        if self.refuse_next:
            self.refuse_next -= 1
            raise errors.FailedPrecondition("the host has no free slots for this")
        eligible = [
            p
            for p in placements
            if self.sessions[p.session_id].state == "PENDING"
            and p.host_id in self.hosts
            and self.hosts[p.host_id].online
            and not self.hosts[p.host_id].drained
            and not self.hosts[p.host_id].link_lost
        ]
        taken = Counter[str]()
        for p in eligible:
            taken[p.host_id] += self.sessions[p.session_id].slots
        if any(n > self.hosts[h].free_slots for h, n in taken.items()):
            raise errors.FailedPrecondition("the host has no free slots for this")
        for p in eligible:
            self.place(p.session_id, p.host_id)
            self.sessions[p.session_id].lease_id, self.sessions[p.session_id].lease_slots = leased.get(
                p.session_id, (None, 0)
            )
        return [p.session_id for p in eligible]

    async def set_pending_reasons(
        self, reasons: Mapping[placement.RequestId, placement.PendingReason]
    ) -> None:
        self.calls.append(("set_pending_reasons", dict(reasons)))
        for rid, reason in reasons.items():
            session = self.sessions[rid]
            if session.state == "PENDING" and session.reason != reason.value:
                session.reason = reason.value
                self.reason_writes.append((rid, reason.value))


def _store() -> MemoryStore:
    """A venue (cafe) 5 ms from site-a, and one venue (attic) with no measurement at all."""
    store = MemoryStore()
    store.report_latency("cafe", "site-a", 5)
    return store


def _scheduler(
    store: SchedulerStore, solver: scheduler_module.Solver = placement.solve, batch_max: int = 100
) -> Scheduler:
    # A stopped clock: the host cache reads everything only on first use and when told to, never by age.
    return Scheduler(store, solver=solver, window_s=0, batch_max=batch_max, clock=lambda: 0.0)


def _woken(scheduler: Scheduler) -> bool:
    """Whether the next round is wanted now (the event run() waits on)."""
    return scheduler._wake.is_set()


# -- resumes first ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", SOLVERS, ids=["engine", "greedy"])
async def test_a_resume_wins_a_scarce_slot_over_an_older_request(solver: scheduler_module.Solver) -> None:
    store = _store()
    store.add_host("h1", slots=1)
    older = store.add_request("older", waited_ms=10_000)
    resume = store.add_request("resume", resumed=True)
    assert await _scheduler(store, solver).round() == 2
    assert store.state(resume) == ("PLACED", "h1")
    assert store.state(older) == ("PENDING", None)
    assert store.sessions[older].reason == placement.PendingReason.NO_CAPACITY_WITHIN_CAP
    # The resumes were committed before the rest were planned.
    assert store.called("commit") == [["resume"], []]


async def test_among_ordinary_requests_greedy_gives_the_slot_to_the_older() -> None:
    """What the resume above overtook: in one joint batch the greedy solver goes by arrival (and the engine by
    cost alone, which ties here), so only placing resumes on their own makes them win."""
    store = _store()
    store.add_host("h1", slots=1)
    older = store.add_request("older", waited_ms=10_000)
    newer = store.add_request("newer")
    await _scheduler(store, placement.greedy.solve).round()
    assert store.state(older) == ("PLACED", "h1") and store.state(newer) == ("PENDING", None)


# -- links seen dead, sites failing whole -----------------------------------------------------------------------


@pytest.mark.parametrize("solver", SOLVERS, ids=["engine", "greedy"])
async def test_a_host_whose_link_was_seen_dead_takes_nothing_until_it_is_back(
    solver: scheduler_module.Solver,
) -> None:
    store = _store()
    store.report_latency("cafe", "site-b", 20)
    store.add_host("near", site_id="site-a")
    store.add_host("far", site_id="site-b")
    scheduler = _scheduler(store, solver)
    store.lose_link("near")
    scheduler.host_changed("near")  # the hosts' notification (migration 0023)
    first = store.add_request("first", resumed=True)
    await scheduler.round()
    assert store.state(first) == ("PLACED", "far")
    store.lose_link("near", lost=False)  # the agent reconnected
    scheduler.host_changed("near")
    second = store.add_request("second")
    await scheduler.round()
    assert store.state(second) == ("PLACED", "near")


async def test_a_commit_skips_a_host_whose_link_was_seen_dead_since_the_round_read_it() -> None:
    store = _store()
    store.add_host("h0", price=1_000_000)
    store.add_host("h1", price=2_000_000)
    scheduler = _scheduler(store)
    store.add_request("r0")
    await scheduler.round()  # reads the hosts, places r0 on the cheaper
    assert store.state("r0") == ("PLACED", "h0")
    store.calls.clear()
    store.lose_link("h1")  # not told yet: the round plans on it, the commit skips it
    r = store.add_request("r")
    await scheduler.round()
    assert store.state(r) == ("PENDING", None) and store.called("commit") == [["r"]]


@pytest.mark.parametrize("solver", SOLVERS, ids=["engine", "greedy"])
async def test_a_site_failing_whole_takes_nothing_until_its_links_were_quiet_for_the_window(
    solver: scheduler_module.Solver,
) -> None:
    """A site that lost power: its hosts' links are seen dead one by one. Once three of its four have gone, the
    fourth (not yet seen dead) takes nothing either; a lone host's loss at another site stops nothing there."""
    store = _store()
    store.report_latency("cafe", "site-b", 20)
    for h in ("a1", "a2", "a3", "a4"):
        store.add_host(h, site_id="site-a", slots=2)
    for h in ("b1", "b2", "b3", "b4"):
        store.add_host(h, site_id="site-b", slots=2)
    now = [0.0]
    scheduler = Scheduler(
        store, solver=solver, window_s=0, batch_max=100, clock=lambda: now[0], site_watch_s=10.0
    )
    for h in ("a1", "a2", "b1"):
        store.lose_link(h)
        scheduler.host_changed(h)
    early = store.add_request("early", resumed=True)
    await scheduler.round()
    assert store.state(early)[1] in ("a3", "a4")  # two of four: not yet failing whole
    now[0] = 2.0
    store.lose_link("a3")
    scheduler.host_changed("a3")
    resumes = [store.add_request(f"resume-{i}", resumed=True) for i in range(3)]
    await scheduler.round()
    assert {store.state(r)[1] for r in resumes} <= {"b2", "b3", "b4"}
    assert all(store.state(r)[0] == "PLACED" for r in resumes)
    # The grace passes and the dead hosts are declared lost; the site's last link seen dead was at 2 s.
    for h in ("a1", "a2", "a3"):
        store.go_offline(h)
        scheduler.hosts_lost([h])
    now[0] = 11.0
    late = store.add_request("late")
    await scheduler.round()
    assert store.state(late) == ("PENDING", None)  # b's have 1 slot left in all, and a4 is still avoided
    now[0] = 12.5
    scheduler.host_changed("a4")
    await scheduler.round()
    assert store.state(late) == ("PLACED", "a4")


async def test_a_site_whose_hosts_were_declared_lost_before_any_round_read_them_is_failing_too() -> None:
    """A quiet broker runs no round between a site's links ending and its hosts' loss: the loss itself counts."""
    store = _store()
    store.report_latency("cafe", "site-b", 20)
    for h in ("a1", "a2", "a3", "a4"):
        store.add_host(h, site_id="site-a", slots=2)
    store.add_host("b1", site_id="site-b")
    now = [0.0]
    scheduler = Scheduler(store, solver=placement.solve, window_s=0, batch_max=100, clock=lambda: now[0],
                          site_watch_s=10.0)  # fmt: skip
    store.add_request("first")
    await scheduler.round()  # the hosts read
    assert store.state("first")[1] in ("a1", "a2", "a3", "a4")
    now[0] = 5.0
    lost = [h for h in ("a1", "a2", "a3", "a4") if h != store.state("first")[1]]
    for h in lost:
        store.go_offline(h)
    scheduler.hosts_lost(lost)
    second = store.add_request("second", resumed=True)
    await scheduler.round()
    # Not on the surviving a-host beside "first" (5 ms, a slot free): its site is failing.
    assert store.state(second) == ("PLACED", "b1")


# -- refused and partly skipped commits -------------------------------------------------------------------------


async def test_a_refused_commit_re_plans_from_fresh_hosts() -> None:
    store = _store()
    store.add_host("cheap", price=1_000_000)
    store.add_host("dear", price=2_000_000)
    scheduler = _scheduler(store)
    store.add_request("attic-1", venue_id="attic")  # never placed: its round only reads the hosts
    await scheduler.round()
    # Another replica takes the cheap host's slot; this one is not told (its notification is still on the way).
    store.place(store.add_request("rival"), "cheap")
    mine = store.add_request("mine")
    await scheduler.round()
    assert scheduler.replans == 1
    assert store.called("commit")[-2:] == [["mine"], ["mine"]]
    assert store.called("online_hosts") == [None, None]  # the first round's read, and the re-plan's
    assert store.state(mine) == ("PLACED", "dear")


async def test_a_batch_refused_every_time_is_left_pending_for_the_next_round() -> None:
    store = _store()
    store.add_host("h1", slots=2)
    a, b = store.add_request("a"), store.add_request("b")
    scheduler = _scheduler(store)
    store.refuse_next = scheduler_module._REPLANS
    assert await scheduler.round() == 2
    assert scheduler.replans == scheduler_module._REPLANS
    assert len(store.called("online_hosts")) == scheduler_module._REPLANS  # every plan from fresh hosts
    assert store.state(a)[0] == store.state(b)[0] == "PENDING"
    assert store.called("set_pending_reasons") == [] and store.reason_writes == []
    await scheduler.round()
    assert store.state(a) == store.state(b) == ("PLACED", "h1")


async def test_a_partly_skipped_commit_reads_the_hosts_it_planned_on_again_and_wakes_another_round() -> None:
    store = _store()
    store.add_host("cheap", price=1_000_000)
    store.add_host("dear", price=2_000_000)
    scheduler = _scheduler(store)
    store.add_request("attic-1", venue_id="attic")
    await scheduler.round()
    store.drain("cheap")  # by an operator on another replica: no session changed, nobody is told
    mine = store.add_request("mine")
    assert not _woken(scheduler)
    await scheduler.round()
    assert scheduler.replans == 0
    assert store.called("commit")[-1] == ["mine"] and store.state(mine) == ("PENDING", None)
    assert _woken(scheduler)
    await scheduler.round()
    assert store.called("online_hosts") == [None]  # not every host: only the one it had planned on
    assert ["cheap"] in store.called("hosts_by_id")
    assert store.state(mine) == ("PLACED", "dear")


# -- overlapping rounds ---------------------------------------------------------------------------------------


async def test_an_overlapping_round_sees_the_slots_a_commit_on_its_way_takes() -> None:
    """run()'s rounds overlap: the next batch is read and solved while the last one commits. The sessions on their
    way are left out of it, and their hosts' slots count as taken though the database does not show it yet."""
    store = _store()
    store.add_host("cheap", price=1_000_000)
    store.add_host("dear", price=2_000_000)
    store.gate = asyncio.Event()
    solved: list[list[str]] = []

    def solver(problem: placement.Problem) -> placement.Solution:
        solved.append([r.id for r in problem.requests])
        return placement.solve(problem)

    scheduler = _scheduler(store, solver)
    a = store.add_request("a")
    assert await scheduler.round(overlap=True) == 1  # returns with its commit on its way
    await asyncio.sleep(0)
    assert store.called("commit") == [["a"]] and store.state(a) == ("PENDING", None)
    b = store.add_request("b")
    second = asyncio.create_task(scheduler.round(overlap=True))
    async with asyncio.timeout(5):
        while len(solved) < 2:  # solved while "a" is still on its way
            await asyncio.sleep(0.001)
    assert solved == [["a"], ["b"]]
    store.gate.set()
    assert await second == 1
    await scheduler._settle()
    assert store.called("commit") == [["a"], ["b"]]
    assert store.state(a) == ("PLACED", "cheap") and store.state(b) == ("PLACED", "dear")
    assert scheduler.replans == 0


async def test_an_overlapping_commit_refused_leaves_its_sessions_pending_and_gives_its_slots_back() -> None:
    store = _store()
    store.add_host("h1", slots=1)
    scheduler = _scheduler(store)
    a = store.add_request("a")
    store.refuse_next = 1
    await scheduler.round(overlap=True)
    await scheduler._settle()
    assert scheduler.replans == 1 and _woken(scheduler)
    assert store.state(a) == ("PENDING", None)
    await scheduler.round(overlap=True)  # from every host read again, the slot no longer claimed
    await scheduler._settle()
    assert store.state(a) == ("PLACED", "h1")
    assert len(store.called("online_hosts")) == 2


async def test_a_scheduler_run_again_after_losing_the_lease_mid_commit_places_as_before() -> None:
    """The leader cancels run() when it loses the lease, with a commit on its way, and runs the same scheduler
    again when the lease comes back: the cancelled commit must not cancel that run's rounds."""
    store = _store()
    store.add_host("h1")
    store.gate = asyncio.Event()  # the commit hangs, as on a connection that died
    scheduler = _scheduler(store)
    a = store.add_request("a")
    scheduler.wake()
    first = asyncio.create_task(scheduler.run())
    async with asyncio.timeout(10):
        while store.called("commit") != [["a"]]:
            await asyncio.sleep(0.01)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert store.state(a) == ("PENDING", None)
    store.gate = None
    scheduler.wake()
    second = asyncio.create_task(scheduler.run())
    try:
        async with asyncio.timeout(10):
            while store.state(a)[0] == "PENDING":
                assert not second.done(), second
                await asyncio.sleep(0.01)
    finally:
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
    assert store.state(a) == ("PLACED", "h1")


# -- pending reasons ------------------------------------------------------------------------------------------


async def test_only_reasons_that_changed_are_handed_over() -> None:
    why = placement.PendingReason
    store = _store()
    store.add_host("h1", slots=1)
    store.add_host("h2", slots=1, site_id="site-b")
    store.place(store.add_request("playing"), "h1")
    attic = store.add_request("attic", venue_id="attic")
    queued = store.add_request("queued")
    scheduler = _scheduler(store)
    await scheduler.round()
    both = {attic: why.NO_SITE_WITHIN_CAP, queued: why.NO_CAPACITY_WITHIN_CAP}
    assert store.called("set_pending_reasons") == [both]
    assert store.reason_writes == [(attic, "NO_SITE_WITHIN_CAP"), (queued, "NO_CAPACITY_WITHIN_CAP")]
    # Nothing changed: past capacity most of a queue waits like this, and a round then writes (and locks) none.
    await scheduler.round()
    assert store.called("set_pending_reasons") == [both]
    assert len(store.reason_writes) == 2
    # The attic is measured now, to a site whose host is free: placed, its reason cleared; the queued one's reason
    # has not changed, so nothing is handed over.
    store.report_latency("attic", "site-b", 5)
    await scheduler.round()
    assert store.state(attic) == ("PLACED", "h2") and store.sessions[attic].reason is None
    assert store.called("set_pending_reasons") == [both]
    assert len(store.reason_writes) == 2


async def test_a_lease_pays_for_the_slots_it_covers() -> None:
    store = _store()
    store.add_host("h1", slots=2)
    store.add_lease("lease-1", "cafe", "site-a", slots=1)
    rid = store.add_request("mine", slots=2)
    await _scheduler(store).round()
    assert store.state(rid) == ("PLACED", "h1")
    assert (store.sessions[rid].lease_id, store.sessions[rid].lease_slots) == ("lease-1", 1)
    assert [lease.unused_slots for lease in await store.leases_in_force()] == [0]


# -- the host cache ---------------------------------------------------------------------------------------------


async def test_the_host_cache_reads_everything_first_then_only_what_it_is_told_about() -> None:
    store = _store()
    for h in ("h1", "h2", "h3"):
        store.add_host(h, slots=2)
    cache = HostCache()
    first = {h.id: h for h in await cache.hosts(store, now=0.0)}
    assert sorted(first) == ["h1", "h2", "h3"] and store.called("online_hosts") == [None]

    assert await cache.hosts(store, now=1.0) == list(first.values())
    assert len(store.calls) == 1  # nothing marked, not due: no read at all

    store.place(store.add_request("r"), "h1")
    store.go_offline("h2")
    store.hosts["h3"].price_micros = 3_000_000  # not marked: not seen yet
    cache.changed("h1")
    cache.changed("h2")
    hosts = {h.id: h for h in await cache.hosts(store, now=1.5)}
    assert store.called("hosts_by_id") == [["h1", "h2"]] and len(store.called("online_hosts")) == 1
    assert sorted(hosts) == ["h1", "h3"]  # h2 is no longer online
    assert hosts["h1"].free_slots == 1 and hosts["h3"] is first["h3"]

    cache.invalidate()
    hosts = {h.id: h for h in await cache.hosts(store, now=1.5)}
    assert len(store.called("online_hosts")) == 2
    assert hosts["h3"].price_micros == 3_000_000
    assert hosts["h1"] is not first["h1"]


async def test_the_host_cache_reads_everything_again_when_due_and_reuses_unchanged_hosts() -> None:
    store = _store()
    store.add_host("h1")
    store.add_host("h2")
    cache = HostCache()
    first = {h.id: h for h in await cache.hosts(store, now=10.0)}
    await cache.hosts(store, now=10.0 + scheduler_module._HOSTS_REFRESH_S - 0.1)
    assert len(store.called("online_hosts")) == 1
    store.drain("h2")
    again = {h.id: h for h in await cache.hosts(store, now=10.0 + scheduler_module._HOSTS_REFRESH_S)}
    assert len(store.called("online_hosts")) == 2
    assert again["h1"] is first["h1"]  # the same row: the host built before
    assert again["h2"].drained and not first["h2"].drained


async def test_a_full_read_rewrites_only_what_changed_and_renumbers_names_now_and_then() -> None:
    store = _store()
    store.add_host("h1", site_id="site-a")
    store.add_host("h2", site_id="site-gone")
    store.add_host("h3", slots=4, site_id="site-a")
    cache = HostCache()
    await cache.hosts(store, now=0.0)
    store.go_offline("h2")  # nobody told: the next full read finds it gone
    store.hosts["h3"].free_slots = 2
    hosts, columns = await cache.snapshot(store, 1.0 + scheduler_module._HOSTS_REFRESH_S, {})
    assert sorted(h.id for h in hosts) == ["h1", "h3"]
    assert [columns.free[i] for i in range(len(hosts))] == [h.free_slots for h in hosts]
    assert {h.id: h.free_slots for h in hosts} == {"h1": 1, "h3": 2}
    assert "site-gone" in columns.sites  # numbered names stay between rebuilds
    for n in range(2, scheduler_module._RENUMBER_EVERY + 1):
        hosts, columns = await cache.snapshot(store, n * (1.0 + scheduler_module._HOSTS_REFRESH_S), {})
    assert "site-gone" not in columns.sites and columns.sites == ["site-a"]
    assert sorted(h.id for h in hosts) == ["h1", "h3"]


async def test_the_latency_cache_rewrites_changed_rows_as_a_whole_build_would() -> None:
    store = _store()
    store.report_latency("bar", "site-a", 7)
    cache = LatencyCache()
    before = await cache.matrix(store, ["bar", "cafe"])
    store.report_latency("bar", "site-a", 11)  # a changed row
    store.report_latency("pub", "site-a", 3)  # a new venue
    after = await cache.matrix(store, ["bar", "cafe", "pub"])
    assert dict(after) == dict(cache._build())
    assert after[("bar", "site-a")] == 11 and after[("pub", "site-a")] == 3 and before[("bar", "site-a")] == 7
    store.report_latency("pub", "site-new", 4)  # a new site: built whole
    grown = await cache.matrix(store, ["pub"])
    assert dict(grown) == dict(cache._build()) and grown[("pub", "site-new")] == 4


async def test_the_latency_cache_reads_only_the_venues_whose_measurements_moved() -> None:
    store = _store()
    store.report_latency("bar", "site-a", 7)
    cache = LatencyCache()
    matrix = await cache.matrix(store, ["bar", "cafe"])
    assert store.called("venue_latency") == [["bar", "cafe"]]
    assert matrix[("cafe", "site-a")] == 5 and matrix[("bar", "site-a")] == 7
    assert await cache.matrix(store, ["bar", "cafe"]) is matrix
    store.report_latency("cafe", "site-b", 9)
    matrix = await cache.matrix(store, ["bar", "cafe"])
    assert store.called("venue_latency") == [["bar", "cafe"], ["cafe"]]
    assert matrix[("cafe", "site-b")] == 9 and matrix[("bar", "site-a")] == 7


# -- what wakes a round, and what marks a host ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "seq", "host_id", "wakes", "marks"),
    [
        ("PENDING", 1, None, True, False),  # a new request (or a resume)
        ("PLACED", 2, "h1", False, True),  # its host's free slots moved
        ("STARTING", 3, "h1", False, False),
        ("READY", 4, "h1", False, False),
        ("ENDED", 6, "h1", True, True),  # a slot was freed
        ("ENDED", 2, None, False, False),  # ended while pending: it held nothing
    ],
)
async def test_a_session_change_wakes_a_round_and_marks_its_host(
    state: str, seq: int, host_id: str | None, wakes: bool, marks: bool
) -> None:
    store = _store()
    store.add_host("h1")
    store.add_request("attic-1", venue_id="attic")  # never placed: its rounds only read the hosts
    scheduler = _scheduler(store)
    await scheduler.round()  # the first full read
    store.calls.clear()
    change = {
        "session_id": "9b2f6c4e-8d0a-4a51-9a57-0c1d2e3f4a5b",
        "state": state,
        "seq": seq,
        "host_id": host_id,
    }
    scheduler.on_change(change)
    assert _woken(scheduler) is wakes
    await scheduler.round()
    assert store.called("hosts_by_id") == ([["h1"]] if marks else [])
    assert store.called("online_hosts") == []


async def test_hosts_changed_here_are_read_again_and_a_resync_reads_everything() -> None:
    store = _store()
    for h in ("h1", "h2", "h3"):
        store.add_host(h, slots=4)
    store.add_request("r0")
    scheduler = _scheduler(store)
    await scheduler.round()
    store.calls.clear()
    scheduler.hosts_lost(["h3"])
    assert not _woken(scheduler)  # the lost host's sessions come back as resumes, which wake it
    scheduler.host_changed("h2")
    assert _woken(scheduler)
    store.add_request("r1")
    await scheduler.round()
    # Besides those two, the host the first round placed r0 on: the commit marked it.
    assert store.called("hosts_by_id") == [sorted({store.state("r0")[1], "h2", "h3"})]
    scheduler._wake.clear()
    scheduler.resync()
    assert _woken(scheduler)
    store.add_request("r2")
    await scheduler.round()
    assert store.called("online_hosts") == [None]


# -- the batch loop ---------------------------------------------------------------------------------------------


async def test_a_round_takes_one_batch_and_says_how_many_it_considered() -> None:
    store = _store()
    store.add_host("h1", slots=10)
    for i in range(5):
        store.add_request(f"r{i}", waited_ms=100 - i)
    scheduler = _scheduler(store, batch_max=2)
    assert await scheduler.round() == 2
    assert sorted(rid for rid, s in store.sessions.items() if s.state == "PLACED") == ["r0", "r1"]
    assert await _scheduler(MemoryStore()).round() == 0


async def test_run_takes_batches_while_they_are_full(monkeypatch: pytest.MonkeyPatch) -> None:
    # No rounds by the clock: only the loop after the one wake-up can take all three batches.
    monkeypatch.setattr(scheduler_module, "_TICK_S", 3600.0)
    store = _store()
    store.add_host("h1", slots=10)
    for i in range(5):
        store.add_request(f"r{i}")
    scheduler = _scheduler(store, batch_max=2)
    scheduler.wake()
    running = asyncio.create_task(scheduler.run())
    try:
        async with asyncio.timeout(10):
            while any(s.state == "PENDING" for s in store.sessions.values()):
                await asyncio.sleep(0.01)
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    # Three rounds of at most two; each read asks for the batch and for the sessions still on their way, which it
    # leaves out (round(overlap=True)).
    asked = store.called("pending_batch")
    assert asked[0] == 2 and all(n >= 2 for n in asked)
    assert scheduler.rounds == 3


async def test_hosts_go_at_their_sites_price_in_force_read_once_per_price_set_and_band_edge() -> None:
    store = _store()
    store.add_host("h1", price=1_000_000)  # declared
    store.add_host("h2", site_id="site-b", price=2_000_000)
    # site-a's price: 3 at 12:00-13:00 UTC, else 4.
    store.set_price("site-a", 4_000_000, [(720, 780, 3_000_000)])
    prices, cache = PriceCache(), HostCache()

    async def hosts(now: float) -> dict[str, int]:
        in_force = await prices.in_force(store, now)
        return {h.id: h.price_micros for h in await cache.hosts(store, now, in_force)}

    assert await hosts(0.0) == {"h1": 3_000_000, "h2": 2_000_000}  # site-b has no price: the declared one
    assert await hosts(0.5) == {"h1": 3_000_000, "h2": 2_000_000}
    assert len(store.called("prices")) == 1 and len(store.called("online_hosts")) == 1

    # The band ends: the price changes with no read of prices or hosts.
    store.clock += dt.timedelta(hours=1)
    assert await hosts(1.0) == {"h1": 4_000_000, "h2": 2_000_000}
    assert len(store.called("prices")) == 1 and len(store.called("online_hosts")) == 1
    assert store.called("hosts_by_id") == []

    # A price set elsewhere is read at the next round (its stamp moved), and the hosts repriced from their rows.
    store.set_price("site-b", 5_000_000)
    assert await hosts(1.2) == {"h1": 4_000_000, "h2": 5_000_000}
    assert len(store.called("prices")) == 2 and len(store.called("online_hosts")) == 1


async def test_a_placement_is_committed_at_the_price_in_force() -> None:
    store = _store()
    store.add_host("h1", price=1_000_000)
    store.set_price("site-a", 4_000_000, [(0, 1440, 2_500_000)])
    scheduler = _scheduler(store)
    rid = store.add_request("r1")
    await scheduler.round()
    assert store.state(rid) == ("PLACED", "h1")
    [placed] = store.committed
    assert (placed.session_id, placed.host_id, placed.price_micros) == (rid, "h1", 2_500_000)


# -- cold starts priced by the bytes a host lacks ---------------------------------------------------------------------


async def test_a_host_holding_the_previous_version_beats_a_cheaper_cold_host() -> None:
    store = _store()
    store.add_host("cold", slots=2, price=1_000_000)
    store.add_host("holds-v2", slots=2, price=1_100_000)
    for h in store.hosts.values():
        h.games = ()  # neither holds the current version, v3
    store.hosts["holds-v2"].images = ("demo@2",)
    # v3 is 40 GiB, 1 GiB of it new since v2: a full fetch costs the flat 0.4 units, v2's host 0.025.
    store.images["demo"] = placement.GameImage("3", 40 << 30, {"2": 1 << 30})
    scheduler = _scheduler(store)
    first = store.add_request("first")
    await scheduler.round()
    assert store.state(first) == ("PLACED", "holds-v2")
    second = store.add_request("second")
    await scheduler.round()
    assert store.state(second) == ("PLACED", "holds-v2")
    assert store.called("game_images") == [None]  # read again only when a game was put
    # v4 replaces everything: holding v2 no longer helps, and the cheaper host wins.
    store.images["demo"] = placement.GameImage("4", 40 << 30, {"3": 1 << 30})
    store.end(first)
    scheduler.host_changed("holds-v2")  # a slot there again
    third = store.add_request("third")
    await scheduler.round()
    assert store.called("game_images") == [None, None]
    assert store.state(third) == ("PLACED", "cold")
