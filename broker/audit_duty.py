"""The audit chain's sealing duty, run by the placement leader: every second, chain the audit rows committed since
(broker.store.audit.seal). Business actions write their rows without waiting for one another; this one writer gives
them their order in the chain."""

from __future__ import annotations

import asyncio

import asyncpg
import structlog
from cloudseat import errors

from broker.store import audit

log = structlog.get_logger(__name__)

INTERVAL_S = 1.0


class AuditSealDuty:
    def __init__(self, pool: asyncpg.Pool, interval_s: float = INTERVAL_S) -> None:
        self._pool = pool
        self._interval_s = interval_s

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await audit.seal_all(self._pool)
            except errors.CloudseatError as exc:
                # Nothing was sealed: the next round seals the same rows.
                log.warning("audit sealing failed", error=str(exc))
