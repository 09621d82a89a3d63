"""The game images this host holds, and fetching one when the broker says so (PrewarmGame, or a missed pre-warm at
registration).

An image is GAME_ID@VERSION. The config's games_cached are held from the start (a bare id: whatever version the
catalogue calls current), and so is every image installed in image_store (gpu_agent.image_store).

A pre-warm that names an image in the registry (image_ref) is a real fetch: read the manifest from the registry (with
the host's read-only credentials), make room within the disk budget (least recently used images go first, never
one a running session's game uses), then fetch the chunks the store lacks (from their owners among the site's hosts,
gpu_agent.peers, else the registry) and install the tree whole (gpu_agent.image_install). A cold start (a session
placed here before the image) fetches the same way. Progress (stored bytes done of total), and the reason a fetch
failed, go out with the next heartbeat; the image is reported held only once it is installed.

A pre-warm without an image_ref (a game catalogued without one) is simulated as before: wait size / rate, then write
GAME_ID@VERSION.img there at the image's size (a sparse file). Such images are held again after a restart too.

Old versions are kept until the budget needs their room: a host holding an old version serves the sessions it runs on
it until they end.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog
from cloudseat.images import manifest, oci, publish
from cloudseat.images.errors import ImageError, InstallError, ManifestError, RegistryUnavailable

from gpu_agent import peers
from gpu_agent.config import TlsConfig
from gpu_agent.image_install import Progress, install
from gpu_agent.image_store import ImageStore

log = structlog.get_logger(__name__)

_SUFFIX = ".img"
# Progress moves all the time; it is reported at most this often (a start, an end or a failure at once).
_PROGRESS_EVERY_S = 1.0


class ImageCache:
    def __init__(
        self,
        initial: tuple[str, ...],
        store: Path | None,
        fetch_bytes_per_s: float,
        *,
        registry: oci.Registry | None = None,
        disk_bytes: int = 0,
        workers: int = 8,
        retry_s: float = 300.0,
        games_in_use: Callable[[], set[str]] = set,
        host_id: str = "",
        tls_files: TlsConfig | None = None,
    ) -> None:
        self._held: list[str] = list(dict.fromkeys(initial))
        self._root = store
        self._rate = fetch_bytes_per_s
        self._registry = registry
        self._disk_bytes = disk_bytes
        self._workers = workers
        self._retry_s = retry_s
        self._games_in_use = games_in_use
        self._fetching: dict[str, asyncio.Task[None]] = {}
        self._progress: dict[str, Progress] = {}
        self._stop = threading.Event()
        # Set when the held set changed since the last heartbeat took it.
        self._changed = False
        self._fetches_changed = False
        self._fetches_sent_at = 0.0
        self._host_id = host_id
        self._tls = tls_files
        self.store: ImageStore | None = None
        # One registry fetch per chunk at a time on this host, shared with the site's peers (gpu_agent.peers).
        self.flights: peers.Flights | None = None
        # What came from where, for the benchmark and the logs.
        self.peer_bytes = 0
        # The site's online hosts, this one among them, as the broker last listed them (SitePeersCommand), each with
        # the address it serves chunks on ('' when it does not): whom a fetch asks first, pre-warm or cold start (those
        # with an address), and whom the peer server answers (all).
        self.site_peers: tuple[peers.Peer, ...] = ()
        if store is not None:
            store.mkdir(parents=True, exist_ok=True)
            self.store = ImageStore(store)
            if registry is not None:
                self.flights = peers.Flights(self.store, registry)
            for image in self.store.held():
                self._add(image)
            for path in sorted(store.glob(f"*{_SUFFIX}")):
                self._add(path.name[: -len(_SUFFIX)])
            self._changed = False

    def held(self) -> list[str]:
        return list(self._held)

    def set_site_peers(self, site_peers: Sequence[peers.Peer]) -> None:
        """What the broker says the site's hosts are now (a SitePeersCommand)."""
        self.site_peers = tuple(site_peers)
        log.info("site peers", hosts=[p.host_id for p in self.site_peers])

    def site_hosts(self) -> set[str]:
        """The host ids the peer server answers: the site's, as last listed."""
        return {p.host_id for p in self.site_peers}

    def take_changes(self) -> list[str] | None:
        """The full held set when it changed since the last call (for the next heartbeat), else None."""
        if not self._changed:
            return None
        self._changed = False
        return self.held()

    def fetches(self) -> list[dict[str, Any]]:
        out = []
        for p in self._progress.values():
            with p.lock:
                out.append(
                    {
                        "image": p.image,
                        "bytes_done": p.bytes_done,
                        "bytes_total": p.bytes_total,
                        "error": p.error,
                    }
                )
        return out

    def take_fetch_changes(self, now: float) -> list[dict[str, Any]] | None:
        """The fetches under way or failed, when a start, end or failure happened since the last call, or bytes
        moved and the last report is _PROGRESS_EVERY_S old; else None."""
        moving = any(p.error == "" for p in self._progress.values())
        if self._fetches_changed or (moving and now - self._fetches_sent_at >= _PROGRESS_EVERY_S):
            self._fetches_changed = False
            self._fetches_sent_at = now
            return self.fetches()
        return None

    def tree(self, game_id: str) -> Path | None:
        """The installed tree of the game's most recently installed version (what a new session plays), if any."""
        if self.store is None:
            return None
        mine = [i for i in self.store.held() if i.partition("@")[0] == game_id]
        if not mine:
            return None
        newest = max(mine, key=lambda i: self.store.tree(i).stat().st_ctime_ns if self.store else 0)
        self.store.touch(newest)
        return self.store.tree(newest)

    def prewarm(
        self,
        game_id: str,
        version: str,
        size_bytes: int,
        image_ref: str = "",
        image_digest: str = "",
        site_peers: Sequence[peers.Peer] = (),
    ) -> None:
        """Start fetching GAME_ID@VERSION unless it is held or on its way: through `site_peers` (a pre-warm's list of
        the site's serving hosts), else the site as the broker last listed it."""
        image = f"{game_id}@{version}"
        if image in self._held or image in self._fetching:
            return
        if image_ref and self._registry is not None and self.store is not None:
            coro = self._install(image, image_ref, image_digest, site_peers or self.site_peers)
        elif image_ref:
            log.warning("cannot fetch the image: no registry or image_store configured", image=image)
            self._progress[image] = Progress(
                image, error="this host has no registry or image_store configured"
            )
            self._fetches_changed = True
            return
        else:
            coro = self._simulate(image, size_bytes)
        task = asyncio.create_task(coro, name=f"fetch-{image}")
        self._fetching[image] = task
        task.add_done_callback(lambda _t: self._fetching.pop(image, None))

    async def ensure(self, game_id: str, version: str, image_ref: str, image_digest: str) -> None:
        """Hold GAME_ID@VERSION when this returns (a cold start): fetch it now unless it is held or on its way, from
        the site's hosts like a pre-warm (so hosts of a site cold-starting the same version pull each chunk into the
        site once). Raises ImageError with the reason the fetch failed."""
        image = f"{game_id}@{version}"
        if image in self._held:
            return
        self.prewarm(game_id, version, 0, image_ref, image_digest)
        task = self._fetching.get(image)
        if task is not None:
            await asyncio.shield(task)
        if image not in self._held:
            progress = self._progress.get(image)
            raise InstallError(
                progress.error if progress is not None and progress.error else f"{image} not held"
            )

    async def _install(
        self, image: str, image_ref: str, image_digest: str, site_peers: Sequence[peers.Peer]
    ) -> None:
        assert self._registry is not None and self.store is not None
        store, registry = self.store, self._registry
        progress = Progress(image)
        self._progress[image] = progress
        self._fetches_changed = True
        log.info("fetching image", image=image, image_ref=image_ref)
        try:
            built = await asyncio.to_thread(self._read_manifest, registry, image_ref)
            if built.image != image:
                raise ManifestError("game_id", f"the registry's manifest is for {built.image}, not {image}")
            lacking = manifest.lacking(built, (c.digest for c in built.chunks if store.has_blob(c.digest)))
            need = built.size + sum(c.stored_size for c in lacking)
            if self._disk_bytes:
                keep = {i for i in store.held() if i.partition("@")[0] in self._games_in_use()}
                evicted = await asyncio.to_thread(
                    store.make_room, need, self._disk_bytes, keep, {c.digest for c in built.chunks}
                )
                for gone in evicted:
                    self._remove(gone)
                    log.info("image evicted for room", image=gone, for_image=image)
            free = shutil.disk_usage(store.root).free
            if need > free:
                raise InstallError(f"the disk is full at {store.root}: {need} bytes needed, {free} free")
            source = self._source(registry, image_ref, site_peers)
            await asyncio.to_thread(
                install, store, built, source, progress,
                workers=self._workers, retry_s=self._retry_s, stop=self._stop,
            )  # fmt: skip
            if isinstance(source, peers.SiteSource):
                self.peer_bytes += source.peer_bytes
        except ImageError as exc:
            progress.error = exc.message
            self._fetches_changed = True
            log.warning("image fetch failed", image=image, error=exc.message)
            return
        self._progress.pop(image, None)
        self._fetches_changed = True
        self._add(image)
        log.info(
            "image installed", image=image, fetched_bytes=progress.fetched_bytes, corrupt=progress.corrupt
        )

    def _read_manifest(self, registry: oci.Registry, image_ref: str) -> manifest.Manifest:
        deadline = time.monotonic() + self._retry_s
        while True:
            try:
                return publish.read(registry, image_ref)
            except RegistryUnavailable:
                if time.monotonic() >= deadline or self._stop.wait(1.0):
                    raise

    def _source(
        self, registry: oci.Registry, image_ref: str, site_peers: Sequence[peers.Peer]
    ) -> Callable[[manifest.Chunk], bytes]:
        repo = image_ref.partition("@")[0]
        if site_peers and self.flights is not None and self._host_id:
            return peers.SiteSource(self._host_id, site_peers, self.flights, repo, self._tls)
        return lambda c: registry.get_blob(repo, c.blob)

    async def _simulate(self, image: str, size_bytes: int) -> None:
        log.info("fetching image (simulated)", image=image, size_bytes=size_bytes)
        await asyncio.sleep(size_bytes / self._rate)
        if self._root is not None:
            try:
                await asyncio.to_thread(self._write, self._root / f"{image}{_SUFFIX}", size_bytes)
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

    def _remove(self, image: str) -> None:
        if image in self._held:
            self._held.remove(image)
            self._changed = True

    async def close(self) -> None:
        self._stop.set()
        for task in list(self._fetching.values()):
            task.cancel()
