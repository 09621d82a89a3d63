"""Host loss, stuck sessions, patron time run out and drain deadlines passed, judged by the database clock on the
placement leader.

A host is lost when its agent's link was seen dead and did not come back within the grace, or when the broker
process holding its link has been silent for host_lost_after (broker.links, broker.replica, store/sql/hosts.sql).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import asyncpg
import structlog
from cloudseat import errors

from broker import lifecycle
from broker.store import drains as drain_store
from broker.store import hosts as host_store
from broker.store import patron_time as patron_time_store
from broker.store import sessions as session_store

log = structlog.get_logger(__name__)


class Liveness:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        link_grace_s: float,
        lost_after_s: float,
        timeouts: lifecycle.Timeouts,
        on_lost: Callable[[list[str]], None],
        time_up_grace_s: float = 30.0,
    ) -> None:
        self._pool = pool
        self._link_grace_s = link_grace_s
        self._lost_after_s = lost_after_s
        self._timeouts = timeouts
        self._on_lost = on_lost
        self._time_up_grace_s = time_up_grace_s

    async def run(self) -> None:
        """Check until cancelled. For the first lost_after_s after taking over, no host is declared lost: a new
        leader (or a restarted broker) gives every agent the time to reconnect first, as Nomad does."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        interval = min(1.0, self._lost_after_s / 5)
        checks = 0
        while True:
            await asyncio.sleep(interval)
            checks += 1
            try:
                if loop.time() - began >= self._lost_after_s:
                    lost, ended = await host_store.mark_lost(
                        self._pool, self._link_grace_s, self._lost_after_s
                    )
                    if lost:
                        log.warning("hosts lost", hosts=lost, sessions_ended=len(ended))
                        self._on_lost(lost)
                    # A placement that raced a host's loss lands on it after its sessions were ended: end it too.
                    orphans = await host_store.end_sessions_on_gone_hosts(self._pool)
                    if orphans:
                        log.warning("sessions ended on hosts already gone", sessions=len(orphans))
                timed_out = await session_store.end_timed_out(self._pool, self._timeouts)
                if timed_out:
                    # By the state each waited in (its end detail says which).
                    log.info(
                        "sessions timed out",
                        count=len(timed_out),
                        by_detail=dict(Counter(str(r["end_detail"]) for r in timed_out)),
                    )
                time_up = await patron_time_store.end_time_up(self._pool, self._time_up_grace_s)
                if time_up:
                    log.info("sessions ended: paid time up", count=len(time_up))
                moved = await drain_store.move_due(self._pool)
                if moved:
                    # broker.drain: the seats resume them elsewhere, ahead of the queue.
                    hosts = sorted({r["host_id"] for r in moved})
                    log.info("sessions moved: drain deadline passed", count=len(moved), hosts=hosts)
                if checks % 3600 == 0:  # about hourly: broker processes gone for a day
                    await host_store.replicas_forget(self._pool)
            except errors.CloudseatError as exc:
                log.warning("liveness check failed", error=str(exc))
            except Exception:
                # A bug, or an error the store did not translate: keep judging (the next check may succeed).
                log.exception("liveness check failed unexpectedly")
