"""The agent link: registration, epochs, load reports, and host loss judged by the database clock."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from cloudseat.client import BrokerClient
from cloudseat.v1 import common_pb2, fleet_pb2, session_pb2
from grpc import aio

from tests.integration.scripted_agent import ScriptedAgent

S = common_pb2.SessionState


async def _host(client: BrokerClient, host_id: str) -> fleet_pb2.Host:
    return await client.fleet.GetHost(fleet_pb2.GetHostRequest(host_id=host_id))


async def test_registration_and_heartbeats(world: BrokerClient) -> None:
    async with ScriptedAgent(world, "host-1", slots=3) as agent:
        assert agent.link.registered is not None
        assert agent.link.registered.epoch == 1 and agent.link.registered.lost_after_ms == 1500
        first = await _host(world, "host-1")
        assert first.status == fleet_pb2.HOST_STATUS_ONLINE and (first.slots, first.free_slots) == (3, 3)
        assert first.games_cached == ["demo"] and first.provider_id == "prov"
        await asyncio.sleep(1.0)
        later = await _host(world, "host-1")
        assert later.last_heartbeat_at.ToDatetime() > first.last_heartbeat_at.ToDatetime()
        hosts = await world.fleet.ListHosts(fleet_pb2.ListHostsRequest(site_id="site-near"))
        assert [h.host_id for h in hosts.hosts] == ["host-1"]


async def test_a_host_whose_link_is_lost_is_lost_and_its_sessions_end(world: BrokerClient) -> None:
    async with ScriptedAgent(world, "host-1") as agent:
        started = await world.start_session("cafe", "s1", "demo")
        await world.wait_for(started.session.session_id, S.SESSION_STATE_READY)
        await agent.lose_link()
        # Not at once: the link has the grace to come back first.
        assert (await _host(world, "host-1")).status == fleet_pb2.HOST_STATUS_ONLINE
        ended = await world.wait_for(started.session.session_id, S.SESSION_STATE_ENDED, timeout_s=15)
        assert ended.end_reason == common_pb2.END_REASON_HOST_LOST
        host = await _host(world, "host-1")
        assert host.status == fleet_pb2.HOST_STATUS_LOST
    # The old process (same epoch) may not come back; a new one may.
    with pytest.raises(aio.AioRpcError) as e:
        async with ScriptedAgent(world, "host-1", epoch=1):
            pass
    assert e.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "epoch" in (e.value.details() or "")
    async with ScriptedAgent(world, "host-1", epoch=2):
        host = await _host(world, "host-1")
        assert host.status == fleet_pb2.HOST_STATUS_ONLINE and host.epoch == 2


async def test_older_epoch_is_refused_and_newer_replaces(world: BrokerClient) -> None:
    async with ScriptedAgent(world, "host-1", epoch=5) as old:
        started = await world.start_session("cafe", "s1", "demo")
        await world.wait_for(started.session.session_id, S.SESSION_STATE_READY)
        with pytest.raises(aio.AioRpcError) as e:
            async with ScriptedAgent(world, "host-1", epoch=4):
                pass
        assert e.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        async with ScriptedAgent(world, "host-1", epoch=6):
            ended = await world.wait_for(started.session.session_id, S.SESSION_STATE_ENDED)
            assert ended.end_reason == common_pb2.END_REASON_HOST_LOST
            async with asyncio.timeout(5):
                while old.closed_with is None:
                    await asyncio.sleep(0.05)
            assert isinstance(old.closed_with, aio.AioRpcError)
            assert old.closed_with.code() is grpc.StatusCode.FAILED_PRECONDITION


async def test_same_epoch_reconnect_keeps_sessions_and_reconciles(world: BrokerClient) -> None:
    async with ScriptedAgent(world, "host-1", epoch=9, slots=2) as agent:
        started = await world.start_session("cafe", "s1", "demo")
        sid = started.session.session_id
        await world.wait_for(sid, S.SESSION_STATE_READY)
    # Reconnect (a network blip): the agent still runs the session and one the broker never heard of.
    async with ScriptedAgent(
        world,
        "host-1",
        epoch=9,
        slots=2,
        running=(
            (sid, S.SESSION_STATE_READY),
            ("00000000-0000-4000-8000-000000000000", S.SESSION_STATE_STREAMING),
        ),
    ) as agent:
        got = await world.sessions.GetSession(session_pb2.GetSessionRequest(session_id=sid))
        assert got.session.state == S.SESSION_STATE_READY
        stopped = await asyncio.wait_for(agent.stopped.get(), 5)
        assert stopped == "00000000-0000-4000-8000-000000000000"


async def test_registration_is_validated(world: BrokerClient) -> None:
    cases = [
        ({"site_id": "nowhere"}, grpc.StatusCode.NOT_FOUND, "register.site_id"),
        ({"epoch": 0}, grpc.StatusCode.INVALID_ARGUMENT, "register.epoch"),
        ({"slots": 0}, grpc.StatusCode.INVALID_ARGUMENT, "register.inventory.slots"),
        ({"games": ("bad game",)}, grpc.StatusCode.INVALID_ARGUMENT, "register.inventory.games_cached[0]"),
        ({"provider_id": "someone-else"}, grpc.StatusCode.PERMISSION_DENIED, "register.site_id"),
        ({"price_micros": -5}, grpc.StatusCode.INVALID_ARGUMENT, "price_micros_per_slot_hour"),
    ]
    for kwargs, code, field in cases:
        with pytest.raises(aio.AioRpcError) as e:
            async with ScriptedAgent(world, "host-x", **kwargs):  # type: ignore[arg-type]
                pass
        assert e.value.code() is code, kwargs
        assert field in (e.value.details() or ""), (kwargs, e.value.details())
    hosts = await world.fleet.ListHosts(fleet_pb2.ListHostsRequest())
    assert list(hosts.hosts) == []
