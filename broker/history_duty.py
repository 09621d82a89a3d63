"""The history sampler, run by the placement leader (one replica per region, so one writer): a little after each
minute ends it writes that minute's rows for the consoles' charts and deletes those past the retention
(broker.history decides when and which minute, broker.store.history writes). A minute is written once even if two
leaders overlap or one restarts (the rows' primary keys); a minute no leader sampled stays a gap in the charts.
"""

from __future__ import annotations

import asyncio

import asyncpg
import structlog
from cloudseat import errors

from broker import history
from broker.store import history as history_store

log = structlog.get_logger(__name__)


class HistoryDuty:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def run(self) -> None:
        """Sample the minute that has just ended, now (a new leader fills the minute its predecessor may have
        missed) and after each minute from then on, until cancelled."""
        while True:
            try:
                now = await history_store.clock(self._pool)
                start, end = history.minute_to_sample(now)
                written = await history_store.sample(self._pool, start, end)
                log.debug("history sampled", minute=start.isoformat(), sites=written[0], zones=written[1])
                wait_s = (history.next_wake(now) - now).total_seconds()
            except errors.CloudseatError as exc:
                # Nothing was written: that minute stays a gap unless the next try is still within it.
                log.warning("history sampling failed", error=str(exc))
                wait_s = 5.0
            except Exception:
                # A chart's gap is no reason to give up the lease (a duty that ends does): log it, try again.
                log.exception("history sampling failed unexpectedly")
                wait_s = 5.0
            await asyncio.sleep(wait_s)
