"""Patron time through the real broker: warnings on WatchSession, TIME_UP after the grace by the leader's liveness
duty, AddTime postponing the end, other venues refused, bad input named. Thresholds in seconds (BrokerConfig)."""

from __future__ import annotations

import asyncio
import dataclasses

import asyncpg
import grpc
import pytest
from cloudseat.client import BrokerClient
from cloudseat.v1 import common_pb2, session_pb2, venue_pb2
from grpc import aio

from broker.config import BrokerConfig
from broker.patron_time import PatronTimeConfig
from tests.integration.scripted_agent import ScriptedAgent

S = common_pb2.SessionState
C = grpc.StatusCode


@pytest.fixture
def broker_config(broker_config: BrokerConfig) -> BrokerConfig:
    return dataclasses.replace(
        broker_config, patron_time=PatronTimeConfig(warnings_s=(3.0, 1.0), grace_s=1.0)
    )


async def _streaming(world: BrokerClient, agent: ScriptedAgent, seat: str, paid_s: int) -> str:
    started = await world.start_session("cafe", seat, "demo", paid_time_s=paid_s)
    assert started.session.paid_time_s == paid_s and not started.session.HasField("paid_until")
    sid = started.session.session_id
    await world.wait_for(sid, S.SESSION_STATE_READY)
    await agent.link.report(sid, S.SESSION_STATE_STREAMING)
    await world.wait_for(sid, S.SESSION_STATE_STREAMING)
    return sid


async def _updates_until_end(world: BrokerClient, sid: str) -> list[session_pb2.SessionUpdate]:
    out = []
    async with asyncio.timeout(30):
        async for update in world.watch(sid):
            out.append(update)
    return out


async def test_warnings_then_time_up_after_the_grace(world: BrokerClient, db_url: str) -> None:
    async with ScriptedAgent(world, "host-1") as agent:
        sid = await _streaming(world, agent, "s1", 4)
        got = await world.sessions.GetSession(session_pb2.GetSessionRequest(session_id=sid))
        # The deadline is the database's: streaming_at + the paid time.
        s = got.session
        assert s.paid_until.ToMicroseconds() - s.streaming_at.ToMicroseconds() == 4_000_000
        updates = await _updates_until_end(world, sid)
        assert await asyncio.wait_for(agent.stopped.get(), 5) == sid

    first = updates[0]
    assert first.session.state == S.SESSION_STATE_STREAMING and first.HasField("time_left_s")
    assert first.time_left_s <= 4
    warnings = [(u.time_warning_s, list(u.warnings)) for u in updates if u.time_warning_s]
    assert warnings == [(3, ["3 seconds left"]), (1, ["1 second left"])]
    up = [u for u in updates if u.time_up]
    assert up and up[0].time_left_s == 0 and up[0].warnings[0].startswith("paid time is up")
    last = updates[-1].session
    assert last.state == S.SESSION_STATE_ENDED and last.end_reason == common_pb2.END_REASON_TIME_UP
    # Ended only after the grace, by the database clock.
    assert last.ended_at.ToMicroseconds() >= last.paid_until.ToMicroseconds() + 1_000_000
    conn = await asyncpg.connect(db_url)
    try:
        ended_by = await conn.fetchval(
            "SELECT actor FROM audit_log WHERE action = 'session.end' AND target = $1", f"session:{sid}"
        )
    finally:
        await conn.close()
    assert ended_by == "system:patron-time"


async def test_add_time_extends_and_postpones_the_end(world: BrokerClient, db_url: str) -> None:
    async with ScriptedAgent(world, "host-1") as agent:
        sid = await _streaming(world, agent, "s1", 2)
        before = (await world.sessions.GetSession(session_pb2.GetSessionRequest(session_id=sid))).session
        updates: list[session_pb2.SessionUpdate] = []
        async with asyncio.timeout(30):
            async for update in world.watch(sid):
                updates.append(update)
                if update.time_up and len([u for u in updates if u.time_up]) == 1:
                    # In the grace: the venue sells the patron 3 more seconds.
                    added = await world.add_time("cafe", sid, 3)
                    assert added.session.paid_time_s == 5 and added.session.state == S.SESSION_STATE_STREAMING
                    assert added.HasField("time_left_s")
        last = updates[-1].session

    assert last.paid_time_s == 5
    assert last.paid_until.ToMicroseconds() - before.paid_until.ToMicroseconds() == 3_000_000
    assert last.end_reason == common_pb2.END_REASON_TIME_UP
    assert last.ended_at.ToMicroseconds() >= last.paid_until.ToMicroseconds() + 1_000_000
    # After the reprieve the watcher heard the time again, and was warned again at 1 s.
    reprieve = next(i for i, u in enumerate(updates) if u.time_up)
    assert any(not u.time_up and u.time_left_s > 0 for u in updates[reprieve + 1 :])
    assert [u.time_warning_s for u in updates[reprieve + 1 :] if u.time_warning_s] == [1]
    conn = await asyncpg.connect(db_url)
    try:
        audit = await conn.fetch(
            "SELECT actor, tenant, detail FROM audit_log WHERE action = 'session.add_time' AND target = $1",
            f"session:{sid}",
        )
    finally:
        await conn.close()
    assert len(audit) == 1 and "seconds" in audit[0]["detail"] and "paid_time_s" in audit[0]["detail"]


async def test_add_time_refusals_and_bad_input(world: BrokerClient, db_url: str) -> None:
    await world.venues.CreateVenue(venue_pb2.CreateVenueRequest(venue_id="rival", name="Rival"))
    async with ScriptedAgent(world, "host-1"):
        limited = await world.start_session("cafe", "s1", "demo", paid_time_s=600)
        unlimited = await world.start_session("cafe", "s2", "demo")
        sid = limited.session.session_id
        # Before STREAMING: time added, the clock not started.
        added = await world.add_time("cafe", sid, 60)
        assert added.session.paid_time_s == 660 and not added.HasField("time_left_s")
        assert not added.session.HasField("paid_until")

        conn = await asyncpg.connect(db_url)
        try:
            audited = await conn.fetchval("SELECT count(*) FROM audit_log")
            cases = [
                (lambda: world.add_time("rival", sid, 60), C.NOT_FOUND, "session_id"),
                (lambda: world.add_time("cafe", unlimited.session.session_id, 60), C.FAILED_PRECONDITION, "session_id"),
                (lambda: world.add_time("cafe", sid, 0), C.INVALID_ARGUMENT, "seconds"),
                (lambda: world.add_time("cafe", sid, 86_401), C.INVALID_ARGUMENT, "seconds"),
                (lambda: world.add_time("cafe", "not-a-uuid", 60), C.INVALID_ARGUMENT, "session_id"),
                (lambda: world.add_time("", sid, 60), C.INVALID_ARGUMENT, "venue_id"),
                (
                    lambda: world.start_session("cafe", "s3", "demo", paid_time_s=7 * 86_400 + 1),
                    C.INVALID_ARGUMENT,
                    "paid_time_s",
                ),
            ]  # fmt: skip
            for call, code, field in cases:
                with pytest.raises(aio.AioRpcError) as refused:
                    await call()
                assert refused.value.code() is code, refused.value.details()
                assert (refused.value.details() or "").startswith(field), refused.value.details()
            # Rejected requests write nothing.
            assert await conn.fetchval("SELECT count(*) FROM audit_log") == audited
            assert (
                await conn.fetchval(
                    "SELECT paid_time_s FROM sessions WHERE session_id = $1", limited.session.session_id
                )
                == 660
            )
        finally:
            await conn.close()

        ended = await world.end_session(sid, limited.session_token)
        with pytest.raises(aio.AioRpcError) as refused:
            await world.add_time("cafe", ended.session_id, 60)
        assert refused.value.code() is C.FAILED_PRECONDITION
