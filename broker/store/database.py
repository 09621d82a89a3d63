"""The connection pool and the translation of database errors into the broker's own errors."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import asyncpg
from cloudseat import errors

from broker.store.queries import Q

# Constraint name -> the error a caller sees. Anything not listed here is a bug in the broker (StoreError).
_UNIQUE: dict[str, Callable[[], errors.CloudseatError]] = {
    "providers_pkey": lambda: errors.AlreadyExists("provider_id: a provider with this id exists"),
    "sites_pkey": lambda: errors.AlreadyExists("site_id: a site with this id exists"),
    "venues_pkey": lambda: errors.AlreadyExists("venue_id: a venue with this id exists"),
    "one_live_session_per_seat": lambda: errors.FailedPrecondition(
        "seat_id: the seat already has a live session; end it first"
    ),
    "resumed_once": lambda: errors.FailedPrecondition("resume.session_id: the session was resumed already"),
}
_FOREIGN: dict[str, Callable[[], errors.CloudseatError]] = {
    "sites_provider_id_fkey": lambda: errors.NotFound("provider_id: no such provider"),
    "sessions_game_id_fkey": lambda: errors.NotFound("game_id: no such game"),
    "zones_venue_id_fkey": lambda: errors.NotFound("venue_id: no such venue"),
    "seats_venue_id_zone_id_fkey": lambda: errors.NotFound("zone_id: no such zone"),
    "venue_site_latency_site_id_fkey": lambda: errors.NotFound("site_id: no such site"),
    "prices_site_id_fkey": lambda: errors.NotFound("site_id: no such site"),
    "host_enrolments_site": lambda: errors.NotFound("site_id: no such site"),
    "resumes_same_seat": lambda: errors.PermissionDenied("resume.session_id: a session of another seat"),
}


# What a lost or dying connection, or a server going away, looks like: the caller may retry (on a new connection).
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    # Class 08: the connection failed or does not exist (any longer).
    asyncpg.PostgresConnectionError,
    # Class 57: the server (or an operator) ended the statement or the session: admin or crash shutdown
    # (pg_terminate_backend, a restart), starting up, database dropped, idle session timeout, query cancelled.
    asyncpg.OperatorInterventionError,
    asyncpg.TooManyConnectionsError,
    # The session was ended for idling in a transaction: the connection is gone.
    asyncpg.IdleInTransactionSessionTimeoutError,
    asyncpg.InterfaceError,
    # The client's protocol state machine out of step with the server, most often because the server ended the
    # session between two calls: a pooled connection whose backend was terminated while idle has read the FATAL
    # error but not yet the end of the stream, so its next call finds "another operation in progress". The pool
    # discards such a connection when it is released (its reset fails, or finds it closed) and opens a new one.
    asyncpg.InternalClientError,
    # 25006: a write on a server that is (now) a standby, e.g. a connection left on a demoted primary after a
    # failover; the connection is dropped (below) and the next one reaches the new primary.
    asyncpg.ReadOnlySQLTransactionError,
    ConnectionError,
    OSError,  # TimeoutError included: command_timeout
)


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Turn asyncpg's errors into the broker's: constraint violations become client errors, lost connections
    Unavailable, and anything else StoreError (chained, so the cause stays in the log)."""
    try:
        yield
    except errors.CloudseatError:
        raise
    except asyncpg.UniqueViolationError as exc:
        make = _UNIQUE.get(exc.constraint_name or "")
        raise (make() if make else errors.StoreError(f"unexpected unique violation: {exc}")) from exc
    except asyncpg.ForeignKeyViolationError as exc:
        make = _FOREIGN.get(exc.constraint_name or "")
        raise (make() if make else errors.StoreError(f"unexpected foreign key violation: {exc}")) from exc
    except asyncpg.CheckViolationError as exc:
        if exc.constraint_name == "free_slots_in_range":
            raise errors.FailedPrecondition("the host has no free slots for this") from exc
        raise errors.StoreError(f"unexpected check violation: {exc}") from exc
    except _UNAVAILABLE as exc:
        raise errors.Unavailable(f"database unavailable: {exc}") from exc
    except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError) as exc:
        # Two writers crossed; PostgreSQL undid one, whole. Nothing was written: the caller may simply try again.
        raise errors.Unavailable(f"the database undid a conflicting write; retry ({exc.sqlstate})") from exc
    except asyncpg.PostgresError as exc:
        raise errors.StoreError(f"database error: {exc}") from exc


async def required_row(
    db: asyncpg.Pool | asyncpg.Connection, query: str, *args: object, missing: errors.NotFound
) -> asyncpg.Record:
    """The one row the named query returns; `missing` raised when it returns none. `db` is the pool, or a
    connection when the read belongs to a transaction (a row locked FOR UPDATE, a check before a write)."""
    with translated():
        row: asyncpg.Record | None = await db.fetchrow(Q[query], *args)
    if row is None:
        raise missing
    return row


async def required_value(
    db: asyncpg.Pool | asyncpg.Connection, query: str, *args: object, missing: errors.NotFound
) -> Any:
    """The first column of the one row the named query returns; `missing` raised when it returns none (or NULL:
    the queries used so select a column that is never NULL, so both mean "no such thing")."""
    with translated():
        value = await db.fetchval(Q[query], *args)
    if value is None:
        raise missing
    return value


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a pooled connection does when it is given back: nothing. asyncpg's default resets the session (advisory
    locks, cursors, listeners, settings) with one more round trip per use of the pool, which measured a fifth of the
    broker's statements; the pooled connections hold none of those (the hub and the placement lease have their own
    connections), and a transaction left open is rolled back by the pool itself."""


async def create_pool(url: str, min_size: int, max_size: int, name: str = "cloudseat") -> asyncpg.Pool:
    """A pool whose connections call themselves `name` (PostgreSQL's application_name: pg_stat_activity and the
    server's logs show which broker process, by its roles, a statement or a wait belongs to)."""
    with translated():
        pool: asyncpg.Pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            init=_init_connection,
            reset=_keep_session,
            command_timeout=30,
            server_settings={"application_name": name[:63]},
        )
    return pool


@contextlib.asynccontextmanager
async def notifying(conn: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    """A transaction on `conn` for a write that notifies (a session's or a host's change), committed without holding
    PostgreSQL's notify lock through its WAL flush; on return the write is as durable as any synchronous commit.

    PostgreSQL takes one database-wide lock from a notifying commit's start until the end of its commit, WAL flush
    included, so notifying commits happen one at a time, each with its own fsync: the lock waits that
    docs/loadtest-fleet.md#what-limits-it measured. Here the commit itself does not wait for the flush
    (synchronous_commit off, for this transaction only), so it holds the lock for microseconds; a second, tiny
    synchronous transaction then waits for the flush, which every concurrent flush shares.

    What changes: the caller is still answered only once the write is on disk (and on a synchronous standby), but a
    listener may see its notification a few milliseconds earlier. If PostgreSQL crashes in those milliseconds the
    write is gone after recovery, the caller got UNAVAILABLE (as for a commit whose outcome it never heard) and
    retries with its request id, and every listener reloads what it caches when its connection comes back; an
    agent told to start or stop meanwhile is reconciled when it reports (broker.reconcile). The leader's placement
    commit is not made this way: its notifications send agents their start commands.
    """
    # Begun and ended by hand, so the setting and the flush ride on the begin's and the commit's round trips; a
    # nested conn.transaction() inside is refused by asyncpg (a manual transaction), never silently wrong.
    await conn.execute(Q["begin_notifying"])
    try:
        yield conn
    except BaseException:
        try:
            await conn.execute(Q["rollback"])
        except Exception:  # the connection is gone or out of step: never hand it out again
            conn.terminate()
        raise
    await conn.execute(Q["commit_then_flush"])


@contextlib.asynccontextmanager
async def transaction(pool: asyncpg.Pool, *, notifies: bool = False) -> AsyncIterator[asyncpg.Connection]:
    """A connection in a transaction, with errors translated. `notifies`: a hot write whose commit notifies,
    committed as `notifying` says."""
    with translated():
        async with pool.acquire() as conn:
            try:
                async with notifying(conn) if notifies else conn.transaction():
                    yield conn
            except (
                asyncpg.InternalClientError,
                asyncpg.ReadOnlySQLTransactionError,
                errors.Unavailable,
            ) as exc:
                stale = (asyncpg.InternalClientError, asyncpg.ReadOnlySQLTransactionError)
                if isinstance(exc, stale) or isinstance(exc.__cause__, stale):
                    # Out of step with the server, or on a standby: never hand it out again (the pool opens
                    # another). The pool's own release would find out only if its reset failed too.
                    conn.terminate()
                raise
