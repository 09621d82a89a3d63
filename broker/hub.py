"""Session and host changes, from PostgreSQL to whoever in this broker cares.

The database's triggers notify every committed change of a session (state, pending reason, paid time) on the channel
`cloudseat_sessions`, once per statement: a JSON array of the changes' essentials (migration 0010,
session_change: ids, seq, state, host, game, tier, slots, reasons). One listening connection per broker process
receives them, so a change made by any process reaches every watcher, every agent link and the placement leader,
and only committed changes do. Whoever needs the whole row reads it.
Host changes the agents must hear of (a provider's drain or undrain) come the same way on `cloudseat_hosts`, so the
replica holding the host's link tells the agent, whichever replica served the call.

If the listening connection drops, notifications in the gap are lost: after reconnecting, the hub tells everyone to
resync (watchers re-read their session, the scheduler runs a round, the agents linked here are told their hosts'
drains again).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import asyncpg
import structlog

from broker.store import sessions as session_store

log = structlog.get_logger(__name__)

CHANNEL = "cloudseat_sessions"
HOSTS_CHANNEL = "cloudseat_hosts"
# Ledger rows written: {"venues": [...], "providers": [...]} (migration 0018), for the consoles' live money.
LEDGER_CHANNEL = "cloudseat_ledger"
# Queue positions are recomputed at most this often, however fast the queue moves.
_POSITION_INTERVAL_S = 0.2

Change = dict[str, Any]
Listener = Callable[[Change], None]


class Resync:
    """Put on a watcher's queue when notifications may have been missed: re-read the session."""


class QueuePosition:
    __slots__ = ("position", "total")

    def __init__(self, position: int, total: int) -> None:
        self.position = position
        self.total = total


WatchItem = Change | Resync | QueuePosition | None


class SessionHub:
    def __init__(self, url: str, pool: asyncpg.Pool) -> None:
        self._url = url
        self._pool = pool
        self._watchers: dict[uuid.UUID, set[asyncio.Queue[WatchItem]]] = {}
        # StartSession calls waiting for their session to leave the queue: one future each, no queue positions.
        self._placement_waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._listeners: list[Listener] = []
        self._host_listeners: list[Listener] = []
        self._site_listeners: list[Listener] = []
        self._ledger_listeners: list[Listener] = []
        self._resync_listeners: list[Callable[[], None]] = []
        self._conn: asyncpg.Connection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._queue_dirty = asyncio.Event()
        self._lost = asyncio.Event()
        self._closing = False

    def add_listener(self, listener: Listener, on_resync: Callable[[], None] | None = None) -> None:
        """Call `listener` with every change (in the event loop, so it must not block)."""
        self._listeners.append(listener)
        if on_resync is not None:
            self._resync_listeners.append(on_resync)

    def add_host_listener(self, listener: Listener, on_resync: Callable[[], None] | None = None) -> None:
        """Call `listener` with every host change ({"host_id", "drained"}), in the event loop like session
        changes; `on_resync` when some may have been missed."""
        self._host_listeners.append(listener)
        if on_resync is not None:
            self._resync_listeners.append(on_resync)

    def add_site_listener(self, listener: Listener) -> None:
        """Call `listener` when the hosts of sites changed ({"site_peers": [site ids], "except": the host that
        changed them}, on the hosts' channel without a host_id); after a reconnect the host listeners' resync
        stands for the missed ones."""
        self._site_listeners.append(listener)

    def add_ledger_listener(self, listener: Listener) -> None:
        """Call `listener` whenever ledger rows commit, with the venues and providers they bill (as above; a resync
        listener registered with the others hears of missed ones)."""
        self._ledger_listeners.append(listener)

    async def start(self) -> None:
        await self._connect()
        self._tasks = [
            asyncio.create_task(self._keep_connected(), name="hub-listen"),
            asyncio.create_task(self._positions(), name="hub-positions"),
        ]

    async def close(self) -> None:
        """Stop listening and end every watch (their streams end so that shutdown does not wait on them)."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for queues in self._watchers.values():
            for q in queues:
                q.put_nowait(None)
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()

    @contextlib.asynccontextmanager
    async def watch(self, session_id: uuid.UUID) -> AsyncIterator[asyncio.Queue[WatchItem]]:
        """A queue of changes to one session. Subscribe before reading the session, so nothing falls between.
        None on the queue means the broker is closing."""
        q: asyncio.Queue[WatchItem] = asyncio.Queue()
        self._watchers.setdefault(session_id, set()).add(q)
        self._queue_dirty.set()
        try:
            yield q
        finally:
            queues = self._watchers.get(session_id)
            if queues is not None:
                queues.discard(q)
                if not queues:
                    del self._watchers[session_id]

    @contextlib.contextmanager
    def placement_of(self, session_id: uuid.UUID) -> Iterator[asyncio.Future[None]]:
        """A future done once the session leaves PENDING (placed, or ended), or at a resync (something may have been
        missed: read it). Subscribe before the session can move, so nothing falls between."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        key = str(session_id)
        self._placement_waiters.setdefault(key, set()).add(fut)
        try:
            yield fut
        finally:
            waiters = self._placement_waiters.get(key)
            if waiters is not None:
                waiters.discard(fut)
                if not waiters:
                    del self._placement_waiters[key]

    # -- the listening connection ------------------------------------------------------------------------------

    async def _connect(self) -> None:
        conn = await asyncpg.connect(self._url)
        conn.add_termination_listener(lambda _c: self._lost.set())
        await conn.add_listener(CHANNEL, self._on_notify)
        await conn.add_listener(HOSTS_CHANNEL, self._on_host_notify)
        await conn.add_listener(LEDGER_CHANNEL, self._on_ledger_notify)
        self._conn = conn
        self._lost.clear()

    async def _keep_connected(self) -> None:
        backoff = 0.1
        while not self._closing:
            await self._lost.wait()
            log.warning("session notifications lost their connection; reconnecting")
            while not self._closing:
                try:
                    await self._connect()
                    break
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("reconnect failed", error=str(exc), retry_in_s=backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
            backoff = 0.1
            self._resync()

    def _resync(self) -> None:
        for queues in self._watchers.values():
            for q in queues:
                q.put_nowait(Resync())
        for waiters in self._placement_waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
        for cb in self._resync_listeners:
            cb()
        self._queue_dirty.set()

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        changes: list[Change] = json.loads(payload)
        for change in changes:
            self.publish(change)

    def _on_host_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        change: Change = json.loads(payload)
        if "host_id" not in change:  # a change of sites (their lists of hosts), not of one host
            for listener in self._site_listeners:
                try:
                    listener(change)
                except Exception:
                    log.exception("site change listener failed", sites=change.get("site_peers"))
            return
        for listener in self._host_listeners:
            try:
                listener(change)
            except Exception:
                log.exception("host change listener failed", host_id=change.get("host_id"))

    def _on_ledger_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        change: Change = json.loads(payload)
        for listener in self._ledger_listeners:
            try:
                listener(change)
            except Exception:
                log.exception("ledger listener failed")

    def publish(self, change: Change) -> None:
        """Hand one change to the listeners and the session's watchers."""
        for listener in self._listeners:
            try:
                listener(change)
            except Exception:
                log.exception("session change listener failed", session_id=change.get("session_id"))
        if change["state"] != "PENDING":
            for fut in self._placement_waiters.get(change["session_id"], ()):
                if not fut.done():
                    fut.set_result(None)
        if self._watchers:
            sid = uuid.UUID(change["session_id"])
            for q in self._watchers.get(sid, ()):
                q.put_nowait(change)
        # Any change into or out of PENDING moves the queue (the scheduler clears pending_reason on placing).
        if change["state"] in ("PENDING", "PLACED", "ENDED"):
            self._queue_dirty.set()

    # -- queue positions ---------------------------------------------------------------------------------------

    async def _positions(self) -> None:
        last: dict[uuid.UUID, tuple[int, int]] = {}
        while True:
            await self._queue_dirty.wait()
            self._queue_dirty.clear()
            watched = list(self._watchers)
            if watched:
                try:
                    positions = await session_store.queue_positions(self._pool, watched)
                except Exception as exc:  # the database may be restarting; positions come back with it
                    log.warning("queue positions unavailable", error=str(exc))
                    positions = {}
                for sid, pos in positions.items():
                    if last.get(sid) != pos:
                        for q in self._watchers.get(sid, ()):
                            q.put_nowait(QueuePosition(*pos))
                last = positions
            await asyncio.sleep(_POSITION_INTERVAL_S)
