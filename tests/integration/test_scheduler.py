"""The scheduler against a real PostgreSQL: atomic batches, no double placement, re-planning, loosening caps."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid

import asyncpg
import pytest
from cloudseat import errors
from cloudseat.client import BrokerClient
from cloudseat.v1 import common_pb2, venue_pb2

from broker import metering, placement
from broker.leader import Leadership
from broker.scheduler import Scheduler
from broker.scheduler_store import Placement
from broker.store import database, hosts, sessions
from broker.store import fleet as fleet_store
from broker.store import games as game_store
from broker.store import placement as placement_store
from broker.store import venues as venue_store

S = common_pb2.SessionState


@pytest.fixture
async def pool(db_url: str):  # type: ignore[no-untyped-def]
    p = await database.create_pool(db_url, 1, 6)
    await fleet_store.create_provider(p, "prov", "P")
    await fleet_store.create_site(p, "site-a", "prov", "A", "")
    await game_store.put_game(p, "demo", "Demo", 0)
    await venue_store.create_venue(p, "cafe", "Cafe")
    await venue_store.put_zone(p, "cafe", "std", "720P60", 30)
    for i in range(12):
        await venue_store.put_seat(p, "cafe", f"s{i}", "std")
    await venue_store.report_latency(p, "cafe", [("site-a", 5)])
    yield p
    await p.close()


async def _host(pool: asyncpg.Pool, host_id: str, slots: int) -> None:
    await hosts.register(
        pool, hosts.Registration(host_id, "prov", "site-a", 1, "t", "rtx", slots, 1_000_000, ("demo",))
    )


async def _pending(pool: asyncpg.Pool, n: int) -> list[uuid.UUID]:
    out = []
    for i in range(n):
        row, _ = await sessions.start(pool, sessions.StartRequest(f"r{i}", "cafe", f"s{i}", "demo"))
        out.append(row["session_id"])
    return out


async def _states(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch("SELECT state, count(*) AS n FROM sessions GROUP BY state")
    return {r["state"]: r["n"] for r in rows}


async def test_a_batch_commits_whole_or_not_at_all(pool: asyncpg.Pool) -> None:
    await _host(pool, "h1", 1)
    await _host(pool, "h2", 3)
    sids = await _pending(pool, 3)
    # Two sessions on a one-slot host: the database refuses the batch, including the valid placement on h2.
    bad = [(sids[0], "h1", "site-a", 5, 1), (sids[1], "h1", "site-a", 5, 1), (sids[2], "h2", "site-a", 5, 1)]
    with pytest.raises(errors.FailedPrecondition):
        await placement_store.commit(pool, bad)
    assert await _states(pool) == {"PENDING": 3}
    assert await pool.fetchval("SELECT sum(free_slots) FROM hosts") == 4
    good = [(sids[0], "h1", "site-a", 5, 1), (sids[1], "h2", "site-a", 5, 1), (sids[2], "h2", "site-a", 5, 1)]
    assert sorted(await placement_store.commit(pool, good)) == sorted(sids)
    assert await pool.fetchval("SELECT sum(free_slots) FROM hosts") == 1


async def test_the_scheduler_store_takes_and_gives_session_ids_as_text(pool: asyncpg.Pool) -> None:
    """The scheduler holds session ids as text (placement.RequestId) from the pending batch to the commit: asyncpg
    encodes text for the uuid parameters, and the store turns what it reads back into text."""
    await _host(pool, "h1", 2)
    sids = await _pending(pool, 2)
    store = placement_store.PostgresSchedulerStore(pool)
    pending = await store.pending_batch(10)
    assert [p.session_id for p in pending] == [str(s) for s in sids]
    first, second = pending
    placed = await store.commit([Placement(first.session_id, "h1", "site-a", 5, 1_000_000)], {})
    assert placed == [first.session_id]
    await store.set_pending_reasons({second.session_id: placement.PendingReason.QUEUED})
    assert (await sessions.get(pool, sids[1]))["pending_reason"] == "QUEUED"
    [h1] = await store.hosts_by_id(["h1", "gone"])
    assert (h1.host_id, h1.free_slots, h1.slots, list(h1.games_cached)) == ("h1", 1, 2, ["demo"])


async def test_two_schedulers_never_place_one_slot_twice(pool: asyncpg.Pool) -> None:
    await _host(pool, "h1", 2)
    await _host(pool, "h2", 3)
    await _pending(pool, 12)
    store = placement_store.PostgresSchedulerStore(pool)
    a = Scheduler(store, solver=placement.solve, window_s=0, batch_max=100)
    b = Scheduler(store, solver=placement.greedy.solve, window_s=0, batch_max=100)
    for _ in range(3):
        await asyncio.gather(a.round(), b.round())
    assert await _states(pool) == {"PLACED": 5, "PENDING": 7}
    per_host = await pool.fetch(
        "SELECT h.host_id, h.slots, h.free_slots, count(s.*) AS held FROM hosts h "
        "LEFT JOIN sessions s ON s.host_id = h.host_id AND s.state = 'PLACED' GROUP BY h.host_id"
    )
    for r in per_host:
        assert r["free_slots"] == 0 and r["held"] == r["slots"]


async def test_only_one_replica_holds_the_placement_lease(db_url: str) -> None:
    leading: list[str] = []

    def duties(name: str):  # type: ignore[no-untyped-def]
        async def lead() -> None:
            leading.append(name)
            await asyncio.Event().wait()

        return lambda: [lead()]

    first, second = Leadership(db_url, duties("first")), Leadership(db_url, duties("second"))
    first.start()
    async with asyncio.timeout(5):
        while not first.is_leader:
            await asyncio.sleep(0.05)
    second.start()
    await asyncio.sleep(1.5)
    assert (first.is_leader, second.is_leader) == (True, False)
    await first.close()  # the leader goes; the other takes over on its next try
    async with asyncio.timeout(5):
        while not second.is_leader:
            await asyncio.sleep(0.05)
    await second.close()
    assert leading == ["first", "second"]


async def test_a_refused_commit_re_plans(pool: asyncpg.Pool) -> None:
    await _host(pool, "h1", 1)
    [mine] = await _pending(pool, 1)
    planned, proceed = threading.Event(), threading.Event()
    calls = 0

    def racing_solver(problem: placement.Problem) -> placement.Solution:
        nonlocal calls
        calls += 1
        solution = placement.solve(problem)
        if calls == 1:  # another writer takes the slot between our read and our commit
            planned.set()
            proceed.wait(10)
        return solution

    scheduler = Scheduler(
        placement_store.PostgresSchedulerStore(pool), solver=racing_solver, window_s=0, batch_max=10
    )
    round_ = asyncio.create_task(scheduler.round())
    await asyncio.to_thread(planned.wait, 10)
    row, _ = await sessions.start(pool, sessions.StartRequest("other", "cafe", "s11", "demo"))
    await placement_store.commit(pool, [(row["session_id"], "h1", "site-a", 5, 1)])
    proceed.set()
    await asyncio.wait_for(round_, 10)
    assert scheduler.replans == 1 and calls == 2
    again = await sessions.get(pool, mine)
    assert again["state"] == "PENDING" and again["pending_reason"] == "NO_CAPACITY_WITHIN_CAP"


async def test_a_waiting_request_is_placed_once_its_target_loosens(world: BrokerClient) -> None:
    from tests.integration.scripted_agent import ScriptedAgent

    # The only host is 20 ms away in a 30 ms zone: outside the first target (50% = 15 ms), inside the second
    # (75% = 22 ms, after 2 s of waiting).
    await world.venues.ReportLatency(
        venue_pb2.ReportLatencyRequest(
            venue_id="cafe", samples=[venue_pb2.LatencySample(site_id="site-far", rtt_ms=20)]
        )
    )
    async with ScriptedAgent(world, "far-1", site_id="site-far"):
        started = await world.start_session("cafe", "s1", "demo")
        reasons = []
        async with asyncio.timeout(15):
            async for u in world.watch(started.session.session_id):
                reasons.append(u.session.pending_reason)
                if u.session.state == S.SESSION_STATE_READY:
                    break
        assert common_pb2.PENDING_REASON_WAITING_FOR_LOOSER_CAP in reasons
        assert u.session.host_id == "far-1" and u.session.latency_ms == 20


async def test_the_scheduler_store_reads_prices_as_set_and_stamps_each_set(pool: asyncpg.Pool) -> None:
    from broker.store import fleet as fleet_store

    await _host(pool, "h1", 2)
    store = placement_store.PostgresSchedulerStore(pool)
    now, empty = await store.price_stamp()
    assert now.tzinfo is not None and await store.prices() == []
    [h1] = await store.hosts_by_id(["h1"])
    assert h1.declared_price_micros > 0
    bands = (metering.Band(1080, 120, 2_000_000),)
    await fleet_store.set_price(pool, "site-a", h1.gpu_class, 1_500_000, bands, 480)
    _, first = await store.price_stamp()
    [row] = await store.prices()
    assert (row.site_id, row.gpu_class, row.base_micros, row.utc_offset_minutes) == (
        "site-a", h1.gpu_class, 1_500_000, 480
    )  # fmt: skip
    assert metering.Schedule.from_row(row.base_micros, row.bands, row.utc_offset_minutes).bands == bands
    await fleet_store.set_price(pool, "site-a", h1.gpu_class, 1_600_000)
    _, second = await store.price_stamp()
    assert len({empty, first, second}) == 3  # every set moves the stamp


async def test_a_host_whose_link_was_seen_dead_is_told_read_so_and_skipped_by_a_commit(pool: asyncpg.Pool) -> None:
    """Migration 0023: a link seen dead (hosts.links_lost, many in one statement) is told on cloudseat_hosts, the
    scheduler's reads say so, and a commit planned before skips the host; a reconnect clears it."""
    link = hosts.Link(uuid.uuid4(), "replica-1", None)
    await hosts.register(
        pool, hosts.Registration("h1", "prov", "site-a", 1, "t", "rtx", 2, 1_000_000, ("demo",)), link
    )
    await _host(pool, "h2", 2)
    sids = await _pending(pool, 2)
    told: asyncio.Queue[str] = asyncio.Queue()
    listener = await pool.acquire()
    def hear(*args: object) -> None:
        told.put_nowait(str(args[3]))

    await listener.add_listener("cloudseat_hosts", hear)
    try:
        # h2's entry names a link that is not its own: a stale report of an old connection changes nothing.
        await hosts.links_lost(pool, [("h1", link.link_id), ("h2", uuid.uuid4())])
        assert json.loads(await asyncio.wait_for(told.get(), 5)) == {"host_id": "h1", "link_lost": True}
        store = placement_store.PostgresSchedulerStore(pool)
        assert {r.host_id: r.link_lost for r in await store.online_hosts()} == {"h1": True, "h2": False}
        assert [r.link_lost for r in await store.hosts_by_id(["h1"])] == [True]
        planned = [
            Placement(str(sids[0]), "h1", "site-a", 5, 1_000_000),
            Placement(str(sids[1]), "h2", "site-a", 5, 1_000_000),
        ]
        assert await store.commit(planned, {}) == [str(sids[1])]
        assert (await sessions.get(pool, sids[0]))["state"] == "PENDING"
        # The agent comes back on a new connection: the host is usable again.
        await hosts.register(
            pool,
            hosts.Registration("h1", "prov", "site-a", 1, "t", "rtx", 2, 1_000_000, ("demo",)),
            hosts.Link(uuid.uuid4(), "replica-1", None),
        )
        assert [r.link_lost for r in await store.hosts_by_id(["h1"])] == [False]
        assert await store.commit(planned[:1], {}) == [str(sids[0])]
    finally:
        await listener.remove_listener("cloudseat_hosts", hear)
        await pool.release(listener)
