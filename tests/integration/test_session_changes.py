"""What the database tells listeners of session changes (channel cloudseat_sessions, migration 0021): each statement's
changes, in JSON arrays that fit a notification, each change once; nothing from a statement that failed, and nothing
for an update that changed nothing a listener acts on. And the `lifecycle` benchmark runs sessions through their
whole life on it."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import pytest
from cloudseat import errors

from broker.lifecycle import State
from broker.store import database, hosts, placement, session_batches
from broker.store import sessions as session_store
from tests.integration import faults


async def _listening(db_url: str) -> tuple[asyncpg.Connection, list[str]]:
    heard: list[str] = []
    conn = await asyncpg.connect(db_url)
    await conn.add_listener("cloudseat_sessions", lambda _c, _pid, _ch, payload: heard.append(payload))
    return conn, heard


async def _settle(heard: list[str], want: int) -> None:
    """Notifications arrive after the commit; wait (bounded) until at least `want` changes were heard."""
    for _ in range(200):
        if sum(len(json.loads(p)) for p in heard) >= want:
            return
        await asyncio.sleep(0.01)


async def _start_many(pool: asyncpg.Pool, seats: list[str]) -> list[uuid.UUID]:
    batches = session_batches.SessionBatches(pool)
    started = await asyncio.gather(*(
        session_store.start(pool, session_store.StartRequest(f"r-{s}", "cafe", s, "demo"), batches=batches)
        for s in seats
    ))
    return [row["session_id"] for row, _ in started]


async def test_a_big_statement_is_told_in_chunks_that_fit_and_name_each_change_once(db_url: str) -> None:
    pool = await database.create_pool(db_url, 1, 4)
    conn, heard = await _listening(db_url)
    try:
        seats = await faults.seed_store(pool, seats=120)
        for i in range(30):
            await hosts.register(pool, faults.registration(f"h{i:02d}", epoch=1, slots=4))
        ids = await _start_many(pool, seats)
        await _settle(heard, len(ids))
        heard.clear()

        placed = await placement.commit(
            pool, [(sid, f"h{i // 4:02d}", "site-near", 5, 1_000) for i, sid in enumerate(ids)]
        )
        assert len(placed) == len(ids)
        await _settle(heard, len(ids))
        assert len(heard) > 1  # 120 changes of a few hundred bytes do not fit one notification
        assert all(len(p.encode()) < 8000 for p in heard)
        changes = [c for p in heard for c in json.loads(p)]
        assert sorted(c["session_id"] for c in changes) == sorted(str(s) for s in ids)
        assert {(c["state"], c["seq"]) for c in changes} == {("PLACED", 2)}
        assert all(c["host_id"] and c["waited_ms"] is not None for c in changes)
    finally:
        await conn.close()
        await pool.close()


async def test_a_failed_statement_tells_nothing_and_leaves_nothing_for_the_next(db_url: str) -> None:
    pool = await database.create_pool(db_url, 1, 1)  # one connection: the next statement is on the same one
    conn, heard = await _listening(db_url)
    try:
        seats = await faults.seed_store(pool, seats=6)
        await hosts.register(pool, faults.registration("h-small", epoch=1, slots=2))
        await hosts.register(pool, faults.registration("h-big", epoch=1, slots=8))
        ids = await _start_many(pool, seats)
        await _settle(heard, len(ids))
        heard.clear()

        # Three sessions onto a two-slot host: the slot check refuses the whole statement mid-way, after some of
        # its rows had gathered their changes.
        with pytest.raises(errors.FailedPrecondition):
            await placement.commit(pool, [(sid, "h-small", "site-near", 5, 1_000) for sid in ids[:3]])
        # The same connection's next statement tells only its own change.
        placed = await placement.commit(pool, [(ids[3], "h-big", "site-near", 5, 1_000)])
        assert placed == [ids[3]]
        await _settle(heard, 1)
        await asyncio.sleep(0.1)  # anything wrongly left over would have arrived by now
        changes = [c for p in heard for c in json.loads(p)]
        assert [(c["session_id"], c["state"]) for c in changes] == [(str(ids[3]), "PLACED")]

        # An update that moves nothing a listener acts on tells nothing.
        heard.clear()
        await pool.execute("UPDATE sessions SET end_detail = end_detail")
        await asyncio.sleep(0.2)
        assert heard == []
    finally:
        await conn.close()
        await pool.close()


async def test_the_reported_steps_are_each_recorded_and_told_once(db_url: str) -> None:
    pool = await database.create_pool(db_url, 1, 4)
    conn, heard = await _listening(db_url)
    try:
        seats = await faults.seed_store(pool, seats=3)
        await hosts.register(pool, faults.registration("h1", epoch=1, slots=4))
        ids = await _start_many(pool, seats)
        await placement.commit(pool, [(sid, "h1", "site-near", 5, 1_000) for sid in ids])
        await _settle(heard, 2 * len(ids))
        heard.clear()

        outcomes = await hosts.advance_reported(pool, [(sid, "h1", State.STREAMING) for sid in ids])
        assert outcomes == [None] * len(ids)
        await _settle(heard, 3 * len(ids))
        told = sorted((c["session_id"], c["seq"], c["state"]) for p in heard for c in json.loads(p))
        assert told == sorted(
            (str(sid), seq, state)
            for sid in ids
            for seq, state in ((3, "STARTING"), (4, "READY"), (5, "STREAMING"))
        )
        history = await session_store.history(pool, ids[0])
        assert [r["to_state"] for r in history] == ["PENDING", "PLACED", "STARTING", "READY", "STREAMING"]
        # The metering cursor and the start's audit row are written by the same trigger.
        assert await pool.fetchval("SELECT count(*) FROM metering_cursor WHERE session_id = ANY($1)", ids) == 3
        assert await pool.fetchval(
            "SELECT count(*) FROM audit_log WHERE action = 'session.start' AND target = ANY($1)",
            [f"session:{s}" for s in ids],
        ) == 3
    finally:
        await conn.close()
        await pool.close()


async def test_the_lifecycle_benchmark_runs_whole_lives_beside_its_baseline() -> None:
    from loadtest import lifecycle

    cfg = lifecycle.LifecycleConfig(sizes=(2, 5), seconds=0.3, phases=1)
    result = await lifecycle.run(cfg)
    assert [(r["way"], r["size"]) for r in result["runs"]] == [("bare", 2), ("life", 2), ("bare", 5), ("life", 5)]
    assert all(r["sessions"] >= r["size"] for r in result["runs"])
    for size in ("2", "5"):
        fig = result["sizes"][size]
        assert fig["sessions_per_s"] > 0 and fig["pg_cpu_ms_per_session"] >= 0


async def test_an_agents_draining_flag_is_told_on_the_hosts_channel_once_per_change(db_url: str) -> None:
    pool = await database.create_pool(db_url, 1, 2)
    heard: list[dict[str, object]] = []
    conn = await asyncpg.connect(db_url)
    await conn.add_listener("cloudseat_hosts", lambda _c, _pid, _ch, payload: heard.append(json.loads(payload)))
    try:
        await faults.seed_store(pool, seats=1)
        link = hosts.Link(uuid.uuid4(), "replica-1", None)
        await hosts.register(pool, faults.registration("h1", epoch=1, slots=2), link)
        await asyncio.sleep(0.1)
        heard.clear()
        for draining in (False, True, True, False):  # only the two changes are told
            assert await hosts.host_reports(pool, [("h1", link.link_id, 0.5, 0.5, draining)]) == {link.link_id}
        for _ in range(100):
            if len(heard) >= 2:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert heard == [{"host_id": "h1", "draining": True}, {"host_id": "h1", "draining": False}]
    finally:
        await conn.close()
        await pool.close()
