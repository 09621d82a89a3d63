"""The placement lease: one replica per region places and judges liveness, the others stand by.

The lease is a PostgreSQL session advisory lock held on a dedicated connection: if the holder dies or loses its
connection, the server drops the lock and another replica takes it on its next try (every second).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import asyncpg
import structlog

from broker.store.queries import Q

log = structlog.get_logger(__name__)

# "cloudsee" in ASCII: the key no other user of the database takes.
PLACEMENT_LOCK = 0x636C6F7564736565
_RETRY_S = 1.0
_PROBE_S = 1.0


class Leadership:
    def __init__(self, url: str, duties: Callable[[], list[Awaitable[None]]]) -> None:
        self._url = url
        self._duties = duties
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
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._url)
                if await conn.fetchval(Q["try_leader_lock"], PLACEMENT_LOCK):
                    await self._lead(conn)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("placement lease connection failed", error=str(exc))
            finally:
                self.is_leader = False
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            await asyncio.sleep(_RETRY_S)

    async def _lead(self, conn: asyncpg.Connection) -> None:
        self.is_leader = True
        log.info("took the placement lease")
        tasks = [asyncio.ensure_future(d) for d in self._duties()]
        try:
            while True:
                # A duty that ends is a bug; a connection that fails means the lock may be gone.
                done, _ = await asyncio.wait(tasks, timeout=_PROBE_S, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    t.result()
                    raise RuntimeError("a leader duty ended")
                await conn.fetchval("SELECT 1")
        finally:
            log.info("gave up the placement lease")
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
