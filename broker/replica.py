"""A broker process that holds agents' links says, every second, that it is alive; and checks that its links still
hold their hosts.

The links' transports tell this process when an agent dies (broker.links); `alive_at` tells the placement leader
when this process itself died or was cut off, so the hosts it held are declared lost too unless their agents
reconnect elsewhere (store/sql/hosts.sql, mark_lost). Both are judged by the database clock.

Every few refreshes it also asks which of its links still hold their host: a change it missed (a notification lost
while the hub reconnected) cannot leave a retired link open for longer than that.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import asyncpg
import structlog
from cloudseat import errors

from broker.links import RETIRED, LinkRegistry
from broker.store import hosts as host_store

log = structlog.get_logger(__name__)

# The links are checked against the database every this many refreshes.
_CHECK_EVERY = 5


class Presence:
    def __init__(self, pool: asyncpg.Pool, links: LinkRegistry, *, address: str, refresh_s: float) -> None:
        self._pool = pool
        self._links = links
        self.replica_id = uuid.uuid4().hex
        self.address = address
        self._refresh_s = refresh_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Say this process exists (before its first link is recorded), then keep saying it is alive."""
        await host_store.replica_alive(self._pool, self.replica_id, self.address)
        self._task = asyncio.create_task(self._run(), name="replica-presence")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        n = 0
        while True:
            await asyncio.sleep(self._refresh_s)
            n += 1
            try:
                await host_store.replica_alive(self._pool, self.replica_id, self.address)
                if n % _CHECK_EVERY == 0:
                    await self._check_links()
            except errors.CloudseatError as exc:
                # Silence is the signal: a process that cannot reach the database is judged by its silence.
                log.warning("could not say this broker process is alive", error=str(exc))

    async def _check_links(self) -> None:
        links = self._links.links()
        if not links:
            return
        stale = await host_store.links_stale(self._pool, [link.link_id for link in links])
        if stale:
            self._links.retire([link for link in links if link.link_id in stale], RETIRED)
