"""Installing one image version on the host: the chunks it lacks fetched concurrently and verified, the tree
assembled in staging, then moved into place whole (gpu_agent.image_store). Blocking; runs in a thread.

Every chunk, fetched or taken from the local store, is checked against both its digests before a byte of it is
written to the tree; a chunk that fails is dropped and fetched again (a few times, then the install fails), so no
corrupt byte is ever installed. A registry that cannot be reached is asked again with backoff until `retry_s` has
passed: a registry that comes back within it lets the fetch finish, and what was fetched before is kept.

Chunks arrive in any order: the staging files are created at their full size first and each chunk's bytes are
written at their offsets (a chunk that occurs several times in the stream is written at each).
"""

from __future__ import annotations

import bisect
import concurrent.futures
import dataclasses
import errno
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog
from cloudseat.images import manifest, tree
from cloudseat.images.errors import ChunkCorrupt, InstallError, RegistryUnavailable

from gpu_agent.image_store import ImageStore

log = structlog.get_logger(__name__)

# A chunk whose bytes are wrong this many times in a row fails the install: the source is broken, not unlucky.
_CORRUPT_TRIES = 3
_BACKOFF_S = (0.1, 0.2, 0.5, 1.0, 2.0)

Source = Callable[[manifest.Chunk], bytes]


@dataclasses.dataclass
class Progress:
    """What a heartbeat reports of a fetch: stored bytes held of the version's total."""

    image: str
    bytes_total: int = 0
    bytes_done: int = 0
    fetched_bytes: int = 0  # of bytes_done, the ones that came over the network
    corrupt: int = 0  # chunks that failed their digest and were fetched again
    error: str = ""
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def add(self, stored: int, fetched: bool) -> None:
        with self.lock:
            self.bytes_done += stored
            if fetched:
                self.fetched_bytes += stored


class _Layout:
    """Where each stream offset lands in the staging tree."""

    def __init__(self, built: manifest.Manifest, staged: Path) -> None:
        self.files = [(off, e, staged / e.path) for e, off in manifest.spans(built) if e.size > 0]
        self.starts = [off for off, _, _ in self.files]
        self.offsets: dict[str, list[int]] = {}
        at = 0
        for c in built.chunks:
            self.offsets.setdefault(c.digest, []).append(at)
            at += c.size

    def write(self, digest: str, data: bytes) -> None:
        for at in self.offsets[digest]:
            self._write_at(at, data)

    def _write_at(self, at: int, data: bytes) -> None:
        view = memoryview(data)
        i = bisect.bisect_right(self.starts, at) - 1
        while len(view) > 0:
            off, entry, path = self.files[i]
            inside = at - off
            n = min(len(view), entry.size - inside)
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
            try:
                written = 0
                while written < n:
                    written += os.pwrite(fd, view[written:n], inside + written)
            finally:
                os.close(fd)
            view = view[n:]
            at += n
            i += 1


def install(
    store: ImageStore,
    built: manifest.Manifest,
    source: Source,
    progress: Progress,
    *,
    workers: int = 8,
    retry_s: float = 300.0,
    stop: threading.Event | None = None,
) -> None:
    """Fetch what is lacking and install `built`; raises ImageError (InstallError for the disk) and leaves nothing
    half-written behind."""
    stop = stop or threading.Event()
    staged = store.new_staging(built.image)
    try:
        _prepare(built, staged)
        layout = _Layout(built, staged)
        chunks = manifest.unique_chunks(built.chunks)
        progress.bytes_total = sum(c.stored_size for c in chunks)
        remote = []
        for c in chunks:
            if store.has_blob(c.digest):
                try:
                    layout.write(c.digest, tree.unpack(c, store.read_blob(c.digest)))
                    progress.add(c.stored_size, fetched=False)
                    continue
                except ChunkCorrupt:
                    store.drop_blob(c.digest)  # the disk changed it under us: fetch it again
            remote.append(c)

        def fetch(c: manifest.Chunk) -> None:
            data = _fetch_verified(c, source, progress, retry_s, stop)
            store.put_blob(c.digest, data.blob)
            layout.write(c.digest, data.raw)
            progress.add(c.stored_size, fetched=True)

        with concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch") as pool:
            futures = [pool.submit(fetch, c) for c in remote]
            try:
                for f in concurrent.futures.as_completed(futures):
                    f.result()
            except BaseException:
                stop.set()
                for f in futures:
                    f.cancel()
                raise
        _finish(built, staged)
        store.commit(built, staged)
    except OSError as exc:
        _remove_quietly(staged)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InstallError(f"the disk is full at {store.root}: {exc.strerror}") from None
        raise InstallError(f"could not write the image at {store.root}: {exc}") from None
    except BaseException:
        _remove_quietly(staged)
        raise


@dataclasses.dataclass(frozen=True, slots=True)
class _Fetched:
    blob: bytes
    raw: bytes


def _fetch_verified(
    c: manifest.Chunk, source: Source, progress: Progress, retry_s: float, stop: threading.Event
) -> _Fetched:
    deadline = time.monotonic() + retry_s
    corrupt = 0
    attempt = 0
    while True:
        if stop.is_set():
            raise InstallError("the fetch was stopped")
        try:
            blob = source(c)
        except RegistryUnavailable:
            if time.monotonic() >= deadline:
                raise
            stop.wait(_BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)])
            attempt += 1
            continue
        attempt = 0
        try:
            return _Fetched(blob, tree.unpack(c, blob))
        except ChunkCorrupt:
            corrupt += 1
            with progress.lock:
                progress.corrupt += 1
            log.warning("chunk failed its digest; fetching it again", chunk=c.digest[:12], tries=corrupt)
            if corrupt >= _CORRUPT_TRIES:
                raise


def _prepare(built: manifest.Manifest, staged: Path) -> None:
    """Directories (owner-writable while we fill them) and the files at full size, empty."""
    for e in built.entries:
        path = staged / e.path
        if e.kind == "dir":
            path.mkdir(mode=0o700)
        elif e.kind == "file":
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                os.ftruncate(fd, e.size)
            finally:
                os.close(fd)


def _finish(built: manifest.Manifest, staged: Path) -> None:
    """Links, then the manifest's modes (directories deepest first, so none is made read-only before its contents)."""
    for e in built.entries:
        if e.kind == "symlink":
            os.symlink(e.target, staged / e.path)
        elif e.kind == "file":
            os.chmod(staged / e.path, e.mode, follow_symlinks=False)
    for e in sorted((e for e in built.entries if e.kind == "dir"), key=lambda e: -e.path.count("/")):
        os.chmod(staged / e.path, e.mode | 0o700, follow_symlinks=False)


def _remove_quietly(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
