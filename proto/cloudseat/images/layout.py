"""How a published version is laid out as OCI documents in the registry. Pure: builds and reads the documents' bytes.

Registries refuse a manifest over 4 MiB, and a chunk's descriptor is ~150 bytes, so one OCI manifest listing every
chunk of a game past ~3.5 GiB (~27k chunks) cannot be pushed. A version is therefore an OCI image index (tagged with the
version) over one or more OCI image manifests, the *parts*:

    index  application/vnd.oci.image.index.v1+json, artifactType application/vnd.cloudseat.image.v1
      part 0  artifactType application/vnd.cloudseat.image.part.v1: the image manifest blob, then chunks 0..N-1
      part 1  chunks N..2N-1
      ...

Each part lists at most `CHUNKS_PER_PART` chunk blobs, so every document stays under `DOCUMENT_LIMIT` (1 MiB, a
quarter of the registries' limit) up to the image manifest's own bounds (`manifest.MAX_CHUNKS`). Every blob a version
uses is a layer of a part, and every part is referenced by the tagged index, so a registry's garbage collector keeps
them all. The image manifest blob (cloudseat.images.manifest) still lists every chunk: a host reads only the index,
part 0 and that blob.

Versions published before the index (one OCI image manifest tagged with the version, the image manifest blob as its
first layer, then every chunk) stay readable: `image_manifest_digest` takes either.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from cloudseat.images import manifest
from cloudseat.images.errors import ManifestError
from cloudseat.images.oci import OCI_INDEX, OCI_MANIFEST

__all__ = ["OCI_INDEX", "OCI_MANIFEST", "first_part", "image_manifest_digest", "index", "parts"]
ARTIFACT_TYPE = "application/vnd.cloudseat.image.v1"
PART_TYPE = "application/vnd.cloudseat.image.part.v1"
INDEX_TYPE = "application/vnd.cloudseat.image.manifest.v1+json"  # the image manifest blob
CHUNK_TYPE = "application/vnd.cloudseat.chunk.v1+zstd"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"

#: Registries' manifest limit (Distribution, Harbor, the clouds' registries: 4 MiB).
REGISTRY_LIMIT = 4 * 1024 * 1024
#: What any document of ours may weigh: well under the registries' limit.
DOCUMENT_LIMIT = 1024 * 1024
#: Chunk descriptors per part: 4096 descriptors (~150 bytes each) are ~0.6 MiB.
CHUNKS_PER_PART = 4096


def _descriptor(media_type: str, digest: str, size: int, artifact_type: str = "") -> dict[str, Any]:
    d: dict[str, Any] = {"mediaType": media_type, "digest": f"sha256:{digest}", "size": size}
    if artifact_type:
        d["artifactType"] = artifact_type
    return d


def _dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def parts(
    image_manifest: tuple[str, int],
    empty_digest: str,
    chunks: Sequence[manifest.Chunk],
    per_part: int = CHUNKS_PER_PART,
) -> list[bytes]:
    """The part manifests' bytes: the image manifest blob (digest, size) first in part 0, then `chunks` (distinct),
    at most `per_part` a part; always at least one part."""
    if per_part < 1:
        raise ValueError("per_part must be at least 1")
    config = _descriptor(EMPTY_TYPE, empty_digest, len(EMPTY))
    out = []
    for start in range(0, max(len(chunks), 1), per_part):
        layers = [_descriptor(CHUNK_TYPE, c.blob, c.stored_size) for c in chunks[start : start + per_part]]
        if start == 0:
            layers.insert(0, _descriptor(INDEX_TYPE, image_manifest[0], image_manifest[1]))
        doc = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": PART_TYPE,
            "config": config,
            "layers": layers,
        }
        out.append(_dumps(doc))
    return out


def index(game_id: str, version: str, part_refs: Sequence[tuple[str, int]]) -> bytes:
    """The index tagged with the version, over the parts (digest, size) in order."""
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "artifactType": ARTIFACT_TYPE,
        "manifests": [_descriptor(OCI_MANIFEST, d, n, PART_TYPE) for d, n in part_refs],
        "annotations": {"org.cloudseat.game": game_id, "org.cloudseat.version": version},
    }
    return _dumps(doc)


def first_part(index_doc: bytes) -> str | None:
    """The digest (hex) of part 0 when the document is an index; None when it is an (older) image manifest.
    ManifestError when it is neither."""
    doc = manifest.json_object(index_doc, REGISTRY_LIMIT)
    if doc.get("mediaType") == OCI_MANIFEST:
        return None
    try:
        if doc["mediaType"] != OCI_INDEX or doc.get("artifactType") != ARTIFACT_TYPE:
            raise ValueError(f"mediaType {doc['mediaType']!r}, artifactType {doc.get('artifactType')!r}")
        first = doc["manifests"][0]
        if first["mediaType"] != OCI_MANIFEST:
            raise ValueError(f"its first manifest is a {first['mediaType']!r}")
        return _hex(first["digest"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ManifestError("manifest", f"is not a cloudseat image index ({exc})") from None


def image_manifest_digest(part_doc: bytes) -> str:
    """The image manifest blob's digest (hex) from part 0, or from an older version's one manifest."""
    doc = manifest.json_object(part_doc, REGISTRY_LIMIT)
    try:
        first = doc["layers"][0]
        if first["mediaType"] != INDEX_TYPE:
            raise ValueError(f"its first layer is a {first['mediaType']!r}")
        return _hex(first["digest"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ManifestError("manifest", f"is not a cloudseat image ({exc})") from None


def _hex(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("sha256:"):
        raise ValueError(f"digest {value!r} is not sha256:HEX")
    digest = value.removeprefix("sha256:")
    if len(digest) != 64 or any(ch not in "0123456789abcdef" for ch in digest):
        raise ValueError(f"digest {value!r} is not sha256:HEX")
    return digest
