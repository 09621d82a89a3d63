"""The seat's own stream stats (SessionService.ReportStreamStats) count for the SLA, on a real broker and PostgreSQL.

As in test_billing: the session's times are moved around the minute under test (test data) and the meter is run by
the test itself.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math

import grpc
import pytest
from cloudseat.client import BrokerClient
from cloudseat.v1 import agent_pb2, billing_pb2, common_pb2, session_pb2
from grpc import aio

from broker.server import Broker
from broker.store import metering as metering_store
from tests.integration.scripted_agent import ScriptedAgent
from tests.integration.test_billing import POLICY, UTC, later, ledger, move, set_price, ts

S = common_pb2.SessionState


async def _streaming(world: BrokerClient, agent: ScriptedAgent, seat: str = "s1") -> tuple[str, str]:
    started = await world.start_session("cafe", seat, "demo")
    sid = started.session.session_id
    await world.wait_for(sid, S.SESSION_STATE_READY)
    await agent.link.report(sid, S.SESSION_STATE_STREAMING)
    await world.wait_for(sid, S.SESSION_STATE_STREAMING)
    return sid, started.session_token


def _request(
    sid: str, token: str, samples: list[tuple[dt.datetime | None, float, float | None]]
) -> session_pb2.ReportStreamStatsRequest:
    request = session_pb2.ReportStreamStatsRequest(session_id=sid, session_token=token)
    for at, fps, rtt in samples:
        sample = request.samples.add(fps=fps)
        if at is not None:
            sample.at.CopyFrom(ts(at))
        if rtt is not None:
            sample.rtt_ms = rtt
    return request


async def _seat_samples(world: BrokerClient, broker: Broker) -> int:
    assert broker.pool is not None
    return int(await broker.pool.fetchval("SELECT coalesce(sum(seat_samples), 0) FROM stream_minutes"))


async def test_the_seats_bad_fps_credits_a_minute_the_agents_stats_call_fine(
    world: BrokerClient, broker: Broker
) -> None:
    assert broker.pool is not None
    await set_price(world, [])
    async with ScriptedAgent(world, "host-1") as agent:
        sid, token = await _streaming(world, agent)
        # The agent sees a perfect stream: 5 ms against the zone's 30, 60 fps of 60.
        await agent.link.heartbeat(sessions=[agent_pb2.SessionStats(session_id=sid, rtt_ms=5, fps_sent=60)])
        async with asyncio.timeout(10):
            while not await broker.pool.fetchval(
                "SELECT count(*) FROM stream_minutes WHERE session_id = $1::uuid", sid
            ):
                await asyncio.sleep(0.05)
        minute = await broker.pool.fetchval(
            "SELECT minute FROM stream_minutes WHERE session_id = $1::uuid", sid
        )
        streaming_at = (
            await world.sessions.GetSession(session_pb2.GetSessionRequest(session_id=sid))
        ).session
        at = max(minute, streaming_at.streaming_at.ToDatetime(UTC)) + dt.timedelta(milliseconds=1)
        # The patron sees 20 fps (under 90% of 60) over the same minute; one window from before it streamed is
        # not the stream's and is skipped.
        before = streaming_at.streaming_at.ToDatetime(UTC) - dt.timedelta(seconds=1)
        accepted = await world.report_stream_stats(
            sid,
            token,
            [(before.timestamp(), 1.0, None)]
            + [((at + dt.timedelta(microseconds=i)).timestamp(), 20.0, 6.0) for i in range(3)],
        )
        assert accepted == 3
        row = await broker.pool.fetchrow(
            "SELECT * FROM stream_minutes WHERE session_id = $1::uuid AND minute = $2", sid, minute
        )
        assert (
            row["samples"] >= 1
            and row["rtt_ms_sum"] / row["samples"] == 5
            and row["fps_sum"] / row["samples"] == 60
        )
        assert (row["seat_samples"], row["seat_fps_sum"], row["seat_rtt_samples"], row["seat_rtt_ms_sum"]) == (
            3, 60.0, 3, 18.0,
        )  # fmt: skip
        await world.end_session(sid, token)
    await move(broker.pool, sid, minute - dt.timedelta(seconds=20), minute + dt.timedelta(seconds=70))
    await metering_store.meter(broker.pool, POLICY, now=later())
    entries = await ledger(
        world, minute - dt.timedelta(hours=1), minute + dt.timedelta(hours=1), venue_id="cafe"
    )
    credits = [e for e in entries if e.kind == billing_pb2.ENTRY_KIND_SLA_CREDIT]
    assert [(c.start.ToDatetime(UTC), c.seconds, c.amount_micros) for c in credits] == [(minute, 60, -60_000)]


async def test_bad_reports_name_the_field_and_write_nothing(world: BrokerClient, broker: Broker) -> None:
    async with ScriptedAgent(world, "host-1") as agent:
        sid, token = await _streaming(world, agent)
        now = dt.datetime.now(UTC)
        good = (now, 60.0, 5.0)
        cases: list[tuple[session_pb2.ReportStreamStatsRequest, str]] = [
            (_request(sid, token, []), "samples"),
            (_request(sid, token, [good] * 61), "samples"),
            (_request(sid, token, [good, (None, 60.0, None)]), "samples[1].at"),
            (_request(sid, token, [good, (now - dt.timedelta(minutes=10), 60.0, None)]), "samples[1].at"),
            (_request(sid, token, [(now + dt.timedelta(minutes=1), 60.0, None)]), "samples[0].at"),
            (_request(sid, token, [good, (now, -1.0, None)]), "samples[1].fps"),
            (_request(sid, token, [good, (now, math.nan, None)]), "samples[1].fps"),
            (_request(sid, token, [(now, 2000.0, None)]), "samples[0].fps"),
            (_request(sid, token, [good, good, (now, 60.0, 70_000.0)]), "samples[2].rtt_ms"),
            (_request(sid, token, [(now, 60.0, math.inf)]), "samples[0].rtt_ms"),
            (_request("not-a-uuid", token, [good]), "session_id"),
            (_request(sid, "", [good]), "session_token"),
        ]
        for request, field in cases:
            with pytest.raises(aio.AioRpcError) as refused:
                await world.sessions.ReportStreamStats(request)
            assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT, field
            assert (refused.value.details() or "").startswith(f"{field}:"), (field, refused.value.details())
        assert await _seat_samples(world, broker) == 0
        # And a good one is taken.
        assert await world.report_stream_stats(sid, token, [(now.timestamp(), 60.0, 5.0)]) == 1


async def test_only_the_sessions_own_token_and_only_while_streaming(
    world: BrokerClient, broker: Broker
) -> None:
    async with ScriptedAgent(world, "host-1") as agent:
        sid, token = await _streaming(world, agent, "s1")
        other = await world.start_session("cafe", "s2", "demo")
        await world.wait_for(other.session.session_id, S.SESSION_STATE_READY)
        sample = [(dt.datetime.now(UTC).timestamp(), 10.0, None)]

        # Another seat's session token does not open this session.
        with pytest.raises(aio.AioRpcError) as refused:
            await world.report_stream_stats(sid, other.session_token, sample)
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert (refused.value.details() or "").startswith("session_token:")

        # A session that is not STREAMING (yet, or any more) takes no stats.
        with pytest.raises(aio.AioRpcError) as refused:
            await world.report_stream_stats(other.session.session_id, other.session_token, sample)
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert (refused.value.details() or "").startswith("session_id:")
        await world.end_session(sid, token)
        with pytest.raises(aio.AioRpcError) as refused:
            await world.report_stream_stats(sid, token, sample)
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert (refused.value.details() or "").startswith("session_id:")

        with pytest.raises(aio.AioRpcError) as refused:
            await world.report_stream_stats("00000000-0000-4000-8000-000000000000", token, sample)
        assert refused.value.code() is grpc.StatusCode.NOT_FOUND
        assert await _seat_samples(world, broker) == 0
