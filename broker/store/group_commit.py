"""Group commit: many callers' writes of one kind go to the database as one statement.

While one batch is in the database, the writes that arrive gather for the next; so a process has at most one
statement of a kind in flight, and under load each carries many writes. That matters because PostgreSQL serialises
the commits that notify (one lock from a notifying commit's start through its WAL flush): one commit per session
start queues every start behind every other, while one commit per batch pays that lock once for all of them
(docs/loadtest-fleet.md#what-limits-it). When idle, a write goes out at once, alone: no added latency.

A caller cancelled before its write was taken into a batch is dropped (nothing written); one cancelled after
gets nothing back, as with a single statement in flight. The batch function answers each write with its own result;
an exception it raises fails every write of the batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from cloudseat import errors

T = TypeVar("T")
R = TypeVar("R")

# At most this many writes in one statement (the rest go in the next).
MAX_BATCH = 256


class GroupCommit(Generic[T, R]):
    def __init__(
        self, write: Callable[[list[T]], Awaitable[Sequence[R]]], *, name: str, max_batch: int = MAX_BATCH
    ) -> None:
        self._write = write
        self._name = name
        self._max_batch = max_batch
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        # Batches written and the writes in them (the tests and `cloudseat-loadtest commits` read them).
        self.batches = 0
        self.writes = 0

    async def __call__(self, item: T) -> R:
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, done))
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name=self._name)
        return await done

    async def _drain(self) -> None:
        try:
            while self._queue:
                taken = [(item, done) for item, done in self._queue[: self._max_batch] if not done.done()]
                del self._queue[: self._max_batch]
                if not taken:
                    continue
                self.batches += 1
                self.writes += len(taken)
                try:
                    results = await self._write([item for item, _ in taken])
                except Exception as exc:  # every write of the batch fails with it
                    for _, done in taken:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                except BaseException:  # cancelled (the process stops): so are the writes waiting on it
                    for _, done in taken + self._queue:
                        done.cancel()
                    self._queue.clear()
                    raise
                if len(results) != len(taken):
                    wrong = errors.StoreError(f"{self._name}: {len(results)} results for {len(taken)} writes")
                    for _, done in taken:
                        if not done.done():
                            done.set_exception(wrong)
                    continue
                for (_, done), result in zip(taken, results, strict=True):
                    if not done.done():
                        done.set_result(result)
        finally:
            self._task = None
