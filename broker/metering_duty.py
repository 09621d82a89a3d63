"""The metering duty, run by the placement leader: writes the ledger entries that are due (broker.store.metering)."""

from __future__ import annotations

import asyncio

import asyncpg
import structlog
from cloudseat import errors

from broker import metering
from broker.store import metering as metering_store

log = structlog.get_logger(__name__)


class MeteringDuty:
    def __init__(self, pool: asyncpg.Pool, policy: metering.Policy) -> None:
        self._pool = pool
        self._policy = policy

    async def run(self) -> None:
        """Meter every `interval_s` until cancelled: batches until nothing more is due."""
        while True:
            await asyncio.sleep(self._policy.interval_s)
            try:
                while await metering_store.meter(self._pool, self._policy):
                    pass
            except errors.CloudseatError as exc:
                # The cursors did not move: the next round writes the same entries.
                log.warning("metering failed", error=str(exc))
            except Exception:
                log.exception("metering failed unexpectedly")
