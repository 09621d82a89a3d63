"""The audit log: every business action, who did it, for whom, when and from where (append-only in PostgreSQL).

Who is ambient: the interceptor puts the caller of each RPC here (`set_actor`), and background duties run as
`SYSTEM`. Store functions write their audit row inside the transaction of the action itself (`write`), so an action
and its audit row commit or fail together. Session starts and ends are audited by a database trigger from the row
(started_by, ended_by, by_peer), so no writer — an RPC, an agent's report, the liveness duty — can skip it.
"""

from __future__ import annotations

import contextvars
import dataclasses
import json
from typing import Any

import asyncpg

from broker.store.queries import Q


@dataclasses.dataclass(frozen=True, slots=True)
class Actor:
    subject: str
    tenant: str
    peer: str = ""


SYSTEM = Actor("system", "system")

_ACTOR: contextvars.ContextVar[Actor] = contextvars.ContextVar("cloudseat_actor", default=SYSTEM)


def set_actor(actor: Actor) -> None:
    _ACTOR.set(actor)


def actor() -> Actor:
    return _ACTOR.get()


async def write(conn: asyncpg.Connection, action: str, target: str, **detail: Any) -> None:
    """One audit row for `action` on `target`, by the current actor, in `conn`'s transaction."""
    who = _ACTOR.get()
    await conn.execute(
        Q["audit_write"], who.subject, who.tenant, action, target, json.dumps(detail, default=str), who.peer
    )


async def read(pool: asyncpg.Pool, tenant: str | None = None, limit: int = 100) -> list[asyncpg.Record]:
    """The newest entries, optionally of one tenant."""
    rows: list[asyncpg.Record] = await pool.fetch(Q["audit_read"], tenant, limit)
    return rows
