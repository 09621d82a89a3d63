"""Live changes for the consoles' event streams, fed by the hub (PostgreSQL NOTIFY through broker.hub), not polled.

A venue's seat map subscribes to its venue: each committed change of one of its sessions is put on the subscriber's
queue, and the stream re-reads that seat. A provider's page subscribes to its provider: a drain or undrain of any host,
or a session change on one, tells it to re-read its hosts (it filters by host, so another provider's changes cost a
re-read at most). Ledger rows written for a venue put `LEDGER` on its subscribers' queues (its cost and statements
are re-read and pushed, like the seat map); for a provider, `{"ledger_providers": [...]}` on the provider pages'
queues (its revenue is re-read and pushed). `RESYNC` means changes may have been missed (the hub lost its
connection): re-read everything.
`None` ends the stream (the console is stopping).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any, Final

RESYNC: Final = "resync"
LEDGER: Final = "ledger"

Item = dict[str, Any] | str | None


class Feed:
    def __init__(self) -> None:
        self._venues: dict[str, set[asyncio.Queue[Item]]] = {}
        self._hosts: set[asyncio.Queue[Item]] = set()

    @contextlib.contextmanager
    def venue(self, venue_id: str) -> Iterator[asyncio.Queue[Item]]:
        """Changes of `venue_id`'s sessions. Subscribe before reading the seats, so nothing falls between."""
        q: asyncio.Queue[Item] = asyncio.Queue()
        self._venues.setdefault(venue_id, set()).add(q)
        try:
            yield q
        finally:
            queues = self._venues.get(venue_id)
            if queues is not None:
                queues.discard(q)
                if not queues:
                    del self._venues[venue_id]

    @contextlib.contextmanager
    def hosts(self) -> Iterator[asyncio.Queue[Item]]:
        """Host changes: drains, and sessions placed on or leaving a host."""
        q: asyncio.Queue[Item] = asyncio.Queue()
        self._hosts.add(q)
        try:
            yield q
        finally:
            self._hosts.discard(q)

    # -- the hub's listeners (called in the event loop; they must not block) ----------------------------------

    def on_session(self, change: dict[str, Any]) -> None:
        for q in self._venues.get(str(change.get("venue_id")), ()):
            q.put_nowait(change)
        if change.get("host_id"):
            for q in self._hosts:
                q.put_nowait({"host_id": change["host_id"]})

    def on_host(self, change: dict[str, Any]) -> None:
        for q in self._hosts:
            q.put_nowait(change)

    def on_ledger(self, change: dict[str, Any]) -> None:
        for venue_id in change.get("venues") or ():
            for q in self._venues.get(str(venue_id), ()):
                q.put_nowait(LEDGER)
        providers = [str(p) for p in change.get("providers") or ()]
        if providers:
            for q in self._hosts:
                q.put_nowait({"ledger_providers": providers})

    def on_resync(self) -> None:
        for q in self._all():
            q.put_nowait(RESYNC)

    def close(self) -> None:
        for q in self._all():
            q.put_nowait(None)

    def _all(self) -> list[asyncio.Queue[Item]]:
        return [q for qs in self._venues.values() for q in qs] + list(self._hosts)
