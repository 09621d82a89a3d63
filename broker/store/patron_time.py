"""Patron time in the database: the deadline's distance, time added by the venue, sessions whose time is up.

broker.patron_time has the rule and the warnings; this module only reads and moves the deadline the database keeps.
"""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
from cloudseat import errors

from broker.patron_time import MAX_PAID_TIME_S
from broker.store import audit
from broker.store.database import required_row, transaction, translated
from broker.store.queries import Q


async def seconds_until(pool: asyncpg.Pool, deadline: dt.datetime) -> float:
    """Seconds from now (database clock) until `deadline`; negative once it has passed."""
    with translated():
        left: float = await pool.fetchval(Q["seconds_until"], deadline)
    return left


async def add_time(
    pool: asyncpg.Pool, venue_id: str, session_id: uuid.UUID, seconds: int
) -> tuple[asyncpg.Record, float | None]:
    """Add paid time to a live, limited session of `venue_id`; audited. Returns the session and the seconds left
    now (None while it is not STREAMING: its time has not started). NotFound for an unknown session or one of
    another venue, FailedPrecondition for an ended or unlimited one."""
    async with transaction(pool) as conn:
        missing = errors.NotFound.of("session_id", "session", str(session_id))
        row = await required_row(conn, "lock_session", session_id, missing=missing)
        if row["venue_id"] != venue_id:
            # Another venue's session is as unknown to this venue as one that does not exist.
            raise missing
        if row["state"] == "ENDED":
            raise errors.FailedPrecondition(f"session_id: the session has ended ({row['end_reason']})")
        if row["paid_time_s"] == 0:
            raise errors.FailedPrecondition(
                "session_id: the session has no time limit (it started with paid_time_s 0); there is nothing to "
                "add to"
            )
        if row["paid_time_s"] + seconds > MAX_PAID_TIME_S:
            raise errors.FailedPrecondition(
                f"seconds: the session would have more than {MAX_PAID_TIME_S} s of paid time in all"
            )
        updated: asyncpg.Record = await conn.fetchrow(Q["add_patron_time"], session_id, seconds)
        await audit.write(
            conn,
            "session.add_time",
            f"session:{session_id}",
            seconds=seconds,
            paid_time_s=updated["paid_time_s"],
            paid_until=updated["paid_until"],
        )
    left = updated["left_s"]
    return updated, (float(left) if left is not None else None)


async def end_time_up(pool: asyncpg.Pool, grace_s: float) -> list[asyncpg.Record]:
    """End TIME_UP every streaming session whose paid time ran out more than `grace_s` ago."""
    async with transaction(pool) as conn:
        rows: list[asyncpg.Record] = await conn.fetch(Q["end_time_up"], grace_s)
    return rows
