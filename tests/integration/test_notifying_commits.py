"""Notifying writes committed outside PostgreSQL's notify lock (broker.store.database.notifying): the commit does not
wait for its WAL flush, a second tiny transaction does. What must hold, on a real PostgreSQL:

- a write the caller was answered for survives a crash right after the answer (the server stopped with -m immediate:
  no checkpoint, WAL recovery at the next start);
- listeners hear every committed write; a write that failed is neither kept nor heard;
- the setting lasts for the one transaction (the pooled connection commits synchronously again afterwards), and a
  nested conn.transaction() inside is refused loudly rather than committing the outer one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from cloudseat import errors

from broker.store import database
from tests.integration import faults

_SCHEMA = """
CREATE TABLE acks (n integer PRIMARY KEY);
CREATE FUNCTION acks_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('acks', NEW.n::text);
    RETURN NULL;
END $$;
CREATE TRIGGER acks_notify AFTER INSERT ON acks FOR EACH ROW EXECUTE FUNCTION acks_notify();
"""


async def _write(pool: asyncpg.Pool, n: int) -> int:
    async with database.transaction(pool, notifies=True) as conn:
        await conn.execute("INSERT INTO acks (n) VALUES ($1)", n)
    return n


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[faults.Postgres]:
    pg = faults.Postgres(tmp_path)
    try:
        yield pg
    finally:
        pg.close()


async def test_acknowledged_notifying_writes_survive_a_crash_and_are_heard(own_postgres: faults.Postgres) -> None:
    await faults.create_database(own_postgres.url(), "acks")
    url = own_postgres.url("acks")
    setup = await asyncpg.connect(url)
    await setup.execute(_SCHEMA)
    heard: list[int] = []
    await setup.add_listener("acks", lambda *args: heard.append(int(args[3])))
    pool = await database.create_pool(url, 2, 8, name="notifying-test")
    try:
        # Concurrent writers, as the tenant workers and the agent gateway are: every answered write is recorded.
        answered = sorted(await asyncio.gather(*(_write(pool, n) for n in range(200))))
        for _ in range(100):  # bounded: the notifications arrive within moments of the commits
            if len(heard) >= len(answered):
                break
            await asyncio.sleep(0.05)
        assert sorted(heard) == answered
    finally:
        await pool.close()
        await setup.close()

    # A crash the moment the last answer came back: no checkpoint, only the WAL on disk is recovered.
    own_postgres.stop("immediate")
    own_postgres.start()
    conn = await asyncpg.connect(url)
    try:
        kept = [r["n"] for r in await conn.fetch("SELECT n FROM acks ORDER BY n")]
    finally:
        await conn.close()
    assert kept == answered


async def test_a_failed_notifying_write_is_neither_kept_nor_heard(db_url: str) -> None:
    setup = await asyncpg.connect(db_url)
    await setup.execute(_SCHEMA)
    heard: list[str] = []
    await setup.add_listener("acks", lambda *args: heard.append(args[3]))
    pool = await database.create_pool(db_url, 1, 1, name="notifying-test")
    try:
        with pytest.raises(errors.FailedPrecondition):
            async with database.transaction(pool, notifies=True) as conn:
                await conn.execute("INSERT INTO acks (n) VALUES (1)")
                raise errors.FailedPrecondition("refused after the insert")
        with pytest.raises(errors.StoreError):
            async with database.transaction(pool, notifies=True) as conn:
                await conn.execute("INSERT INTO acks (n) VALUES (2)")
                await conn.execute("INSERT INTO acks (n) VALUES (2)")  # the key again: PostgreSQL refuses it
        # The one pooled connection serves on, committing synchronously again outside a notifying write.
        async with database.transaction(pool, notifies=True) as conn:
            assert await conn.fetchval("SHOW synchronous_commit") == "off"
            await conn.execute("INSERT INTO acks (n) VALUES (3)")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW synchronous_commit") == "on"
            assert not conn.is_in_transaction()
        await _write(pool, 4)
        rows = [r["n"] for r in await setup.fetch("SELECT n FROM acks ORDER BY n")]
        assert rows == [3, 4]
        for _ in range(100):
            if len(heard) >= 2:
                break
            await asyncio.sleep(0.05)
        assert heard == ["3", "4"]
    finally:
        await pool.close()
        await setup.close()


async def test_a_nested_transaction_inside_a_notifying_write_is_refused(db_url: str) -> None:
    setup = await asyncpg.connect(db_url)
    await setup.execute(_SCHEMA)
    pool = await database.create_pool(db_url, 1, 1, name="notifying-test")
    try:
        with pytest.raises(errors.CloudseatError, match="manually started transaction"):
            async with database.transaction(pool, notifies=True) as conn:
                await conn.execute("INSERT INTO acks (n) VALUES (1)")
                async with conn.transaction():
                    await conn.execute("INSERT INTO acks (n) VALUES (2)")
        assert await setup.fetchval("SELECT count(*) FROM acks") == 0
        await _write(pool, 5)
        assert await setup.fetchval("SELECT count(*) FROM acks") == 1
    finally:
        await pool.close()
        await setup.close()
