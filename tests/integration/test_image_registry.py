"""Game images through the real registry (Distribution processes), the real publisher command, the real broker and
real agent processes: publish, pre-warm, update moving only new chunks, and the faults of issue 16 (a registry that
goes away mid-fetch, an agent killed mid-install, a too-small disk budget, wrong credentials)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import av
import numpy as np
from cloudseat.client import BrokerClient
from cloudseat.images import oci, publish
from cloudseat.images.local_registry import RegistryProcesses
from cloudseat.v1 import common_pb2, fleet_pb2, session_pb2
from grpc import aio

from broker.server import Broker
from tests.integration.conftest import Launch
from thin_client.receiver import Receiver

S = common_pb2.SessionState

AGENT = """
host_id = "{host}"
provider_id = "prov"
site_id = "site-near"
broker = "127.0.0.1:{port}"
slots = 2
gpu_class = "cpu"
price_micros_per_slot_hour = 1000000
games_cached = {games}
media_addresses = ["127.0.0.1"]
codec = "vp8"
drain_grace_s = 1
insecure = true
image_store = "{store}"
image_fetch_workers = 2
image_fetch_retry_s = 60
image_disk_bytes = {budget}
peer_listen = "127.0.0.1:0"

[registry]
url = "{url}"
username = "reader"
password = "{password}"
"""


def make_tree(root: Path, seed: int, size: int = 2_000_000) -> None:
    """A small game: incompressible media, compressible assets, many small files, a palette, a link."""
    rng = np.random.default_rng(seed)
    (root / "media").mkdir(parents=True)
    (root / "assets" / "levels").mkdir(parents=True)
    (root / "media" / "intro.bin").write_bytes(rng.integers(0, 256, size // 2, dtype=np.uint8).tobytes())
    words = rng.integers(0, 16, size // 4, dtype=np.uint8)
    (root / "assets" / "text.dat").write_bytes(bytes(words + 97))
    for i in range(40):
        (root / "assets" / "levels" / f"l{i:02}.lvl").write_bytes(
            rng.integers(0, 4, 4000, dtype=np.uint8).tobytes()
        )
    (root / "assets" / "palette.bin").write_bytes(bytes([30, 120, 200]))
    os.symlink("assets/palette.bin", root / "palette")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)


def published(
    registry: RegistryProcesses, src: Path, *, seed: int, size: int, game: str = "arena", version: str = "1"
) -> publish.Published:
    """make_tree(src) pushed to the embedded registry as GAME@VERSION."""
    reg = registry.registry
    assert reg is not None
    make_tree(src, seed=seed, size=size)
    return publish.push(oci.Registry(reg.writer_url, reg.writer), game, version, src)


def edit(src: Path, dst: Path) -> None:
    """Version 2: a few percent changed — an edit in place, an insertion, a new file, a deleted file."""
    shutil.copytree(src, dst, symlinks=True)
    intro = bytearray((dst / "media" / "intro.bin").read_bytes())
    intro[300_000:320_000] = os.urandom(20_000)
    (dst / "media" / "intro.bin").write_bytes(bytes(intro))
    text = (dst / "assets" / "text.dat").read_bytes()
    (dst / "assets" / "text.dat").write_bytes(text[:200_000] + b"an inserted line\n" * 100 + text[200_000:])
    (dst / "assets" / "levels" / "l40.lvl").write_bytes(os.urandom(5000))
    (dst / "assets" / "levels" / "l03.lvl").unlink()
    (dst / "assets" / "palette.bin").write_bytes(bytes([200, 40, 40]))


def same_tree(a: Path, b: Path) -> None:
    names_a = sorted(str(p.relative_to(a)) for p in a.rglob("*"))
    names_b = sorted(str(p.relative_to(b)) for p in b.rglob("*"))
    assert names_a == names_b
    for rel in names_a:
        pa, pb = a / rel, b / rel
        if pa.is_symlink():
            assert os.readlink(pa) == os.readlink(pb), rel
        elif pa.is_file():
            assert pa.read_bytes() == pb.read_bytes(), rel
            assert pa.stat().st_mode & 0o777 == pb.stat().st_mode & 0o777, rel


async def push(
    registry: RegistryProcesses,
    broker: Broker,
    game: str,
    version: str,
    src: Path,
    *,
    password: str | None = None,
) -> tuple[int, str, str]:
    reg = registry.registry
    assert reg is not None
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cloudseat.images.cli", "push", "--game", game, "--version", version,
        "--registry", reg.writer_url, "--broker", f"127.0.0.1:{broker.port}", str(src),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "CLOUDSEAT_IMAGES_REGISTRY_PASSWORD": password or reg.writer.password},
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def agent_config(
    host: str, broker: Broker, registry: RegistryProcesses, store: Path, *, url: str = "", budget: int = 0,
    password: str | None = None, games: str = '["demo"]',
) -> str:  # fmt: skip
    reg = registry.registry
    assert reg is not None
    return AGENT.format(
        host=host, port=broker.port, store=store, url=url or reg.reader_url,
        password=reg.reader.password if password is None else password, budget=budget, games=games,
    )  # fmt: skip


async def host_where(world: BrokerClient, host_id: str, ok: object, timeout_s: float = 30) -> fleet_pb2.Host:
    """GetHost until ok(host) is true."""
    async with asyncio.timeout(timeout_s):
        while True:
            with contextlib.suppress(aio.AioRpcError):
                host: fleet_pb2.Host = await world.fleet.GetHost(fleet_pb2.GetHostRequest(host_id=host_id))
                if ok(host):  # type: ignore[operator]
                    return host
            await asyncio.sleep(0.1)


def blob_bytes(store: Path) -> int:
    return sum(p.stat().st_size for p in (store / "blobs").iterdir())


async def test_publish_prewarm_and_an_update_that_moves_only_new_chunks(
    world: BrokerClient, broker: Broker, launch: Launch, registry: RegistryProcesses, tmp_path: Path
) -> None:
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    make_tree(v1, seed=1)
    rc, out, err = await push(registry, broker, "arena", "1", v1)
    assert rc == 0, err
    assert "published arena@1" in out
    game = next(g for g in await world.list_games() if g.game_id == "arena")
    assert game.version == "1" and game.image_ref == f"games/arena@sha256:{game.image_digest}"
    # Publishing the same tree again uploads nothing: every blob is there.
    rc, out, err = await push(registry, broker, "arena", "1", v1)
    assert rc == 0 and "uploaded 0 blobs (0 bytes)" in out, out + err

    # Two hosts of one site, their registry traffic counted on its way: the site pulls each chunk once.
    store, other = tmp_path / "store", tmp_path / "store-2"
    async with slow(registry, None) as link:
        url = f"http://127.0.0.1:{link.port}"
        await launch("agent-img", agent_config("agent-img", broker, registry, store, url=url))
        await launch("agent-img2", agent_config("agent-img2", broker, registry, other, url=url))
        for host_id in ("agent-img", "agent-img2"):
            await host_where(world, host_id, lambda h: "demo" in h.games_cached)
        told = await world.prewarm_game("site-near", "arena")
        assert sorted(told.host_ids) == ["agent-img", "agent-img2"]
        for host_id in ("agent-img", "agent-img2"):
            host = await host_where(world, host_id, lambda h: "arena" in h.games_cached)
            assert "arena@1" in host.images_cached
        site_bytes = link.bytes_down
        same_tree(v1, store / "trees" / "arena@1")
        same_tree(v1, other / "trees" / "arena@1")
        fetched_v1 = blob_bytes(store)
        assert (
            fetched_v1 == blob_bytes(other) == game.image_size_bytes
        )  # every stored byte of v1, once per host
        # ...but once for the site (plus two manifests and the HTTP headers).
        assert game.image_size_bytes <= site_bytes < 1.2 * game.image_size_bytes

        edit(v1, v2)
        rc, out, err = await push(registry, broker, "arena", "2", v2)
        assert rc == 0, err
        game2 = next(g for g in await world.list_games() if g.game_id == "arena")
        assert game2.version == "2" and 0 < game2.update_bytes < game2.image_size_bytes / 2
        await world.prewarm_game("site-near", "arena")
        # The fetch is over once the host holds v2 and reports no fetch in progress (the two can arrive in
        # different reports on a busy machine).
        host = await host_where(
            world, "agent-img", lambda h: "arena@2" in h.images_cached and not h.image_fetches
        )
        assert {"arena@1", "arena@2"} <= set(host.images_cached) and "arena" in host.games_cached
        same_tree(v2, store / "trees" / "arena@2")
        same_tree(v1, store / "trees" / "arena@1")  # the old version is untouched for sessions still on it
        # The host fetched only what v2 added, exactly what the publisher said an update moves.
        assert blob_bytes(store) - fetched_v1 == game2.update_bytes


async def test_wrong_credentials_give_one_line_and_the_provider_sees_why(
    world: BrokerClient, broker: Broker, launch: Launch, registry: RegistryProcesses, tmp_path: Path
) -> None:
    make_tree(tmp_path / "v1", seed=2, size=100_000)
    rc, out, err = await push(registry, broker, "arena", "1", tmp_path / "v1", password="wrong")
    assert rc == 1 and out == ""
    assert err.count("\n") == 1 and "refused user 'publisher' (401)" in err, err
    assert not [g for g in await world.list_games() if g.game_id == "arena"]  # nothing registered

    rc, _, err = await push(registry, broker, "arena", "1", tmp_path / "v1")
    assert rc == 0, err
    await launch("agent-bad", agent_config("agent-bad", broker, registry, tmp_path / "s", password="wrong"))
    await host_where(world, "agent-bad", lambda h: "demo" in h.games_cached)
    await world.prewarm_game("site-near", "arena")
    host = await host_where(world, "agent-bad", lambda h: any(f.error for f in h.image_fetches))
    (fetch,) = host.image_fetches
    assert fetch.image == "arena@1" and "refused user 'reader' (401)" in fetch.error
    assert "arena@1" not in host.images_cached


async def test_a_budget_too_small_fails_the_prewarm_with_a_reason_the_provider_sees(
    world: BrokerClient, broker: Broker, launch: Launch, registry: RegistryProcesses, tmp_path: Path
) -> None:
    make_tree(tmp_path / "v1", seed=3, size=400_000)
    rc, _, err = await push(registry, broker, "arena", "1", tmp_path / "v1")
    assert rc == 0, err
    store = tmp_path / "store"
    await launch("agent-full", agent_config("agent-full", broker, registry, store, budget=100_000))
    await host_where(world, "agent-full", lambda h: "demo" in h.games_cached)
    await world.prewarm_game("site-near", "arena")
    host = await host_where(world, "agent-full", lambda h: any(f.error for f in h.image_fetches))
    assert "budget (100000 bytes) is too small" in host.image_fetches[0].error
    assert "arena@1" not in host.images_cached
    assert list((store / "trees").iterdir()) == [] and list((store / "staging").iterdir()) == []


class SlowProxy:
    """A TCP forwarder on 127.0.0.1 that passes the registry's answers at a limited rate: a slow link into a site,
    so a fetch is still under way when the test acts. Real sockets, nothing simulated."""

    def __init__(self, target_port: int, bytes_per_s: int | None) -> None:
        self.target_port = target_port
        self.rate = bytes_per_s
        self.bytes_down = 0  # what the registry sent through here
        self.server: asyncio.Server | None = None
        self.port = 0
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> SlowProxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for w in list(self._writers):
            w.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.add(up_w)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, slow: bool) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(16384):
                    dst.write(data)
                    await dst.drain()
                    if slow:
                        self.bytes_down += len(data)
                        if self.rate:
                            await asyncio.sleep(len(data) / self.rate)
            dst.close()

        await asyncio.gather(pipe(reader, up_w, False), pipe(up_r, writer, True))


@contextlib.asynccontextmanager
async def slow(registry: RegistryProcesses, bytes_per_s: int | None) -> AsyncIterator[SlowProxy]:
    reg = registry.registry
    assert reg is not None
    async with SlowProxy(int(reg.reader_url.rsplit(":", 1)[1]), bytes_per_s) as proxy:
        yield proxy


async def test_registry_away_mid_fetch_and_an_agent_killed_mid_install_resume(
    world: BrokerClient, broker: Broker, launch: Launch, registry: RegistryProcesses, tmp_path: Path
) -> None:
    src = tmp_path / "v1"
    make_tree(src, seed=4, size=3_000_000)
    rc, _, err = await push(registry, broker, "arena", "1", src)
    assert rc == 0, err
    game = next(g for g in await world.list_games() if g.game_id == "arena")
    store = tmp_path / "store"
    async with slow(registry, 600_000) as proxy:
        url = f"http://127.0.0.1:{proxy.port}"
        agent = await launch("agent-k", agent_config("agent-k", broker, registry, store, url=url))
        await host_where(world, "agent-k", lambda h: "demo" in h.games_cached)
        await world.prewarm_game("site-near", "arena")
        # Under way: the provider sees bytes done of the total, and the image is not held.
        host = await host_where(world, "agent-k", lambda h: any(f.bytes_done > 0 for f in h.image_fetches))
        (fetch,) = host.image_fetches
        assert fetch.bytes_total == game.image_size_bytes and fetch.bytes_done < fetch.bytes_total
        assert "arena@1" not in host.images_cached

        # The registry goes away mid-fetch and comes back: the fetch goes on.
        registry.stop_reader()
        await asyncio.sleep(1.0)
        registry.start_reader()
        more = await host_where(
            world, "agent-k", lambda h: any(f.bytes_done > fetch.bytes_done for f in h.image_fetches)
        )
        assert "arena@1" not in more.images_cached

        # Killed mid-install: nothing is held after the restart until the fetch is complete, and it resumes from
        # the chunks already verified.
        agent.send_signal(signal.SIGKILL)
        await agent.wait()
        kept = blob_bytes(store)
        assert 0 < kept < game.image_size_bytes
        assert not (store / "held" / "arena@1.json").exists()
        async with slow(registry, None) as fast:  # a fast link now, counting what crosses it
            url = f"http://127.0.0.1:{fast.port}"
            await launch("agent-k", agent_config("agent-k", broker, registry, store, url=url))
            await host_where(world, "agent-k", lambda h: "arena" in h.games_cached)
    same_tree(src, store / "trees" / "arena@1")
    assert list((store / "staging").iterdir()) == []
    assert blob_bytes(store) == game.image_size_bytes
    # The restarted agent fetched only what the killed one had not (plus the manifests and HTTP headers).
    assert fast.bytes_down < game.image_size_bytes - kept + 64 * 1024


async def _background_blue(world: BrokerClient, seat: str) -> float:
    """Play a demo session on the seat through the real WebRTC path; the median blue of the decoded background."""
    started = await world.start_session("cafe", seat, "demo")
    await world.wait_for(started.session.session_id, S.SESSION_STATE_READY, timeout_s=30)
    blues: list[float] = []

    def on_frame(frame: av.VideoFrame, _stamp: object) -> None:
        if len(blues) < 5:
            rgb = frame.to_ndarray(format="rgb24")
            blues.append(float(np.median(rgb[rgb.shape[0] // 3 :, :, 2])))

    receiver = Receiver(host_addresses=("127.0.0.1",), on_frame=on_frame)
    try:
        await receiver.connect(_negotiator(world, started))
        await receiver.wait_frames(10, timeout_s=30)
    finally:
        await receiver.close()
    await world.end_session(started.session.session_id, started.session_token)
    assert blues
    return float(np.median(blues))


def _negotiator(
    world: BrokerClient, started: session_pb2.StartSessionResponse
) -> Callable[[str], Awaitable[str]]:
    async def negotiate(offer_sdp: str) -> str:
        response = await world.sessions.Negotiate(
            session_pb2.NegotiateRequest(
                session_id=started.session.session_id,
                session_token=started.session_token,
                offer=common_pb2.SessionDescription(type="offer", sdp=offer_sdp),
            )
        )
        return response.answer.sdp

    return negotiate


async def test_publishing_a_demo_update_changes_the_pixels_a_seat_sees(
    world: BrokerClient, broker: Broker, launch: Launch, registry: RegistryProcesses, tmp_path: Path
) -> None:
    """End to end: the demo's palette lives in its image; a seat decodes the stream of a new session after each
    publish (the first fetched by the cold start itself, the second pre-warmed), and the background's colour follows
    the published version."""
    await launch("agent-demo", agent_config("agent-demo", broker, registry, tmp_path / "store", games="[]"))
    await host_where(world, "agent-demo", lambda h: h.status == fleet_pb2.HOST_STATUS_ONLINE)
    # v2 by a cold start (the session waits while the host fetches the image), v3 pre-warmed.
    for version, blue, prewarm in (("2", 40, False), ("3", 210, True)):
        src = tmp_path / f"demo-v{version}"
        (src / "assets").mkdir(parents=True)
        (src / "assets" / "palette.bin").write_bytes(bytes([250, 250, blue]))
        rc, _, err = await push(registry, broker, "demo", version, src)
        assert rc == 0, err
        if prewarm:
            await world.prewarm_game("site-near", "demo")
            await host_where(world, "agent-demo", lambda h, v=version: f"demo@{v}" in h.images_cached)
        seen = await _background_blue(world, f"s{version}")
        assert abs(seen - blue) <= 16, (version, seen)
        host = await host_where(world, "agent-demo", lambda h, v=version: f"demo@{v}" in h.images_cached)
        assert "demo" in host.games_cached  # warm for the current version now


async def test_a_push_records_what_every_earlier_version_lacks(
    world: BrokerClient, broker: Broker, registry: RegistryProcesses, tmp_path: Path
) -> None:
    """Placement prices a cold start by these bytes (broker.placement.coldstart): the push compares the new version
    with each earlier one in the registry, not only the one it replaces."""
    v1, v2, v3 = tmp_path / "v1", tmp_path / "v2", tmp_path / "v3"
    make_tree(v1, seed=3, size=600_000)
    edit(v1, v2)
    shutil.copytree(v2, v3, symlinks=True)
    (v3 / "media" / "outro.bin").write_bytes(os.urandom(60_000))  # v3 adds a file to v2
    for version, tree in (("1", v1), ("2", v2), ("3", v3)):
        rc, _, err = await push(registry, broker, "arena", version, tree)
        assert rc == 0, err
    game = next(g for g in await world.list_games() if g.game_id == "arena")
    assert broker.pool is not None
    rows = await broker.pool.fetch(
        "SELECT version, from_version, bytes FROM game_version_lacking WHERE game_id = 'arena'"
        " ORDER BY version, from_version"
    )
    lacking = {(r["version"], r["from_version"]): r["bytes"] for r in rows}
    assert set(lacking) == {("2", "1"), ("3", "1"), ("3", "2")}
    # A host holding v2 lacks what v3 added; one holding v1 lacks that and what v2 had added, but not everything.
    assert lacking[("3", "2")] == game.update_bytes
    assert 0 < lacking[("3", "2")] < lacking[("3", "1")] < game.image_size_bytes
