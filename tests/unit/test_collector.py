"""broker.collector: what survives a full garbage collection is frozen out of the next ones, everything is unfrozen
now and then so that garbage among it is collected, and long collections are logged."""

from __future__ import annotations

import asyncio
import gc

import pytest
import structlog

from broker import collector


def test_what_the_keeper_does_when() -> None:
    assert collector.freeze_due(False, 0.0) is None
    assert collector.freeze_due(True, 0.0) == "freeze"
    assert collector.freeze_due(True, collector.UNFREEZE_S) == "unfreeze"
    assert collector.freeze_due(False, collector.UNFREEZE_S + 1) == "unfreeze"


async def test_the_keeper_freezes_at_start_and_again_after_each_full_collection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(collector, "CHECK_S", 0.01)
    keeper = asyncio.create_task(collector.keep())
    try:
        async with asyncio.timeout(10):
            while gc.get_freeze_count() == 0:  # what start-up built
                await asyncio.sleep(0.01)
        gc.unfreeze()
        gc.collect()  # a full collection: its survivors are frozen at the next look
        async with asyncio.timeout(10):
            while gc.get_freeze_count() == 0:
                await asyncio.sleep(0.01)
    finally:
        keeper.cancel()
        gc.unfreeze()
        gc.callbacks.remove(collector._callback)


def test_a_long_collection_is_logged_with_its_generation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collector, "SLOW_MS", -1.0)  # every collection counts as long here
    collector.watch()
    collector.watch()  # once per process, however often asked
    assert gc.callbacks.count(collector._callback) == 1
    try:
        with structlog.testing.capture_logs() as logs:
            gc.collect(1)
        slow = [e for e in logs if e["event"] == "slow garbage collection"]
        assert slow and slow[0]["generation"] == 1 and slow[0]["ms"] >= 0
    finally:
        gc.callbacks.remove(collector._callback)
