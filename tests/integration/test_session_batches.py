"""Starts and ends grouped per process (broker.store.session_batches) on a real PostgreSQL: each caller gets the
answer it would have got alone — its row, a retry's earlier session, its own error — and each row names who asked."""

from __future__ import annotations

import asyncio
import datetime as dt

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


async def test_resumes_go_in_the_grouped_statement_and_each_gets_its_own_answer(db_url: str) -> None:
    pool = await database.create_pool(db_url, 2, 4)
    try:
        await faults.seed_store(pool, seats=6)
        batches = session_batches.SessionBatches(pool)
        lost = {}
        for seat in ("s001", "s002", "s003"):
            row, _ = await session_store.start(
                pool, session_store.StartRequest(f"first-{seat}", "cafe", seat, "demo", paid_time_s=1800)
            )
            lost[seat] = row
        # Their host was lost (as mark_lost ends them), s003's by the seat's own doing.
        await pool.execute(
            "UPDATE sessions SET state = 'ENDED', end_reason = CASE seat_id WHEN 's003' THEN 'ENDED_BY_PATRON' "
            "ELSE 'HOST_LOST' END, end_detail = 'test' WHERE session_id = ANY($1::uuid[])",
            [r["session_id"] for r in lost.values()],
        )

        def resume(request_id: str, seat: str, of: str, token: str | None = None) -> session_store.StartRequest:
            ref = session_store.ResumeRef(lost[of]["session_id"], token or lost[of]["token"])
            return session_store.StartRequest(request_id, "cafe", seat, "demo", resume=ref)

        good = resume("r-good", "s001", "s001")
        calls = [
            good,
            resume("r-again", "s001", "s001"),  # the same loss, resumed twice at once: one wins
            resume("r-token", "s002", "s002", token="not-the-token"),
            resume("r-seat", "s004", "s002"),  # another seat's session
            resume("r-self", "s003", "s003"),  # ended by the seat: not resumable
            session_store.StartRequest("r-new", "cafe", "s005", "demo"),
        ]
        answers = await asyncio.gather(*(_start(pool, batches, r, f"caller-{i}") for i, r in enumerate(calls)))
        assert batches.starts.batches == 1 and batches.starts.writes == len(calls)

        first, twice, token, seat, self_ended, new = answers
        assert not isinstance(first, errors.CloudseatError)
        row, created = first
        assert created and row["resumes"] == lost["s001"]["session_id"] and row["state"] == "PENDING"
        # Never streamed: the resume keeps all of the lost session's paid time; who asked is recorded.
        assert row["paid_time_s"] == 1800 and row["started_by"] == "caller-0"
        assert isinstance(twice, errors.FailedPrecondition) and "resumed already" in twice.message
        assert isinstance(token, errors.PermissionDenied) and token.message.startswith("resume.session_token")
        assert isinstance(seat, errors.PermissionDenied) and "another seat" in seat.message
        assert isinstance(self_ended, errors.FailedPrecondition) and "ENDED_BY_PATRON" in self_ended.message
        assert not isinstance(new, errors.CloudseatError) and new[0]["resumes"] is None

        # Refused resumes wrote nothing; a retry of the one that won gets its session back.
        assert await pool.fetchval("SELECT count(*) FROM sessions WHERE resumes IS NOT NULL") == 1
        retried = await _start(pool, batches, good, "caller-retry")
        assert not isinstance(retried, errors.CloudseatError)
        assert (retried[0]["session_id"], retried[1]) == (row["session_id"], False)
    finally:
        await pool.close()


async def test_the_paid_time_a_resume_carries_over(db_url: str) -> None:
    """resume_paid_time (migration 0023): unlimited stays unlimited, never streamed keeps all of it, else what was
    left at the end, rounded up, at least 1 s."""
    pool = await database.create_pool(db_url, 1, 1)
    try:
        ended = dt.datetime(2026, 12, 1, 20, 0, tzinfo=dt.UTC)
        cases = [
            (0, None, 0),
            (3600, None, 3600),
            (3600, ended + dt.timedelta(seconds=90.2), 91),
            (3600, ended - dt.timedelta(seconds=5), 1),
        ]
        for paid, until, expected in cases:
            got = await pool.fetchval("SELECT resume_paid_time($1, $2, $3)", paid, until, ended)
            assert got == expected, (paid, until)
    finally:
        await pool.close()


async def test_a_resume_with_a_signed_token_is_grouped_once_the_signature_holds(db_url: str) -> None:
    """Authentication on: the seat's token is a signed patron token for the lost session, verified before the
    grouped statement; a token for another session goes alone and is refused as before."""
    from broker import auth

    key = auth.new_signing_key()
    tokens = auth.SessionTokens(auth.TokenIssuer(key), auth.TokenVerifier([key.public_key()]))
    pool = await database.create_pool(db_url, 2, 4)
    try:
        await faults.seed_store(pool, seats=3)
        batches = session_batches.SessionBatches(pool)
        lost = [
            (await session_store.start(pool, session_store.StartRequest(f"first-{s}", "cafe", s, "demo")))[0]
            for s in ("s001", "s002")
        ]
        await pool.execute(
            "UPDATE sessions SET state = 'ENDED', end_reason = 'HOST_LOST', end_detail = 'test' "
            "WHERE session_id = ANY($1::uuid[])",
            [r["session_id"] for r in lost],
        )

        async def resume(seat: str, of: asyncpg.Record, token_of: asyncpg.Record) -> object:
            ref = session_store.ResumeRef(of["session_id"], tokens.issue(token_of))
            req = session_store.StartRequest(f"r-{seat}", "cafe", seat, "demo", resume=ref)
            try:
                return await session_store.start(pool, req, tokens.check, batches=batches, token_stored=False)
            except errors.CloudseatError as exc:
                return exc

        good, wrong = await asyncio.gather(resume("s001", lost[0], lost[0]), resume("s002", lost[1], lost[0]))
        assert batches.starts.writes == 1  # only the one whose signature holds was grouped
        assert isinstance(good, tuple) and good[1] and good[0]["resumes"] == lost[0]["session_id"]
        assert isinstance(wrong, errors.PermissionDenied) and wrong.message.startswith("resume.session_token")
        assert await pool.fetchval("SELECT count(*) FROM sessions WHERE resumes IS NOT NULL") == 1
    finally:
        await pool.close()
