"""An image's manifest: the file tree of one game version and the chunks its bytes are cut into. Pure.

    {"format": "cloudseat.image.v1", "game_id": "arena", "version": "2",
     "chunks": [{"digest": "<sha256 of the bytes>", "size": 131072, "blob": "<sha256 of the stored blob>",
                 "stored_size": 40211}, ...],
     "entries": [{"path": "assets", "kind": "dir", "mode": 493},
                 {"path": "assets/palette.bin", "kind": "file", "mode": 420, "size": 768},
                 {"path": "bin/game", "kind": "symlink", "target": "../assets"}, ...]}

The files' bytes, in entry order, form one stream, and the chunks cut that stream in order (like casync's archive),
so many small files share chunks instead of costing a blob each. A file's chunks are the ones that overlap its span
of the stream (`spans`). A chunk is named by the SHA-256 of its bytes (what versions share) and stored compressed as a
blob named by the SHA-256 of the stored bytes (what the registry checks).

A manifest comes from a registry, so `parse` trusts nothing: every path is relative and stays inside the tree, no
link leads out of it, sizes are bounded and add up, and each complaint names the field.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import re
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from cloudseat.images.errors import ManifestError

FORMAT = "cloudseat.image.v1"
Kind = Literal["file", "dir", "symlink"]
_KINDS = ("file", "dir", "symlink")
_DIGEST = re.compile(r"[0-9a-f]{64}")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
# Bounds against absurd manifests: they keep a hostile one from making a host allocate or loop without end.
MAX_CHUNK_BYTES = 16 * 1024 * 1024  # far above the chunker's largest (512 KiB)
MAX_IMAGE_BYTES = 1 << 40  # 1 TiB: no game comes near it
MAX_ENTRIES = 1_000_000
MAX_CHUNKS = 10_000_000
MAX_PATH = 4096
MAX_NAME = 255
MAX_MANIFEST_BYTES = 256 * 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class Chunk:
    digest: str
    size: int
    blob: str
    stored_size: int


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    path: str
    kind: Kind
    mode: int = 0o644
    size: int = 0
    target: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Manifest:
    game_id: str
    version: str
    chunks: tuple[Chunk, ...]
    entries: tuple[Entry, ...]

    @property
    def size(self) -> int:
        """Bytes of the files (what the installed tree holds)."""
        return sum(c.size for c in self.chunks)

    @property
    def stored_size(self) -> int:
        """Bytes of the distinct blobs (what a fetch from nothing moves)."""
        return sum(c.stored_size for c in unique_chunks(self.chunks))

    @property
    def image(self) -> str:
        return f"{self.game_id}@{self.version}"


def unique_chunks(chunks: Iterable[Chunk]) -> list[Chunk]:
    """Each distinct chunk once, in first-seen order (a stream may repeat a chunk)."""
    seen: dict[str, Chunk] = {}
    for c in chunks:
        seen.setdefault(c.digest, c)
    return list(seen.values())


def spans(manifest: Manifest) -> list[tuple[Entry, int]]:
    """Each file entry with its offset in the stream."""
    out = []
    offset = 0
    for e in manifest.entries:
        if e.kind == "file":
            out.append((e, offset))
            offset += e.size
    return out


def lacking(manifest: Manifest, held: Iterable[str]) -> list[Chunk]:
    """The distinct chunks of manifest whose digest is not in held."""
    have = set(held)
    return [c for c in unique_chunks(manifest.chunks) if c.digest not in have]


def to_json(manifest: Manifest) -> bytes:
    """Canonical bytes (sorted keys, no spaces): the same manifest always has the same digest."""
    entries = []
    for e in manifest.entries:
        d: dict[str, Any] = {"path": e.path, "kind": e.kind}
        if e.kind != "symlink":
            d["mode"] = e.mode
        if e.kind == "file":
            d["size"] = e.size
        if e.kind == "symlink":
            d["target"] = e.target
        entries.append(d)
    doc = {
        "format": FORMAT,
        "game_id": manifest.game_id,
        "version": manifest.version,
        "chunks": [dataclasses.asdict(c) for c in manifest.chunks],
        "entries": entries,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def json_object(data: bytes, limit: int) -> dict[str, Any]:
    """Untrusted bytes read as one JSON object of at most `limit` bytes (ManifestError otherwise)."""
    if len(data) > limit:
        raise ManifestError("manifest", f"is larger than {limit} bytes")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError("manifest", f"is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ManifestError("manifest", "must be a JSON object")
    return doc


def parse(data: bytes) -> Manifest:
    """Read and check a manifest from untrusted bytes; ManifestError names the first bad field."""
    doc = json_object(data, MAX_MANIFEST_BYTES)
    if doc.get("format") != FORMAT:
        raise ManifestError("format", f"must be {FORMAT!r}")
    game_id = _ident(doc, "game_id", "game_id")
    version = _ident(doc, "version", "version")
    raw_chunks = _list(doc, "chunks", MAX_CHUNKS)
    raw_entries = _list(doc, "entries", MAX_ENTRIES)
    chunks = tuple(_chunk(c, f"chunks[{i}]") for i, c in enumerate(raw_chunks))
    entries = tuple(_entry(e, f"entries[{i}]") for i, e in enumerate(raw_entries))
    manifest = Manifest(game_id, version, chunks, entries)
    check(manifest)
    return manifest


def check(manifest: Manifest) -> None:
    """The tree's rules (also for a manifest built here, before it is published)."""
    kinds: dict[str, Kind] = {}
    for i, e in enumerate(manifest.entries):
        field = f"entries[{i}]"
        _path(e.path, f"{field}.path")
        if e.path in kinds:
            raise ManifestError(f"{field}.path", f"{e.path!r} appears twice")
        # Every parent must be a directory of the tree listed before: a file or link as a parent would let a
        # later entry be written through a link, out of the tree.
        parent = posixpath.dirname(e.path)
        if parent and kinds.get(parent) != "dir":
            raise ManifestError(f"{field}.path", f"its parent {parent!r} is not a directory listed before it")
        if e.kind == "symlink":
            _link(e.path, e.target, f"{field}.target")
        elif not 0 <= e.mode <= 0o777:
            raise ManifestError(
                f"{field}.mode", "must be permission bits 0..0o777 (no setuid, setgid or sticky)"
            )
        if e.kind == "file" and not 0 <= e.size <= MAX_IMAGE_BYTES:
            raise ManifestError(f"{field}.size", f"must be between 0 and {MAX_IMAGE_BYTES}")
        kinds[e.path] = e.kind
    total = sum(e.size for e in manifest.entries if e.kind == "file")
    if total > MAX_IMAGE_BYTES:
        raise ManifestError("entries", f"the files add up to {total} bytes, more than {MAX_IMAGE_BYTES}")
    streamed = sum(c.size for c in manifest.chunks)
    if streamed != total:
        raise ManifestError("chunks", f"the chunks add up to {streamed} bytes but the files to {total}")
    blobs: dict[str, str] = {}
    for i, c in enumerate(manifest.chunks):
        # One content, one blob: two blobs for the same bytes would make "which one is right" a question.
        if blobs.setdefault(c.digest, c.blob) != c.blob:
            raise ManifestError(f"chunks[{i}].blob", "differs from an earlier chunk with the same digest")


def parse_chunk(raw: Any, field: str) -> Chunk:
    """One chunk description from untrusted input (a peer's request); ManifestError names the field."""
    return _chunk(raw, field)


_REPOSITORY = re.compile(r"[a-z0-9]+(?:[._/-][a-z0-9]+)*")


def check_repository(value: str, field: str) -> str:
    """A registry repository path (games/arena)."""
    if len(value) > 255 or not _REPOSITORY.fullmatch(value):
        raise ManifestError(field, "must be a lowercase registry repository path")
    return value


def _list(doc: dict[str, Any], key: str, most: int) -> Sequence[Any]:
    value = doc.get(key)
    if not isinstance(value, list):
        raise ManifestError(key, "must be a list")
    if len(value) > most:
        raise ManifestError(key, f"has more than {most} items")
    return value


def _ident(doc: dict[str, Any], key: str, field: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ManifestError(field, "must be 1-64 characters of letters, digits, '.', '_', ':' or '-'")
    return value


def _int(doc: dict[str, Any], key: str, field: str, lo: int, hi: int, default: int | None = None) -> int:
    value = doc.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ManifestError(field, f"must be an integer between {lo} and {hi}")
    return value


def _digest(doc: dict[str, Any], key: str, field: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not _DIGEST.fullmatch(value):
        raise ManifestError(field, "must be 64 lowercase hex digits (a SHA-256)")
    return value


def _chunk(raw: Any, field: str) -> Chunk:
    if not isinstance(raw, dict):
        raise ManifestError(field, "must be an object")
    return Chunk(
        digest=_digest(raw, "digest", f"{field}.digest"),
        size=_int(raw, "size", f"{field}.size", 1, MAX_CHUNK_BYTES),
        blob=_digest(raw, "blob", f"{field}.blob"),
        # zstd's worst case is a little over the input; anything beyond twice it is not a compressed chunk.
        stored_size=_int(raw, "stored_size", f"{field}.stored_size", 1, 2 * MAX_CHUNK_BYTES),
    )


def _entry(raw: Any, field: str) -> Entry:
    if not isinstance(raw, dict):
        raise ManifestError(field, "must be an object")
    path = raw.get("path")
    if not isinstance(path, str):
        raise ManifestError(f"{field}.path", "must be a string")
    kind = raw.get("kind")
    if kind not in _KINDS:
        raise ManifestError(f"{field}.kind", f"must be one of {', '.join(_KINDS)}")
    if kind == "symlink":
        target = raw.get("target")
        if not isinstance(target, str):
            raise ManifestError(f"{field}.target", "must be a string")
        return Entry(path, "symlink", target=target)
    mode = _int(raw, "mode", f"{field}.mode", 0, 0o7777)
    size = _int(raw, "size", f"{field}.size", 0, MAX_IMAGE_BYTES) if kind == "file" else 0
    return Entry(path, kind, mode, size)


def _path(path: str, field: str) -> None:
    if not path:
        raise ManifestError(field, "must not be empty")
    if len(path) > MAX_PATH:
        raise ManifestError(field, f"is longer than {MAX_PATH} characters")
    if path.startswith("/"):
        raise ManifestError(field, f"{path!r} is absolute; paths are relative to the image's root")
    if "\\" in path or "\x00" in path:
        raise ManifestError(field, f"{path!r} contains a backslash or NUL")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise ManifestError(field, f"{path!r} has an empty, '.' or '..' component")
        if len(part) > MAX_NAME:
            raise ManifestError(field, f"has a component longer than {MAX_NAME} characters")


def _link(path: str, target: str, field: str) -> None:
    """A link's target is relative, goes up only at its start, and no further up than the link's own directory:
    then following it (and any in-tree links below) stays inside the tree, whatever the links in its way point at."""
    if not target or len(target) > MAX_PATH or "\x00" in target or "\\" in target:
        raise ManifestError(field, "must be a non-empty relative path")
    if target.startswith("/"):
        raise ManifestError(field, f"{target!r} is absolute: a link must stay inside the image")
    parts = target.split("/")
    ups = 0
    while ups < len(parts) and parts[ups] == "..":
        ups += 1
    rest = parts[ups:]
    if any(p in ("", ".", "..") for p in rest):
        raise ManifestError(
            field, f"{target!r} must go up ('..') only at its start and have no empty or '.' part"
        )
    depth = path.count("/")
    if ups > depth:
        raise ManifestError(field, f"{target!r} leads out of the image")
