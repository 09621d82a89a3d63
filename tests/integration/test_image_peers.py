"""A site fetches each chunk once: hosts get chunks from their owner in the site over mutual TLS with the hosts'
own certificates, the owner fetching from the real registry once, for a pre-warm and for a cold start alike; a peer
that is down is skipped for the registry, and a caller without an agent certificate, or with the certificate of a
host of another site, gets nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from cloudseat import tls
from cloudseat.images import oci, publish
from cloudseat.images.local_registry import RegistryProcesses
from cloudseat.v1 import peer_pb2, peer_pb2_grpc
from grpc import aio

from gpu_agent import peers
from gpu_agent.config import TlsConfig
from gpu_agent.images import ImageCache
from tests.integration.faults import free_port
from tests.integration.test_image_registry import published, same_tree


async def _site(
    registry: RegistryProcesses, tmp_path: Path, hosts: list[str]
) -> tuple[list[ImageCache], list[oci.Registry], list[peers.Peer], list[aio.Server], Path]:
    reg = registry.registry
    assert reg is not None
    ca_pem, ca_key = tls.make_ca(tmp_path / "ca")
    caches, clients, site, servers = [], [], [], []
    for host in hosts:
        files = tls.issue(ca_pem, ca_key, tmp_path / "certs", role="agent", name=host)
        tls_files = TlsConfig(files.cert, files.key, files.ca)
        client = oci.Registry(reg.reader_url, reg.reader)
        cache = ImageCache((), tmp_path / host, 1e9, registry=client, host_id=host, tls_files=tls_files)
        assert cache.flights is not None
        server, port = await peers.serve("127.0.0.1:0", cache.flights, tls_files, cache.site_hosts)
        caches.append(cache)
        clients.append(client)
        servers.append(server)
        site.append(peers.Peer(host, f"127.0.0.1:{port}"))
    for cache in caches:
        cache.set_site_peers(site)  # what the broker's SitePeersCommand says
    return caches, clients, site, servers, ca_pem


def _manifest_bytes(done: publish.Published) -> int:
    return len(publish.manifest.to_json(done.manifest))


def _site_bytes(clients: list[oci.Registry], done: publish.Published) -> int:
    """What crossed the site's link from the registry beyond each host's read of the manifest."""
    return sum(c.bytes_received for c in clients) - len(clients) * _manifest_bytes(done)


async def _held(cache: ImageCache, image: str) -> None:
    async with asyncio.timeout(60):
        while image not in cache.held():
            assert not [f for f in cache.fetches() if f["error"]], cache.fetches()
            await asyncio.sleep(0.05)


async def test_a_site_pulls_each_chunk_from_the_registry_once(
    registry: RegistryProcesses, tmp_path: Path
) -> None:
    done = published(registry, tmp_path / "src", seed=31, size=2_000_000)
    hosts = ["h1", "h2", "h3", "h4"]
    caches, clients, site, servers, _ = await _site(registry, tmp_path, hosts)
    try:
        for cache in caches:
            cache.prewarm("arena", "1", 0, done.image_ref, done.digest, site)
        for cache, host in zip(caches, hosts, strict=True):
            await _held(cache, "arena@1")
            same_tree(tmp_path / "src", tmp_path / host / "trees" / "arena@1")
        assert _site_bytes(clients, done) == done.stored_size  # every chunk crossed the site's link once
        assert sum(c.peer_bytes for c in caches) > 0
    finally:
        for cache, server in zip(caches, servers, strict=True):
            await cache.close()
            await server.stop(0)


async def test_a_peer_that_is_down_is_skipped_for_the_registry(
    registry: RegistryProcesses, tmp_path: Path
) -> None:
    done = published(registry, tmp_path / "src", seed=32, size=1_000_000)
    caches, _, site, servers, _ = await _site(registry, tmp_path, ["h1"])
    gone = peers.Peer("h2", f"127.0.0.1:{free_port()}")  # listed by the broker, but not listening
    try:
        caches[0].prewarm("arena", "1", 0, done.image_ref, done.digest, [*site, gone])
        await _held(caches[0], "arena@1")
        same_tree(tmp_path / "src", tmp_path / "h1" / "trees" / "arena@1")
    finally:
        await caches[0].close()
        await servers[0].stop(0)


async def test_only_an_agent_certificate_gets_chunks(registry: RegistryProcesses, tmp_path: Path) -> None:
    _, _, site, servers, ca_pem = await _site(registry, tmp_path, ["h1"])
    request = peer_pb2.GetChunkRequest(
        repository="games/arena", digest="a" * 64, size=1, blob="b" * 64, stored_size=1
    )
    try:
        # TLS without a client certificate: the handshake is refused.
        async with aio.secure_channel(
            site[0].address,
            grpc.ssl_channel_credentials(root_certificates=ca_pem.read_bytes()),
            options=[("grpc.ssl_target_name_override", "h1")],
        ) as channel:
            with pytest.raises(aio.AioRpcError) as refused:
                await peer_pb2_grpc.PeerServiceStub(channel).GetChunk(request, timeout=5)
            assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        # A broker's certificate from the same CA is not a host's: refused at the handshake too (its purpose is
        # server only; the servicer's OU check stands behind that for a CA that issues otherwise).
        ca_key = ca_pem.with_name("ca.key")
        broker_files = tls.issue(ca_pem, ca_key, tmp_path / "certs", role="broker", name="broker-1")
        async with aio.secure_channel(
            site[0].address,
            tls.channel_credentials(broker_files),
            options=[("grpc.ssl_target_name_override", "h1")],
        ) as channel:
            with pytest.raises(aio.AioRpcError) as refused:
                await peer_pb2_grpc.PeerServiceStub(channel).GetChunk(request, timeout=5)
            assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        await servers[0].stop(0)


async def test_hosts_cold_starting_the_same_version_pull_each_chunk_into_the_site_once(
    registry: RegistryProcesses, tmp_path: Path
) -> None:
    done = published(registry, tmp_path / "src", seed=33, size=2_000_000, version="2")
    hosts = ["h1", "h2", "h3"]
    caches, clients, _, servers, _ = await _site(registry, tmp_path, hosts)
    try:
        # Sessions placed on every host at once, none warm: each start command's fetch (no pre-warm came).
        async with asyncio.timeout(60):
            await asyncio.gather(*(c.ensure("arena", "2", done.image_ref, done.digest) for c in caches))
        for host in hosts:
            same_tree(tmp_path / "src", tmp_path / host / "trees" / "arena@2")
        assert _site_bytes(clients, done) == done.stored_size  # every chunk crossed the site's link once
        assert sum(c.peer_bytes for c in caches) > 0
    finally:
        for cache, server in zip(caches, servers, strict=True):
            await cache.close()
            await server.stop(0)


async def test_a_host_of_another_site_is_refused(registry: RegistryProcesses, tmp_path: Path) -> None:
    done = published(registry, tmp_path / "src", seed=34, size=300_000)
    chunk = done.manifest.chunks[0]
    request = peer_pb2.GetChunkRequest(
        repository="games/arena", digest=chunk.digest, size=chunk.size, blob=chunk.blob,
        stored_size=chunk.stored_size,
    )  # fmt: skip
    _, _, site, servers, ca_pem = await _site(registry, tmp_path, ["h1", "h2"])
    ca_key = ca_pem.with_name("ca.key")

    async def ask(host: str) -> peer_pb2.GetChunkResponse:
        files = tls.issue(ca_pem, ca_key, tmp_path / "certs", role="agent", name=host)
        async with aio.secure_channel(
            site[0].address, tls.channel_credentials(files), options=[("grpc.ssl_target_name_override", "h1")]
        ) as channel:
            reply: peer_pb2.GetChunkResponse = await peer_pb2_grpc.PeerServiceStub(channel).GetChunk(
                request, timeout=30
            )
            return reply

    try:
        # A host of the site gets the chunk.
        assert len((await ask("h2")).blob) == chunk.stored_size
        # A host of another site, with a good agent certificate of the same fleet CA, is refused.
        with pytest.raises(aio.AioRpcError) as refused:
            await ask("far-1")
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "'far-1' is not a host of this site" in (refused.value.details() or "")
    finally:
        for server in servers:
            await server.stop(0)


async def test_a_host_that_serves_no_chunks_asks_the_owners_and_owns_nothing(
    registry: RegistryProcesses, tmp_path: Path
) -> None:
    done = published(registry, tmp_path / "src", seed=35, size=1_000_000)
    caches, clients, site, servers, _ = await _site(registry, tmp_path, ["h1", "h2", "h3"])
    # h3 has no peer port: the broker lists it without an address.
    listed = [*site[:2], peers.Peer("h3", "")]
    for cache in caches:
        cache.set_site_peers(listed)
    await servers[2].stop(0)
    try:
        async with asyncio.timeout(60):
            await asyncio.gather(*(c.ensure("arena", "1", done.image_ref, done.digest) for c in caches))
        assert _site_bytes(clients, done) == done.stored_size
        assert clients[2].bytes_received == _manifest_bytes(done)  # h3 took every chunk from its owner in the site
        same_tree(tmp_path / "src", tmp_path / "h3" / "trees" / "arena@1")
    finally:
        for cache, server in zip(caches, servers, strict=True):
            await cache.close()
            await server.stop(0)
