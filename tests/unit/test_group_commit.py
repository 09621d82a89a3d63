"""broker.store.group_commit: what arrives while a batch is written goes in the next one; a caller cancelled before
its batch left is not written; a failed batch fails each of its callers."""

from __future__ import annotations

import asyncio

from broker.store.group_commit import GroupCommit


class _Recorder:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()

    async def write(self, batch: list[int]) -> list[int]:
        self.batches.append(batch)
        await self.release.wait()
        return [x * 10 for x in batch]


async def test_writes_arriving_during_a_batch_go_in_the_next_one_together() -> None:
    rec = _Recorder()
    group: GroupCommit[int, int] = GroupCommit(rec.write, name="t")
    first = asyncio.create_task(group(1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert rec.batches == [[1]]  # alone and at once: nothing to wait for
    later = [asyncio.create_task(group(x)) for x in (2, 3, 4)]
    await asyncio.sleep(0)
    rec.release.set()
    assert await first == 10
    assert [await t for t in later] == [20, 30, 40]
    assert rec.batches == [[1], [2, 3, 4]]
    assert (group.batches, group.writes) == (2, 4)


async def test_a_caller_cancelled_before_its_batch_left_is_not_written() -> None:
    rec = _Recorder()
    group: GroupCommit[int, int] = GroupCommit(rec.write, name="t")
    first = asyncio.create_task(group(1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    gone = asyncio.create_task(group(2))
    kept = asyncio.create_task(group(3))
    await asyncio.sleep(0)
    gone.cancel()
    rec.release.set()
    assert (await first, await kept) == (10, 30)
    assert rec.batches == [[1], [3]]


async def test_a_failed_batch_fails_each_of_its_callers_and_the_next_batch_still_goes() -> None:
    calls: list[list[int]] = []

    async def write(batch: list[int]) -> list[int]:
        calls.append(batch)
        if 0 in batch:
            raise ValueError("refused")
        return batch

    group: GroupCommit[int, int] = GroupCommit(write, name="t", max_batch=2)
    results = await asyncio.gather(group(0), group(1), group(2), return_exceptions=True)
    assert [type(r) for r in results[:2]] == [ValueError, ValueError]
    assert results[2] == 2
    assert calls == [[0], [1, 2]] or calls == [[0, 1], [2]]
