"""An agent speaks for its own host's sessions and no other's: every kind of agent message that names a session
(heartbeat stream stats, session events forward and ENDED, the sessions a registration says it runs), sent on host A's
own link about a session on host B, is refused and writes nothing.

The real broker on a fresh database (the `world` fixture), two scripted agents over real gRPC. Each check sends the
foreign report first and then something that the broker can only have applied after it (host B's own stats, or a
goodbye, which the broker answers only once everything the link sent before it has been applied), so "nothing was
written" is read after the broker has dealt with the foreign report, not before.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from cloudseat.client import BrokerClient
from cloudseat.v1 import agent_pb2, common_pb2, session_pb2

from broker.server import Broker
from tests.integration.scripted_agent import ScriptedAgent

pytestmark = pytest.mark.slow
S = common_pb2.SessionState


@pytest.fixture
async def victim(world: BrokerClient) -> AsyncIterator[ScriptedAgent]:
    """Host B (site-near), online first so the sessions started here are placed on it."""
    async with ScriptedAgent(world, "host-b") as agent:
        yield agent


async def _session(world: BrokerClient, seat: str, state: int, victim: ScriptedAgent) -> str:
    sid = (await world.start_session("cafe", seat, "demo")).session.session_id
    await world.wait_for(sid, S.SESSION_STATE_READY)
    if state == S.SESSION_STATE_STREAMING:
        await victim.link.report(sid, S.SESSION_STATE_STREAMING)
        await world.wait_for(sid, S.SESSION_STATE_STREAMING)
    return sid


async def _row(pool: asyncpg.Pool, sid: str) -> asyncpg.Record:
    return await pool.fetchrow(
        "SELECT state, host_id, end_reason, seq FROM sessions WHERE session_id = $1", uuid.UUID(sid)
    )


def _stats(sid: str, rtt_ms: float, fps: float) -> agent_pb2.SessionStats:
    return agent_pb2.SessionStats(
        session_id=sid, fps_sent=fps, bitrate_kbps=5000, rtt_ms=rtt_ms, loss_pct=0, encode_ms=2
    )


async def test_stream_stats_for_another_hosts_session_are_dropped(
    world: BrokerClient, broker: Broker, victim: ScriptedAgent
) -> None:
    assert broker.pool is not None and broker.links is not None
    sid = await _session(world, "s1", S.SESSION_STATE_STREAMING, victim)
    async with ScriptedAgent(world, "host-a") as attacker:
        attacker.heartbeating = False
        stats = broker._stats
        assert stats is not None
        before = stats.reports
        await attacker.link.heartbeat(cpu_load=0.1, sessions=[_stats(sid, rtt_ms=999, fps=1)])
        async with asyncio.timeout(10):
            while stats.reports == before:  # recorded: it goes in this flush or an earlier one than B's below
                await asyncio.sleep(0.01)
        victim.heartbeating = False
        await victim.link.heartbeat(cpu_load=0.1, sessions=[_stats(sid, rtt_ms=7, fps=60)])
        async with asyncio.timeout(10):
            while True:
                shown = await world.sessions.GetSession(session_pb2.GetSessionRequest(session_id=sid))
                if shown.session.HasField("stream_stats") and shown.session.stream_stats.rtt_ms > 0:
                    break
                await asyncio.sleep(0.05)
    # What GetSession shows and what the SLA judges are host B's figures alone.
    assert shown.session.stream_stats.rtt_ms == 7 and shown.session.stream_stats.fps_sent == 60
    minutes = await broker.pool.fetch(
        "SELECT samples, rtt_ms_sum FROM stream_minutes WHERE session_id = $1", uuid.UUID(sid)
    )
    assert sum(m["samples"] for m in minutes) == 1 and sum(m["rtt_ms_sum"] for m in minutes) == 7


async def test_session_events_for_another_hosts_session_change_nothing(
    world: BrokerClient, broker: Broker, victim: ScriptedAgent
) -> None:
    assert broker.pool is not None
    ready = await _session(world, "s1", S.SESSION_STATE_READY, victim)
    streaming = await _session(world, "s2", S.SESSION_STATE_STREAMING, victim)
    before = {sid: await _row(broker.pool, sid) for sid in (ready, streaming)}
    # The attacker reads what the broker sends (its site's list comes at registration), as every agent does: a
    # stream whose messages nobody reads never delivers its status, and the goodbye below waits for that.
    async with ScriptedAgent(world, "host-a", site_id="site-far") as attacker:
        attacker.heartbeating = False
        # A move forward, and an end (both reasons an agent may give), each about host B's sessions.
        await attacker.link.report(ready, S.SESSION_STATE_STREAMING)
        await attacker.link.report(streaming, S.SESSION_STATE_ENDED, common_pb2.END_REASON_FAILED, "forged")
        await attacker.link.report(ready, S.SESSION_STATE_ENDED, common_pb2.END_REASON_ENDED_BY_PATRON)
        # The goodbye is answered once everything sent before it has been applied.
        await attacker.link.finish()
    for sid, row in before.items():
        assert await _row(broker.pool, sid) == row, sid
    ends = await broker.pool.fetchval("SELECT count(*) FROM audit_log WHERE action = 'session.end'")
    assert ends == 0


async def test_a_registration_claiming_another_hosts_session_changes_nothing(
    world: BrokerClient, broker: Broker, victim: ScriptedAgent
) -> None:
    assert broker.pool is not None
    ready = await _session(world, "s1", S.SESSION_STATE_READY, victim)
    before = await _row(broker.pool, ready)
    # Host A comes up saying it runs host B's session, streaming.
    async with ScriptedAgent(world, "host-a", running=((ready, S.SESSION_STATE_STREAMING),)) as attacker:
        attacker.heartbeating = False
        # The broker's answer: stop it, it is not yours.
        async with asyncio.timeout(10):
            assert await attacker.stopped.get() == ready
        await attacker.link.finish()
    assert await _row(broker.pool, ready) == before
    # Host B still holds it, and is still asked to run it.
    shown = await world.sessions.GetSession(session_pb2.GetSessionRequest(session_id=ready))
    assert shown.session.host_id == "host-b" and shown.session.state == S.SESSION_STATE_READY
