"""Sessions: creation (idempotent per request id), moves decided by broker.lifecycle, history and queue order.

Every move is a compare-and-set on the state that was read, so two writers never both apply a move; the database's
triggers number the move, stamp it with the database clock, record it in session_transitions, keep the host's free
slots, and notify every broker replica.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

import asyncpg
from cloudseat import errors

from broker import lifecycle
from broker.lifecycle import EndReason, State
from broker.store import audit
from broker.store.database import required_row, required_value, transaction, translated
from broker.store.queries import Q
from broker.store.session_batches import Ending, NewSession, SessionBatches, busy

# How often a move is retried when another writer moved the session between our read and our write.
_CAS_ATTEMPTS = 5


@dataclasses.dataclass(frozen=True, slots=True)
class ResumeRef:
    """The lost session a new one resumes, and the capability that proves the seat held it."""

    session_id: uuid.UUID
    token: str


@dataclasses.dataclass(frozen=True, slots=True)
class StartRequest:
    request_id: str
    venue_id: str
    seat_id: str
    game_id: str
    patron_id: str = ""
    slots: int = 1
    # The zone the seat believes it is in ("" = do not check).
    zone_id: str = ""
    resume: ResumeRef | None = None
    # The patron's paid time in seconds, counted from STREAMING (broker.patron_time); 0 = unlimited.
    paid_time_s: int = 0
    # The new session's id, chosen before it exists so that a caller can listen for its changes first.
    session_id: uuid.UUID = dataclasses.field(default_factory=uuid.uuid4)


TokenCheck = Callable[[Mapping[str, object], str, str], None]


def check_token(row: Mapping[str, object], token: str, field: str = "session_token") -> None:
    """PermissionDenied unless `token` is the session's stored random capability (compared in constant time). With
    authentication on, the broker checks signed patron tokens instead (broker.auth.SessionTokens.check)."""
    if not hmac.compare_digest(str(row["token"]).encode(), token.encode()):
        raise errors.PermissionDenied(f"{field}: does not match the session")


async def _insert(
    db: asyncpg.Pool | asyncpg.Connection, req: StartRequest, carried_s: int
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await db.fetchrow(
        Q["insert_session"],
        req.session_id,
        req.venue_id,
        req.seat_id,
        req.request_id,
        req.game_id,
        req.patron_id,
        req.slots,
        secrets.token_urlsafe(24),
        req.zone_id,
        req.resume.session_id if req.resume else None,
        audit.actor().subject,
        audit.actor().peer,
        req.paid_time_s or carried_s,
    )
    return row


async def _insert_grouped(
    batches: SessionBatches, req: StartRequest, busy_after_s: float | None, lost_token: str | None = None
) -> asyncpg.Record | None:
    """The new session's row, inserted with the other starts (and resumes) of the moment; None: it must be inserted
    alone to learn why not. A resume is never refused for a busy database (it goes ahead of the queue)."""
    result = await batches.starts(
        NewSession(
            session_id=req.session_id,
            venue_id=req.venue_id,
            seat_id=req.seat_id,
            request_id=req.request_id,
            game_id=req.game_id,
            patron_id=req.patron_id,
            slots=req.slots,
            zone_id=req.zone_id,
            paid_time_s=req.paid_time_s,
            refuse_after=(
                None if busy_after_s is None or req.resume is not None else time.monotonic() + busy_after_s
            ),
            resumes=req.resume.session_id if req.resume else None,
            lost_token=lost_token,
        )
    )
    if isinstance(result, errors.ResourceExhausted):
        raise result
    return result


@contextlib.asynccontextmanager
async def _connection(pool: asyncpg.Pool, busy_after_s: float | None) -> AsyncIterator[asyncpg.Connection]:
    """A connection of `pool`, or ResourceExhausted when none came within `busy_after_s`. Past capacity the calls a
    process has let in queue here for the database, whose commits that notify are serialised (PostgreSQL holds one
    lock from a notifying commit's start to its flush; docs/loadtest-fleet.md#what-limits-it): a start that has
    waited this long would finish after its seat gave up, so it is refused while that costs nothing."""
    try:
        conn = await pool.acquire(timeout=busy_after_s)
    except TimeoutError:
        raise busy() from None
    try:
        yield conn
    finally:
        await pool.release(conn)


async def start(
    pool: asyncpg.Pool,
    req: StartRequest,
    check: TokenCheck = check_token,
    *,
    busy_after_s: float | None = None,
    batches: SessionBatches | None = None,
    token_stored: bool = True,
) -> tuple[asyncpg.Record, bool]:
    """Create a PENDING session for a seat, or return the one an earlier call with the same request id created.

    Returns (session row, created). Raises NotFound for an unknown venue, seat or game, FailedPrecondition when the
    seat already has a live session, AlreadyExists when the request id was used for a different request. With
    `busy_after_s`, a new start (not a resume) that waits longer than that for a database connection is refused
    with ResourceExhausted before it writes anything (see BUSY_RETRY_MS). `token_stored`: a session's capability
    is the random one its row keeps (`check` compares it); else a signed token `check` verifies from the session id.
    """
    seat_taken: errors.FailedPrecondition | None = None
    try:
        # One statement, atomic by itself: no transaction round trips on the common path; with `batches`, one
        # statement for every start and resume that arrives meanwhile in this process. A site lost at peak sends
        # hundreds of resumes at once: one transaction each (four round trips and a lock) held up every start
        # behind them (docs/loadtest-fleet.md, a site lost).
        row = None
        if batches is not None:
            grouped, lost_token = True, None
            if req.resume is not None:
                grouped, lost_token = _resume_token(req.resume, check, token_stored)
            if grouped:
                row = await _insert_grouped(batches, req, busy_after_s, lost_token)
        if row is None and req.resume is None:
            with translated():
                async with _connection(pool, busy_after_s) as conn:
                    row = await _insert(conn, req, 0)
        elif row is None and req.resume is not None:
            # Alone, the lost session locked: a retry of the call that resumed it, or the reason it cannot be.
            async with transaction(pool, notifies=True) as conn:
                retry, carried = await _check_resume(conn, req, req.resume, check)
                row = None if retry else await _insert(conn, req, carried)
    except errors.NotFound as exc:
        # The games foreign key (venue and seat are checked by the insert's join): name the game asked for.
        if not exc.message.startswith("game_id:"):
            raise
        raise errors.NotFound.of("game_id", "game", req.game_id) from exc
    except errors.FailedPrecondition as exc:
        # The seat is taken. By a concurrent call with this very request id? PostgreSQL checks the seat index,
        # not the request id, when the other insert is still in flight; the retry must get that session.
        seat_taken, row = exc, None
    if row is not None:
        return row, True
    # Slow path: a retry, or something unknown. Find out which.
    with translated():
        async with pool.acquire() as conn:
            existing = await conn.fetchrow(Q["session_by_request"], req.venue_id, req.request_id)
            if existing is not None:
                same = (
                    existing["seat_id"],
                    existing["game_id"],
                    existing["patron_id"],
                    existing["slots"],
                    existing["resumes"],
                ) == (
                    req.seat_id,
                    req.game_id,
                    req.patron_id,
                    req.slots,
                    req.resume.session_id if req.resume else None,
                ) and (
                    # A resume that named no paid time carried the lost session's over.
                    existing["paid_time_s"] == req.paid_time_s
                    or (req.resume is not None and not req.paid_time_s)
                )
                if not same:
                    # A request id belongs to the request that first used it; the answer names nothing of that
                    # session (it may be another seat's).
                    raise errors.AlreadyExists(
                        "request_id: already used for a different request; choose a new request id"
                    )
                return existing, False
            if seat_taken is not None:
                raise seat_taken
            await required_value(
                conn,
                "venue_exists",
                req.venue_id,
                missing=errors.NotFound.of("venue_id", "venue", req.venue_id),
            )
            zone = await required_value(
                conn,
                "seat_zone",
                req.venue_id,
                req.seat_id,
                missing=errors.NotFound.of("seat_id", "seat", req.seat_id),
            )
            if req.zone_id and zone != req.zone_id:
                raise errors.FailedPrecondition(
                    f"zone_id: seat {req.seat_id!r} is in zone {zone!r}, not {req.zone_id!r}; fix the seat's "
                    "configuration"
                )
            raise errors.StoreError(f"session for request {req.request_id!r} neither created nor found")


def _resume_token(resume: ResumeRef, check: TokenCheck, token_stored: bool) -> tuple[bool, str | None]:
    """Whether a resume may go into the grouped insert, and the stored capability the statement compares (None: the
    signed token was verified here). A token that fails here goes alone, which reads the lost session and answers
    as it always has (an unknown session NOT_FOUND before a wrong token PERMISSION_DENIED). Capabilities are stored
    only with authentication off; with it on, every token is a signature checked here, in Python."""
    if token_stored:
        return True, resume.token
    try:
        check({"session_id": str(resume.session_id)}, resume.token, "resume.session_token")
    except errors.PermissionDenied:
        return False, None
    return True, None


async def _check_resume(
    conn: asyncpg.Connection, req: StartRequest, resume: ResumeRef, check: TokenCheck
) -> tuple[bool, int]:
    """Check (with the lost session locked) that `req` may resume it. (True, 0) when `req` is a retry of the call
    that did resume it (the caller then returns that session); else (False, the paid seconds the lost session had
    left, which the new one keeps unless the request names its own: resume_paid_time, migration 0023)."""
    lost = await required_row(
        conn,
        "lock_session",
        resume.session_id,
        missing=errors.NotFound.of("resume.session_id", "session", str(resume.session_id)),
    )
    check(lost, resume.token, "resume.session_token")
    if (lost["venue_id"], lost["seat_id"]) != (req.venue_id, req.seat_id):
        raise errors.PermissionDenied("resume.session_id: a session of another seat")
    successor = await conn.fetchrow(Q["resumed_by"], resume.session_id)
    if successor is not None:
        if successor["request_id"] == req.request_id:
            return True, 0
        raise errors.FailedPrecondition(
            f"resume.session_id: resumed already by session {successor['session_id']}"
        )
    ended_s_ago = float(await conn.fetchval(Q["seconds_since"], lost["ended_at"]) or 0.0)
    reason = EndReason(lost["end_reason"]) if lost["end_reason"] else None
    lifecycle.check_resumable(State(lost["state"]), reason, ended_s_ago)
    carried = await conn.fetchval(Q["resume_paid_time"], lost["paid_time_s"], lost["paid_until"], lost["ended_at"])
    return False, int(carried)


async def list_games(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    with translated():
        rows: list[asyncpg.Record] = await pool.fetch(Q["list_games"])
    return rows


async def get(pool: asyncpg.Pool, session_id: uuid.UUID) -> asyncpg.Record:
    return await required_row(
        pool, "get_session", session_id, missing=errors.NotFound.of("session_id", "session", str(session_id))
    )


async def history(pool: asyncpg.Pool, session_id: uuid.UUID) -> list[asyncpg.Record]:
    with translated():
        rows: list[asyncpg.Record] = await pool.fetch(Q["session_history"], session_id)
    return rows


async def advance(
    pool: asyncpg.Pool, session_id: uuid.UUID, to: State, *, host_id: str | None = None
) -> asyncpg.Record:
    """Move a session forward to `to`, recording each step on the way (a repeated or late report is a no-op). With
    host_id, the session must be on it."""
    for _ in range(_CAS_ATTEMPTS):
        row = await get(pool, session_id)
        _check_host(row, host_id)
        moves = lifecycle.catch_up(State(row["state"]), to)
        if not moves:
            return row
        async with transaction(pool, notifies=True) as conn:
            updated: asyncpg.Record | None = None
            for move in moves:
                updated = await conn.fetchrow(Q["advance"], session_id, move.current, move.to)
                if updated is None:
                    break  # moved by someone else meanwhile: read again
        if updated is not None:
            return updated
    raise errors.Unavailable("session_id: the session is changing too fast; retry")


async def end(
    pool: asyncpg.Pool,
    session_id: uuid.UUID,
    reason: EndReason,
    detail: str = "",
    *,
    host_id: str | None = None,
    token: str | None = None,
    check: TokenCheck = check_token,
    current: asyncpg.Record | None = None,
    batches: SessionBatches | None = None,
) -> asyncpg.Record:
    """End a session (ending an ended one returns it unchanged). With host_id it must be on that host; with token the
    token must match. `current`: the row as the caller just read it (saves reading it again). With `batches`, the
    end goes in one statement with the others of this process."""
    for attempt in range(_CAS_ATTEMPTS):
        row = current if attempt == 0 and current is not None else await get(pool, session_id)
        if token is not None:
            check(row, token, "session_token")
        _check_host(row, host_id)
        move = lifecycle.end(State(row["state"]), reason)
        if move is None:
            return row
        who = audit.actor()
        # One compare-and-set statement (its triggers do the rest in it): atomic without a transaction around it.
        updated: asyncpg.Record | None
        if batches is not None:
            updated = await batches.ends(Ending(session_id, move.current, reason, detail))
        else:
            with translated():
                updated = await pool.fetchrow(
                    Q["end_session"], session_id, move.current, reason, detail, who.subject, who.peer
                )
        if updated is not None:
            return updated
    raise errors.Unavailable("session_id: the session is changing too fast; retry")


async def held_or_claimed(
    pool: asyncpg.Pool, host_id: str, claimed: Sequence[uuid.UUID]
) -> list[asyncpg.Record]:
    """The sessions live on `host_id` and the sessions in `claimed` (whatever their state or host), read at once,
    oldest change first: what a reconnecting agent, which claims to run `claimed`, is reconciled with. Each row has
    the session's id, state, host, end reason and what a start command needs."""
    with translated():
        rows: list[asyncpg.Record] = await pool.fetch(Q["held_or_claimed"], host_id, list(claimed))
    return rows


def _check_host(row: Mapping[str, object], host_id: str | None) -> None:
    if host_id is not None and row["host_id"] != host_id:
        raise errors.PermissionDenied(f"session_id: session {row['session_id']} is not on host {host_id!r}")


async def queue_positions(
    pool: asyncpg.Pool, session_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, tuple[int, int]]:
    """Queue position (1 = next) and queue length of each of the given sessions that is still PENDING."""
    with translated():
        rows = await pool.fetch(Q["queue_positions"], list(session_ids))
    return {r["session_id"]: (r["pos"], r["total"]) for r in rows}


async def queue_position(pool: asyncpg.Pool, session_id: uuid.UUID) -> tuple[int, int] | None:
    """One PENDING session's place in the queue (1 = next) and the queue's length; None when it no longer waits.
    Counts along the queue's index rather than ranking the whole queue (queue_positions does that for many)."""
    with translated():
        row = await pool.fetchrow(Q["queue_position"], session_id)
    return None if row is None else (row["pos"], row["total"])


async def end_timed_out(pool: asyncpg.Pool, timeouts: lifecycle.Timeouts) -> list[asyncpg.Record]:
    """End every session that waited in PENDING, PLACED, STARTING or READY past its limit."""
    limits = [timeouts.limit_s(s) for s in (State.PENDING, State.PLACED, State.STARTING, State.READY)]
    async with transaction(pool) as conn:
        # The sessions, then their hosts, each in id order, as every writer of many sessions (migration 0012).
        await conn.execute(Q["lock_timed_out"], *limits)
        rows: list[asyncpg.Record] = await conn.fetch(
            Q["end_timed_out"],
            *limits,
            timeouts.reason_for(State.PENDING).value,
            timeouts.reason_for(State.PLACED).value,
        )
    return rows
