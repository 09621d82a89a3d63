"""The host's install path against the real registry, in process: corrupt chunks are fetched again and never
installed, a hostile manifest is refused naming the field, and the disk budget evicts the least recently used image
but never one a running session's game uses.

Corruption is injected between the registry and the installer (a source that flips a byte of what the registry
sent): nothing else here can make a real registry serve wrong bytes for a digest."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from cloudseat.images import manifest, oci, publish
from cloudseat.images.errors import ChunkCorrupt
from cloudseat.images.local_registry import RegistryProcesses

from gpu_agent import workloads
from gpu_agent.image_install import Progress, install
from gpu_agent.image_store import ImageStore
from gpu_agent.images import ImageCache
from tests.integration.test_image_registry import make_tree, same_tree


def _clients(registry: RegistryProcesses) -> tuple[oci.Registry, oci.Registry]:
    reg = registry.registry
    assert reg is not None
    return oci.Registry(reg.writer_url, reg.writer), oci.Registry(reg.reader_url, reg.reader)


def _publish(writer: oci.Registry, game: str, version: str, src: Path) -> publish.Published:
    return publish.push(writer, game, version, src)


def test_a_corrupt_chunk_is_fetched_again_and_never_installed(
    registry: RegistryProcesses, tmp_path: Path
) -> None:
    writer, reader = _clients(registry)
    make_tree(tmp_path / "src", seed=11, size=600_000)
    done = _publish(writer, "arena", "1", tmp_path / "src")
    built = publish.read(reader, done.image_ref)
    seen: set[str] = set()
    lock = threading.Lock()

    def flaky(c: manifest.Chunk) -> bytes:
        blob = bytearray(reader.get_blob("games/arena", c.blob))
        with lock:
            first = c.digest not in seen
            seen.add(c.digest)
        if first:  # every chunk's first delivery is damaged
            blob[len(blob) // 2] ^= 0xFF
        return bytes(blob)

    store = ImageStore(tmp_path / "store")
    progress = Progress("arena@1")
    install(store, built, flaky, progress, workers=2)
    assert progress.corrupt == len(manifest.unique_chunks(built.chunks))
    same_tree(tmp_path / "src", store.tree("arena@1"))

    # A source that never gets it right: the install fails and nothing is held or left behind.
    def broken(c: manifest.Chunk) -> bytes:
        return reader.get_blob("games/arena", c.blob)[:-1] + b"\0"

    store2 = ImageStore(tmp_path / "store2")
    with pytest.raises(ChunkCorrupt):
        install(store2, built, broken, Progress("arena@1"), workers=2)
    assert store2.held() == [] and list(store2.trees.iterdir()) == [] and list(store2.staging.iterdir()) == []
    assert list(store2.blobs.iterdir()) == []  # a blob is stored only after it checked out


def test_a_blob_damaged_on_the_hosts_disk_is_fetched_again(
    registry: RegistryProcesses, tmp_path: Path
) -> None:
    writer, reader = _clients(registry)
    make_tree(tmp_path / "src", seed=12, size=300_000)
    built = publish.read(reader, _publish(writer, "arena", "1", tmp_path / "src").image_ref)
    store = ImageStore(tmp_path / "store")
    install(store, built, lambda c: reader.get_blob("games/arena", c.blob), Progress("arena@1"))
    victim = built.chunks[0].digest
    (store.blobs / victim).write_bytes(b"rotten")
    moved = manifest.Manifest("arena", "1b", built.chunks, built.entries)  # the same bytes, another version
    progress = Progress("arena@1b")
    install(store, moved, lambda c: reader.get_blob("games/arena", c.blob), progress)
    assert progress.fetched_bytes == built.chunks[0].stored_size
    same_tree(tmp_path / "src", store.tree("arena@1b"))


def _push_raw_index(writer: oci.Registry, index: dict[str, object]) -> str:
    """Push a hand-made (hostile) image manifest as a version: what a compromised publisher could put there."""
    body = json.dumps(index).encode()
    repo = "games/arena"
    index_digest = writer.put_blob(repo, body)
    empty = writer.put_blob(repo, b"{}")
    doc = {
        "schemaVersion": 2,
        "mediaType": oci.OCI_MANIFEST,
        "artifactType": publish.ARTIFACT_TYPE,
        "config": {"mediaType": publish.EMPTY_TYPE, "digest": f"sha256:{empty}", "size": 2},
        "layers": [{"mediaType": publish.INDEX_TYPE, "digest": f"sha256:{index_digest}", "size": len(body)}],
    }
    digest = writer.put_manifest(repo, "evil", json.dumps(doc).encode())
    return f"{repo}@sha256:{digest}"


async def _until_done(cache: ImageCache, image: str) -> None:
    async with asyncio.timeout(30):
        while not (image in cache.held() or any(f["error"] for f in cache.fetches() if f["image"] == image)):
            await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"path": "../../etc/cron.d/x", "kind": "file", "mode": 0o644, "size": 1}, "entries[0].path"),
        ({"path": "/etc/passwd", "kind": "file", "mode": 0o644, "size": 1}, "entries[0].path"),
        ({"path": "l", "kind": "symlink", "target": "../../../etc"}, "entries[0].target"),
        ({"path": "big", "kind": "file", "mode": 0o644, "size": 1 << 60}, "entries[0].size"),
    ],
)
async def test_a_hostile_manifest_is_refused_naming_the_field(
    registry: RegistryProcesses, tmp_path: Path, entry: dict[str, object], field: str
) -> None:
    writer, reader = _clients(registry)
    blob = b"x"
    chunk = {"digest": hashlib.sha256(blob).hexdigest(), "size": 1, "blob": hashlib.sha256(blob).hexdigest(),
             "stored_size": 1}  # fmt: skip
    ref = _push_raw_index(
        writer,
        {
            "format": manifest.FORMAT,
            "game_id": "arena",
            "version": "evil",
            "chunks": [chunk],
            "entries": [entry],
        },
    )
    cache = ImageCache((), tmp_path / "store", 1e9, registry=reader)
    cache.prewarm("arena", "evil", 1, ref, ref.rsplit(":", 1)[1])
    await _until_done(cache, "arena@evil")
    (fetch,) = cache.fetches()
    assert fetch["error"].startswith(field), fetch
    assert cache.held() == [] and list((tmp_path / "store" / "trees").iterdir()) == []
    await cache.close()


async def test_the_budget_evicts_the_least_recently_used_never_a_running_games(
    registry: RegistryProcesses, tmp_path: Path
) -> None:
    writer, reader = _clients(registry)
    refs = {}
    for seed, game in enumerate(("a", "b", "c")):
        make_tree(tmp_path / game, seed=20 + seed, size=400_000)
        refs[game] = _publish(writer, game, "1", tmp_path / game)
    one = refs["a"].size + refs["a"].stored_size
    running: set[str] = set()
    # Room for two images, not three.
    cache = ImageCache((), tmp_path / "store", 1e9, registry=reader, disk_bytes=int(2.5 * one),
                       games_in_use=lambda: set(running))  # fmt: skip
    for game in ("a", "b"):
        cache.prewarm(game, "1", 0, refs[game].image_ref, refs[game].digest)
        await _until_done(cache, f"{game}@1")
    assert cache.held() == ["a@1", "b@1"]
    running.add("a")  # a session plays a: the least recently used, but not to be touched
    cache.prewarm("c", "1", 0, refs["c"].image_ref, refs["c"].digest)
    await _until_done(cache, "c@1")
    assert cache.held() == ["a@1", "c@1"]
    assert cache.take_changes() == ["a@1", "c@1"]
    assert cache.store is not None and cache.store.usage() <= int(2.5 * one)
    same_tree(tmp_path / "a", tmp_path / "store" / "trees" / "a@1")
    await cache.close()


async def test_the_demo_game_draws_with_the_palette_of_its_installed_image(
    registry: RegistryProcesses, tmp_path: Path
) -> None:
    """Publishing demo v2 with another palette changes the pixels a new session renders on a host that installed
    it (the frames the workload hands the encoder; the seat's decoder is not in this test)."""
    writer, reader = _clients(registry)
    cache = ImageCache((), tmp_path / "store", 1e9, registry=reader)

    def blue_level() -> float:
        source = workloads.make_source("demo", 320, 180, 30, {}, cache.tree("demo"))
        rgb = source.next_frame(1_000_000)
        return float(np.median(rgb[60:, :, 2]))  # the background's blue, below the stamp and the player

    assert abs(blue_level() - 96) <= 4  # no image: the built-in palette
    for version, palette in (("1", (250, 250, 30)), ("2", (250, 250, 220))):
        src = tmp_path / f"demo-v{version}"
        (src / "assets").mkdir(parents=True)
        (src / "assets" / "palette.bin").write_bytes(bytes(palette))
        done = _publish(writer, "demo", version, src)
        cache.prewarm("demo", version, 0, done.image_ref, done.digest)
        await _until_done(cache, f"demo@{version}")
        assert abs(blue_level() - palette[2]) <= 6, version
    await cache.close()
