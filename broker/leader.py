"""The placement lease: one replica per region places and judges liveness, the others stand by.

The lease is a row in `leadership` (migration 0004) that expires by the database clock. The holder renews it every
`renew_s` on a dedicated connection, pushing its expiry `ttl_s` ahead; the others try to take it every `retry_s`. A
replica may take the lease when it has expired, or at once when the holder's lease connection is gone (a holder
killed or cut off drops it, so a takeover then costs about a second, not a whole ttl). A holder that stops renewing
while its connection stays open (frozen: SIGSTOP, a long pause, a hung event loop) loses the lease when it expires;
the taker ends that connection (pg_terminate_backend), so the old holder's next renewal fails.

Every take starts a new term, and a holder renews only its own term: a holder that finds another term, or cannot
renew, stops its duties at once. It also stops on its own clock: it counts the lease as lost `ttl_s` after it sent
the last renewal that succeeded (the monotonic clock keeps counting while a process is frozen), so a thawed or cut
off leader steps down before the lease can have passed to another. Whatever an old leader still commits after
that (a batch planned before the freeze) is made harmless by the database's constraints.

A new leader's duties start afresh: Liveness gives every agent `host_lost_after` to reconnect before judging.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg
import structlog

from broker.store.queries import Q

log = structlog.get_logger(__name__)

LEASE = "placement"
TTL_S = 5.0
RENEW_S = 1.0
RETRY_S = 1.0
_CONNECT_TIMEOUT_S = 10.0


@dataclasses.dataclass(frozen=True, slots=True)
class LeaseState:
    """The lease row as a would-be taker reads it (under a row lock)."""

    holder: str  # '' when never taken
    term: int
    backend_pid: int  # the holder's lease connection
    expired: bool  # by the database clock
    holder_connected: bool  # that connection is still open

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> LeaseState:
        return cls(
            holder=row["holder"],
            term=row["term"],
            backend_pid=row["backend_pid"],
            expired=row["expired"],
            holder_connected=row["holder_connected"],
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Take:
    """Take the lease (a new term); end the backend `end_backend` first named, the old holder's lease connection."""

    end_backend: int | None


def decide(lease: LeaseState, me: str, my_backend: int) -> Take | None:
    """Whether `me`, on the backend `my_backend`, takes the lease now (None: another replica holds it).

    Free: never taken, taken by `me` before (its lease connection was lost), expired, or its holder's lease
    connection is gone. A holder still connected when its lease is taken (frozen, or `me` on a connection it lost
    track of) has that connection ended, so it cannot renew into the new term unnoticed."""
    free = not lease.holder or lease.holder == me or lease.expired or not lease.holder_connected
    if not free:
        return None
    stale = lease.holder_connected and lease.backend_pid not in (0, my_backend)
    return Take(end_backend=lease.backend_pid if stale else None)


class LeaseLost(Exception):
    """The placement lease passed, or may have passed, to another replica."""


def _holder_name() -> str:
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


class Leadership:
    def __init__(
        self,
        url: str,
        duties: Callable[[], list[Awaitable[None]]],
        *,
        ttl_s: float = TTL_S,
        renew_s: float = RENEW_S,
        retry_s: float = RETRY_S,
    ) -> None:
        if not 0 < renew_s < ttl_s:
            raise ValueError("the lease must be renewed more often than it expires")
        self._url = url
        self._duties = duties
        self._ttl_s = ttl_s
        self._renew_s = renew_s
        self._retry_s = retry_s
        self.holder = _holder_name()
        self.is_leader = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="leadership")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        conn: asyncpg.Connection | None = None
        try:
            while True:
                try:
                    if conn is None or conn.is_closed():
                        conn = await asyncpg.connect(
                            self._url,
                            timeout=_CONNECT_TIMEOUT_S,
                            server_settings={
                                "application_name": "cloudseat placement lease",
                                # A replica frozen while it takes the lease would hold the row lock, and so stop
                                # every renewal and take: the server ends such a session.
                                "idle_in_transaction_session_timeout": str(int(self._ttl_s * 500)),
                            },
                        )
                        await conn.execute(Q["ensure_lease"], LEASE)
                    taken = await self._try_take(conn)
                    if taken is not None:
                        await self._lead(conn, *taken)
                except Exception as exc:
                    # Whatever went wrong (a lost connection, a lost lease, a duty that failed), stand by and try
                    # again on a new connection: a replica that stops trying would never place again.
                    log.warning("placement lease failed", error=str(exc), error_type=type(exc).__name__)
                    if conn is not None:
                        conn.terminate()
                        conn = None
                finally:
                    self.is_leader = False
                await asyncio.sleep(self._retry_s)
        finally:
            if conn is not None:
                conn.terminate()

    async def _try_take(self, conn: asyncpg.Connection) -> tuple[int, float] | None:
        """Take the lease if it is free: (term, until when this replica counts it as held, by the loop's clock)."""
        loop = asyncio.get_running_loop()
        async with conn.transaction():
            row = await conn.fetchrow(Q["lock_lease"], LEASE)
            if row is None:  # another replica is taking it this moment
                return None
            lease = LeaseState.from_row(row)
            take = decide(lease, self.holder, conn.get_server_pid())
            if take is None:
                return None
            sent = loop.time()
            term: int = await conn.fetchval(Q["take_lease"], LEASE, self.holder, self._ttl_s)
        if take.end_backend is not None:
            # The old holder may be frozen with its connection open: end it, so its next renewal fails.
            try:
                await conn.fetchval(Q["end_backend"], take.end_backend)
            except asyncpg.PostgresError as exc:
                # Not allowed to (another role): its next renewal fails on the term all the same.
                log.warning("could not end the old lease holder's connection", error=str(exc))
        if lease.holder and lease.holder != self.holder:
            log.info(
                "took over the lease", previous=lease.holder, previous_term=lease.term, expired=lease.expired
            )
        return term, sent + self._ttl_s

    async def _lead(self, conn: asyncpg.Connection, term: int, held_until: float) -> None:
        loop = asyncio.get_running_loop()
        self.is_leader = True
        log.info("took the placement lease", term=term)
        tasks = [asyncio.ensure_future(d) for d in self._duties()]
        lost = False
        try:
            while True:
                done, _ = await asyncio.wait(
                    tasks, timeout=self._renew_s, return_when=asyncio.FIRST_COMPLETED
                )
                for t in done:
                    t.result()
                    raise RuntimeError("a leader duty ended")
                sent = loop.time()
                if sent >= held_until:
                    lost = True
                    raise LeaseLost(
                        "the lease was not renewed in time (this replica paused, or the database slow)"
                    )
                try:
                    async with asyncio.timeout_at(held_until):
                        renewed = await conn.fetchval(Q["renew_lease"], LEASE, self.holder, term, self._ttl_s)
                except TimeoutError:
                    lost = True
                    raise LeaseLost("the lease renewal did not answer in time") from None
                if renewed is None:
                    lost = True
                    raise LeaseLost("another replica took the placement lease")
                held_until = sent + self._ttl_s
        finally:
            self.is_leader = False
            log.info("gave up the placement lease", term=term)
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            if not lost and not conn.is_closed():
                # Leaving (closing, or a duty failed): let another replica take over now, not after the ttl.
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1.0):
                        await conn.execute(Q["release_lease"], LEASE, self.holder, term)
