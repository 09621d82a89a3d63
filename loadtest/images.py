"""`cloudseat-loadtest images`: publish, fetch, update and share a synthetic game through the real registry.

A synthetic game tree (--size bytes: incompressible media in a few large files, compressible assets, many small
files) and a version 2 with about 5% of its bytes changed (edits in place, insertions, new and deleted files) go
through the embedded Distribution registry and the agent's own fetch path (gpu_agent.images, gpu_agent.peers):

    publish_mb_per_s          v1's tree bytes / the time `cloudseat.images.publish.push` took
    fetch_mb_per_s            v1's tree bytes / the time one host took to fetch, verify and install it
    baseline_mb_per_s         v1's tree bytes / the time plain GETs of the same blobs from the same registry took
                              (the same concurrency, bodies dropped): what the network path alone allows
    update_bytes_moved_pct    stored bytes a host holding v1 fetched to install v2, / v2's stored size, × 100
    site_registry_bytes_ratio stored bytes the registry served to --hosts hosts of one site installing v1 at once
                              (sharing chunks with each other), / v1's stored size
    site_warm_s               the time until all of them held it
    corrupt_installs          installs whose tree differs from the published one, after a fetch where a tenth of
                              the chunks arrive damaged the first time (must be 0)

Sizes are MB of 10^6 bytes. The hosts run in this process (the agent's code, not its process); peers speak mutual
TLS with certificates from a development CA made for the run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from cloudseat import tls
from cloudseat.images import manifest, oci, publish
from cloudseat.images.local_registry import RegistryProcesses
from cloudseat.settings import at_least, setting

from gpu_agent import peers
from gpu_agent.config import TlsConfig
from gpu_agent.image_install import Progress, install
from gpu_agent.image_store import ImageStore
from gpu_agent.images import ImageCache


@dataclasses.dataclass(frozen=True, slots=True)
class ImagesConfig:
    size: int = setting(512 * 1024 * 1024, "bytes of the synthetic game tree", check=at_least(1_000_000))
    hosts: int = setting(4, "hosts in the site that install the image at once", check=at_least(1))
    workers: int = setting(8, "chunks a host fetches at once (and the baseline's concurrent GETs)",
                           check=at_least(1))  # fmt: skip
    seed: int = setting(1, "seed of the synthetic tree")
    work_dir: Path | None = setting(
        None, "where the registry, trees and stores go (default: a temporary directory)"
    )
    json: Path | None = setting(None, "write the results as one JSON object to this file")


# -- the synthetic game -------------------------------------------------------------------------------------


def make_game(root: Path, size: int, seed: int) -> None:
    """40% incompressible media in 4 files, 40% compressible assets in 48 files, 20% small files (2-32 KiB)."""
    rng = np.random.default_rng(seed)
    for d in ("media", "assets", "small"):
        (root / d).mkdir(parents=True)
    for i in range(4):
        (root / "media" / f"movie{i}.bin").write_bytes(_noise(rng, int(size * 0.1)))
    for i in range(48):
        (root / "assets" / f"pack{i:02}.dat").write_bytes(_text(rng, int(size * 0.4 / 48)))
    left, i = int(size * 0.2), 0
    while left > 0:
        n = min(left, int(rng.integers(2048, 32768)))
        (root / "small" / f"f{i:05}.cfg").write_bytes(_text(rng, n) if i % 2 else _noise(rng, n))
        left -= n
        i += 1
    (root / "assets" / "palette.bin").write_bytes(bytes([30, 120, 200]))


def _noise(rng: np.random.Generator, n: int) -> bytes:
    return rng.integers(0, 256, n, dtype=np.uint8).tobytes()


def _text(rng: np.random.Generator, n: int) -> bytes:
    # A small alphabet with runs: compresses about 3:1, like level data and scripts.
    return bytes(np.repeat(rng.integers(97, 113, n // 4 + 1, dtype=np.uint8), 4)[:n])


def make_update(src: Path, dst: Path, seed: int) -> int:
    """Version 2: ~5% of the bytes changed; returns how many bytes were written anew."""
    rng = np.random.default_rng(seed + 1000)
    shutil.copytree(src, dst)
    size = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    changed = 0
    # Edits in place: 2% in 8 spans of the media.
    for i in range(8):
        path = dst / "media" / f"movie{i % 4}.bin"
        data = bytearray(path.read_bytes())
        n = int(size * 0.02 / 8)
        at = int(rng.integers(0, len(data) - n))
        data[at : at + n] = _noise(rng, n)
        path.write_bytes(bytes(data))
        changed += n
    # Insertions: 1% in 6 asset packs.
    for i in range(6):
        path = dst / "assets" / f"pack{i * 7:02}.dat"
        text = path.read_bytes()
        n = int(size * 0.01 / 6)
        at = int(rng.integers(0, len(text)))
        path.write_bytes(text[:at] + _text(rng, n) + text[at:])
        changed += n
    # New files: 1%.
    (dst / "media" / "trailer-v2.bin").write_bytes(_noise(rng, int(size * 0.01)))
    changed += int(size * 0.01)
    # Deleted files: about 1% of the bytes, from the small files.
    gone = 0
    for path in sorted((dst / "small").iterdir()):
        if gone >= size * 0.01:
            break
        gone += path.stat().st_size
        path.unlink()
    (dst / "assets" / "palette.bin").write_bytes(bytes([200, 40, 40]))
    return changed


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        if path.is_symlink():
            h.update(str(path.readlink()).encode())
        elif path.is_file():
            with open(path, "rb") as f:
                while block := f.read(1 << 22):
                    h.update(block)
    return h.hexdigest()


# -- the measurements ---------------------------------------------------------------------------------------


def _baseline(reader: oci.Registry, built: manifest.Manifest, workers: int) -> float:
    repo = publish.repository(built.game_id)
    chunks = manifest.unique_chunks(built.chunks)
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda c: reader.get_blob(repo, c.blob), chunks))
    return time.perf_counter() - started


def _fetch(
    reader: oci.Registry, built: manifest.Manifest, store: ImageStore, workers: int
) -> tuple[float, Progress]:
    repo = publish.repository(built.game_id)
    progress = Progress(built.image)
    started = time.perf_counter()
    install(store, built, lambda c: reader.get_blob(repo, c.blob), progress, workers=workers)
    return time.perf_counter() - started, progress


def _corrupting(reader: oci.Registry, repo: str) -> tuple[Any, list[int]]:
    """A source that damages every tenth chunk's first delivery (the count of damaged deliveries in the list)."""
    damaged: set[str] = set()
    count = [0]
    lock = threading.Lock()

    def source(c: manifest.Chunk) -> bytes:
        blob = bytearray(reader.get_blob(repo, c.blob))
        with lock:
            first = c.digest not in damaged and int(c.digest[:2], 16) % 10 == 0
            if first:
                damaged.add(c.digest)
                count[0] += 1
        if first:
            blob[len(blob) // 3] ^= 0x5A
        return bytes(blob)

    return source, count


async def _site(
    work: Path,
    registry_url: str,
    creds: oci.Credentials,
    published: publish.Published,
    hosts: int,
    workers: int,
) -> tuple[float, int, bool]:
    """--hosts hosts of one site install the image at once; (seconds, registry bytes, all trees right)."""
    ca_pem, ca_key = tls.make_ca(work / "ca")
    caches: list[ImageCache] = []
    servers = []
    site = []
    try:
        for i in range(hosts):
            name = f"host-{i + 1}"
            files = tls.issue(ca_pem, ca_key, work / "certs", role="agent", name=name)
            tls_files = TlsConfig(files.cert, files.key, files.ca)
            cache = ImageCache((), work / "site" / name, 1e9, registry=oci.Registry(registry_url, creds),
                               workers=workers, host_id=name, tls_files=tls_files)  # fmt: skip
            assert cache.flights is not None
            server, port = await peers.serve("127.0.0.1:0", cache.flights, tls_files, cache.site_hosts)
            caches.append(cache)
            servers.append(server)
            site.append(peers.Peer(name, f"127.0.0.1:{port}"))
        started = time.perf_counter()
        for cache in caches:
            cache.set_site_peers(site)  # what the broker's SitePeersCommand tells each host
            cache.prewarm(published.manifest.game_id, published.manifest.version, 0, published.image_ref,
                          published.digest, site)  # fmt: skip
        image = published.manifest.image
        async with asyncio.timeout(3600):
            while not all(image in c.held() for c in caches):
                failed = [f for c in caches for f in c.fetches() if f["error"]]
                if failed:
                    raise RuntimeError(f"a site host failed: {failed[0]}")
                await asyncio.sleep(0.05)
        took = time.perf_counter() - started
        registry_bytes = sum(c.flights.registry_bytes for c in caches if c.flights is not None)
        return took, registry_bytes, True
    finally:
        for cache in caches:
            await cache.close()
        for server in servers:
            await server.stop(0)


def run(cfg: ImagesConfig) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        work = cfg.work_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="cloudseat-images-"))
        )
        work.mkdir(parents=True, exist_ok=True)
        processes = RegistryProcesses(work / "registry")
        reg = processes.start()
        stack.callback(processes.stop)
        writer = oci.Registry(reg.writer_url, reg.writer)
        reader = oci.Registry(reg.reader_url, reg.reader)
        v1, v2 = work / "game-v1", work / "game-v2"
        _say(f"making a {cfg.size / 1e6:.0f} MB game and its update in {work}")
        make_game(v1, cfg.size, cfg.seed)
        make_update(v1, v2, cfg.seed)

        _say("publishing v1")
        started = time.perf_counter()
        one = publish.push(writer, "bench", "1", v1, workers=cfg.workers)
        publish_s = time.perf_counter() - started
        built = one.manifest

        _say("baseline: plain GETs of v1's blobs; then one host fetches v1; then the baseline again")
        base_s = [_baseline(reader, built, cfg.workers)]
        host = ImageStore(work / "host")
        fetch_s, _ = _fetch(reader, built, host, cfg.workers)
        base_s.append(_baseline(reader, built, cfg.workers))
        right_v1 = tree_digest(host.tree(built.image)) == tree_digest(v1)

        _say("publishing v2; the host holding v1 fetches v2")
        two = publish.push(writer, "bench", "2", v2, previous=built, workers=cfg.workers)
        _, update = _fetch(reader, two.manifest, host, cfg.workers)
        right_v2 = tree_digest(host.tree(two.manifest.image)) == tree_digest(v2)

        _say("a fresh host fetches v2 with every tenth chunk damaged on its first delivery")
        source, damaged = _corrupting(reader, publish.repository("bench"))
        fresh = ImageStore(work / "fresh")
        corrupt_progress = Progress(two.manifest.image)
        install(fresh, two.manifest, source, corrupt_progress, workers=cfg.workers)
        right_corrupt = tree_digest(fresh.tree(two.manifest.image)) == tree_digest(v2)

        _say(f"{cfg.hosts} hosts of one site install v1 at once, sharing chunks")
        site_s, site_bytes, _ = asyncio.run(
            _site(work, reg.reader_url, reg.reader, one, cfg.hosts, cfg.workers)
        )
        right_site = all(
            tree_digest(work / "site" / f"host-{i + 1}" / "trees" / built.image) == tree_digest(v1)
            for i in range(cfg.hosts)
        )

        mb = built.size / 1e6
        baseline_s = sum(base_s) / len(base_s)
        return {
            "size_bytes": built.size,
            "stored_bytes": built.stored_size,
            "chunks": len(manifest.unique_chunks(built.chunks)),
            "hosts": cfg.hosts,
            "publish_mb_per_s": round(mb / publish_s, 1),
            "fetch_mb_per_s": round(mb / fetch_s, 1),
            "baseline_mb_per_s": round(mb / baseline_s, 1),
            "fetch_vs_baseline": round(baseline_s / fetch_s, 3),
            "baseline_runs_s": [round(s, 3) for s in base_s],
            "update_bytes_moved_pct": round(100 * update.fetched_bytes / two.manifest.stored_size, 2),
            "update_tree_bytes_changed_pct": round(
                100 * (two.update_bytes / max(two.manifest.stored_size, 1)), 2
            ),
            "site_registry_bytes_ratio": round(site_bytes / built.stored_size, 3),
            "site_warm_s": round(site_s, 2),
            "corrupt_deliveries": damaged[0],
            "corrupt_refetched": corrupt_progress.corrupt,
            "corrupt_installs": sum(not ok for ok in (right_v1, right_v2, right_corrupt, right_site)),
        }


def _say(text: str) -> None:
    print(f"  {text}...", file=sys.stderr, flush=True)


def main(cfg: ImagesConfig) -> int:
    result = run(cfg)
    targets = [
        ("update_bytes_moved_pct", result["update_bytes_moved_pct"], "<= 8", result["update_bytes_moved_pct"] <= 8),
        ("fetch / baseline", result["fetch_vs_baseline"], ">= 0.8", result["fetch_vs_baseline"] >= 0.8),
        ("site_registry_bytes_ratio", result["site_registry_bytes_ratio"], "<= 1.2",
         result["site_registry_bytes_ratio"] <= 1.2),
        ("corrupt_installs", result["corrupt_installs"], "== 0", result["corrupt_installs"] == 0),
    ]  # fmt: skip
    print(
        f"game {result['size_bytes'] / 1e6:.0f} MB ({result['stored_bytes'] / 1e6:.0f} MB stored, "
        f"{result['chunks']} chunks); publish {result['publish_mb_per_s']} MB/s; fetch {result['fetch_mb_per_s']} "
        f"MB/s vs plain GETs {result['baseline_mb_per_s']} MB/s; {result['hosts']} hosts warm in "
        f"{result['site_warm_s']} s"
    )
    for name, value, target, ok in targets:
        print(f"  {name:28} {value:>10}  target {target:6} {'ok' if ok else 'MISSED'}")
    if cfg.json is not None:
        cfg.json.write_text(json.dumps(result, indent=2))
    return 0
