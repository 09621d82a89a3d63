"""Fair share of the calls in progress (broker.overload.Slots through broker.guard): a tenant holding its share of a
worker's calls in progress is refused, RESOURCE_EXHAUSTED with a retry hint, while another tenant's calls go through
on the same broker. Security on (the tenant is the token's), a real PostgreSQL: the first venue's calls are kept in
progress by a row lock the test holds on its venue, so the broker is really busy with them, not told it is; no
timing is asserted (which calls are in progress is held by the lock, not by the clock)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import asyncpg
import grpc
import pytest
from cloudseat import tls
from cloudseat.client import BrokerClient
from cloudseat.v1 import common_pb2, venue_pb2
from grpc import aio

from broker import issuing
from broker.config import BrokerConfig, SecurityConfig
from broker.server import Broker
from broker.store import venues as venue_store
from tests.integration import faults
from tests.integration.conftest import FAST

pytestmark = pytest.mark.slow


@pytest.fixture
def creds(tmp_path: Path) -> issuing.Credentials:
    return issuing.make(tmp_path / "creds", [])


@pytest.fixture
def broker_config(db_url: str, creds: issuing.Credentials) -> BrokerConfig:
    security = SecurityConfig(
        cert=creds.broker.cert, key=creds.broker.key, client_ca=creds.ca, token_key=creds.token_key
    )
    # Four calls in progress in all: with two venues holding calls, each may hold two. Enough database connections
    # for the calls kept waiting on the test's lock and the ones that go through.
    return dataclasses.replace(
        FAST,
        database_url=db_url,
        insecure=False,
        security=security,
        agent_listen="127.0.0.1:0",
        max_inflight=4,
        db_pool_max=10,
    )


@pytest.fixture
async def clients(broker: Broker, creds: issuing.Credentials) -> AsyncIterator[dict[str, BrokerClient]]:
    """The two venues' clients. The venues are made in the store directly: an operator calling the broker would be a
    third tenant active, and change the shares."""
    assert broker.pool is not None
    for venue_id in ("flood", "quiet"):
        await venue_store.create_venue(broker.pool, venue_id, venue_id)

    def client(**claims: str) -> BrokerClient:
        token = issuing.issue_token(creds.token_key, "venue", ttl_s=600, **claims)
        return BrokerClient(f"127.0.0.1:{broker.port}", token=token, credentials=tls.client_credentials(creds.ca))

    made = {"flood": client(venue_id="flood"), "quiet": client(venue_id="quiet")}
    try:
        yield made
    finally:
        for c in made.values():
            await c.close()


def _zone(venue_id: str, zone_id: str) -> venue_pb2.PutZoneRequest:
    return venue_pb2.PutZoneRequest(
        venue_id=venue_id, zone_id=zone_id, tier=common_pb2.TIER_720P60, latency_cap_ms=50
    )


async def _waiting_on_locks(conn: asyncpg.Connection, n: int) -> bool:
    waiting = await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
    return int(waiting) >= n


async def test_a_tenant_at_its_share_is_refused_with_a_hint_while_another_goes_through(
    broker: Broker, clients: dict[str, BrokerClient], db_url: str
) -> None:
    flood, quiet = clients["flood"], clients["quiet"]
    lock = await asyncpg.connect(db_url)
    watch = await asyncpg.connect(db_url)
    held: list[asyncio.Future[venue_pb2.Zone]] = []
    try:
        tx = lock.transaction()
        await tx.start()
        # A zone's insert checks its venue's row (a foreign key), which waits while this lock is held.
        await lock.execute("SELECT 1 FROM venues WHERE venue_id IN ('flood', 'quiet') FOR UPDATE")
        # The flooding venue alone may hold all four calls in progress; a fifth is refused, with the time to wait.
        held = [asyncio.ensure_future(flood.venues.PutZone(_zone("flood", f"z{i}"), timeout=60)) for i in range(4)]
        await faults.wait_until(lambda: _waiting_on_locks(watch, 4), timeout_s=30, what="4 calls in progress")
        refused = await _refused(flood.venues.PutZone(_zone("flood", "z9"), timeout=30))
        assert refused.details() == "overloaded: 4 calls in progress here; retry in 100 ms"
        assert _hint_ms(refused) == 100

        # Another venue is under its share (two of the four) though all four are held: its calls go in.
        held.append(asyncio.ensure_future(quiet.venues.PutZone(_zone("quiet", "main"), timeout=60)))
        await faults.wait_until(lambda: _waiting_on_locks(watch, 5), timeout_s=30, what="its call in progress")
        for _ in range(3):
            got = await quiet.venues.GetVenue(venue_pb2.GetVenueRequest(venue_id="quiet"), timeout=30)
            assert got.venue_id == "quiet"
        # Now two share the capacity: the flooding venue holds twice its share, and is told to wait longer (the
        # base hint × the square of its excess).
        refused = await _refused(flood.venues.PutZone(_zone("flood", "z9"), timeout=30))
        assert "venue:flood holds 4 calls in progress here, its share" in (refused.details() or "")
        assert _hint_ms(refused) == 400

        # Nothing of the refused calls was written; the held ones finish once the lock goes.
        await tx.rollback()
        done = await asyncio.gather(*held)
        assert sorted(z.zone_id for z in done) == ["main", "z0", "z1", "z2", "z3"]
        zones = await watch.fetch("SELECT zone_id FROM zones WHERE venue_id = 'flood' ORDER BY zone_id")
        assert [r["zone_id"] for r in zones] == ["z0", "z1", "z2", "z3"]
        # Its calls done, the venue may call again.
        again = await flood.venues.PutZone(_zone("flood", "z9"), timeout=30)
        assert again.zone_id == "z9"
    finally:
        for call in held:
            call.cancel()
        await lock.close()
        await watch.close()


async def _refused(call: Awaitable[object]) -> aio.AioRpcError:
    with pytest.raises(aio.AioRpcError) as refused:
        await call
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    return refused.value


def _hint_ms(error: aio.AioRpcError) -> int:
    return int(dict(error.trailing_metadata() or ())["grpc-retry-pushback-ms"])
