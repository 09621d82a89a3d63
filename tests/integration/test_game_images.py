"""Game images: pre-warming a site changes placement (real agent processes fetch the image), a game update rolls out
without ending running sessions, bad input is named."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import asyncpg
import grpc
import pytest
from cloudseat.client import BrokerClient
from cloudseat.v1 import common_pb2, fleet_pb2, venue_pb2
from grpc import aio

from broker.server import Broker
from broker.store import database
from broker.store import hosts as host_store
from tests.integration.conftest import Launch
from tests.integration.scripted_agent import ScriptedAgent

S = common_pb2.SessionState
C = grpc.StatusCode

AGENT = """
host_id = "{host}"
provider_id = "prov"
site_id = "{site}"
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
image_fetch_bytes_per_s = 10000000
"""


async def _arena(world: BrokerClient, version: str = "") -> fleet_pb2.Game:
    game: fleet_pb2.Game = await world.fleet.PutGame(
        fleet_pb2.PutGameRequest(game_id="arena", name="Arena", image_size_bytes=3_000_000, version=version)
    )
    # Both sites within the first latency target (15 ms); the near one 1 ms nearer (0.02 units): worth less than
    # the least cold start (a grade, 0.025 units, however small the image: placement knows the bytes).
    await world.venues.ReportLatency(
        venue_pb2.ReportLatencyRequest(
            venue_id="cafe",
            samples=[
                venue_pb2.LatencySample(site_id="site-near", rtt_ms=10),
                venue_pb2.LatencySample(site_id="site-far", rtt_ms=11),
            ],
        )
    )
    return game


async def _host(world: BrokerClient, host_id: str, until: str) -> fleet_pb2.Host:
    """The host once `until` is among its warm games."""
    async with asyncio.timeout(30):
        while True:
            try:
                host: fleet_pb2.Host = await world.fleet.GetHost(fleet_pb2.GetHostRequest(host_id=host_id))
                if until in host.games_cached:
                    return host
            except aio.AioRpcError as exc:
                if exc.code() is not C.NOT_FOUND:
                    raise
            await asyncio.sleep(0.1)


async def _placed_on(world: BrokerClient, seat: str) -> str:
    started = await world.start_session("cafe", seat, "arena")
    placed = await world.wait_for(started.session.session_id, S.SESSION_STATE_PLACED, timeout_s=20)
    await world.end_session(placed.session_id, started.session_token)
    return placed.host_id


async def test_prewarm_changes_placement(
    world: BrokerClient, broker: Broker, launch: Launch, tmp_path: Path
) -> None:
    game = await _arena(world)
    assert game.version == "1"
    store = tmp_path / "near-images"
    await launch(
        "agent-far",
        AGENT.format(
            host="agent-far",
            site="site-far",
            port=broker.port,
            games='["demo", "arena@1"]',
            store=tmp_path / "far-images",
        ),
    )
    await launch(
        "agent-near",
        AGENT.format(host="agent-near", site="site-near", port=broker.port, games='["demo"]', store=store),
    )
    far = await _host(world, "agent-far", "arena")
    assert list(far.images_cached) == ["demo", "arena@1"]
    await _host(world, "agent-near", "demo")

    # Before: the nearer site is cold for the game, the farther one warm.
    assert await _placed_on(world, "s1") == "agent-far"

    told = await world.prewarm_game("site-near", "arena")
    assert (told.version, list(told.host_ids)) == ("1", ["agent-near"])
    near = await _host(world, "agent-near", "arena")
    assert "arena@1" in near.images_cached
    # The agent really wrote the image, at its size.
    assert (store / "arena@1.img").stat().st_size == 3_000_000

    # After: both warm, the nearer wins.
    assert await _placed_on(world, "s2") == "agent-near"
    # Pre-warming again tells nobody: every host of the site holds it.
    assert list((await world.prewarm_game("site-near", "arena")).host_ids) == []


async def test_a_host_away_at_the_prewarm_fetches_the_image_when_it_registers(
    world: BrokerClient, broker: Broker, launch: Launch, tmp_path: Path
) -> None:
    await _arena(world)
    told = await world.prewarm_game("site-near", "arena")
    assert list(told.host_ids) == []  # nobody online at the site yet
    store = tmp_path / "late-images"
    await launch(
        "agent-late",
        AGENT.format(host="agent-late", site="site-near", port=broker.port, games='["demo"]', store=store),
    )
    late = await _host(world, "agent-late", "arena")
    assert "arena@1" in late.images_cached
    assert (store / "arena@1.img").stat().st_size == 3_000_000


async def test_game_update_rolls_out_without_ending_running_sessions(world: BrokerClient) -> None:
    await _arena(world)
    async with (
        ScriptedAgent(world, "host-far", site_id="site-far", games=("demo", "arena@1")) as far,
        ScriptedAgent(world, "host-near", site_id="site-near", games=("demo", "arena@1")) as near,
    ):
        started = await world.start_session("cafe", "s1", "arena")
        running = started.session.session_id
        ready = await world.wait_for(running, S.SESSION_STATE_READY)
        assert ready.host_id == "host-near"
        await (far if ready.host_id == "host-far" else near).link.report(running, S.SESSION_STATE_STREAMING)
        await world.wait_for(running, S.SESSION_STATE_STREAMING)

        # Version 2: every host is cold for it until it holds the new image; nothing running ends.
        update = await world.fleet.PutGame(
            fleet_pb2.PutGameRequest(game_id="arena", name="Arena", image_size_bytes=3_000_000, version="2")
        )
        assert update.version == "2"
        for host_id in ("host-far", "host-near"):
            host = await world.fleet.GetHost(fleet_pb2.GetHostRequest(host_id=host_id))
            assert "arena" not in host.games_cached and "arena@1" in host.images_cached

        # Site by site: the far site first. Its agent is told to fetch version 2 and reports it.
        told = await world.prewarm_game("site-far", "arena")
        assert (told.version, list(told.host_ids)) == ("2", ["host-far"])
        async with asyncio.timeout(10):
            while not any(m.WhichOneof("body") == "prewarm" for m in far.commands):
                await asyncio.sleep(0.05)
        cmd = next(m.prewarm for m in far.commands if m.WhichOneof("body") == "prewarm")
        assert (cmd.game_id, cmd.version, cmd.image_size_bytes) == ("arena", "2", 3_000_000)
        assert not any(m.WhichOneof("body") == "prewarm" for m in near.commands)
        await far.link.heartbeat(games_cached=["demo", "arena@1", "arena@2"])
        await _host(world, "host-far", "arena")

        # New sessions prefer the host with the new version, though the other is nearer.
        assert await _placed_on(world, "s2") == "host-far"
        # Publishing again without a version keeps version 2.
        same = await world.fleet.PutGame(fleet_pb2.PutGameRequest(game_id="arena", name="Arena II"))
        assert same.version == "2"

        still = await world.wait_for(running, S.SESSION_STATE_STREAMING)
        assert still.state == S.SESSION_STATE_STREAMING
        assert not any(
            m.WhichOneof("body") == "stop_session" and m.stop_session.session_id == running
            for m in near.commands
        )


def _image(n: int) -> dict[str, str]:
    """A published image's reference and digest, as cloudseat-images push would send them."""
    digest = f"{n:x}" * 64
    return {"image_ref": f"games/arena@sha256:{digest}", "image_digest": digest}


async def test_a_host_holding_the_previous_version_is_almost_warm_for_the_update(world: BrokerClient) -> None:
    """Placement knows the bytes: a cold start costs what the host still lacks of the current version."""
    gib = 1 << 30
    await _arena(world)
    await world.fleet.PutGame(
        fleet_pb2.PutGameRequest(game_id="arena", name="Arena", image_size_bytes=38 * gib, version="1", **_image(1))
    )
    # Version 2: 40 GiB, of which a host holding version 1 lacks 1 GiB (push's update_bytes counts for version 1).
    update = await world.fleet.PutGame(
        fleet_pb2.PutGameRequest(
            game_id="arena", name="Arena", image_size_bytes=40 * gib, version="2", update_bytes=gib, **_image(2)
        )
    )
    assert (update.version, dict(update.lacking_from)) == ("2", {"1": gib})
    async with (
        ScriptedAgent(world, "host-far", site_id="site-far", games=("demo", "arena@1")),
        ScriptedAgent(world, "host-near", site_id="site-near", games=("demo",)),
    ):
        for host_id in ("host-far", "host-near"):
            host = await world.fleet.GetHost(fleet_pb2.GetHostRequest(host_id=host_id))
            assert "arena" not in host.games_cached  # both are cold for version 2
        # The far host fetches 1 GiB (0.025 units) and is 1 ms farther (0.02); the near one fetches 40 GiB (0.4).
        assert await _placed_on(world, "s1") == "host-far"
        # Version 3 was compared with version 2 only: a host holding version 1 lacks all of it, like a host
        # holding nothing, and the nearer host wins.
        v3 = await world.fleet.PutGame(
            fleet_pb2.PutGameRequest(
                game_id="arena", name="Arena", image_size_bytes=40 * gib, version="3", update_bytes=gib,
                lacking_from={"2": gib}, **_image(3),
            )
        )  # fmt: skip
        assert dict(v3.lacking_from) == {"2": gib}
        assert await _placed_on(world, "s2") == "host-near"


async def test_bad_input(world: BrokerClient) -> None:
    await _arena(world)
    pre, put = fleet_pb2.PrewarmGameRequest, fleet_pb2.PutGameRequest
    cases = [
        (world.fleet.PrewarmGame, pre(site_id="", game_id="arena"), C.INVALID_ARGUMENT, "site_id"),
        (world.fleet.PrewarmGame, pre(site_id="site-near", game_id="a b"), C.INVALID_ARGUMENT, "game_id"),
        (world.fleet.PrewarmGame, pre(site_id="nowhere", game_id="arena"), C.NOT_FOUND, "site_id"),
        (world.fleet.PrewarmGame, pre(site_id="site-near", game_id="nogame"), C.NOT_FOUND, "game_id"),
        (world.fleet.PutGame, put(game_id="arena", name="A", version="v 2"), C.INVALID_ARGUMENT, "version"),
        (
            world.fleet.PutGame,
            put(game_id="arena", name="A", version="2", lacking_from={"v 1": 5}),
            C.INVALID_ARGUMENT,
            "lacking_from['v 1']",
        ),
        (
            world.fleet.PutGame,
            put(game_id="arena", name="A", version="2", lacking_from={f"v{i}": 1 for i in range(65)}),
            C.INVALID_ARGUMENT,
            "lacking_from",
        ),
    ]
    for method, request, code, field in cases:
        with pytest.raises(aio.AioRpcError) as refused:
            await method(request)
        assert refused.value.code() is code, refused.value.details()
        assert (refused.value.details() or "").startswith(field), refused.value.details()
    game = await world.fleet.PutGame(fleet_pb2.PutGameRequest(game_id="arena", name="A"))
    assert game.version == "1"  # the refused update wrote nothing


async def _told(agent: ScriptedAgent, expected: list[tuple[str, str]]) -> bool:
    """Whether the agent's latest site-peers command comes to list `expected` (waiting up to 10 s for it: changes
    that arrive together are answered with one list, so the count of commands is not fixed)."""
    latest: list[tuple[str, str]] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):
            while True:
                got = [m.site_peers for m in agent.commands if m.WhichOneof("body") == "site_peers"]
                latest = [(p.host_id, p.address) for p in got[-1].peers] if got else []
                if latest == expected:
                    return True
                await asyncio.sleep(0.05)
    raise AssertionError(f"{agent.host_id} was last told {latest}, not {expected}")


async def test_each_host_is_told_its_own_sites_serving_hosts_as_they_come_and_go(world: BrokerClient) -> None:
    def told(agent: ScriptedAgent) -> int:
        return sum(m.WhichOneof("body") == "site_peers" for m in agent.commands)

    async with (
        ScriptedAgent(world, "near-1", site_id="site-near", peer_address="127.0.0.1:7001") as near1,
        ScriptedAgent(world, "far-1", site_id="site-far", peer_address="127.0.0.1:7003") as far1,
    ):
        assert await _told(near1, [("near-1", "127.0.0.1:7001")])
        assert await _told(far1, [("far-1", "127.0.0.1:7003")])
        # A host serving nothing (no peer address) is listed without an address: it may ask, no one asks it.
        async with ScriptedAgent(world, "near-quiet", site_id="site-near") as quiet:
            one = [("near-1", "127.0.0.1:7001"), ("near-quiet", "")]
            assert await _told(quiet, one)
            assert await _told(near1, one)
            second = ScriptedAgent(world, "near-2", site_id="site-near", peer_address="127.0.0.1:7002")
            async with second as near2:
                every = [("near-1", "127.0.0.1:7001"), ("near-2", "127.0.0.1:7002"), ("near-quiet", "")]
                assert await _told(near2, every)
                # The site's other hosts hear of it; the other site's do not.
                assert await _told(near1, every)
                assert await _told(quiet, every)
                # A host that leaves (goodbye) is dropped from its site's list.
                await near2.link.finish()
                assert await _told(quiet, one)
        assert told(far1) == 1


async def test_a_site_of_hundreds_of_serving_hosts_is_prewarmed(world: BrokerClient, db_url: str) -> None:
    """Each host's pre-warm goes out as one notification; it once carried the site's whole peer list, which passed
    NOTIFY's 8000 bytes at about 200 serving hosts and failed the call. The agents hold their site's list already."""
    await _arena(world)
    pool = await database.create_pool(db_url, 1, 4)
    heard: list[str] = []
    listener = await asyncpg.connect(db_url)
    await listener.add_listener("cloudseat_hosts", lambda *args: heard.append(args[3]))
    try:
        for i in range(300):
            host = f"big-{i:03d}"
            await host_store.register(
                pool,
                host_store.Registration(
                    host_id=host, provider_id="prov", site_id="site-near", epoch=1, agent_version="test",
                    gpu_class="cpu", slots=1, price_micros=1_000_000, peer_address=f"127.0.0.1:{20000 + i}",
                ),
            )
        heard.clear()
        told = await world.prewarm_game("site-near", "arena")
        assert len(told.host_ids) == 300
        for _ in range(100):  # bounded: the notifications follow the commit within moments
            if sum('"prewarm"' in h for h in heard) >= 300:
                break
            await asyncio.sleep(0.05)
        assert sum('"prewarm"' in h for h in heard) == 300
    finally:
        await listener.close()
        await pool.close()
