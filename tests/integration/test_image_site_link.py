"""The agent's own link keeps its peer server to its site: a real BrokerLink (mutual TLS, a peer port, a store and
the embedded registry) is told its site's hosts by a stand-in AgentService, and from then on its peer port gives
chunks to a listed host of the site (serving chunks itself or not) and refuses a host of another site, both with good
agent certificates of the fleet CA. (The broker's side, which hosts each agent is told, is
tests/integration/test_game_images.py.)"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cloudseat import tls
from cloudseat.images.local_registry import RegistryProcesses
from cloudseat.v1 import agent_pb2, agent_pb2_grpc, peer_pb2, peer_pb2_grpc
from grpc import aio

from broker import issuing
from gpu_agent.config import AgentConfig, RegistryConfig, TlsConfig
from gpu_agent.link import BrokerLink, Outbox
from gpu_agent.media import MediaConfig
from gpu_agent.sessions import SessionManager
from tests.integration.test_image_registry import published


class SiteBroker(agent_pb2_grpc.AgentServiceServicer):  # type: ignore[misc]
    """Registers the agent and tells it its site's serving hosts; holds the stream until the agent leaves."""

    def __init__(self, site: list[tuple[str, str]]) -> None:
        self.site = site

    async def Connect(
        self, request_iterator: AsyncIterator[agent_pb2.AgentMessage], context: aio.ServicerContext
    ) -> None:
        messages = request_iterator.__aiter__()
        first = await anext(messages)
        await context.write(
            agent_pb2.BrokerMessage(
                registered=agent_pb2.Registered(
                    host_id=first.register.host_id, epoch=first.register.epoch,
                    heartbeat_interval_ms=60_000, lost_after_ms=180_000,
                )
            )
        )  # fmt: skip
        await context.write(
            agent_pb2.BrokerMessage(
                site_peers=agent_pb2.SitePeersCommand(
                    peers=[agent_pb2.SitePeer(host_id=h, address=a) for h, a in self.site]
                )
            )
        )
        with contextlib.suppress(StopAsyncIteration):
            async for _ in messages:
                pass


async def test_the_agents_peer_port_answers_its_site_as_the_broker_lists_it(
    registry: RegistryProcesses, tmp_path: Path
) -> None:
    reg = registry.registry
    assert reg is not None
    done = published(registry, tmp_path / "src", seed=41, size=300_000)
    chunk = done.manifest.chunks[0]
    creds = issuing.make(tmp_path / "creds", ["near-1", "near-2", "near-3", "far-1"])

    server = aio.server()
    agent_pb2_grpc.add_AgentServiceServicer_to_server(
        SiteBroker([("near-1", "127.0.0.1:1"), ("near-2", "127.0.0.1:2"), ("near-3", "")]), server
    )
    server_tls = tls.ServerCredentials(creds.broker, require_client_cert=True)
    port = server.add_secure_port("127.0.0.1:0", server_tls.credentials())
    await server.start()
    files = creds.agent("near-1")
    config = AgentConfig(
        host_id="near-1", provider_id="prov", site_id="site-near", broker=f"127.0.0.1:{port}", slots=1,
        gpu_class="rtx", price_micros_per_slot_hour=1_000_000, tls=TlsConfig(files.cert, files.key, files.ca),
        image_store=tmp_path / "store", registry=RegistryConfig(reg.reader_url, reg.reader.username,
                                                                reg.reader.password),
        peer_listen="127.0.0.1:0",
    )  # fmt: skip
    outbox = Outbox()
    link = BrokerLink(config, SessionManager(config, MediaConfig(("127.0.0.1",)), outbox.put), outbox)
    runner = asyncio.create_task(link.run())

    async def ask(host: str) -> peer_pb2.GetChunkResponse:
        async with aio.secure_channel(
            link.peer_address, tls.channel_credentials(creds.agent(host)),
            options=[("grpc.ssl_target_name_override", "near-1")],
        ) as channel:  # fmt: skip
            reply: peer_pb2.GetChunkResponse = await peer_pb2_grpc.PeerServiceStub(channel).GetChunk(
                peer_pb2.GetChunkRequest(
                    repository="games/arena", digest=chunk.digest, size=chunk.size, blob=chunk.blob,
                    stored_size=chunk.stored_size,
                ),
                timeout=30,
            )  # fmt: skip
            return reply

    try:
        async with asyncio.timeout(30):
            while link.images.site_hosts() != {"near-1", "near-2", "near-3"}:
                await asyncio.sleep(0.05)
        assert len((await ask("near-2")).blob) == chunk.stored_size
        assert len((await ask("near-3")).blob) == chunk.stored_size  # of the site, serving nothing itself
        with pytest.raises(aio.AioRpcError) as refused:
            await ask("far-1")
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "'far-1' is not a host of this site" in (refused.value.details() or "")
    finally:
        try:
            await link.stop(flush_s=1)
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        finally:
            await server.stop(None)
