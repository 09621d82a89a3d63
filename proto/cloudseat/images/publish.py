"""Publishing a game version: chunk a directory, upload the blobs the registry lacks, push the OCI documents.

The registry holds, in repository games/GAME_ID:

    blob  each chunk, zstd-compressed (application/vnd.cloudseat.chunk.v1+zstd)
    blob  the image manifest (cloudseat.images.manifest, application/vnd.cloudseat.image.manifest.v1+json)
    OCI image manifests (the parts, untagged): the image manifest blob, then every chunk, at most 4096 chunks a part
    OCI image index, tagged VERSION, artifactType application/vnd.cloudseat.image.v1, over the parts
          (cloudseat.images.layout): every document stays under 1 MiB however big the game, and the registry's
          garbage collector keeps what a version uses.

Chunks are uploaded as the chunker cuts them, by a few threads, each asked of the registry first (HEAD), so a
re-run after a failure, or the next version, uploads only what is missing. The parts, then the tagged index, are
pushed last: a version is visible only whole.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from cloudseat.images import chunking, layout, manifest, oci, tree
from cloudseat.images.errors import ManifestError, RegistryError

ARTIFACT_TYPE = layout.ARTIFACT_TYPE
INDEX_TYPE = layout.INDEX_TYPE
CHUNK_TYPE = layout.CHUNK_TYPE
EMPTY_TYPE = layout.EMPTY_TYPE


def repository(game_id: str) -> str:
    return f"games/{game_id.lower()}"


@dataclasses.dataclass(frozen=True, slots=True)
class Published:
    image_ref: str  # REPOSITORY@sha256:HEX
    digest: str  # the tagged OCI index's
    size: int  # the tree's bytes
    stored_size: int  # distinct blobs' bytes
    uploaded_bytes: int
    uploaded_blobs: int
    present_blobs: int  # already in the registry
    update_bytes: int  # stored bytes the previous version lacks (all of them without one)
    manifest: manifest.Manifest
    #: stored bytes each earlier version given (`push(earlier=...)`) lacks, by version: placement's cold-start cost
    lacking_from: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Progress:
    """Counters a progress display reads (bytes of the tree read, blobs uploaded)."""

    read_bytes: int = 0
    uploaded_bytes: int = 0
    uploaded_blobs: int = 0
    present_blobs: int = 0
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


def push(
    registry: oci.Registry,
    game_id: str,
    version: str,
    root: Path,
    *,
    previous: manifest.Manifest | None = None,
    earlier: Sequence[manifest.Manifest] = (),
    workers: int = 4,
    progress: Progress | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    params: chunking.Params = chunking.DEFAULT,
    chunks_per_part: int = layout.CHUNKS_PER_PART,
) -> Published:
    """Publish the tree at root as GAME_ID:VERSION; raises ManifestError or RegistryError (nothing is tagged).

    `previous` is the version this one replaces (its update_bytes); `earlier` any earlier versions (the previous one
    may be among them), each of which gets what it lacks of this one in `lacking_from`."""
    repo = repository(game_id)
    registry.check()
    state = progress or Progress()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="push")
    pending: list[concurrent.futures.Future[None]] = []
    # At most this many chunks wait in memory for an upload thread.
    window = threading.BoundedSemaphore(4 * workers)

    def upload(chunk: manifest.Chunk, blob: bytes) -> None:
        try:
            if registry.has_blob(repo, chunk.blob):
                with state.lock:
                    state.present_blobs += 1
            else:
                registry.put_blob(repo, blob, chunk.blob)
                with state.lock:
                    state.uploaded_bytes += len(blob)
                    state.uploaded_blobs += 1
        finally:
            window.release()
        with state.lock:
            state.read_bytes += chunk.size
        if on_progress is not None:
            on_progress(state)

    def on_chunk(chunk: manifest.Chunk, blob: bytes) -> None:
        window.acquire()
        pending.append(pool.submit(upload, chunk, blob))
        if len(pending) > 64:
            _settle(pending)

    try:
        built = tree.build(game_id, version, root, on_chunk, params)
        _settle(pending, everything=True)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    index = manifest.to_json(built)
    index_digest = registry.put_blob(repo, index)
    empty_digest = hashlib.sha256(layout.EMPTY).hexdigest()
    if not registry.has_blob(repo, empty_digest):
        registry.put_blob(repo, layout.EMPTY, empty_digest)
    chunks = manifest.unique_chunks(built.chunks)
    part_refs = []
    for part in layout.parts((index_digest, len(index)), empty_digest, chunks, chunks_per_part):
        part_digest = hashlib.sha256(part).hexdigest()
        registry.put_manifest(repo, f"sha256:{part_digest}", part)
        part_refs.append((part_digest, len(part)))
    digest = registry.put_manifest(
        repo, version, layout.index(game_id, version, part_refs), media_type=layout.OCI_INDEX
    )
    old = {c.digest for c in previous.chunks} if previous is not None else set()
    return Published(
        image_ref=f"{repo}@sha256:{digest}",
        digest=digest,
        size=built.size,
        stored_size=built.stored_size,
        uploaded_bytes=state.uploaded_bytes,
        uploaded_blobs=state.uploaded_blobs,
        present_blobs=state.present_blobs,
        update_bytes=lacking(chunks, old),
        manifest=built,
        lacking_from={
            m.version: lacking(chunks, {c.digest for c in m.chunks}) for m in earlier if m.version != version
        },
    )


def lacking(chunks: Sequence[manifest.Chunk], held: set[str]) -> int:
    """Stored bytes of `chunks` (distinct) whose digests are not in `held`: what a host holding those still fetches."""
    return sum(c.stored_size for c in chunks if c.digest not in held)


def earlier_versions(
    registry: oci.Registry, game_id: str, version: str, limit: int = 64
) -> list[manifest.Manifest]:
    """The image manifests of the game's other versions in the registry (at most `limit`, by tag name), to compare
    a new version with. A tag that is not a cloudseat image is passed over."""
    repo = repository(game_id)
    out = []
    for tag in sorted(t for t in registry.tags(repo) if t != version)[:limit]:
        doc = registry.get_manifest(repo, tag)
        try:
            out.append(read(registry, f"{repo}@sha256:{hashlib.sha256(doc).hexdigest()}"))
        except ManifestError:
            continue
    return out


def _settle(pending: list[concurrent.futures.Future[None]], everything: bool = False) -> None:
    """Raise the first upload failure; drop finished uploads from the list."""
    if everything:
        concurrent.futures.wait(pending)
    still = []
    for f in pending:
        if f.done():
            f.result()
        else:
            still.append(f)
    pending[:] = still


def read(registry: oci.Registry, image_ref: str) -> manifest.Manifest:
    """The image manifest a published version's reference names, checked (ManifestError, RegistryError)."""
    repo, _, digest = image_ref.partition("@sha256:")
    top = _manifest(registry, repo, digest, image_ref)
    first = layout.first_part(top)
    index_digest = layout.image_manifest_digest(
        _manifest(registry, repo, first, image_ref) if first is not None else top
    )
    data = registry.get_blob(repo, index_digest)
    if hashlib.sha256(data).hexdigest() != index_digest:
        raise RegistryError(
            f"registry {registry.url}: the image manifest of {image_ref} does not match its digest"
        )
    return manifest.parse(data)


def _manifest(registry: oci.Registry, repo: str, digest: str, image_ref: str) -> bytes:
    doc = registry.get_manifest(repo, f"sha256:{digest}")
    if hashlib.sha256(doc).hexdigest() != digest:
        raise RegistryError(f"registry {registry.url}: a manifest of {image_ref} does not match its digest")
    return doc
