"""A broker process's periodic check of its links (broker.replica): which of them no longer hold their host, on a
real PostgreSQL. The check backs up the host notifications, so a link whose host was declared lost, or taken over by
a newer connection, is closed even when the notification was missed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from broker.store import database, hosts
from broker.store import fleet as fleet_store


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await database.create_pool(db_url, 1, 4)
    await fleet_store.create_provider(p, "prov", "P")
    await fleet_store.create_site(p, "site-a", "prov", "A", "")
    yield p
    await p.close()


async def _linked(pool: asyncpg.Pool, host_id: str, epoch: int) -> uuid.UUID:
    link = hosts.Link(uuid.uuid4(), "replica-1", None)
    await hosts.register(
        pool, hosts.Registration(host_id, "prov", "site-a", epoch, "t", "rtx", 1, 1_000_000), link
    )
    return link.link_id


async def test_only_links_that_lost_their_host_are_stale(pool: asyncpg.Pool) -> None:
    kept = await _linked(pool, "h-kept", 1)
    replaced = await _linked(pool, "h-replaced", 1)
    newer = await _linked(pool, "h-replaced", 2)  # a newer agent process on another connection
    lost = await _linked(pool, "h-lost", 1)
    await pool.execute("UPDATE hosts SET status = 'lost' WHERE host_id = 'h-lost'")
    never = uuid.uuid4()  # a link the database never heard of

    assert await hosts.links_stale(pool, [kept, replaced, newer, lost, never]) == {replaced, lost, never}
    assert await hosts.links_stale(pool, [kept, newer]) == set()
    assert await hosts.links_stale(pool, []) == set()
