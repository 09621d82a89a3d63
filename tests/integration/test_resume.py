"""Resuming a lost session: the seat gets a new one at the front of the queue; only its own, only once."""

from __future__ import annotations

import datetime as dt
import math

import grpc
import pytest
from cloudseat.client import BrokerClient
from cloudseat.v1 import common_pb2
from grpc import aio

from tests.integration.scripted_agent import ScriptedAgent

S = common_pb2.SessionState


async def _queue_place(client: BrokerClient, session_id: str) -> tuple[int, int]:
    async for update in client.watch(session_id):
        if update.queue_position:
            return update.queue_position, update.queue_length
    raise AssertionError("the session left the queue before a position was shown")


async def test_lost_host_session_resumes_ahead_of_the_queue(world: BrokerClient) -> None:
    async with ScriptedAgent(world, "host-1", slots=1) as lost_agent:
        lost = await world.start_session("cafe", "s1", "demo")
        assert (await world.wait_for(lost.session.session_id, S.SESSION_STATE_READY)).host_id == "host-1"
        async with ScriptedAgent(world, "host-2", slots=1):
            other = await world.start_session("cafe", "s2", "demo")
            await world.wait_for(other.session.session_id, S.SESSION_STATE_READY)
            # The fleet is full: s3 queues.
            waiting = await world.start_session("cafe", "s3", "demo")
            assert await _queue_place(world, waiting.session.session_id) == (1, 1)

            await lost_agent.lose_link()
            ended = await world.wait_for(lost.session.session_id, S.SESSION_STATE_ENDED, timeout_s=15)
            assert ended.end_reason == common_pb2.END_REASON_HOST_LOST

            resumed = await world.start_session(
                "cafe", "s1", "demo", resume=(lost.session.session_id, lost.session_token)
            )
            assert resumed.created and resumed.session.resumes_session_id == lost.session.session_id
            # Ahead of s3, which waited longer.
            assert await _queue_place(world, resumed.session.session_id) == (1, 2)
            assert await _queue_place(world, waiting.session.session_id) == (2, 2)

            # A slot frees up: the resume takes it, s3 still waits.
            await world.end_session(other.session.session_id, other.session_token)
            placed = await world.wait_for(resumed.session.session_id, S.SESSION_STATE_READY)
            assert placed.host_id == "host-2"
            assert (await world.wait_for(waiting.session.session_id, S.SESSION_STATE_PENDING)).state == (
                S.SESSION_STATE_PENDING
            )

            # A retry of the resume returns the same session; another resume of the same loss is refused.
            again = await world.start_session(
                "cafe",
                "s1",
                "demo",
                request_id=resumed.session.request_id,
                resume=(lost.session.session_id, lost.session_token),
            )
            assert not again.created and again.session.session_id == resumed.session.session_id
            await world.end_session(resumed.session.session_id, resumed.session_token)
            with pytest.raises(aio.AioRpcError) as twice:
                await world.start_session(
                    "cafe", "s1", "demo", resume=(lost.session.session_id, lost.session_token)
                )
            assert twice.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert "resume.session_id: resumed already" in (twice.value.details() or "")


async def test_resume_refusals_name_the_field_and_write_nothing(world: BrokerClient) -> None:
    async with ScriptedAgent(world, "host-1", slots=2):
        mine = await world.start_session("cafe", "s1", "demo")
        await world.wait_for(mine.session.session_id, S.SESSION_STATE_READY)
        cases = [
            # Still live: nothing to resume.
            (
                "s2",
                (mine.session.session_id, mine.session_token),
                grpc.StatusCode.FAILED_PRECONDITION,
                "resume.session_id: the session is READY",
            ),
            (
                "s1",
                (mine.session.session_id, "not-the-token"),
                grpc.StatusCode.PERMISSION_DENIED,
                "resume.session_token",
            ),
            (
                "s1",
                ("00000000-0000-4000-8000-000000000000", "x"),
                grpc.StatusCode.NOT_FOUND,
                "resume.session_id",
            ),
            ("s1", ("not-a-uuid", "x"), grpc.StatusCode.INVALID_ARGUMENT, "resume.session_id"),
        ]
        await world.end_session(mine.session.session_id, mine.session_token)
        # Ended by the patron: not a loss, so not resumable; another seat's session: not yours.
        cases[0] = (
            "s1",
            (mine.session.session_id, mine.session_token),
            grpc.StatusCode.FAILED_PRECONDITION,
            "resume.session_id: the session ended ENDED_BY_PATRON",
        )
        cases.append(
            (
                "s2",
                (mine.session.session_id, mine.session_token),
                grpc.StatusCode.PERMISSION_DENIED,
                "resume.session_id: a session of another seat",
            )
        )
        for seat, resume, code, text in cases:
            with pytest.raises(aio.AioRpcError) as refused:
                await world.start_session("cafe", seat, "demo", resume=resume)
            assert refused.value.code() is code, (seat, resume)
            assert text in (refused.value.details() or ""), refused.value.details()
        # Nothing was written: both seats are free for a plain start.
        for seat in ("s1", "s2"):
            fresh = await world.start_session("cafe", seat, "demo")
            assert fresh.created and not fresh.session.resumes_session_id


async def test_zone_check_and_game_catalogue(world: BrokerClient) -> None:
    with pytest.raises(aio.AioRpcError) as wrong_zone:
        await world.start_session("cafe", "s1", "demo", zone_id="esports")
    assert wrong_zone.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "zone_id: seat 's1' is in zone 'std', not 'esports'" in (wrong_zone.value.details() or "")
    with pytest.raises(aio.AioRpcError) as bad_zone:
        await world.start_session("cafe", "s1", "demo", zone_id="no spaces")
    assert bad_zone.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    right = await world.start_session("cafe", "s1", "demo", zone_id="std")
    assert right.session.zone_id == "std"
    games = await world.list_games()
    assert [g.game_id for g in games] == ["demo"] and games[0].name


async def test_a_resumed_session_keeps_the_paid_time_the_lost_one_had_left(world: BrokerClient) -> None:
    async with ScriptedAgent(world, "host-1", slots=1) as lost_agent:
        lost = await world.start_session("cafe", "s1", "demo", paid_time_s=3600)
        sid = lost.session.session_id
        await world.wait_for(sid, S.SESSION_STATE_READY)
        await lost_agent.link.report(sid, S.SESSION_STATE_STREAMING)
        await world.wait_for(sid, S.SESSION_STATE_STREAMING)
        await lost_agent.lose_link()
        ended = await world.wait_for(sid, S.SESSION_STATE_ENDED, timeout_s=15)
        assert ended.end_reason == common_pb2.END_REASON_HOST_LOST
        played_s = ended.ended_at.ToDatetime() - ended.paid_until.ToDatetime() + dt.timedelta(seconds=3600)

        # The seat's resume names no paid time: the lost session's remainder carries over (rounded up).
        resumed = await world.start_session("cafe", "s1", "demo", resume=(sid, lost.session_token))
        left = resumed.session.paid_time_s
        assert 0 < left <= 3600 and left == math.ceil(3600 - played_s.total_seconds())
        # A retry of that resume is the same request, whatever it carried.
        again = await world.start_session(
            "cafe", "s1", "demo", request_id=resumed.session.request_id, resume=(sid, lost.session_token)
        )
        assert not again.created and again.session.paid_time_s == left
        await world.end_session(resumed.session.session_id, resumed.session_token)

    # An unlimited session resumes unlimited.
    async with ScriptedAgent(world, "host-2", slots=1) as agent:
        free = await world.start_session("cafe", "s2", "demo")
        await world.wait_for(free.session.session_id, S.SESSION_STATE_READY)
        await agent.lose_link()
        await world.wait_for(free.session.session_id, S.SESSION_STATE_ENDED, timeout_s=15)
        unlimited = await world.start_session(
            "cafe", "s2", "demo", resume=(free.session.session_id, free.session_token)
        )
        assert unlimited.session.paid_time_s == 0
        await world.end_session(unlimited.session.session_id, unlimited.session_token)
