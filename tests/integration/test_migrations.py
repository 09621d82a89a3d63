"""The migrations build the schema the broker expects, once."""

from __future__ import annotations

import asyncpg

from broker.store import migrate


async def test_migrations_apply_once_and_build_the_invariants(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        # db_url is a copy of the migrated template: everything is applied already.
        assert await migrate.apply(conn) == []
        versions = [
            r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")
        ]
        assert versions == [v for v, _, _ in migrate.available()]
        constraints = {r["conname"] for r in await conn.fetch("SELECT conname FROM pg_constraint")}
        assert {"free_slots_in_range", "one_session_per_request", "ended_iff_reason"} <= constraints
        indexes = {r["indexname"] for r in await conn.fetch("SELECT indexname FROM pg_indexes")}
        assert "one_live_session_per_seat" in indexes
    finally:
        await conn.close()


async def test_fresh_database_gets_every_migration(pg_url: str) -> None:
    admin = await asyncpg.connect(pg_url)
    try:
        await admin.execute("DROP DATABASE IF EXISTS migrate_fresh")
        await admin.execute("CREATE DATABASE migrate_fresh")
    finally:
        await admin.close()
    from tests.conftest import with_database

    conn = await asyncpg.connect(with_database(pg_url, "migrate_fresh"))
    try:
        assert await migrate.apply(conn) == [v for v, _, _ in migrate.available()]
        assert await migrate.apply(conn) == []
    finally:
        await conn.close()
    admin = await asyncpg.connect(pg_url)
    try:
        await admin.execute("DROP DATABASE migrate_fresh WITH (FORCE)")
    finally:
        await admin.close()
