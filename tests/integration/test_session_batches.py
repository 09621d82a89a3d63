"""Starts and ends grouped per process (broker.store.session_batches) on a real PostgreSQL: each caller gets the
answer it would have got alone — its row, a retry's earlier session, its own error — and each row names who asked."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from cloudseat import errors

from broker.lifecycle import EndReason
from broker.store import audit, database, session_batches
from broker.store import sessions as session_store
from tests.integration import faults


async def _start(
    pool: asyncpg.Pool, batches: session_batches.SessionBatches, req: session_store.StartRequest, who: str
) -> tuple[asyncpg.Record, bool] | errors.CloudseatError:
    audit.set_actor(audit.Actor(who, "venue:cafe", f"peer-{who}"))  # this task's own context
    try:
        return await session_store.start(pool, req, batches=batches)
    except errors.CloudseatError as exc:
        return exc


async def test_starts_of_one_moment_go_in_one_statement_and_each_gets_its_own_answer(db_url: str) -> None:
    pool = await database.create_pool(db_url, 2, 4)
    try:
        await faults.seed_store(pool, seats=8)
        batches = session_batches.SessionBatches(pool)
        fresh = [session_store.StartRequest(f"r{i}", "cafe", f"s00{i}", "demo") for i in range(1, 6)]
        again = session_store.StartRequest("r1", "cafe", "s001", "demo")  # the same call, asked twice at once
        busy_seat = session_store.StartRequest("other", "cafe", "s002", "demo")
        no_seat = session_store.StartRequest("r7", "cafe", "s999", "demo")
        calls = [*fresh, again, busy_seat, no_seat]
        answers = await asyncio.gather(*(_start(pool, batches, r, f"caller-{i}") for i, r in enumerate(calls)))
        # An unknown game fails a grouped statement as a whole: each of its starts then learns its own answer.
        no_game = session_store.StartRequest("r6", "cafe", "s006", "nope")
        late = session_store.StartRequest("r8", "cafe", "s007", "demo")
        answers += await asyncio.gather(*(_start(pool, batches, r, "caller-late") for r in (no_game, late)))

        assert batches.starts.batches == 2 and batches.starts.writes == len(calls) + 2
        for req, answer in zip(fresh, answers, strict=False):
            assert not isinstance(answer, errors.CloudseatError)
            row, created = answer
            assert created and row["state"] == "PENDING" and row["request_id"] == req.request_id
        first = answers[0]
        assert not isinstance(first, errors.CloudseatError)
        twice = answers[5]
        assert not isinstance(twice, errors.CloudseatError)
        assert twice[0]["session_id"] == first[0]["session_id"] and not twice[1]
        assert isinstance(answers[6], errors.FailedPrecondition) and "seat_id" in answers[6].message
        assert isinstance(answers[7], errors.NotFound) and answers[7].message.startswith("seat_id:")
        assert isinstance(answers[8], errors.NotFound) and answers[8].message.startswith("game_id:")
        assert not isinstance(answers[9], errors.CloudseatError) and answers[9][1]
        assert await pool.fetchval("SELECT count(*) FROM sessions") == len(fresh) + 1
        # Every start is audited as its own caller's, from its own peer.
        audited = {
            r["target"]: (r["actor"], r["peer"])
            for r in await pool.fetch(
                "SELECT target, actor, peer FROM audit_log WHERE action = 'session.start'"
            )
        }
        for i, answer in enumerate(answers[:5]):
            assert not isinstance(answer, errors.CloudseatError)
            assert audited[f"session:{answer[0]['session_id']}"] == (f"caller-{i}", f"peer-caller-{i}")
    finally:
        await pool.close()


async def test_ends_of_one_moment_go_in_one_statement(db_url: str) -> None:
    pool = await database.create_pool(db_url, 2, 4)
    try:
        await faults.seed_store(pool, seats=4)
        rows = [
            (await session_store.start(pool, session_store.StartRequest(f"r{i}", "cafe", f"s00{i}", "demo")))[
                0
            ]
            for i in range(1, 5)
        ]
        batches = session_batches.SessionBatches(pool)
        asked = [*rows, rows[0]]  # one ended twice at once

        async def end(row: asyncpg.Record) -> asyncpg.Record:
            return await session_store.end(
                pool, row["session_id"], EndReason.ENDED_BY_PATRON, "bye", current=row, batches=batches
            )

        ended = await asyncio.gather(*(end(row) for row in asked))
        assert [e["state"] for e in ended] == ["ENDED"] * len(asked)
        assert [e["session_id"] for e in ended] == [r["session_id"] for r in asked]
        assert {e["end_reason"] for e in ended} == {EndReason.ENDED_BY_PATRON.value}
        # The second end of the same session read it again and found it ENDED: nothing more to write.
        assert (batches.ends.batches, batches.ends.writes) == (1, len(asked))
        assert await pool.fetchval("SELECT count(*) FROM sessions WHERE state = 'ENDED'") == 4
    finally:
        await pool.close()


async def test_a_grouped_start_that_waits_too_long_for_the_database_is_refused_and_writes_nothing(
    db_url: str,
) -> None:
    pool = await database.create_pool(db_url, 1, 1)
    try:
        await faults.seed_store(pool, seats=2)
        batches = session_batches.SessionBatches(pool, db_wait_s=0.05)
        request = session_store.StartRequest("busy-1", "cafe", "s001", "demo")
        held = await pool.acquire()  # the only connection: the batch waits for it
        try:
            with pytest.raises(errors.ResourceExhausted, match="database is busy") as refused:
                await session_store.start(pool, request, busy_after_s=0.05, batches=batches)
            assert refused.value.retry_after_ms == session_batches.BUSY_RETRY_MS
            assert await held.fetchval("SELECT count(*) FROM sessions") == 0
        finally:
            await pool.release(held)
        row, created = await session_store.start(pool, request, busy_after_s=0.05, batches=batches)
        assert created and row["state"] == "PENDING"
    finally:
        await pool.close()


async def test_the_commits_benchmark_measures_both_ways_in_alternating_phases(db_url: str) -> None:
    from loadtest import commits

    cfg = commits.CommitsConfig(callers=6, phase_s=0.3, rounds=2, connections=2, database_url=db_url)
    result = await commits.run(cfg)
    assert [p["way"] for p in result["phases"]] == ["single", "grouped", "single", "grouped"]
    assert all(p["sessions_per_s"] > 0 for p in result["phases"])
    ratio = result["grouped_sessions_per_s"] / result["single_sessions_per_s"]
    assert abs(result["grouped_vs_single"] - ratio) < 0.02 * ratio  # (the figures are rounded)
    assert result["starts_per_batch"] >= 1 and result["ends_per_batch"] >= 1
