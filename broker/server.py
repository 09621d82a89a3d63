"""The broker process: database, notification hub, agent registry, placement leadership and the gRPC server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable

import asyncpg
import structlog
from cloudseat import errors, tls
from cloudseat.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    billing_pb2,
    billing_pb2_grpc,
    fleet_pb2,
    fleet_pb2_grpc,
    lease_pb2,
    lease_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
    venue_pb2,
    venue_pb2_grpc,
)
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from broker import auth, placement
from broker.agents import AgentRegistry
from broker.config import BrokerConfig
from broker.console.server import Console
from broker.guard import Guard, Limits
from broker.hub import SessionHub
from broker.leader import Leadership
from broker.liveness import Liveness
from broker.metering_duty import MeteringDuty
from broker.rpc.agent_service import AgentService
from broker.rpc.billing_service import BillingService
from broker.rpc.fleet_service import FleetService
from broker.rpc.forward import Forwarder
from broker.rpc.interceptor import Interceptor
from broker.rpc.lease_service import LeaseService
from broker.rpc.session_service import SessionService
from broker.rpc.venue_service import VenueService
from broker.scheduler import Scheduler
from broker.store import database, embedded, migrate
from broker.store.placement import PostgresSchedulerStore

log = structlog.get_logger(__name__)

SERVICE_NAMES = (
    session_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name,
    venue_pb2.DESCRIPTOR.services_by_name["VenueService"].full_name,
    fleet_pb2.DESCRIPTOR.services_by_name["FleetService"].full_name,
    billing_pb2.DESCRIPTOR.services_by_name["BillingService"].full_name,
    lease_pb2.DESCRIPTOR.services_by_name["LeaseService"].full_name,
    agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name,
)

# Generous bounds: the largest legitimate message is an SDP offer (64 KiB) or a registration with many games.
_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
_SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
    # Probe idle connections so a half-open agent stream is noticed.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
]

SOLVERS = {"engine": placement.solve, "greedy": placement.greedy.solve}


def _security(
    cfg: BrokerConfig,
) -> tuple[Guard, auth.SessionTokens, tuple[tls.ServerCredentials, tls.ServerCredentials] | None]:
    """The guard at the door, the session token capability, and the server's TLS credentials (None: plaintext):
    one for token holders, one requiring client certificates for agents."""
    sec = cfg.security
    if sec is None:
        log.warning("authentication is OFF: plaintext, every caller trusted (--insecure)")
        return Guard(None, max_inflight=cfg.max_inflight), auth.SessionTokens(None, None), None
    try:
        signing = auth.load_signing_key(sec.token_key)
        verify_keys = [signing.public_key(), *(auth.load_public_key(p) for p in sec.extra_verify_keys)]
        files = tls.CertFiles(sec.cert, sec.key, sec.client_ca)
        credentials = (
            tls.ServerCredentials(files, require_client_cert=False),
            tls.ServerCredentials(files, require_client_cert=True),
        )
    except ValueError as exc:
        raise errors.FailedPrecondition(f"security: {exc}") from None
    verifier = auth.TokenVerifier(verify_keys)
    limits = Limits(rate_per_s=sec.rate_per_s, burst=sec.burst, streams=sec.streams)
    guard = Guard(verifier, limits, max_inflight=cfg.max_inflight)
    return guard, auth.SessionTokens(auth.TokenIssuer(signing), verifier), credentials


def _advertised(cfg: BrokerConfig, port: int) -> str:
    """Where the other replicas reach this one: the configured address, else `listen` with the bound port."""
    if cfg.advertise:
        return cfg.advertise
    host = cfg.listen.rpartition(":")[0]
    if host in ("", "0.0.0.0", "[::]", "::", "*"):
        host = socket.gethostname()
    return f"{host}:{port}"


def _both(
    first: Callable[[list[str]], None], second: Callable[[list[str]], None]
) -> Callable[[list[str]], None]:
    def call(host_ids: list[str]) -> None:
        first(host_ids)
        second(host_ids)

    return call


class Broker:
    """One broker replica. `await start()`, then `await stop()`; `port` is the bound port."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.port = 0
        self.pool: asyncpg.Pool | None = None
        self.server: aio.Server | None = None
        self.health = health.aio.HealthServicer()
        self._hub: SessionHub | None = None
        self._forwarder: Forwarder | None = None
        self.agents: AgentRegistry | None = None
        self.scheduler: Scheduler | None = None
        self.leadership: Leadership | None = None
        self.database_url = ""
        self.credentials: tls.ServerCredentials | None = None
        # Where agents connect: the mutual-TLS port with security on, else the same as `port`.
        self.agent_port = 0
        # The web consoles and /metrics (--http-listen); console_url once serving, None when off.
        self.console: Console | None = None
        self.console_url: str | None = None

    async def start(self) -> int:
        cfg = self.config
        if cfg.security is None and not cfg.insecure:
            raise errors.FailedPrecondition(
                "security: the broker needs TLS and token keys (--tls-cert, --tls-key, --tls-ca, --token-key; "
                "`cloudseat-broker certs` makes development ones), or --insecure to run without authentication"
            )
        url = cfg.database_url
        if url is None:
            url = await asyncio.to_thread(embedded.start, cfg.data_dir)
        self.database_url = url
        conn = await asyncpg.connect(url)
        try:
            applied = await migrate.apply(conn)
        finally:
            await conn.close()
        log.info("database ready", migrations_applied=applied)
        self.pool = pool = await database.create_pool(url, cfg.db_pool_min, cfg.db_pool_max)

        self.agents = agents = AgentRegistry(pool)
        agents.start()
        self.scheduler = scheduler = Scheduler(
            PostgresSchedulerStore(pool),
            solver=SOLVERS[cfg.solver],
            window_s=cfg.batch_window_s,
            batch_max=cfg.batch_max,
        )
        self._hub = hub = SessionHub(url, pool)
        hub.add_listener(agents.on_change)
        hub.add_listener(scheduler.on_change, on_resync=scheduler.resync)
        hub.add_host_listener(agents.on_host_change, on_resync=agents.resync_hosts)
        await hub.start()
        liveness = Liveness(
            pool,
            lost_after_s=cfg.host_lost_after_s,
            timeouts=cfg.timeouts,
            on_lost=_both(agents.hosts_lost, scheduler.hosts_lost),
            time_up_grace_s=cfg.patron_time.grace_s,
        )

        meter = MeteringDuty(pool, cfg.metering)

        def duties() -> list[Awaitable[None]]:
            return [scheduler.run(), liveness.run(), meter.run()]

        self.leadership = Leadership(url, duties)
        self.leadership.start()

        guard, tokens, credentials = _security(cfg)
        server = aio.server(interceptors=[Interceptor(guard)], options=_SERVER_OPTIONS)
        # Calls needing an agent linked to another replica go there; over TLS trusting the region's CA when secure.
        sec = cfg.security
        self._forwarder = forwarder = Forwarder(
            None if sec is None else tls.CertFiles(sec.cert, sec.key, sec.client_ca)
        )
        session_pb2_grpc.add_SessionServiceServicer_to_server(
            SessionService(pool, hub, agents, cfg.negotiate_timeout_s, tokens, forwarder, cfg.patron_time),
            server,
        )
        venue_pb2_grpc.add_VenueServiceServicer_to_server(VenueService(pool), server)
        fleet_pb2_grpc.add_FleetServiceServicer_to_server(FleetService(pool), server)
        billing_pb2_grpc.add_BillingServiceServicer_to_server(BillingService(pool), server)
        lease_pb2_grpc.add_LeaseServiceServicer_to_server(LeaseService(pool), server)
        agent_pb2_grpc.add_AgentServiceServicer_to_server(
            AgentService(
                pool,
                agents,
                heartbeat_interval_s=cfg.heartbeat_interval_s,
                lost_after_s=cfg.host_lost_after_s,
                on_host_change=scheduler.host_changed,
            ),
            server,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (
                *SERVICE_NAMES,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        if credentials is None:
            self.port = self.agent_port = server.add_insecure_port(cfg.listen)
        else:
            if not cfg.agent_listen:
                raise errors.FailedPrecondition(
                    "agent_listen: agents need their own port when security is on"
                )
            self.credentials, agent_credentials = credentials
            self.port = server.add_secure_port(cfg.listen, self.credentials.credentials())
            self.agent_port = server.add_secure_port(cfg.agent_listen, agent_credentials.credentials())
            if self.agent_port == 0:
                raise OSError(f"cannot listen on {cfg.agent_listen}")
        if self.port == 0:
            raise OSError(f"cannot listen on {cfg.listen}")
        # Before the first agent can link: the hosts linked here record where this replica is reached.
        agents.address = forwarder.address = _advertised(cfg, self.port)
        await server.start()
        self.server = server
        if cfg.http_listen is not None:
            self.console = Console(cfg.http_listen, pool, hub, guard, agents)
            self.console_url = await self.console.start()
        for name in ("", *SERVICE_NAMES):
            await self._set_health(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "broker serving",
            listen=cfg.listen,
            port=self.port,
            agent_port=self.agent_port,
            advertise=forwarder.address,
        )
        return self.port

    async def _set_health(self, name: str, status: int) -> None:
        await self.health.set(name, status)

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop taking RPCs, let in-flight unary RPCs finish within the grace period, end streams, release all."""
        grace = self.config.shutdown_grace_s if grace_s is None else grace_s
        for name in ("", *SERVICE_NAMES):
            await self._set_health(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        stopping = None
        if self.server is not None:
            stopping = asyncio.ensure_future(self.server.stop(grace))
        if self.console is not None:
            await self.console.stop()
        # Long-lived streams would otherwise hold the whole grace period: end them now; clients reconnect.
        if self.agents is not None:
            await self.agents.close()
        if self._hub is not None:
            await self._hub.close()
        if stopping is not None:
            await stopping
        if self._forwarder is not None:
            await self._forwarder.close()
        if self.leadership is not None:
            await self.leadership.close()
        if self.pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pool.close(), timeout=5)
        log.info("broker stopped")
