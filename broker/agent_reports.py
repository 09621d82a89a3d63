"""Agents' reports that sessions moved on (STARTING, READY, STREAMING), applied in batches.

Whatever arrived while the previous batch was being written goes in the next, gathered for at most a couple of
milliseconds: one transaction for many sessions instead of one per move, and a slow database never holds up an
agent's stream. Reports are applied in the order they arrived; a link's `reported` future is done once its latest
report (and so every earlier one) has been applied, which an ENDED report or a goodbye waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid

import asyncpg
import structlog
from cloudseat import errors

from broker import lifecycle
from broker.links import AgentLink
from broker.store import hosts as host_store
from broker.store import sessions as session_store

log = structlog.get_logger(__name__)

# Reports arriving within this window go in one batch.
_WINDOW_S = 0.002
# A report refused for what it says (logged and dropped; the agent's stream stays up).
_REFUSED = (errors.InvalidArgument, errors.FailedPrecondition, errors.PermissionDenied, errors.NotFound)


@dataclasses.dataclass(slots=True)
class _Report:
    link: AgentLink
    session_id: uuid.UUID
    state: lifecycle.State
    done: asyncio.Future[None]


class ReportBatcher:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._reports: list[_Report] = []
        self._waiting = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._apply_forever(), name="agent-reports")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._apply()

    def report(self, link: AgentLink, session_id: uuid.UUID, state: lifecycle.State) -> None:
        """Queue an agent's report that a session on its host moved forward (to STARTING, READY or STREAMING; a
        report may skip moves, which are then recorded one by one)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reports.append(_Report(link, session_id, state, done))
        link.reported = done
        self._waiting.set()

    async def _apply_forever(self) -> None:
        while True:
            await self._waiting.wait()
            await asyncio.sleep(_WINDOW_S)
            self._waiting.clear()
            await self._apply()

    async def _apply(self) -> None:
        batch, self._reports = self._reports, []
        if not batch:
            return
        try:
            outcomes = await host_store.advance_reported(
                self._pool, [(r.session_id, r.link.host_id, r.state) for r in batch]
            )
        except errors.CloudseatError as exc:
            # The batch as a whole failed (a lost connection, a deadlock with another writer): one by one, so one
            # report's trouble is only its own.
            log.warning("batch of agent reports failed; applying them one by one", error=str(exc))
            outcomes = [await self._apply_one(r) for r in batch]
        for r, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, _REFUSED):
                log.warning(
                    "agent session event refused",
                    host_id=r.link.host_id,
                    session_id=str(r.session_id),
                    error=outcome.message,
                )
            elif outcome is not None:
                # The database is out of reach: end the agent's stream with it; the agent reconnects and both
                # sides reconcile.
                r.link.error = outcome
                r.link.close(outcome.message)
            if not r.done.done():
                r.done.set_result(None)

    async def _apply_one(self, r: _Report) -> errors.CloudseatError | None:
        try:
            await session_store.advance(self._pool, r.session_id, r.state, host_id=r.link.host_id)
        except errors.CloudseatError as exc:
            return exc
        return None


async def settled(link: AgentLink) -> None:
    """Until every session report this link queued has been applied."""
    if link.reported is not None:
        await asyncio.shield(link.reported)
