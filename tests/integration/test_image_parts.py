"""A game too big for one OCI manifest, against the embedded registry: its chunks are listed across several part
manifests under one tagged index, a host reads and installs it, and the registry's own garbage collector keeps
every blob. Scaled down: the chunk sizes and the chunks per part are lowered so a few hundred chunks make several
parts (the real split, 4096 chunks a part, is checked in tests/unit/test_image_layout.py). A version published in the
older layout (one manifest listing every chunk) still installs."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
from cloudseat.images import chunking, layout, manifest, oci, publish
from cloudseat.images.local_registry import RegistryProcesses

from gpu_agent.image_install import Progress, install
from gpu_agent.image_store import ImageStore
from tests.integration.test_image_registry import same_tree

TINY = chunking.Params(min_size=64, normal_size=256, max_size=1024)
PER_PART = 64


def _clients(registry: RegistryProcesses) -> tuple[oci.Registry, oci.Registry]:
    reg = registry.registry
    assert reg is not None
    return oci.Registry(reg.writer_url, reg.writer), oci.Registry(reg.reader_url, reg.reader)


def _many_chunks(root: Path) -> None:
    rng = np.random.default_rng(5)
    (root / "packs").mkdir(parents=True)
    (root / "big.bin").write_bytes(rng.integers(0, 256, 60_000, dtype=np.uint8).tobytes())
    for i in range(60):
        (root / "packs" / f"p{i:02}.dat").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())


def _install(reader: oci.Registry, image_ref: str, store: ImageStore) -> manifest.Manifest:
    built = publish.read(reader, image_ref)
    repo = image_ref.partition("@")[0]
    install(store, built, lambda c: reader.get_blob(repo, c.blob), Progress(built.image), workers=4)
    return built


def test_a_game_past_one_manifest_is_published_as_parts_and_installs_whole(
    registry: RegistryProcesses, tmp_path: Path
) -> None:
    writer, reader = _clients(registry)
    _many_chunks(tmp_path / "src")
    done = publish.push(
        writer, "arena", "1", tmp_path / "src", params=TINY, chunks_per_part=PER_PART, workers=4
    )
    chunks = manifest.unique_chunks(done.manifest.chunks)
    assert len(chunks) > 3 * PER_PART

    top = writer.get_manifest("games/arena", "1")
    assert hashlib.sha256(top).hexdigest() == done.digest
    doc = json.loads(top)
    assert doc["mediaType"] == layout.OCI_INDEX
    assert len(doc["manifests"]) == -(-len(chunks) // PER_PART)
    listed = []
    for ref in doc["manifests"]:
        part = json.loads(reader.get_manifest("games/arena", ref["digest"]))
        assert len(part["layers"]) <= PER_PART + 1
        listed += [x["digest"] for x in part["layers"] if x["mediaType"] == layout.CHUNK_TYPE]
    assert sorted(listed) == sorted(f"sha256:{c.blob}" for c in chunks)

    store = ImageStore(tmp_path / "store")
    built = _install(reader, done.image_ref, store)
    assert built == done.manifest
    same_tree(tmp_path / "src", store.tree("arena@1"))

    # The registry's garbage collector, run for real on its storage: nothing a version uses may be collected.
    binary = shutil.which("docker-registry")
    assert binary is not None
    gc = subprocess.run(
        [binary, "garbage-collect", "--dry-run", str(registry.root / "writer.yml")],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    out = gc.stdout + gc.stderr
    marked = set(re.findall(r"marking blob (sha256:[0-9a-f]{64})", out))
    assert {f"sha256:{c.blob}" for c in chunks} <= marked
    assert re.search(r"\b0 blobs and 0 manifests eligible for deletion", out), out[-2000:]


def test_a_version_in_the_older_single_manifest_layout_still_installs(
    registry: RegistryProcesses, tmp_path: Path
) -> None:
    writer, reader = _clients(registry)
    _many_chunks(tmp_path / "src")
    done = publish.push(writer, "arena", "1", tmp_path / "src", workers=4)
    body = manifest.to_json(done.manifest)
    repo = "games/arena"
    empty = hashlib.sha256(layout.EMPTY).hexdigest()
    old = {
        "schemaVersion": 2,
        "mediaType": oci.OCI_MANIFEST,
        "artifactType": layout.ARTIFACT_TYPE,
        "config": {"mediaType": layout.EMPTY_TYPE, "digest": f"sha256:{empty}", "size": 2},
        "layers": [
            {"mediaType": layout.INDEX_TYPE, "digest": f"sha256:{hashlib.sha256(body).hexdigest()}",
             "size": len(body)},
            *({"mediaType": layout.CHUNK_TYPE, "digest": f"sha256:{c.blob}", "size": c.stored_size}
              for c in manifest.unique_chunks(done.manifest.chunks)),
        ],
    }  # fmt: skip
    # The same image as it was published before the index: version "0" (an older version of the game).
    moved = manifest.Manifest("arena", "0", done.manifest.chunks, done.manifest.entries)
    body = manifest.to_json(moved)
    old["layers"][0]["digest"] = f"sha256:{writer.put_blob(repo, body)}"  # type: ignore[index]
    old["layers"][0]["size"] = len(body)  # type: ignore[index]
    digest = writer.put_manifest(repo, "0", json.dumps(old).encode())
    store = ImageStore(tmp_path / "store")
    built = _install(reader, f"{repo}@sha256:{digest}", store)
    assert built.image == "arena@0"
    same_tree(tmp_path / "src", store.tree("arena@0"))
    # And the next version's push compares with it like with any earlier version.
    assert [m.version for m in publish.earlier_versions(writer, "arena", "2")] == ["0", "1"]
