"""The two writes every session makes from a tenant's call — its start (or resume) and its end — grouped per process
(broker.store.group_commit): one statement, one commit and one notification for all the starts (or ends) that
arrived while the previous batch was in the database.

A start gets its row, or None when it was not inserted — a retry of an earlier call, a seat already busy or
unknown, an unknown game (a foreign key fails the whole statement, not the row) — and is then inserted alone by
broker.store.sessions, which tells which; an end gets its row, or None when the session moved since it was read.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
import uuid
from typing import TypeAlias

import asyncpg
from cloudseat import errors, resume

from broker.store import audit
from broker.store.database import notifying, transaction, translated
from broker.store.group_commit import GroupCommit
from broker.store.queries import Q

# A start refused because the database is backed up comes back after this much (plus the seat's jitter).
BUSY_RETRY_MS = 500


def busy() -> errors.ResourceExhausted:
    return errors.ResourceExhausted(
        f"the database is busy; retry in {BUSY_RETRY_MS} ms", retry_after_ms=BUSY_RETRY_MS
    )


@dataclasses.dataclass(frozen=True, slots=True)
class NewSession:
    """A new start's row values (what insert_session takes), with who asks captured in the caller's context."""

    session_id: uuid.UUID
    venue_id: str
    seat_id: str
    request_id: str
    game_id: str
    patron_id: str
    slots: int
    zone_id: str
    paid_time_s: int
    # Refused unheard if it has not reached the database by then (time.monotonic(); None: never).
    refuse_after: float | None
    # The lost session it resumes (None: a new start), and that session's stored capability as the seat presented
    # it, compared in the statement (None: the seat's signed token was checked before).
    resumes: uuid.UUID | None = None
    lost_token: str | None = None
    started_by: str = dataclasses.field(default_factory=lambda: audit.actor().subject)
    by_peer: str = dataclasses.field(default_factory=lambda: audit.actor().peer)
    token: str = dataclasses.field(default_factory=lambda: secrets.token_urlsafe(24))


@dataclasses.dataclass(frozen=True, slots=True)
class Ending:
    """One end_session compare-and-set, with who ends it captured in the caller's context."""

    session_id: uuid.UUID
    expected: str
    reason: str
    detail: str
    ended_by: str = dataclasses.field(default_factory=lambda: audit.actor().subject)
    by_peer: str = dataclasses.field(default_factory=lambda: audit.actor().peer)


# A start's row; None: insert it alone to learn why not (a retry, a busy seat, an unknown seat or game); or refused.
StartResult: TypeAlias = asyncpg.Record | errors.ResourceExhausted | None


class SessionBatches:
    """A process's grouped start inserts and end updates on `pool`."""

    def __init__(self, pool: asyncpg.Pool, *, db_wait_s: float | None = None) -> None:
        self._pool = pool
        # A batch that waits longer than this for a connection refuses its starts (None: waits as long as it takes).
        self._db_wait_s = db_wait_s
        self.starts: GroupCommit[NewSession, StartResult] = GroupCommit(self._insert, name="session-starts")
        self.ends: GroupCommit[Ending, asyncpg.Record | None] = GroupCommit(self._end, name="session-ends")

    async def _insert(self, batch: list[NewSession]) -> list[StartResult]:
        now = time.monotonic()
        late = [s.refuse_after is not None and now > s.refuse_after for s in batch]
        todo = [s for s, refused in zip(batch, late, strict=True) if not refused]
        rows: dict[uuid.UUID, asyncpg.Record] = {}
        if todo:
            # Translated whole: a database that went away mid-batch is UNAVAILABLE to every caller of it, never a
            # raw connection error (which would reach the seat as INTERNAL).
            with translated():
                try:
                    conn = await self._pool.acquire(timeout=self._db_wait_s)
                except TimeoutError:
                    return [busy() for _ in batch]
                try:
                    try:
                        async with notifying(conn):
                            found = await conn.fetch(
                                Q["insert_sessions"],
                                [s.session_id for s in todo],
                                [s.venue_id for s in todo],
                                [s.seat_id for s in todo],
                                [s.request_id for s in todo],
                                [s.game_id for s in todo],
                                [s.patron_id for s in todo],
                                [s.slots for s in todo],
                                [s.token for s in todo],
                                [s.zone_id for s in todo],
                                [s.started_by for s in todo],
                                [s.by_peer for s in todo],
                                [s.paid_time_s for s in todo],
                                [s.resumes for s in todo],
                                [s.lost_token for s in todo],
                                sorted(resume.RESUMABLE_REASONS),
                                resume.RESUME_WINDOW_S,
                            )
                    except (asyncpg.ForeignKeyViolationError, asyncpg.DeadlockDetectedError):
                        # An unknown game fails the whole statement, as do writers that crossed: nothing was
                        # written, and each start learns its own answer alone.
                        found = []
                finally:
                    await self._pool.release(conn)
            rows = {r["session_id"]: r for r in found}
        return [busy() if refused else rows.get(s.session_id) for s, refused in zip(batch, late, strict=True)]

    async def _end(self, batch: list[Ending]) -> list[asyncpg.Record | None]:
        # Two ends of one session in a batch: the first goes now, the other finds it moved and reads it again.
        first: dict[uuid.UUID, int] = {}
        for i, e in enumerate(batch):
            first.setdefault(e.session_id, i)
        todo = [batch[i] for i in first.values()]
        try:
            async with transaction(self._pool, notifies=True) as conn:
                # The sessions, then their hosts, each in id order, as every writer of many sessions: two batches
                # never wait on each other in a circle (migration 0012).
                await conn.execute(Q["lock_sessions_then_hosts"], [e.session_id for e in todo], [])
                found = await conn.fetch(
                    Q["end_sessions"],
                    [e.session_id for e in todo],
                    [e.expected for e in todo],
                    [e.reason for e in todo],
                    [e.detail for e in todo],
                    [e.ended_by for e in todo],
                    [e.by_peer for e in todo],
                )
        except errors.Unavailable as exc:
            if not isinstance(exc.__cause__, asyncpg.DeadlockDetectedError):
                raise
            # A writer of one host's sessions that locks the host first (a registration, a goodbye) crossed this
            # batch: nothing was written; each end reads its session again and comes back.
            found = []
        rows = {r["session_id"]: r for r in found}
        return [rows.get(e.session_id) if first[e.session_id] == i else None for i, e in enumerate(batch)]
