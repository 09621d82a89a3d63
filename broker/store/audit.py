"""The audit log: every business action, who did it, for whom, when and from where (append-only in PostgreSQL),
hash-chained (broker.audit_chain) and read back by tenant.

Who is ambient: the interceptor puts the caller of each RPC here (`set_actor`), and background duties run as
`SYSTEM`. Store functions write their audit row inside the transaction of the action itself (`write`), so an action
and its audit row commit or fail together. Session starts and ends are audited by a database trigger from the row
(started_by, ended_by, by_peer), so no writer — an RPC, an agent's report, the liveness duty — can skip it.

Writers take no lock: `seal` (every broker process runs it every second; one at a time by an advisory lock) chains
what has committed since, in seq order, so a business action never waits for another's audit row to commit.
"""

from __future__ import annotations

import contextvars
import dataclasses
import datetime as dt
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from cloudseat import errors

from broker import audit_chain
from broker.store.database import transaction, translated
from broker.store.queries import Q

# Rows sealed per transaction.
_SEAL_BATCH = 5_000


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


async def write(
    conn: asyncpg.Connection, action: str, target: str, *, tenant: str | None = None, **detail: Any
) -> None:
    """One audit row for `action` on `target`, by the current actor, in `conn`'s transaction. `tenant`: whose
    business it is when that is not the actor's own (an agent acts for its host, the row is its provider's)."""
    who = _ACTOR.get()
    # Sent as text and cast in SQL: a jsonb parameter went through the pool's jsonb codec a second time, and the
    # rows written so held one JSON string instead of an object.
    text = json.dumps(detail, default=str)
    await conn.execute(Q["audit_write"], who.subject, tenant or who.tenant, action, target, text, who.peer)


async def read(pool: asyncpg.Pool, tenant: str | None = None, limit: int = 100) -> list[asyncpg.Record]:
    """The newest entries, optionally of one tenant."""
    rows: list[asyncpg.Record] = await pool.fetch(Q["audit_read"], tenant, limit)
    return rows


def _chain_row(r: asyncpg.Record) -> audit_chain.Row:
    return audit_chain.Row(
        r["seq"], r["at_us"], r["actor"], r["tenant"], r["action"], r["target"], r["detail"], r["peer"]
    )


async def seal(pool: asyncpg.Pool, batch: int = _SEAL_BATCH) -> int:
    """Chain the committed rows not yet chained (at most `batch`); how many. 0 also when another process is
    sealing right now."""
    with translated():
        async with transaction(pool) as conn:
            if not await conn.fetchval(Q["audit_seal_lock"]):
                return 0
            head = await conn.fetchrow(Q["audit_chain_head"])
            chain_no, prev = (head["chain_no"], head["hash"]) if head else (0, audit_chain.GENESIS)
            rows = await conn.fetch(Q["audit_unsealed"], batch)
            seqs, numbers, prevs, hashes = [], [], [], []
            for r in rows:
                chain_no += 1
                digest = audit_chain.row_hash(prev, _chain_row(r))
                seqs.append(r["seq"])
                numbers.append(chain_no)
                prevs.append(prev)
                hashes.append(digest)
                prev = digest
            if seqs:
                await conn.execute(Q["audit_seal"], seqs, numbers, prevs, hashes)
            return len(seqs)


async def seal_all(pool: asyncpg.Pool) -> None:
    """Seal until nothing committed is left unsealed (or another process holds the sealer)."""
    while await seal(pool) == _SEAL_BATCH:
        pass


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    rows: int
    head_chain_no: int
    head_hash: str
    breaks: list[audit_chain.Break]


async def verify(pool: asyncpg.Pool, page: int = 5_000) -> Verdict:
    """Walk the whole chain from its first row; every break found, and the head reached."""
    walk = audit_chain.Walk()
    breaks: list[audit_chain.Break] = []
    after = 0
    while True:
        with translated():
            rows = await pool.fetch(Q["audit_chain_page"], after, page)
        for r in rows:
            breaks += walk.step(r["chain_no"], r["prev_hash"], r["hash"], _chain_row(r))
        if len(rows) < page:
            return Verdict(walk.rows, walk.chain_no, walk.hash, breaks)
        after = rows[-1]["chain_no"]


_TENANT = re.compile(r"(venue|provider|operator|host|system)(:[A-Za-z0-9][A-Za-z0-9._:/-]{0,127})?")


def tenant(text: str, field: str = "tenant") -> str:
    """A tenant to filter by, as rows name them ('venue:cafe', 'provider:p'), or ''; InvalidArgument otherwise."""
    if text and not _TENANT.fullmatch(text):
        raise errors.InvalidArgument(field, "must be venue:<id>, provider:<id>, operator:<subject> or empty")
    return text


@dataclasses.dataclass(frozen=True, slots=True)
class Filter:
    tenant: str | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    actor: str | None = None
    action: str | None = None
    target: str | None = None


async def page(pool: asyncpg.Pool, f: Filter, after_seq: int, limit: int) -> list[asyncpg.Record]:
    """The rows matching `f` after seq `after_seq`, oldest first, at most `limit`."""
    with translated():
        rows: list[asyncpg.Record] = await pool.fetch(
            Q["audit_page"], f.tenant, f.start, f.end, f.actor, f.action, f.target, after_seq, limit
        )
    return rows


async def every(pool: asyncpg.Pool, f: Filter, batch: int = 1_000) -> AsyncIterator[asyncpg.Record]:
    """Every row matching `f`, oldest first (an export), read a page at a time."""
    after = 0
    while True:
        rows = await page(pool, f, after, batch)
        for r in rows:
            yield r
        if len(rows) < batch:
            return
        after = rows[-1]["seq"]


def as_json(r: asyncpg.Record) -> dict[str, Any]:
    """One row as the JSON-lines export writes it."""
    return {
        "seq": r["seq"],
        "at": r["at"].isoformat(),
        "actor": r["actor"],
        "tenant": r["tenant"],
        "action": r["action"],
        "target": r["target"],
        "detail": json.loads(r["detail"]),
        "peer": r["peer"],
        "chain_no": r["chain_no"],
        "prev_hash": r["prev_hash"],
        "hash": r["hash"],
    }
