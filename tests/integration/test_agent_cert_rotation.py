"""Agent certificate rotation: certificate files replaced on disk are presented from the agent's next reconnect on,
without restarting it.

The agent's real link (gpu_agent.link.BrokerLink) connects to a stand-in AgentService on 127.0.0.1 that serves the
broker's own rotating mutual-TLS credentials (cloudseat.tls.ServerCredentials, client certificates required) and
records the serial of the certificate each connection presents. The stand-in hangs up after each rotation, which
makes the agent reconnect while its old HTTP/2 connection could still be reused: only a link that re-reads its
files and opens a new channel presents the new certificate. Two rotations: a certificate re-issued by the same CA,
then one from a new CA that the broker has been told to trust as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from cloudseat import tls
from cloudseat.v1 import agent_pb2, agent_pb2_grpc
from cryptography import x509
from grpc import aio

from broker import issuing
from gpu_agent.config import AgentConfig, TlsConfig
from gpu_agent.link import BrokerLink, Outbox
from gpu_agent.media import MediaConfig
from gpu_agent.sessions import SessionManager


@dataclasses.dataclass
class Connection:
    serial: int  # of the certificate the agent presented
    hang_up: asyncio.Event


class StandInBroker(agent_pb2_grpc.AgentServiceServicer):
    """Registers every agent that connects, tells the test which certificate it presented, and ends the stream
    when the test says so."""

    def __init__(self) -> None:
        self.connections: asyncio.Queue[Connection] = asyncio.Queue()

    async def Connect(
        self, request_iterator: AsyncIterator[agent_pb2.AgentMessage], context: aio.ServicerContext
    ) -> None:
        messages = request_iterator.__aiter__()
        first = await anext(messages)
        pem = context.auth_context()["x509_pem_cert"][0]
        connection = Connection(x509.load_pem_x509_certificate(pem).serial_number, asyncio.Event())
        await context.write(
            agent_pb2.BrokerMessage(
                registered=agent_pb2.Registered(
                    host_id=first.register.host_id,
                    epoch=first.register.epoch,
                    heartbeat_interval_ms=60_000,
                    lost_after_ms=180_000,
                )
            )
        )
        self.connections.put_nowait(connection)
        await connection.hang_up.wait()
        # As a broker going away does; the agent reconnects after its backoff.
        await context.abort(grpc.StatusCode.UNAVAILABLE, "going away")


def _serial(cert: Path) -> int:
    return x509.load_pem_x509_certificate(cert.read_bytes()).serial_number


def _install(issued: tls.CertFiles, agent: TlsConfig) -> None:
    """Write a certificate and its key over the files the agent's config names, as a renewal job would."""
    shutil.copyfile(issued.key, agent.key)
    shutil.copyfile(issued.cert, agent.cert)


async def test_rotated_agent_certificate_is_presented_on_reconnect(tmp_path: Path) -> None:
    creds = issuing.make(tmp_path / "creds", ["host-1"])
    # The broker trusts agents signed by the CA bundle in clients.pem (to begin with, the one CA).
    clients_ca = tmp_path / "clients.pem"
    shutil.copyfile(creds.ca, clients_ca)
    server_tls = tls.ServerCredentials(
        tls.CertFiles(creds.broker.cert, creds.broker.key, clients_ca), require_client_cert=True
    )
    stand_in = StandInBroker()
    server = aio.server()
    agent_pb2_grpc.add_AgentServiceServicer_to_server(stand_in, server)
    port = server.add_secure_port("127.0.0.1:0", server_tls.credentials())
    await server.start()

    agent_dir = tmp_path / "agent"
    agent_dir.mkdir()
    agent_tls = TlsConfig(cert=agent_dir / "host.pem", key=agent_dir / "host.key", ca=creds.ca)
    _install(creds.agent("host-1"), agent_tls)
    config = AgentConfig(
        host_id="host-1",
        provider_id="prov",
        site_id="site",
        broker=f"127.0.0.1:{port}",
        slots=1,
        gpu_class="rtx",
        price_micros_per_slot_hour=1_000_000,
        tls=agent_tls,
    )
    outbox = Outbox()
    link = BrokerLink(config, SessionManager(config, MediaConfig(("127.0.0.1",)), outbox.put), outbox)
    runner = asyncio.create_task(link.run())
    try:
        async with asyncio.timeout(15):
            first = await stand_in.connections.get()
            assert first.serial == _serial(agent_tls.cert)

            # Renewed by the same CA: new key, new serial, same file names.
            renewed = tls.issue(creds.ca, creds.ca_key, tmp_path / "renewed", role="agent", name="host-1")
            _install(renewed, agent_tls)
            first.hang_up.set()
            second = await stand_in.connections.get()
            assert second.serial == _serial(renewed.cert) != first.serial

            # Moved to a new CA, which the broker trusts alongside the old one.
            new_ca, new_ca_key = tls.make_ca(tmp_path / "new-ca")
            clients_ca.write_bytes(creds.ca.read_bytes() + new_ca.read_bytes())
            moved = tls.issue(new_ca, new_ca_key, tmp_path / "moved", role="agent", name="host-1")
            _install(moved, agent_tls)
            second.hang_up.set()
            third = await stand_in.connections.get()
            assert third.serial == _serial(moved.cert)
            assert not runner.done()
            third.hang_up.set()
    finally:
        try:
            await link.stop(flush_s=1)
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        finally:
            await server.stop(None)
