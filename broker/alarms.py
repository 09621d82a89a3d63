"""Security alerts raised (broker.threats decides when): logged, counted for /metrics and written to the audit log.

The guard hands every refusal here (`note`); the decision is immediate, the audit row is written in the background
so a refused call is answered without waiting for the database.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import structlog
from cloudseat import errors

from broker import threats
from broker.counters import Counters
from broker.store import audit
from broker.store.database import transaction

log = structlog.get_logger(__name__)


class Alarms:
    def __init__(self, pool: asyncpg.Pool, counters: Counters, policy: threats.Policy | None = None) -> None:
        self._pool = pool
        self._counters = counters
        self.watch = threats.Watch(policy)
        self._writing: set[asyncio.Task[None]] = set()

    def note(self, exc: BaseException, method: str, peer: str) -> None:
        kind = threats.kind_of(exc, method)
        if kind is None:
            return
        self._counters.add(f"security_events_{kind}")
        alert = self.watch.note(kind, peer, time.monotonic())
        if alert is None:
            return
        self._counters.add(f"security_alerts_{kind}")
        log.warning("security alert", kind=alert.kind, peer=alert.peer, events=alert.events, window_s=alert.window_s)
        task = asyncio.get_running_loop().create_task(self._write(alert))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def _write(self, alert: threats.Alert) -> None:
        audit.set_actor(audit.Actor("system:security", "operator:security", alert.peer))
        try:
            async with transaction(self._pool) as conn:
                await audit.write(
                    conn,
                    "security.alert",
                    f"peer:{alert.peer}",
                    kind=alert.kind,
                    events=alert.events,
                    window_s=alert.window_s,
                )
        except errors.CloudseatError as exc:
            log.warning("could not audit a security alert", error=exc.message)

    async def close(self) -> None:
        for task in list(self._writing):
            await asyncio.wait([task], timeout=2)
