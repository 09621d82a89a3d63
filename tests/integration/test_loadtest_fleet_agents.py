"""The fleet simulator's agent worker (loadtest.fleet_agents) against a stand-in broker that records the wire
(tests/integration/standin_broker.py), driven over its pipe as the orchestrator drives it, in this process.

Its hosts follow the real agent's rules: an idle host says nothing, a busy one heartbeats every interval, a start
costs one coalesced report; a site that goes down drops its hosts' links without Goodbye, a site that leaves says
Goodbye and half-closes.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cloudseat.v1 import agent_pb2, common_pb2

from loadtest import fleet_agents
from tests.integration.standin_broker import Connection, StandInBroker

S = common_pb2.SessionState
HOSTS = tuple(
    fleet_agents.HostSpec(f"h{i}", "site-a" if i < 2 else "site-b", "rtx4080", 4, 1_000_000, ("demo",))
    for i in range(4)
)


@pytest.fixture
async def standin() -> AsyncIterator[StandInBroker]:
    broker = StandInBroker(heartbeat_interval_ms=200)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


async def _expect(pipe: multiprocessing.connection.Connection, kind: str, timeout_s: float = 30.0) -> Any:
    """The payload of the worker's next `kind` message (progress messages meanwhile are skipped)."""
    async with asyncio.timeout(timeout_s):
        while True:
            if await asyncio.to_thread(pipe.poll, 0.1):
                msg = pipe.recv()
                assert msg[0] != "error", msg
                if msg[0] == kind:
                    return msg[1] if len(msg) > 1 else None


def _start(sid: str) -> agent_pb2.BrokerMessage:
    return agent_pb2.BrokerMessage(
        start_session=agent_pb2.StartSessionCommand(session_id=sid, game_id="demo", slots=1)
    )


def _states(conn: Connection) -> list[int]:
    return [m.session_event.state for m in conn.of("session_event")]


async def test_sites_go_down_without_goodbye_and_leave_with_it(standin: StandInBroker) -> None:
    spec = fleet_agents.AgentWorkerSpec(0, f"127.0.0.1:{standin.port}", "prov", HOSTS, epoch=1)
    assert spec.start_up_s < fleet_agents.reports.REPORT_WINDOW_S
    pipe, child = multiprocessing.Pipe()
    worker = asyncio.create_task(fleet_agents._serve(spec, child))
    try:
        await _expect(pipe, "ready")
        pipe.send(("connect",))
        assert (await _expect(pipe, "connected"))["connected"] == len(HOSTS)
        await standin.connected(len(HOSTS))
        h0, h1, h2, h3 = (standin.host(h.host_id) for h in HOSTS)

        # A start: STARTING, then READY and STREAMING 20 ms later, all in one window: one report.
        for conn in (h0, h2):
            conn.send(_start(str(uuid.uuid4())))
        await h0.until(lambda c: len(c.of("heartbeat")) >= 2)
        assert _states(h0) == [S.SESSION_STATE_STREAMING]
        assert len(h0.of("heartbeat")[-1].heartbeat.sessions) == 1
        # Hosts without sessions say nothing.
        assert h1.received == [] and h3.received == []

        # site-a loses power: its links are cut, no Goodbye.
        pipe.send(("site_down", "site-a"))
        down = await _expect(pipe, "site_down")
        assert down["site"] == "site-a" and down["dropped"] == 2 and down["at"] <= time.monotonic()
        for conn in (h0, h1):
            await conn.until(lambda c: bool(c.ended))
            assert conn.ended.startswith("cancelled") and "goodbye" not in conn.kinds()
        assert not h2.ended and not h3.ended

        # site-b shuts down cleanly: sessions handed back, then Goodbye, then the half-close.
        pipe.send(("site_leave", "site-b"))
        left = await _expect(pipe, "site_leave")
        assert left["site"] == "site-b" and left["left"] == 2
        for conn in (h2, h3):
            await conn.until(lambda c: bool(c.ended))
            assert conn.ended == "half-closed" and conn.kinds()[-1] == "goodbye"
        ended = h2.of("session_event")[-1].session_event
        assert ended.state == S.SESSION_STATE_ENDED and ended.end_reason == common_pb2.END_REASON_HOST_DRAINED

        pipe.send(("stop",))
        final = await _expect(pipe, "final")
        assert final["errors"] == {}, final["error_samples"]
        assert (final["connected"], final["lost_streams"], final["dropped"], final["left"]) == (0, 0, 2, 2)
        assert final["commands"] == {"start_session": 2}
        assert sum(final["beats"].values()) == len(h0.of("heartbeat")) + len(h2.of("heartbeat"))
        await asyncio.wait_for(worker, 30)
    finally:
        worker.cancel()
        pipe.close()
