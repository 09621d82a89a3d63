"""The OCI layout of a version: the chunk descriptors are split across parts so every document stays under the
registries' 4 MiB limit up to the image manifest's own bounds, every chunk is a layer of exactly one part, and an
older version's single manifest still reads."""

from __future__ import annotations

import hashlib
import json

import pytest
from cloudseat.images import layout, manifest
from cloudseat.images.errors import ManifestError

EMPTY = hashlib.sha256(layout.EMPTY).hexdigest()


def _chunks(n: int) -> list[manifest.Chunk]:
    # The longest descriptors: sizes at the manifest's bounds.
    return [
        manifest.Chunk(
            hashlib.sha256(b"d%d" % i).hexdigest(),
            manifest.MAX_CHUNK_BYTES,
            hashlib.sha256(b"b%d" % i).hexdigest(),
            2 * manifest.MAX_CHUNK_BYTES,
        )
        for i in range(n)
    ]


def test_a_30_gib_game_splits_into_parts_each_under_the_limit() -> None:
    chunks = _chunks(30_000)  # ~30k chunks: past what one manifest could list
    head = ("c" * 64, 9_000_000)
    one = layout.parts(head, EMPTY, chunks, per_part=len(chunks))
    assert len(one[0]) > layout.REGISTRY_LIMIT  # the old layout: one manifest, over the registries' limit
    parts = layout.parts(head, EMPTY, chunks)
    assert len(parts) == -(-30_000 // layout.CHUNKS_PER_PART)
    assert max(len(p) for p in parts) <= layout.DOCUMENT_LIMIT
    listed = [json.loads(p)["layers"] for p in parts]
    assert listed[0][0] == {"mediaType": layout.INDEX_TYPE, "digest": f"sha256:{head[0]}", "size": head[1]}
    blobs = [x["digest"] for layers in listed for x in layers[1 if layers is listed[0] else 0 :]]
    assert blobs == [f"sha256:{c.blob}" for c in chunks]  # every chunk once, in order
    refs = [(hashlib.sha256(p).hexdigest(), len(p)) for p in parts]
    top = layout.index("arena", "7", refs)
    assert layout.first_part(top) == refs[0][0]
    assert layout.image_manifest_digest(parts[0]) == head[0]
    assert [m["digest"] for m in json.loads(top)["manifests"]] == [f"sha256:{d}" for d, _ in refs]


def test_the_index_stays_under_the_limit_at_the_most_chunks_a_manifest_may_list() -> None:
    most = -(-manifest.MAX_CHUNKS // layout.CHUNKS_PER_PART)
    part = layout.parts(("c" * 64, 1), EMPTY, _chunks(layout.CHUNKS_PER_PART))[0]
    assert len(part) <= layout.DOCUMENT_LIMIT
    refs = [(hashlib.sha256(b"%d" % i).hexdigest(), layout.DOCUMENT_LIMIT) for i in range(most)]
    assert len(layout.index("a" * 64, "v" * 64, refs)) <= layout.DOCUMENT_LIMIT


def test_an_empty_game_has_one_part_with_its_manifest() -> None:
    parts = layout.parts(("c" * 64, 10), EMPTY, [])
    assert len(parts) == 1
    assert layout.image_manifest_digest(parts[0]) == "c" * 64


def test_an_older_single_manifest_reads_as_its_own_first_part() -> None:
    old = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": layout.OCI_MANIFEST,
            "artifactType": layout.ARTIFACT_TYPE,
            "layers": [{"mediaType": layout.INDEX_TYPE, "digest": "sha256:" + "e" * 64, "size": 5}],
        }
    ).encode()
    assert layout.first_part(old) is None
    assert layout.image_manifest_digest(old) == "e" * 64


@pytest.mark.parametrize(
    "doc",
    [
        {"mediaType": layout.OCI_INDEX, "artifactType": "something/else", "manifests": []},
        {"mediaType": layout.OCI_INDEX, "artifactType": layout.ARTIFACT_TYPE, "manifests": []},
        {
            "mediaType": layout.OCI_INDEX,
            "artifactType": layout.ARTIFACT_TYPE,
            "manifests": [{"mediaType": layout.OCI_MANIFEST, "digest": "sha256:../../x"}],
        },
        ["not", "an", "object"],
    ],
)
def test_a_foreign_or_malformed_index_is_refused(doc: object) -> None:
    with pytest.raises(ManifestError) as info:
        layout.first_part(json.dumps(doc).encode())
    assert info.value.field == "manifest"


def test_a_part_without_the_image_manifest_first_is_refused() -> None:
    part = layout.parts(("c" * 64, 10), EMPTY, _chunks(2))[0]
    doc = json.loads(part)
    doc["layers"] = doc["layers"][1:]
    with pytest.raises(ManifestError):
        layout.image_manifest_digest(json.dumps(doc).encode())
