"""The real agent program against a real broker: register, stream to a real aiortc receiver, take input, drain,
come back under a new epoch, refuse bad input."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

import pytest
from cloudseat import seat_protocol as sp
from cloudseat.client import BrokerClient
from cloudseat.v1 import common_pb2, fleet_pb2, session_pb2

from tests.integration.conftest import CONFIG, Launch
from thin_client.receiver import Receiver

pytestmark = pytest.mark.slow
S = common_pb2.SessionState


async def _online(client: BrokerClient, host: str, *, epoch_above: int = 0) -> fleet_pb2.Host:
    async with asyncio.timeout(30):
        while True:
            hosts = await client.fleet.ListHosts(fleet_pb2.ListHostsRequest())
            for h in hosts.hosts:
                if h.host_id == host and h.status == fleet_pb2.HOST_STATUS_ONLINE and h.epoch > epoch_above:
                    return h
            await asyncio.sleep(0.1)


def _negotiator(
    client: BrokerClient, started: session_pb2.StartSessionResponse
) -> Callable[[str], Awaitable[str]]:
    async def negotiate(offer_sdp: str) -> str:
        response = await client.sessions.Negotiate(
            session_pb2.NegotiateRequest(
                session_id=started.session.session_id,
                session_token=started.session_token,
                offer=common_pb2.SessionDescription(type="offer", sdp=offer_sdp),
            )
        )
        return response.answer.sdp

    return negotiate


async def test_agent_streams_a_placed_session_and_applies_input(world: BrokerClient, launch: Launch) -> None:
    await launch()
    host = await _online(world, "agent-1")
    assert host.slots == 2 and host.games_cached == ["demo"]

    started = await world.start_session("cafe", "s1", "demo")
    ready = await world.wait_for(started.session.session_id, S.SESSION_STATE_READY, timeout_s=20)
    assert ready.state == S.SESSION_STATE_READY and ready.host_id == "agent-1"

    receiver = Receiver(host_addresses=("127.0.0.1",))
    try:
        await receiver.connect(_negotiator(world, started))
        assert "127.0.0.1" in receiver.remote_sdp and "192.168." not in receiver.remote_sdp
        await receiver.wait_frames(20, timeout_s=20)
        streaming = await world.wait_for(started.session.session_id, S.SESSION_STATE_STREAMING, timeout_s=10)
        assert streaming.state == S.SESSION_STATE_STREAMING
        record = await receiver.send(sp.KeyInput(0, 0, key=0x27, down=True))
        await receiver.wait_shown(record, timeout_s=10)
        # Garbage on the input channel is dropped; the stream goes on.
        receiver.send_raw(sp.RELIABLE_CHANNEL, b"\xff" * 80)
        await receiver.wait_frames(10, timeout_s=10)
        stats = receiver.stats()
        assert stats.frames >= 30 and stats.unreadable == 0
    finally:
        await receiver.close()
    ended = await world.end_session(started.session.session_id, started.session_token)
    assert ended.end_reason == common_pb2.END_REASON_ENDED_BY_PATRON


async def test_malformed_offer_is_refused_and_the_session_keeps_running(
    world: BrokerClient, launch: Launch
) -> None:
    await launch()
    await _online(world, "agent-1")
    started = await world.start_session("cafe", "s1", "demo")
    await world.wait_for(started.session.session_id, S.SESSION_STATE_READY, timeout_s=20)
    bad = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
    with pytest.raises(Exception) as e:
        await _negotiator(world, started)(bad)
    assert "offer" in str(e.value)
    receiver = Receiver()
    try:
        await receiver.connect(_negotiator(world, started))
        await receiver.wait_frames(5, timeout_s=20)
    finally:
        await receiver.close()


async def test_unknown_game_fails_the_session_and_frees_the_slot(world: BrokerClient, launch: Launch) -> None:
    await world.fleet.PutGame(fleet_pb2.PutGameRequest(game_id="elsewhere", name="Not on this host"))
    await launch()
    await _online(world, "agent-1")
    started = await world.start_session("cafe", "s1", "elsewhere")
    ended = await world.wait_for(started.session.session_id, S.SESSION_STATE_ENDED, timeout_s=20)
    assert ended.end_reason == common_pb2.END_REASON_UNKNOWN_GAME
    host = await world.fleet.GetHost(fleet_pb2.GetHostRequest(host_id="agent-1"))
    assert host.free_slots == host.slots


async def test_drain_then_kill_and_restart_under_a_new_epoch(world: BrokerClient, launch: Launch) -> None:
    proc = await launch()
    first = await _online(world, "agent-1")
    started = await world.start_session("cafe", "s1", "demo")
    await world.wait_for(started.session.session_id, S.SESSION_STATE_READY, timeout_s=20)

    await world.fleet.DrainHost(fleet_pb2.DrainHostRequest(host_id="agent-1"))
    waiting = await world.start_session("cafe", "s2", "demo")
    async with asyncio.timeout(10):
        async for u in world.watch(waiting.session.session_id):
            if u.session.pending_reason == common_pb2.PENDING_REASON_CANDIDATES_DRAINED:
                break
    await world.fleet.UndrainHost(fleet_pb2.UndrainHostRequest(host_id="agent-1"))
    await world.wait_for(waiting.session.session_id, S.SESSION_STATE_READY, timeout_s=20)

    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    await launch()
    second = await _online(world, "agent-1", epoch_above=first.epoch)
    assert second.epoch > first.epoch
    for s in (started, waiting):
        ended = await world.wait_for(s.session.session_id, S.SESSION_STATE_ENDED, timeout_s=10)
        assert ended.end_reason == common_pb2.END_REASON_HOST_LOST


async def test_a_providers_drain_lets_sessions_go_on_past_the_agents_grace_until_the_deadline(
    world: BrokerClient, launch: Launch
) -> None:
    proc = await launch()  # drain_grace_s = 1: the agent's own shutdown grace, not the provider's drain
    await _online(world, "agent-1")
    started = await world.start_session("cafe", "s1", "demo")
    sid = started.session.session_id
    await world.wait_for(sid, S.SESSION_STATE_READY, timeout_s=20)
    drained = await world.fleet.DrainHost(fleet_pb2.DrainHostRequest(host_id="agent-1", deadline_s=4))
    assert drained.drained and drained.HasField("drain_deadline")
    # Well past the agent's grace, the session goes on: only the broker moves it, at the deadline.
    with pytest.raises(TimeoutError):
        await world.wait_for(sid, S.SESSION_STATE_ENDED, timeout_s=2.5)
    ended = await world.wait_for(sid, S.SESSION_STATE_ENDED, timeout_s=20)
    assert ended.end_reason == common_pb2.END_REASON_HOST_DRAINED
    assert ended.ended_at.ToMicroseconds() >= drained.drain_deadline.ToMicroseconds()
    # The agent let go of it (stopped by the broker) and stays up: undrained, it takes both its slots again.
    await world.fleet.UndrainHost(fleet_pb2.UndrainHostRequest(host_id="agent-1"))
    for seat in ("s2", "s3"):
        again = await world.start_session("cafe", seat, "demo")
        ready = await world.wait_for(again.session.session_id, S.SESSION_STATE_READY, timeout_s=20)
        assert ready.state == S.SESSION_STATE_READY and ready.host_id == "agent-1"
    assert proc.returncode is None


async def test_sigterm_drains_and_hands_sessions_back(world: BrokerClient, launch: Launch) -> None:
    proc = await launch()
    await _online(world, "agent-1")
    started = await world.start_session("cafe", "s1", "demo")
    await world.wait_for(started.session.session_id, S.SESSION_STATE_READY, timeout_s=20)
    proc.send_signal(signal.SIGTERM)
    ended = await world.wait_for(started.session.session_id, S.SESSION_STATE_ENDED, timeout_s=20)
    assert ended.end_reason == common_pb2.END_REASON_HOST_DRAINED
    assert await asyncio.wait_for(proc.wait(), 20) == 0
    # It said goodbye: offline at once, not lost after the heartbeat timeout.
    host = await world.fleet.GetHost(fleet_pb2.GetHostRequest(host_id="agent-1"))
    assert host.status == fleet_pb2.HOST_STATUS_OFFLINE


async def test_bad_config_stops_the_agent_naming_the_field(launch: Launch) -> None:
    proc = await launch("agent-x", CONFIG.format(host="agent-x", port=1).replace("slots = 2", "slots = 0"))
    assert await asyncio.wait_for(proc.wait(), 30) == 2
    assert proc.stderr is not None
    err = (await proc.stderr.read()).decode()
    assert "slots: must be between 1 and 256" in err and "Traceback" not in err
