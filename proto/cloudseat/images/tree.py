"""A directory on disk into an image (publish side), and a chunk's stored form both sides share.

`scan` lists a tree in the manifest's order (a directory before what it holds, names sorted) and refuses what an
image cannot hold (devices, sockets, links out of the tree); `build` streams the files' bytes through the chunker and
hands each new chunk, compressed, to a callback, then returns the manifest.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import zstandard

from cloudseat.images import chunking, manifest
from cloudseat.images.errors import ChunkCorrupt, ManifestError

_READ = 4 * 1024 * 1024
_LEVEL = 3  # zstd's default: ~300 MB/s per core to compress, >1 GB/s to decompress


def compress(data: bytes) -> bytes:
    # A compressor object per call: zstandard's objects are not safe to share between threads.
    return zstandard.ZstdCompressor(level=_LEVEL).compress(data)


def unpack(chunk: manifest.Chunk, blob: bytes) -> bytes:
    """The chunk's bytes from its stored blob, both digests checked; ChunkCorrupt when either differs."""
    if len(blob) != chunk.stored_size or hashlib.sha256(blob).hexdigest() != chunk.blob:
        raise ChunkCorrupt(f"chunk {chunk.digest[:12]}: the blob does not match its digest")
    try:
        data = zstandard.ZstdDecompressor().decompress(blob, max_output_size=chunk.size)
    except zstandard.ZstdError as exc:
        raise ChunkCorrupt(f"chunk {chunk.digest[:12]}: the blob does not decompress ({exc})") from None
    if len(data) != chunk.size or hashlib.sha256(data).hexdigest() != chunk.digest:
        raise ChunkCorrupt(f"chunk {chunk.digest[:12]}: the bytes do not match the digest")
    return data


def scan(root: Path) -> list[tuple[manifest.Entry, Path]]:
    """Every entry under root with its path on disk, in manifest order."""
    if not root.is_dir():
        raise ManifestError("DIR", f"{root} is not a directory")
    out: list[tuple[manifest.Entry, Path]] = []
    for rel, path in _walk(root, ""):
        st = path.lstat()
        if stat.S_ISDIR(st.st_mode):
            out.append((manifest.Entry(rel, "dir", stat.S_IMODE(st.st_mode) & 0o777), path))
        elif stat.S_ISREG(st.st_mode):
            out.append((manifest.Entry(rel, "file", stat.S_IMODE(st.st_mode) & 0o777, st.st_size), path))
        elif stat.S_ISLNK(st.st_mode):
            out.append((manifest.Entry(rel, "symlink", target=os.readlink(path)), path))
        else:
            raise ManifestError(rel, "is neither a file, a directory nor a symbolic link")
    return out


def _walk(root: Path, prefix: str) -> Iterator[tuple[str, Path]]:
    with os.scandir(root) as it:
        names = sorted(e.name for e in it)
    for name in names:
        rel = f"{prefix}{name}"
        path = root / name
        yield rel, path
        if path.is_dir() and not path.is_symlink():
            yield from _walk(path, f"{rel}/")


def build(
    game_id: str,
    version: str,
    root: Path,
    on_chunk: Callable[[manifest.Chunk, bytes], None],
    params: chunking.Params = chunking.DEFAULT,
) -> manifest.Manifest:
    """Chunk the tree at root; on_chunk(chunk, blob) is called once per distinct chunk, in stream order."""
    listed = scan(root)
    entries = tuple(e for e, _ in listed)
    # Check the tree's rules before reading a byte: a link out of the tree is refused here, not by every host.
    manifest.check(manifest.Manifest(game_id, version, (), tuple(e for e in entries if e.kind != "file")))
    chunker = chunking.Chunker(params)
    chunks: list[manifest.Chunk] = []
    seen: dict[str, manifest.Chunk] = {}

    def take(pieces: list[bytes]) -> None:
        for raw in pieces:
            digest = hashlib.sha256(raw).hexdigest()
            known = seen.get(digest)
            if known is None:
                blob = compress(raw)
                known = manifest.Chunk(digest, len(raw), hashlib.sha256(blob).hexdigest(), len(blob))
                seen[digest] = known
                on_chunk(known, blob)
            chunks.append(known)

    for entry, path in listed:
        if entry.kind != "file":
            continue
        with open(path, "rb") as f:
            left = entry.size
            while left > 0:
                data = f.read(min(_READ, left))
                if not data:
                    raise ManifestError(entry.path, "shrank while it was read")
                left -= len(data)
                take(chunker.feed(data))
    take(chunker.finish())
    built = manifest.Manifest(game_id, version, tuple(chunks), entries)
    manifest.check(built)
    return built
