"""A half-open agent stream (issue 7): every packet between an agent and its broker dropped, no reset, no ICMP.

Neither end is told: the kernel keeps both sockets open. Only gRPC keepalive (pings every 10 s, 5 s to answer, on
both ends: broker/server.py and gpu_agent/link.py) or TCP's own timeout on unacknowledged data can find out. Bound:
both ends detect it within 20 s. The host must not be declared lost meanwhile (lost-after is set long here, so that
loss cannot be what closes the stream), and after the network heals the agent reconnects under the same epoch and
keeps its session.

Setup: the agent and the broker replica it links to run in a network namespace of the test's own, where nftables
drops the packets; the test's calls go to a second replica outside, on the same database.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
from cloudseat.client import BrokerClient
from cloudseat.v1 import common_pb2, fleet_pb2, session_pb2

from tests.integration import faults
from tests.integration.conftest import FAST

pytestmark = pytest.mark.slow
S = common_pb2.SessionState
DETECT_BOUND_S = 20.0
CONNECT = "/cloudseat.v1.AgentService/Connect"


async def test_half_open_agent_stream_is_detected_by_keepalive_within_20s(
    db_url: str, tmp_path: Path
) -> None:
    ns = faults.NetNS().open()
    inner: faults.BrokerProcess | None = None
    agent: faults.LogProcess | None = None
    try:
        # Production heartbeats (5 s); lost-after 60 s so that only keepalive can end the stream within the bound.
        inner = await faults.start_broker(db_url, name="inner", heartbeat_s=5.0, lost_after_s=60.0, netns=ns)
        await inner.wait_event("took the placement lease", timeout_s=15)
        async with (
            faults.running_broker(dataclasses.replace(FAST, database_url=db_url)) as outer,
            BrokerClient(f"127.0.0.1:{outer.port}") as client,
        ):
            await faults.seed(client, seats=2)
            agent = await faults.start_agent(tmp_path, "agent-1", inner.target, netns=ns)
            await agent.wait_event("registered with the broker", timeout_s=30)
            host = await client.fleet.GetHost(fleet_pb2.GetHostRequest(host_id="agent-1"))
            started = await client.start_session("cafe", "s001", "demo")
            sid = started.session.session_id
            ready = await client.wait_for(sid, S.SESSION_STATE_READY, timeout_s=20)
            assert ready.host_id == "agent-1"

            cut_at = time.monotonic()
            await ns.cut(inner.port)
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
            await ns.heal()
            await agent.wait_event("registered with the broker", since=healed, reconnect=True, timeout_s=30)
            back = await client.fleet.GetHost(fleet_pb2.GetHostRequest(host_id="agent-1"))
            assert back.status == fleet_pb2.HOST_STATUS_ONLINE and back.epoch == host.epoch
            kept = await client.sessions.GetSession(session_pb2.GetSessionRequest(session_id=sid))
            assert kept.session.state == S.SESSION_STATE_READY, "the session must survive the blip"
            faults.report(
                "half-open agent stream (5 s heartbeats)",
                broker_detected_s=round(broker_s, 2),
                agent_detected_s=round(agent_s, 2),
                agent_error=closed.get("detail", ""),
                reconnected_after_heal_s=round(time.monotonic() - healed, 2),
            )
            await faults.check_store(db_url)
    finally:
        if agent is not None:
            await agent.kill()
        if inner is not None:
            await inner.kill()
        ns.close()
