"""A session's whole life through the real broker: placed, started by the agent, negotiated, streamed, ended."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from cloudseat.client import BrokerClient
from cloudseat.v1 import agent_pb2, common_pb2, fleet_pb2, session_pb2, venue_pb2
from grpc import aio

from broker.server import Broker
from tests.integration.scripted_agent import ANSWER_SDP, ScriptedAgent

S = common_pb2.SessionState
OFFER = common_pb2.SessionDescription(type="offer", sdp="v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n")


async def test_session_lifecycle_end_to_end(world: BrokerClient) -> None:
    async with ScriptedAgent(world, "host-1") as agent:
        started = await world.start_session("cafe", "s1", "demo", patron_id="p-7")
        assert started.created and started.session.state == S.SESSION_STATE_PENDING
        sid = started.session.session_id

        ready = await world.wait_for(sid, S.SESSION_STATE_READY)
        assert ready.state == S.SESSION_STATE_READY
        assert ready.host_id == "host-1" and ready.site_id == "site-near" and ready.latency_ms == 5
        assert ready.price_micros_per_slot_hour == 1_000_000
        assert await asyncio.wait_for(agent.started.get(), 5) == sid

        answer = await world.sessions.Negotiate(
            session_pb2.NegotiateRequest(session_id=sid, session_token=started.session_token, offer=OFFER)
        )
        assert answer.answer.type == "answer" and answer.answer.sdp == ANSWER_SDP
        offer = await asyncio.wait_for(agent.offers.get(), 5)
        assert offer.session_id == sid and offer.offer.sdp == OFFER.sdp

        await agent.link.report(sid, S.SESSION_STATE_STREAMING)
        streaming = await world.wait_for(sid, S.SESSION_STATE_STREAMING)
        assert streaming.state == S.SESSION_STATE_STREAMING

        # Stream stats ride on the heartbeats and show on GetSession.
        await agent.link.heartbeat(
            sessions=[agent_pb2.SessionStats(session_id=sid, fps_sent=59.5, encode_ms=6.5)]
        )
        async with asyncio.timeout(5):
            while True:
                got = await world.sessions.GetSession(session_pb2.GetSessionRequest(session_id=sid))
                if got.session.HasField("stream_stats"):
                    break
                await asyncio.sleep(0.05)
        assert got.session.stream_stats.fps_sent == 59.5 and got.session.stream_stats.encode_ms == 6.5

        host = await world.fleet.GetHost(fleet_pb2.GetHostRequest(host_id="host-1"))
        assert (host.free_slots, host.live_sessions) == (1, 1)

        ended = await world.end_session(sid, started.session_token, "patron left")
        assert (
            ended.state == S.SESSION_STATE_ENDED and ended.end_reason == common_pb2.END_REASON_ENDED_BY_PATRON
        )
        assert await asyncio.wait_for(agent.stopped.get(), 5) == sid

        got = await world.sessions.GetSession(
            session_pb2.GetSessionRequest(session_id=sid, include_history=True)
        )
        steps = [(t.from_state, t.to_state) for t in got.history]
        assert steps == [
            (S.SESSION_STATE_UNSPECIFIED, S.SESSION_STATE_PENDING),
            (S.SESSION_STATE_PENDING, S.SESSION_STATE_PLACED),
            (S.SESSION_STATE_PLACED, S.SESSION_STATE_STARTING),
            (S.SESSION_STATE_STARTING, S.SESSION_STATE_READY),
            (S.SESSION_STATE_READY, S.SESSION_STATE_STREAMING),
            (S.SESSION_STATE_STREAMING, S.SESSION_STATE_ENDED),
        ]
        times = [t.at.ToDatetime() for t in got.history]
        assert times == sorted(times)
        assert got.history[-1].detail == "patron left"
        host = await world.fleet.GetHost(fleet_pb2.GetHostRequest(host_id="host-1"))
        assert (host.free_slots, host.live_sessions) == (2, 0)

        # Ending again is a no-op that returns the ended session.
        again = await world.end_session(sid, started.session_token)
        assert again.ended_at == ended.ended_at


async def test_retry_returns_the_same_session(world: BrokerClient) -> None:
    first = await world.start_session("cafe", "s1", "demo", request_id="req-1")
    again = await world.start_session("cafe", "s1", "demo", request_id="req-1")
    assert not again.created
    assert again.session.session_id == first.session.session_id
    assert again.session_token == first.session_token
    with pytest.raises(aio.AioRpcError) as e:
        await world.start_session("cafe", "s2", "demo", request_id="req-1")
    assert e.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert "request_id" in (e.value.details() or "")


async def test_two_starts_for_one_seat_at_once_give_one_live_session(world: BrokerClient) -> None:
    results = await asyncio.gather(
        *(world.start_session("cafe", "s3", "demo", request_id=f"race-{i}") for i in range(6)),
        return_exceptions=True,
    )
    ok = [r for r in results if isinstance(r, session_pb2.StartSessionResponse)]
    refused = [r for r in results if isinstance(r, aio.AioRpcError)]
    assert len(ok) == 1 and len(refused) == 5
    assert all(r.code() is grpc.StatusCode.FAILED_PRECONDITION for r in refused)
    # The same request id at once: one session, both calls get it.
    a, b = await asyncio.gather(
        world.start_session("cafe", "s4", "demo", request_id="same"),
        world.start_session("cafe", "s4", "demo", request_id="same"),
    )
    assert a.session.session_id == b.session.session_id
    assert sorted([a.created, b.created]) == [False, True]
    seats = await world.venues.ListSeats(venue_pb2.ListSeatsRequest(venue_id="cafe"))
    live = {s.seat.seat_id: s.session.session_id for s in seats.seats if s.HasField("session")}
    assert set(live) == {"s3", "s4"}


async def test_pending_request_waits_with_queue_position_then_is_placed(world: BrokerClient) -> None:
    first = await world.start_session("cafe", "s1", "demo")
    second = await world.start_session("cafe", "s2", "demo")
    updates: list[session_pb2.SessionUpdate] = []

    async def follow() -> None:
        async for u in world.watch(second.session.session_id):
            updates.append(u)
            if u.session.state == S.SESSION_STATE_READY:
                return

    watcher = asyncio.create_task(follow())
    async with asyncio.timeout(10):
        while not any(u.queue_position == 2 and u.queue_length == 2 for u in updates):
            await asyncio.sleep(0.05)
    waiting = [u for u in updates if u.session.state == S.SESSION_STATE_PENDING]
    assert any(u.session.pending_reason == common_pb2.PENDING_REASON_NO_CAPACITY_WITHIN_CAP for u in waiting)

    async with ScriptedAgent(world, "host-2", slots=2):
        await asyncio.wait_for(watcher, 10)
        assert updates[-1].session.state == S.SESSION_STATE_READY
        assert updates[-1].queue_position == 0
        done = await world.wait_for(first.session.session_id, S.SESSION_STATE_READY)
        assert done.state == S.SESSION_STATE_READY


async def test_late_watcher_gets_the_current_state_first(world: BrokerClient) -> None:
    async with ScriptedAgent(world, "host-1"):
        started = await world.start_session("cafe", "s1", "demo")
        sid = started.session.session_id
        await world.wait_for(sid, S.SESSION_STATE_READY)
        await world.end_session(sid, started.session_token)
        updates = [u async for u in world.watch(sid)]
        assert len(updates) == 1 and updates[0].session.state == S.SESSION_STATE_ENDED


async def test_drained_host_takes_nothing_new(world: BrokerClient) -> None:
    async with ScriptedAgent(world, "host-1") as agent:
        host = await world.fleet.DrainHost(fleet_pb2.DrainHostRequest(host_id="host-1", reason="maintenance"))
        assert host.drained
        async with asyncio.timeout(5):
            while not any(c.WhichOneof("body") == "drain" for c in agent.commands):
                await asyncio.sleep(0.02)
        started = await world.start_session("cafe", "s1", "demo")
        async with asyncio.timeout(10):
            async for u in world.watch(started.session.session_id):
                if u.session.pending_reason == common_pb2.PENDING_REASON_CANDIDATES_DRAINED:
                    break
        await world.fleet.UndrainHost(fleet_pb2.UndrainHostRequest(host_id="host-1"))
        placed = await world.wait_for(started.session.session_id, S.SESSION_STATE_READY)
        assert placed.host_id == "host-1"


async def test_negotiate_checks_token_state_and_agent_refusal(world: BrokerClient) -> None:
    started = await world.start_session("cafe", "s1", "demo")
    sid = started.session.session_id
    with pytest.raises(aio.AioRpcError) as e:
        await world.sessions.Negotiate(
            session_pb2.NegotiateRequest(session_id=sid, session_token=started.session_token, offer=OFFER)
        )
    assert e.value.code() is grpc.StatusCode.FAILED_PRECONDITION  # still PENDING
    async with ScriptedAgent(world, "host-1") as agent:
        await world.wait_for(sid, S.SESSION_STATE_READY)
        with pytest.raises(aio.AioRpcError) as e:
            await world.sessions.Negotiate(
                session_pb2.NegotiateRequest(session_id=sid, session_token="not-the-token", offer=OFFER)
            )
        assert e.value.code() is grpc.StatusCode.PERMISSION_DENIED
        agent.refuse_offers = True
        with pytest.raises(aio.AioRpcError) as e:
            await world.sessions.Negotiate(
                session_pb2.NegotiateRequest(session_id=sid, session_token=started.session_token, offer=OFFER)
            )
        assert e.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "refused" in (e.value.details() or "")


async def test_agent_failure_ends_session_and_frees_the_slot(world: BrokerClient, broker: Broker) -> None:
    async with ScriptedAgent(world, "host-1", auto_ready=False) as agent:
        started = await world.start_session("cafe", "s1", "demo")
        sid = await asyncio.wait_for(agent.started.get(), 10)
        await agent.link.report(
            sid, S.SESSION_STATE_ENDED, common_pb2.END_REASON_UNKNOWN_GAME, "no such image"
        )
        ended = await world.wait_for(started.session.session_id, S.SESSION_STATE_ENDED)
        assert ended.end_reason == common_pb2.END_REASON_UNKNOWN_GAME and ended.end_detail == "no such image"
        host = await world.fleet.GetHost(fleet_pb2.GetHostRequest(host_id="host-1"))
        assert host.free_slots == host.slots
        # An agent cannot touch a session on another host, nor give reasons only the broker gives.
        await agent.link.report(sid, S.SESSION_STATE_ENDED, common_pb2.END_REASON_TIME_UP)
        other = await world.start_session("cafe", "s2", "demo")
        async with ScriptedAgent(world, "host-2", site_id="site-far", auto_ready=False) as intruder:
            sid2 = await asyncio.wait_for(agent.started.get(), 10)
            assert sid2 == other.session.session_id
            await intruder.link.report(sid2, S.SESSION_STATE_STARTING)
            await asyncio.sleep(0.3)
            got = await world.sessions.GetSession(session_pb2.GetSessionRequest(session_id=sid2))
            assert got.session.state == S.SESSION_STATE_PLACED


def _start(seat: str, request_id: str, wait_ms: int) -> session_pb2.StartSessionRequest:
    return session_pb2.StartSessionRequest(
        request_id=request_id, venue_id="cafe", seat_id=seat, game_id="demo", wait_for_placement_ms=wait_ms
    )


async def test_a_start_may_wait_for_its_placement_in_one_round_trip(world: BrokerClient) -> None:
    # No host yet: the wait runs out and the answer says where the session stands in the queue.
    waited = await world.sessions.StartSession(_start("s1", "w1", 300), timeout=5)
    assert waited.session.state == S.SESSION_STATE_PENDING
    assert (waited.queue_position, waited.queue_length) == (1, 1)
    async with ScriptedAgent(world, "host-1", slots=2, auto_ready=False):
        # A free host: the answer is the placed session, no watch needed.
        placed = await world.sessions.StartSession(_start("s2", "w2", 3000), timeout=5)
        assert placed.created and placed.session.state >= S.SESSION_STATE_PLACED
        assert placed.session.host_id == "host-1" and placed.queue_position == 0
        # A retry of it waits on the same session and answers it as it stands.
        again = await world.sessions.StartSession(_start("s2", "w2", 3000), timeout=5)
        assert not again.created and again.session.session_id == placed.session.session_id
        assert again.session.state >= S.SESSION_STATE_PLACED
        # The first one, placed meanwhile, is answered as placed on its retry too.
        first = await world.wait_for(waited.session.session_id, S.SESSION_STATE_PLACED)
        retried = await world.sessions.StartSession(_start("s1", "w1", 3000), timeout=5)
        assert retried.session.session_id == first.session_id and retried.session.host_id == "host-1"
    # The wait is bounded, and a bad value names the field.
    with pytest.raises(aio.AioRpcError) as e:
        await world.sessions.StartSession(_start("s3", "w3", 6000), timeout=5)
    assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (e.value.details() or "").startswith("wait_for_placement_ms:")
