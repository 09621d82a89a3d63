"""Drain deadlines in the database: the moves they make due, and what a session's watcher needs to warn its patron.

broker.drain has the rule and the warnings; store.fleet.set_drained sets and clears a drain and its deadline. This
module moves the sessions a passed deadline leaves on a host, and reads a session with its host's deadline.
"""

from __future__ import annotations

import uuid

import asyncpg
from cloudseat import errors

from broker import drain
from broker.store.database import required_row, transaction, translated
from broker.store.queries import Q


async def move_due(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """End HOST_DRAINED every live session on a drained host whose deadline has passed (database clock); the rows
    ended (session_id, host_id). Each seat then resumes its own, ahead of the queue (cloudseat.resume)."""
    with translated():
        due: list[str] = [r["host_id"] for r in await pool.fetch(Q["drain_due_hosts"])]
    if not due:
        return []
    async with transaction(pool) as conn:
        # Their sessions, then the hosts, each in id order, as every writer of many sessions (migration 0012).
        await conn.execute(Q["lock_sessions_on_hosts"], due)
        # Judged again under the locks: an undrain or a later deadline committed meanwhile wins.
        rows: list[asyncpg.Record] = await conn.fetch(Q["end_drain_due"], due, drain.MOVED_DETAIL)
    return rows


async def watched_session(pool: asyncpg.Pool, session_id: uuid.UUID) -> asyncpg.Record:
    """A session with, while it holds a host, that host's drain deadline (`moves_at`) and the seconds until it by
    the database clock (`moves_in_s`, negative once passed); both None when there is none. NotFound when unknown."""
    return await required_row(
        pool,
        "watched_session",
        session_id,
        missing=errors.NotFound.of("session_id", "session", str(session_id)),
    )
