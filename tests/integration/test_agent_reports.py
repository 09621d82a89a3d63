"""What the real agent link (gpu_agent.link.BrokerLink) puts on the wire, against a stand-in broker that records it
(tests/integration/standin_broker.py), in-process so the host's load can be held still.

Liveness is the link itself, so an idle agent with steady load says nothing after registering; a busy one reports
its load and stream stats every interval; a load move, a change of cached images or of the draining flag is
reported; a moment's session moves go as one report; and leaving, the agent sends what it holds, then Goodbye, then
half-closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator

import pytest
from cloudseat.v1 import agent_pb2, common_pb2

from gpu_agent import inventory
from gpu_agent.config import AgentConfig
from gpu_agent.link import BrokerLink, Outbox
from gpu_agent.media import MediaConfig
from gpu_agent.sessions import SessionManager
from tests.integration.standin_broker import Connection, StandInBroker

S = common_pb2.SessionState
INTERVAL_MS = 200
# Long enough that a session's STARTING and READY fall in one window however slow the machine is.
WINDOW_S = 0.5


@dataclasses.dataclass
class Agent:
    link: BrokerLink
    sessions: SessionManager
    load: list[tuple[float, float]]  # the host's (cpu, gpu) load as inventory.utilisation reads it: [0]
    conn: Connection = dataclasses.field(init=False)  # its connection, as the stand-in recorded it

    @property
    def beats(self) -> list[agent_pb2.Heartbeat]:
        return [m.heartbeat for m in self.conn.of("heartbeat")]


@pytest.fixture
async def standin() -> AsyncIterator[StandInBroker]:
    broker = StandInBroker(heartbeat_interval_ms=INTERVAL_MS)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


@pytest.fixture
async def agent(standin: StandInBroker, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Agent]:
    load = [(0.2, 0.0)]
    monkeypatch.setattr(inventory, "utilisation", lambda: load[0])
    config = AgentConfig(
        host_id="host-1",
        provider_id="prov",
        site_id="site",
        broker=f"127.0.0.1:{standin.port}",
        slots=2,
        gpu_class="cpu",
        price_micros_per_slot_hour=1_000_000,
        insecure=True,
    )
    outbox = Outbox(window_s=WINDOW_S)
    sessions = SessionManager(config, MediaConfig(("127.0.0.1",), codec="vp8"), outbox.put)
    link = BrokerLink(config, sessions, outbox)
    runner = asyncio.create_task(link.run())
    a = Agent(link, sessions, load)
    try:
        await standin.connected(1)
        a.conn = standin.host("host-1")
        yield a
    finally:
        await link.stop(flush_s=1)
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await runner
        await sessions.close()


def _start(sid: str) -> agent_pb2.BrokerMessage:
    return agent_pb2.BrokerMessage(
        start_session=agent_pb2.StartSessionCommand(
            session_id=sid,
            game_id="demo",
            tier=common_pb2.TierSpec(width=320, height=240, fps=30, bitrate_kbps=1000),
            slots=1,
        )
    )


def _events(conn: Connection, sid: str) -> list[agent_pb2.SessionEvent]:
    return [m.session_event for m in conn.of("session_event") if m.session_event.session_id == sid]


async def _quiet_for(agent: Agent, seconds: float) -> list[str]:
    """What the agent sent during the next `seconds`."""
    before = len(agent.conn.received)
    await asyncio.sleep(seconds)
    return agent.conn.kinds()[before:]


async def test_an_idle_agent_with_steady_load_says_nothing_after_registering(agent: Agent) -> None:
    assert await _quiet_for(agent, 6 * INTERVAL_MS / 1000) == []


async def test_a_busy_agent_reports_every_interval_and_falls_silent_when_idle(agent: Agent) -> None:
    sid = str(uuid.uuid4())
    agent.conn.send(_start(sid))
    await agent.conn.until(lambda c: len(_events(c, sid)) >= 1)
    # STARTING and READY came within one window: one report, the furthest.
    assert [e.state for e in _events(agent.conn, sid)] == [S.SESSION_STATE_READY]

    await agent.conn.until(lambda c: len(c.of("heartbeat")) >= 3)
    # With the session's stream stats (once its media is up).
    assert [s.session_id for s in agent.beats[-1].sessions] == [sid]
    assert all({s.session_id for s in hb.sessions} <= {sid} for hb in agent.beats)
    assert [hb.seq for hb in agent.beats] == sorted({hb.seq for hb in agent.beats})

    agent.conn.send(
        agent_pb2.BrokerMessage(
            stop_session=agent_pb2.StopSessionCommand(
                session_id=sid, reason=common_pb2.END_REASON_ENDED_BY_PATRON
            )
        )
    )
    await agent.conn.until(lambda _c: not agent.sessions.sessions)
    await asyncio.sleep(2 * INTERVAL_MS / 1000)  # a beat already on its way may land
    assert await _quiet_for(agent, 6 * INTERVAL_MS / 1000) == []


async def test_load_games_and_draining_changes_are_reported(agent: Agent) -> None:
    agent.load[0] = (0.2, 0.6)
    await agent.conn.until(lambda c: len(c.of("heartbeat")) == 1)
    assert agent.beats[0].gpu_load == pytest.approx(0.6) and not agent.beats[0].sessions
    # Told once: the load holds still at its new figure.
    assert await _quiet_for(agent, 5 * INTERVAL_MS / 1000) == []

    agent.link.images.prewarm("arena", "2", 0)
    await agent.conn.until(lambda c: len(c.of("heartbeat")) == 2)
    assert agent.beats[1].games_cached_changed and "arena@2" in agent.beats[1].games_cached

    agent.sessions.draining = True
    await agent.conn.until(lambda c: len(c.of("heartbeat")) == 3)
    assert agent.beats[2].draining and not agent.beats[2].games_cached_changed
    assert await _quiet_for(agent, 5 * INTERVAL_MS / 1000) == []


async def test_leaving_sends_what_it_holds_then_goodbye_then_half_closes(agent: Agent) -> None:
    sid = str(uuid.uuid4())
    agent.conn.send(_start(sid))
    await agent.conn.until(lambda c: len(_events(c, sid)) >= 1)

    # As SIGTERM does (gpu_agent.cli): drain, hand the sessions back, leave.
    await agent.sessions.shut_down(0)
    await agent.link.stop(flush_s=5)

    assert agent.conn.ended == "half-closed"
    kinds = agent.conn.kinds()
    assert kinds[-1] == "goodbye" and kinds.count("goodbye") == 1
    ended = _events(agent.conn, sid)[-1]
    assert ended.state == S.SESSION_STATE_ENDED and ended.end_reason == common_pb2.END_REASON_HOST_DRAINED


async def test_a_providers_drain_refuses_new_sessions_but_is_not_the_agents_own_draining(agent: Agent) -> None:
    running = str(uuid.uuid4())
    agent.conn.send(_start(running))
    await agent.conn.until(lambda c: len(_events(c, running)) >= 1)

    agent.conn.send(agent_pb2.BrokerMessage(drain=agent_pb2.DrainCommand(drained=True)))
    refused = str(uuid.uuid4())
    agent.conn.send(_start(refused))
    await agent.conn.until(lambda c: len(_events(c, refused)) >= 1)
    ended = _events(agent.conn, refused)[-1]
    assert ended.state == S.SESSION_STATE_ENDED and ended.end_reason == common_pb2.END_REASON_REFUSED_BY_HOST
    assert ended.detail == "the host is drained by its provider"
    # The running session goes on (the broker moves it at a deadline), and the host does not say it is leaving.
    assert running in agent.sessions.sessions and not agent.sessions.draining
    assert not any(hb.draining for hb in agent.beats)

    # Shutting down is the agent's own: an undrain does not reopen a host that is leaving.
    agent.sessions.draining = True
    agent.conn.send(agent_pb2.BrokerMessage(drain=agent_pb2.DrainCommand(drained=False)))
    await agent.conn.until(lambda _c: not agent.sessions.drained)
    late = str(uuid.uuid4())
    agent.conn.send(_start(late))
    await agent.conn.until(lambda c: len(_events(c, late)) >= 1)
    assert _events(agent.conn, late)[-1].detail == "the host is shutting down"
