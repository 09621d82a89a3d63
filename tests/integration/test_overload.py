"""Past capacity a tenant worker refuses new calls at the door: RESOURCE_EXHAUSTED with a retry hint, nothing
written; calls that end or serve a placed session still go through. The overload is real: the broker's own event
loop is kept busy by blocking callbacks, so the probe measures it late, as a saturated worker would be."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from cloudseat import errors
from cloudseat.client import BrokerClient
from cloudseat.v1 import common_pb2, session_pb2
from grpc import aio

from broker.server import Broker
from broker.store import database, session_batches
from broker.store import sessions as session_store
from tests.integration import faults
from tests.integration.conftest import FAST


@contextlib.asynccontextmanager
async def _busy_loop(block_s: float) -> AsyncIterator[None]:
    """Keep this loop (the in-process broker's) running blocking callbacks of `block_s` back to back."""
    stop = False

    def hog() -> None:
        if not stop:
            time.sleep(block_s)
            asyncio.get_running_loop().call_soon(hog)

    asyncio.get_running_loop().call_soon(hog)
    try:
        yield
    finally:
        stop = True


async def test_an_overloaded_worker_refuses_new_calls_with_a_hint_and_writes_nothing(db_url: str) -> None:
    config = dataclasses.replace(FAST, database_url=db_url, shed_lag_ms=5)
    async with faults.running_broker(config) as broker, BrokerClient(f"127.0.0.1:{broker.port}") as client:
        # Seeded through the store, not the API: with a 5-ms lag allowed, a busy CI machine shed a seeding call
        # (RESOURCE_EXHAUSTED "overloaded: retry in 166 ms") before the test had made the loop late on purpose.
        assert broker.pool is not None
        await faults.seed_store(broker.pool, seats=2)
        before = await broker.pool.fetchval("SELECT count(*) FROM sessions")  # type: ignore[union-attr]
        request = session_pb2.StartSessionRequest(request_id="r1", venue_id="cafe", seat_id="s001", game_id="demo")
        async with _busy_loop(0.05):
            await asyncio.sleep(0.5)  # the probe sees the loop run late
            with pytest.raises(aio.AioRpcError) as refused:
                await client.sessions.StartSession(request, timeout=10)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (refused.value.details() or "").startswith("overloaded: retry in")
        hint = dict(refused.value.trailing_metadata() or ())["grpc-retry-pushback-ms"]
        assert 100 <= int(hint) <= 5_000
        assert await broker.pool.fetchval("SELECT count(*) FROM sessions") == before  # type: ignore[union-attr]
        text = await _metrics(broker)
        assert "cloudseat_calls_shed_total" in text
        # Calm again: the same request is let in.
        await asyncio.sleep(1.0)
        started = await client.sessions.StartSession(request, timeout=10)
        assert started.created
        # EndSession is always let in: it frees capacity.
        async with _busy_loop(0.05):
            await asyncio.sleep(0.5)
            ended = await client.end_session(started.session.session_id, started.session_token)
        assert ended.state == common_pb2.SESSION_STATE_ENDED


async def _metrics(broker: Broker) -> str:
    from broker.console.metrics import Metrics

    return Metrics(broker.counters).render().decode()


async def test_a_start_that_waits_too_long_for_the_database_is_refused_and_writes_nothing(db_url: str) -> None:
    """Past capacity the calls let in queue for a database connection: a new start that waited longer than
    --start-db-wait-ms is refused with a retry hint before it writes anything (a resume still waits its turn)."""
    pool = await database.create_pool(db_url, 1, 1)
    try:
        await faults.seed_store(pool, seats=2)
        held = await pool.acquire()  # the only connection: every other caller waits
        try:
            request = session_store.StartRequest("busy-1", "cafe", "s001", "demo")
            with pytest.raises(errors.ResourceExhausted, match="database is busy") as refused:
                await session_store.start(pool, request, busy_after_s=0.05)
            assert refused.value.retry_after_ms == session_batches.BUSY_RETRY_MS
            written = await held.fetchval("SELECT count(*) FROM sessions WHERE request_id = 'busy-1'")
            assert written == 0
        finally:
            await pool.release(held)
        row, created = await session_store.start(pool, request, busy_after_s=0.05)  # a connection is free now
        assert created and row["state"] == "PENDING"
    finally:
        await pool.close()


async def test_a_start_is_refused_while_the_placement_queue_is_behind_and_writes_nothing(db_url: str) -> None:
    """--start-backlog-ms through the real servicer, gRPC and database: while the leader places but the oldest
    request no round has looked at is older than the limit, a new start is refused with how far past the limit the
    backlog is as the hint, and nothing is written. The backlog is what the tenant worker heard (broker.backlog);
    a leader that falls seconds behind cannot be made to on cue here, so the stale request and the leader's last
    placement are told to it as the hub would, and everything after is real."""
    config = dataclasses.replace(FAST, database_url=db_url, start_backlog_ms=300)
    async with faults.running_broker(config) as broker, BrokerClient(f"127.0.0.1:{broker.port}") as client:
        await faults.seed(client, seats=2)
        assert broker.backlog is not None
        now = time.monotonic()
        broker.backlog.on_change(
            {"session_id": "stale", "state": "PENDING", "pending_reason": None, "resumed": False}, now - 3
        )
        broker.backlog.on_change({"session_id": "other", "state": "PLACED", "pending_reason": None}, now)
        request = session_pb2.StartSessionRequest(request_id="r1", venue_id="cafe", seat_id="s001", game_id="demo")
        with pytest.raises(aio.AioRpcError) as refused:
            await client.sessions.StartSession(request, timeout=10)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (refused.value.details() or "").startswith("the placement queue is behind; retry in")
        hint = int(dict(refused.value.trailing_metadata() or ())["grpc-retry-pushback-ms"])
        assert 2_500 <= hint <= 5_000  # 3 s old, 0.3 s the limit
        written = await broker.pool.fetchval("SELECT count(*) FROM sessions WHERE request_id = 'r1'")  # type: ignore[union-attr]
        assert written == 0
        # The stale request is looked at (it got a reason): the same start is let in.
        broker.backlog.on_change(
            {"session_id": "stale", "state": "PENDING", "pending_reason": "NO_CAPACITY_WITHIN_CAP"}, time.monotonic()
        )
        started = await client.sessions.StartSession(request, timeout=10)
        assert started.created
