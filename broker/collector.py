"""Python's cyclic garbage collector in a broker process: what lives long kept out of its full collections, and
its long pauses logged.

A full (generation 2) collection walks every container object the process holds, with the whole event loop
stopped. The agents' process holds 10,000 links, the leader every host and the latency matrix: measured during
fleet runs (`docs/loadtest-fleet.md`), the agents' process ran a full collection every ~11 s at 230 ms each (the
longest 0.5 s; 1.5 s past capacity), the leader every ~30 s at 70-250 ms, and a placement round or an agent's
report falling in one waited for it.

So what survives a full collection is frozen (`gc.freeze`: moved to the permanent generation, which collections
skip): the objects alive at the end of a full collection are, by definition, not garbage, and most of them (links,
hosts, modules, caches) live as long as the process. The next full collections walk only what was made since.
The cost: cyclic garbage among frozen objects (a link that closed, a host that left) is not collected while frozen,
so every `UNFREEZE_S` everything is unfrozen again, and the next full collection walks the whole heap once, frees
what died meanwhile and freezes the rest. Collections longer than `SLOW_MS` are logged with their generation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import time
from typing import Any

import structlog

log = structlog.get_logger(__name__)

# A collection longer than this is logged.
SLOW_MS = 20.0
# Everything frozen is unfrozen this often, so that garbage among it is collected by the next full collection.
UNFREEZE_S = 600.0
# How often the keeper looks for a full collection finished since it last looked.
CHECK_S = 1.0


@dataclasses.dataclass
class _Noted:
    """What the callback noted: when the collections under way began, and whether a full one finished."""

    started: list[float] = dataclasses.field(default_factory=list)
    full_done: bool = False


_NOTED = _Noted()


def _callback(phase: str, info: dict[str, Any]) -> None:
    """gc's callback (it may run in any thread, inside an allocation): notes, never collects nor freezes."""
    if phase == "start":
        _NOTED.started.append(time.perf_counter())
        return
    if not _NOTED.started:
        return
    took_ms = (time.perf_counter() - _NOTED.started.pop()) * 1000
    if info.get("generation") == 2:
        _NOTED.full_done = True
    if took_ms > SLOW_MS:
        log.warning(
            "slow garbage collection",
            generation=info.get("generation"),
            ms=round(took_ms, 1),
            collected=info.get("collected"),
        )


def watch() -> None:
    """Log every collection longer than SLOW_MS from now on (once per process)."""
    if _callback not in gc.callbacks:
        gc.callbacks.append(_callback)


def freeze_due(full_done: bool, since_unfreeze_s: float) -> str | None:
    """What the keeper does now (pure): "unfreeze" when UNFREEZE_S passed since the last unfreeze, "freeze" after a
    full collection, None otherwise."""
    if since_unfreeze_s >= UNFREEZE_S:
        return "unfreeze"
    return "freeze" if full_done else None


async def keep() -> None:
    """Until cancelled: freeze what survives each full collection; unfreeze everything every UNFREEZE_S."""
    watch()
    gc.collect()  # start-up's garbage out, then what start-up built (modules, caches) frozen
    gc.freeze()
    unfrozen_at = time.monotonic()
    while True:
        await asyncio.sleep(CHECK_S)
        action = freeze_due(_NOTED.full_done, time.monotonic() - unfrozen_at)
        if action == "unfreeze":
            gc.unfreeze()
            unfrozen_at = time.monotonic()
            _NOTED.full_done = False
        elif action == "freeze":
            _NOTED.full_done = False
            gc.freeze()
