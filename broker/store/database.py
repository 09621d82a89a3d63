"""The connection pool and the translation of database errors into the broker's own errors."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator

import asyncpg

from broker import errors

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
    "resumes_same_seat": lambda: errors.PermissionDenied("resume.session_id: a session of another seat"),
}


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
    except (
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        asyncpg.CannotConnectNowError,
        asyncpg.AdminShutdownError,
        ConnectionError,
        OSError,
    ) as exc:
        raise errors.Unavailable(f"database unavailable: {exc}") from exc
    except asyncpg.PostgresError as exc:
        raise errors.StoreError(f"database error: {exc}") from exc


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(url: str, min_size: int, max_size: int) -> asyncpg.Pool:
    with translated():
        pool: asyncpg.Pool = await asyncpg.create_pool(
            url, min_size=min_size, max_size=max_size, init=_init_connection, command_timeout=30
        )
    return pool


@contextlib.asynccontextmanager
async def transaction(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection in a transaction, with errors translated."""
    with translated():
        async with pool.acquire() as conn, conn.transaction():
            yield conn
