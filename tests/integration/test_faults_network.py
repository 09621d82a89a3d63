"""A half-open agent stream (issue 7): every packet between an agent and its broker dropped, no reset, no ICMP.

Neither end is told: the kernel keeps both sockets open. Only gRPC keepalive (the broker's on each agent link, every
--link-ping with --link-ping-timeout to answer: 3 s and 1 s here, broker/server.py; the agent's every 10 s with 5 s to
answer, gpu_agent/link.py) or TCP's own timeout on unacknowledged data can find out. Bound:
both ends detect it within 20 s. The host must not be declared lost meanwhile (lost-after is set long here, so that
loss cannot be what closes the stream), and after the network heals the agent reconnects under the same epoch and
keeps its session.

Setup: the agent and the broker replica it links to run in a network namespace of the test's own, where nftables
drops the packets; the test's calls go to a second replica outside, on the same database.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cloudseat.v1 import common_pb2, fleet_pb2, session_pb2

from tests.integration import faults

pytestmark = pytest.mark.slow
S = common_pb2.SessionState
DETECT_BOUND_S = 20.0
CONNECT = "/cloudseat.v1.AgentService/Connect"


async def test_half_open_agent_stream_is_detected_by_keepalive_within_20s(
    db_url: str, tmp_path: Path
) -> None:
    # Production heartbeats (5 s); lost-after 60 s so that only keepalive can end the stream within the bound.
    async with faults.partitioned(db_url, tmp_path, heartbeat_s=5.0, lost_after_s=60.0, seats=2) as world:
        client, inner, agent = world.client, world.inner, world.agent
        await agent.wait_event("registered with the broker", timeout_s=30)
        host = await client.fleet.GetHost(fleet_pb2.GetHostRequest(host_id="agent-1"))
        started = await client.start_session("cafe", "s001", "demo")
        sid = started.session.session_id
        ready = await client.wait_for(sid, S.SESSION_STATE_READY, timeout_s=20)
        assert ready.host_id == "agent-1"

        cut_at = time.monotonic()
        await world.cut()
        broker_saw, _ = await inner.wait_event(
            "rpc", method=CONNECT, since=cut_at, timeout_s=DETECT_BOUND_S + 10
        )
        agent_saw, closed = await agent.wait_event(
            "broker link closed", since=cut_at, timeout_s=DETECT_BOUND_S + 10
        )
        broker_s, agent_s = broker_saw - cut_at, agent_saw - cut_at
        assert broker_s <= DETECT_BOUND_S, f"the broker noticed after {broker_s:.1f} s"
        assert agent_s <= DETECT_BOUND_S, f"the agent noticed after {agent_s:.1f} s ({closed})"
        # Not lost: the stream ended, the host did not (its lost-after is far longer).
        during = await client.fleet.GetHost(fleet_pb2.GetHostRequest(host_id="agent-1"))
        assert during.status == fleet_pb2.HOST_STATUS_ONLINE

        healed = time.monotonic()
        await world.heal()
        await agent.wait_event("registered with the broker", since=healed, reconnect=True, timeout_s=30)
        back = await client.fleet.GetHost(fleet_pb2.GetHostRequest(host_id="agent-1"))
        assert back.status == fleet_pb2.HOST_STATUS_ONLINE and back.epoch == host.epoch
        kept = await client.sessions.GetSession(session_pb2.GetSessionRequest(session_id=sid))
        assert kept.session.state == S.SESSION_STATE_READY, "the session must survive the blip"
        faults.report(
            "half-open agent stream (broker pings 3 s + 1 s, agent pings 10 s + 5 s)",
            broker_detected_s=round(broker_s, 2),
            agent_detected_s=round(agent_s, 2),
            agent_error=closed.get("detail", ""),
            reconnected_after_heal_s=round(time.monotonic() - healed, 2),
        )
        await faults.check_store(db_url)
