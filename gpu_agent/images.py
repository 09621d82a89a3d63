"""The game images this host holds, and fetching one when the provider pre-warms it (FleetService.PrewarmGame).

An image is GAME_ID@VERSION. The config's games_cached are held from the start (a bare id: whatever version the
catalogue calls current). A fetch is simulated: there is no image registry in this system to copy from, and what
placement cares about is that a fetch takes time in proportion to the image's size and leaves the image held. So a
fetch waits size / image_fetch_bytes_per_s and then, when the config names an image_store directory, writes
GAME_ID@VERSION.img there at the image's full size (a sparse file: the disk space a real fetch would take is not
spent on a test machine). Images in image_store are held again after a restart.

Old versions are kept: a host holding an old version serves the sessions it runs on it until they end.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

_SUFFIX = ".img"


class ImageCache:
    def __init__(self, initial: tuple[str, ...], store: Path | None, fetch_bytes_per_s: float) -> None:
        self._held: list[str] = list(dict.fromkeys(initial))
        self._store = store
        self._rate = fetch_bytes_per_s
        self._fetching: dict[str, asyncio.Task[None]] = {}
        # Set when the held set changed since the last heartbeat took it.
        self._changed = False
        if store is not None:
            store.mkdir(parents=True, exist_ok=True)
            for path in sorted(store.glob(f"*{_SUFFIX}")):
                self._add(path.name[: -len(_SUFFIX)])
            self._changed = False

    def held(self) -> list[str]:
        return list(self._held)

    def take_changes(self) -> list[str] | None:
        """The full held set when it changed since the last call (for the next heartbeat), else None."""
        if not self._changed:
            return None
        self._changed = False
        return self.held()

    def prewarm(self, game_id: str, version: str, size_bytes: int) -> None:
        """Start fetching GAME_ID@VERSION unless it is held or on its way."""
        image = f"{game_id}@{version}"
        if image in self._held or image in self._fetching:
            return
        task = asyncio.create_task(self._fetch(image, size_bytes), name=f"fetch-{image}")
        self._fetching[image] = task
        task.add_done_callback(lambda _t: self._fetching.pop(image, None))

    async def _fetch(self, image: str, size_bytes: int) -> None:
        log.info("fetching image", image=image, size_bytes=size_bytes)
        await asyncio.sleep(size_bytes / self._rate)
        if self._store is not None:
            try:
                await asyncio.to_thread(self._write, self._store / f"{image}{_SUFFIX}", size_bytes)
            except OSError as exc:
                log.warning("could not store the image", image=image, error=str(exc))
                return
        self._add(image)
        log.info("image cached", image=image)

    @staticmethod
    def _write(path: Path, size_bytes: int) -> None:
        partial = path.with_suffix(".part")
        with open(partial, "wb") as f:
            f.truncate(size_bytes)
        os.replace(partial, path)  # whole or not at all: a crash mid-fetch leaves no image behind

    def _add(self, image: str) -> None:
        if image not in self._held:
            self._held.append(image)
            self._changed = True

    async def close(self) -> None:
        for task in list(self._fetching.values()):
            task.cancel()
