"""The host's image store on disk: verified chunk blobs shared by every version, installed trees, and what is held.

    ROOT/blobs/<chunk digest>       a chunk's stored (zstd) blob, written only after both digests checked out
    ROOT/trees/<GAME@VERSION>/      an installed tree, moved here whole from staging
    ROOT/held/<GAME@VERSION>.json   the image's manifest: written last, so its presence is what "held" means;
                                    its mtime is when a session last used it (least recently used goes first)
    ROOT/staging/                   trees being assembled; anything here at start is a crash's leftover

Crash safety comes from the order: blobs are renamed into place whole; a tree is renamed from staging whole; the
held marker is renamed into place last. At start, staging is emptied and a tree without a marker is removed, so
nothing half-written is ever held, and the blobs already verified are kept: a restarted fetch resumes from them.

Blocking file I/O: the agent calls it from threads (gpu_agent.images).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Iterable
from pathlib import Path

from cloudseat.images import manifest
from cloudseat.images.errors import InstallError


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.trees = root / "trees"
        self.marks = root / "held"
        self.staging = root / "staging"
        self._lock = threading.Lock()
        for d in (self.blobs, self.trees, self.marks, self.staging):
            d.mkdir(parents=True, exist_ok=True)
        self._recover()

    def _recover(self) -> None:
        for leftover in self.staging.iterdir():
            _remove(leftover)
        held = set(self.held())
        for tree in self.trees.iterdir():
            if tree.name not in held:
                _remove(tree)
        for tmp in self.blobs.glob("*.part*"):
            tmp.unlink(missing_ok=True)

    # -- what is held ---------------------------------------------------------------------------------------

    def held(self) -> list[str]:
        """Held images, oldest install first."""
        marks = sorted(self.marks.glob("*.json"), key=lambda p: (p.stat().st_mtime_ns, p.name))
        return [p.name.removesuffix(".json") for p in marks]

    def manifest_of(self, image: str) -> manifest.Manifest:
        return manifest.parse((self.marks / f"{image}.json").read_bytes())

    def tree(self, image: str) -> Path:
        return self.trees / image

    def touch(self, image: str) -> None:
        """A session uses the image now (least-recently-used order)."""
        with contextlib.suppress(FileNotFoundError):
            os.utime(self.marks / f"{image}.json")

    def commit(self, built: manifest.Manifest, staged: Path) -> None:
        """Move a fully assembled tree into place and mark it held (the marker last)."""
        target = self.tree(built.image)
        _remove(target)
        os.rename(staged, target)
        mark = self.marks / f"{built.image}.json"
        part = mark.with_name(f"{mark.name}.part")
        part.write_bytes(manifest.to_json(built))
        os.replace(part, mark)

    # -- chunks ---------------------------------------------------------------------------------------------

    def has_blob(self, digest: str) -> bool:
        return (self.blobs / digest).exists()

    def read_blob(self, digest: str) -> bytes:
        return (self.blobs / digest).read_bytes()

    def put_blob(self, digest: str, blob: bytes) -> None:
        path = self.blobs / digest
        part = path.with_name(f"{digest}.part{threading.get_ident()}")
        part.write_bytes(blob)
        os.replace(part, path)

    def drop_blob(self, digest: str) -> None:
        (self.blobs / digest).unlink(missing_ok=True)

    # -- the disk budget ------------------------------------------------------------------------------------

    def usage(self) -> int:
        """Bytes the store holds: blobs plus installed trees."""
        blobs = sum(p.stat().st_size for p in self.blobs.iterdir())
        return blobs + sum(self.manifest_of(i).size for i in self.held())

    def make_room(self, need: int, budget: int, keep: Iterable[str], keep_chunks: Iterable[str]) -> list[str]:
        """Evict least recently used images (never one in `keep`) until `need` more bytes fit in `budget`;
        returns what was evicted. InstallError when even that cannot make room (nothing is evicted then)."""
        with self._lock:
            keep = set(keep)
            used = self.usage()
            if used + need <= budget:
                return []
            candidates = [i for i in self.held() if i not in keep]
            freeable = sum(self.manifest_of(i).size for i in candidates)
            # Blobs only those images use go with them; counted after the fact (below), not promised here.
            if used + need - freeable > budget + self._blob_bytes_freed(candidates, keep_chunks):
                raise InstallError(
                    f"the image disk budget ({budget} bytes) is too small: {need} more bytes are needed, {used} are "
                    f"in use and only {freeable} could be freed without touching running sessions' images"
                )
            evicted = []
            for image in candidates:
                if used + need <= budget:
                    break
                self._remove_image(image, keep_chunks)
                evicted.append(image)
                used = self.usage()
            if used + need > budget:
                raise InstallError(
                    f"the image disk budget ({budget} bytes) is too small for {need} more bytes"
                )
            return evicted

    def _blob_bytes_freed(self, images: list[str], keep_chunks: Iterable[str]) -> int:
        going = set(images)
        kept = set(keep_chunks)
        for image in self.held():
            if image not in going:
                kept.update(c.digest for c in self.manifest_of(image).chunks)
        freed = 0
        for image in images:
            for c in manifest.unique_chunks(self.manifest_of(image).chunks):
                if c.digest not in kept and self.has_blob(c.digest):
                    kept.add(c.digest)  # count each blob once
                    freed += c.stored_size
        return freed

    def _remove_image(self, image: str, keep_chunks: Iterable[str]) -> None:
        gone = self.manifest_of(image)
        # Unmark first: from this moment the image is not held, whatever else a crash leaves behind.
        (self.marks / f"{image}.json").unlink()
        _remove(self.tree(image))
        kept = set(keep_chunks)
        for other in self.held():
            kept.update(c.digest for c in self.manifest_of(other).chunks)
        for c in gone.chunks:
            if c.digest not in kept:
                self.drop_blob(c.digest)

    def new_staging(self, image: str) -> Path:
        path = self.staging / f"{image}.{os.getpid()}.{threading.get_ident()}"
        _remove(path)
        path.mkdir()
        return path


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
