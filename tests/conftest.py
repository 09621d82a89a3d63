"""Fixtures shared by every test: a real PostgreSQL and a fresh database per test copied from a migrated template.

PostgreSQL is the server DATABASE_URL names, or else an embedded one (pgserver) started once per test run in a
temporary directory.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from broker.store import migrate

TEMPLATE = f"cloudseat_template_{os.getpid()}"


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a PostgreSQL server's maintenance database (postgres)."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pg") / "pgdata", cleanup_mode="delete")
    yield server.get_uri()
    server.cleanup()


async def _admin(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for sql in statements:
            await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def template_url(pg_url: str) -> Iterator[str]:
    """A database with every migration applied, copied for each test."""

    async def build() -> None:
        await _admin(pg_url, f'DROP DATABASE IF EXISTS "{TEMPLATE}"', f'CREATE DATABASE "{TEMPLATE}"')
        conn = await asyncpg.connect(with_database(pg_url, TEMPLATE))
        try:
            await migrate.apply(conn)
        finally:
            await conn.close()

    asyncio.run(build())
    yield with_database(pg_url, TEMPLATE)
    asyncio.run(_admin(pg_url, f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)'))


@pytest.fixture
def db_url(pg_url: str, template_url: str) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    asyncio.run(_admin(pg_url, f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"'))
    yield with_database(pg_url, name)
    asyncio.run(_admin(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def artifacts_dir() -> Path:
    """Where tests leave files worth keeping (screenshots, reports): test-artifacts/ at the repository root."""
    path = Path(__file__).resolve().parent.parent / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path
