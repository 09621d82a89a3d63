"""Sharing image chunks within a site, so the link into the site carries each chunk once.

Each chunk has one owner among the site's serving hosts: the one with the highest hash of (host id, chunk digest)
(rendezvous hashing: every host works out the same owner with no coordination, and a host joining or leaving moves
only its own share). A host asks the owner for each chunk it lacks (PeerService.GetChunk); an owner that lacks the
chunk fetches it from the registry once, however many hosts ask at the same time (one flight per chunk), keeps it
verified in its store, and answers everyone. A chunk the host owns itself comes from the registry through the same
flight. A peer that fails or answers wrong bytes is skipped for that chunk: the registry is the fallback.

Authentication: the peers' port speaks mutual TLS with the hosts' own certificates (the fleet CA; OU agent). A
client must present an agent certificate of a host of this site, as the broker last listed the site's online hosts
(SitePeersCommand, at registration and whenever a host of the site registers, leaves it or says goodbye): a host of
another site, or one the broker has not listed yet, is refused. A client checks that the server's
certificate names the host it meant to ask (the host id as the TLS name). An agent running `insecure` (a test, a
laptop) serves plaintext and can check no one.

The asking side is blocking (it runs in the install's threads, gpu_agent.image_install); the serving side is the
agent's asyncio gRPC server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import threading
from collections.abc import Callable, Collection, Sequence

import grpc
import structlog
from cloudseat import tls
from cloudseat.images import manifest, oci, tree
from cloudseat.images.errors import ChunkCorrupt, ImageError
from cloudseat.v1 import peer_pb2, peer_pb2_grpc
from grpc import aio

from gpu_agent.config import TlsConfig
from gpu_agent.image_store import ImageStore

log = structlog.get_logger(__name__)

_PEER_TIMEOUT_S = 30.0
_MAX_MESSAGE = 64 * 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class Peer:
    host_id: str
    address: str


def owner(digest: str, hosts: Sequence[str]) -> str:
    """The host that owns a chunk among `hosts` (rendezvous hashing)."""
    return max(hosts, key=lambda h: hashlib.sha256(f"{h}\0{digest}".encode()).digest())


class Flights:
    """One registry fetch per chunk at a time on this host: the installer and the peers' requests share it. The
    blob is verified and stored before anyone gets it."""

    def __init__(self, store: ImageStore, registry: oci.Registry) -> None:
        self.store = store
        self.registry = registry
        self._lock = threading.Lock()
        self._flights: dict[str, threading.Event] = {}
        self.registry_bytes = 0  # what this host pulled from the registry

    def blob(self, repository: str, chunk: manifest.Chunk) -> bytes:
        while True:
            with self._lock:
                if self.store.has_blob(chunk.digest):
                    break
                flight = self._flights.get(chunk.digest)
                if flight is None:
                    flight = self._flights[chunk.digest] = threading.Event()
                    mine = True
                else:
                    mine = False
            if not mine:
                flight.wait(_PEER_TIMEOUT_S * 2)
                if self.store.has_blob(chunk.digest):
                    break
                continue  # that flight failed: try ours
            try:
                data = self.registry.get_blob(repository, chunk.blob)
                tree.unpack(chunk, data)  # raises ChunkCorrupt: nothing stored
                with self._lock:
                    self.registry_bytes += len(data)
                self.store.put_blob(chunk.digest, data)
                return data
            finally:
                with self._lock:
                    self._flights.pop(chunk.digest, None)
                flight.set()
        return self.store.read_blob(chunk.digest)


class SiteSource:
    """Where the installer gets a chunk's blob: its owner in the site, else the registry."""

    def __init__(
        self,
        host_id: str,
        peers: Sequence[Peer],
        flights: Flights,
        repository: str,
        tls_files: TlsConfig | None,
    ) -> None:
        self.host_id = host_id
        self.flights = flights
        self.repository = repository
        # The owners: the site's hosts that serve chunks (an address), this one if it does.
        self.peers = {p.host_id: p for p in peers if p.host_id != host_id and p.address}
        serves = any(p.host_id == host_id and p.address for p in peers)
        self.hosts = sorted({*self.peers, *((host_id,) if serves else ())})
        self._tls = tls_files
        self._local = threading.local()
        self.peer_bytes = 0
        self._lock = threading.Lock()

    def __call__(self, chunk: manifest.Chunk) -> bytes:
        who = owner(chunk.digest, self.hosts) if self.hosts else self.host_id
        if who != self.host_id:
            try:
                data = self._ask(self.peers[who], chunk)
                tree.unpack(chunk, data)
                with self._lock:
                    self.peer_bytes += len(data)
                return data
            except (grpc.RpcError, ChunkCorrupt) as exc:
                log.warning(
                    "peer could not give the chunk; asking the registry", peer=who, error=str(exc)[:200]
                )
        return self.flights.blob(self.repository, chunk)

    def _ask(self, peer: Peer, chunk: manifest.Chunk) -> bytes:
        stubs: dict[str, peer_pb2_grpc.PeerServiceStub] = self._local.__dict__.setdefault("stubs", {})
        stub = stubs.get(peer.host_id)
        if stub is None:
            options: list[tuple[str, int | str]] = [("grpc.max_receive_message_length", _MAX_MESSAGE)]
            if self._tls is not None:
                # The server must prove it is the host we meant to ask: its certificate names the host id.
                options.append(("grpc.ssl_target_name_override", peer.host_id))
                channel = grpc.secure_channel(
                    peer.address,
                    tls.channel_credentials(tls.CertFiles(self._tls.cert, self._tls.key, self._tls.ca)),
                    options=options,
                )
            else:
                channel = grpc.insecure_channel(peer.address, options=options)
            stub = stubs[peer.host_id] = peer_pb2_grpc.PeerServiceStub(channel)
        reply: peer_pb2.GetChunkResponse = stub.GetChunk(
            peer_pb2.GetChunkRequest(
                repository=self.repository, digest=chunk.digest, size=chunk.size, blob=chunk.blob,
                stored_size=chunk.stored_size,
            ),
            timeout=_PEER_TIMEOUT_S,
        )  # fmt: skip
        return reply.blob


class PeerServicer(peer_pb2_grpc.PeerServiceServicer):  # type: ignore[misc]
    """Serves chunks; with `site_hosts` (mutual TLS) only to the hosts it names (the agent's site, as the broker
    listed it), without (plaintext) to anyone."""

    def __init__(self, flights: Flights, site_hosts: Callable[[], Collection[str]] | None) -> None:
        self.flights = flights
        self.site_hosts = site_hosts

    async def GetChunk(
        self, request: peer_pb2.GetChunkRequest, context: aio.ServicerContext
    ) -> peer_pb2.GetChunkResponse:
        if self.site_hosts is not None:
            certs = (context.auth_context() or {}).get("x509_pem_cert") or [b""]
            role, host = tls.identity(certs[0]) if certs[0] else ("", "")
            if role != "agent":
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED, "only the site's hosts may ask for chunks"
                )
            if host not in self.site_hosts():
                log.warning("refused chunks to a host not of this site", asker=host)
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"host {host!r} is not a host of this site: only the site's hosts may ask for chunks",
                )
        try:
            chunk = manifest.parse_chunk(
                {"digest": request.digest, "size": request.size, "blob": request.blob,
                 "stored_size": request.stored_size},
                "request",
            )  # fmt: skip
            repository = manifest.check_repository(request.repository, "repository")
        except ImageError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.message)
        try:
            data = await asyncio.to_thread(self.flights.blob, repository, chunk)
        except ImageError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, exc.message)
        return peer_pb2.GetChunkResponse(blob=data)


async def serve(
    listen: str,
    flights: Flights,
    tls_files: TlsConfig | None,
    site_hosts: Callable[[], Collection[str]],
) -> tuple[aio.Server, int]:
    """Start the peers' gRPC server on `listen`; returns it and the port it got. With TLS it answers only the hosts
    `site_hosts()` names when asked (the site's serving hosts, as the broker last listed them)."""
    server = aio.server(options=[("grpc.max_send_message_length", _MAX_MESSAGE)])
    servicer = PeerServicer(flights, site_hosts if tls_files is not None else None)
    peer_pb2_grpc.add_PeerServiceServicer_to_server(servicer, server)
    if tls_files is not None:
        files = tls.CertFiles(tls_files.cert, tls_files.key, tls_files.ca)
        creds = tls.ServerCredentials(files, require_client_cert=True).credentials()
        port = server.add_secure_port(listen, creds)
    else:
        port = server.add_insecure_port(listen)
    await server.start()
    return server, port
