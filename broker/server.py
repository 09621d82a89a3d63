"""A broker process: the roles it runs, on one database pool and one notification hub.

A broker's work falls into three roles:

    tenant    the tenant-facing RPCs (seats, venues, providers, operators) and the web consoles
    agents    the agents' links: registrations, reports and stats in, commands out, the negotiation relay
    leader    the placement lease and, while it is held, the scheduler, liveness and the metering duty

`Broker(config, roles=...)` runs any of them in this process; all three in one process is a whole replica, as the
tests and a laptop run it. `cloudseat-broker serve` runs each role in processes of its own (broker.supervisor), and
on Kubernetes each can be a Deployment of its own (deploy/). Whatever the split, the processes share nothing but the
database: any of them serves any seat, changes reach all of them as notifications (broker.hub), the agent link
holding a host is recorded on the host (a call that needs the agent is forwarded there), and one placement lease per
region decides who places.

A process with the agents role but not the tenant role (a gateway) takes forwarded calls for its agents (Negotiate)
on a relay port of its own (`relay_listen`); otherwise they arrive on the tenant port.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import time
from collections.abc import Awaitable
from typing import Any

import asyncpg
import structlog
from cloudseat import errors, tls
from cloudseat.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
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

from broker import auth, intake, placement
from broker.agent_reports import ReportBatcher
from broker.agent_stats import StatsBatcher
from broker.alarms import Alarms
from broker.audit_duty import AuditSealDuty
from broker.backlog import Backlog
from broker.config import BrokerConfig
from broker.console.server import Console
from broker.counters import Counters
from broker.guard import Guard, Limits
from broker.history_duty import HistoryDuty
from broker.hub import SessionHub
from broker.leader import Leadership
from broker.links import LinkRegistry
from broker.liveness import Liveness
from broker.metering_duty import MeteringDuty
from broker.overload import Admission, LoopProbe
from broker.overload import Policy as OverloadPolicy
from broker.replica import Presence
from broker.rpc.agent_service import AgentService
from broker.rpc.audit_service import AuditService
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


class Role(enum.StrEnum):
    TENANT = "tenant"
    AGENTS = "agents"
    LEADER = "leader"


ALL_ROLES = frozenset(Role)

TENANT_SERVICES = (
    session_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name,
    venue_pb2.DESCRIPTOR.services_by_name["VenueService"].full_name,
    fleet_pb2.DESCRIPTOR.services_by_name["FleetService"].full_name,
    billing_pb2.DESCRIPTOR.services_by_name["BillingService"].full_name,
    lease_pb2.DESCRIPTOR.services_by_name["LeaseService"].full_name,
    audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
)
AGENT_SERVICE = agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name
SERVICE_NAMES = (*TENANT_SERVICES, AGENT_SERVICE)

# Generous bounds: the largest legitimate message is an SDP offer (64 KiB) or a registration with many games.
_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
_COMMON_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
    # Clients (agents, seats) may ping an idle connection to notice a dead broker, but no more often than this.
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # Keep pinging a connection that carries no data (a quiet agent link, an idle watch).
    ("grpc.http2.max_pings_without_data", 0),
]


def _pings(every_ms: int, timeout_ms: int) -> list[tuple[str, Any]]:
    """Ping each quiet connection every `every_ms` and drop it when a ping is not answered within `timeout_ms`.
    gRPC's core does it, below Python; the ping timeout must be set for a frozen peer to be dropped at all."""
    return [
        ("grpc.keepalive_time_ms", every_ms),
        ("grpc.keepalive_timeout_ms", timeout_ms),
        ("grpc.http2.ping_timeout_ms", timeout_ms),
        ("grpc.http2.min_time_between_pings_ms", every_ms),
    ]


def tenant_server_options(
    accept_wait_s: int | None = None, max_streams: int = 0
) -> list[tuple[str, Any]]:
    """Seats and tenants: half-open watch streams are noticed within 20 s; with `accept_wait_s`, a call the loop has
    not taken up within that many seconds is refused in gRPC's core (BrokerConfig.accept_wait_s); with
    `max_streams`, a connection carries at most that many calls at once (BrokerConfig.max_streams_per_connection).
    Connections are closed gracefully after about 10 minutes (gRPC adds jitter; calls and watches under way go on,
    the client opens a new connection for new ones), so `serve --workers N`, where the kernel deals connections
    among the workers, deals them again, and a client's connections do not stay piled on one worker."""
    accept = [] if accept_wait_s is None else [("grpc.server_max_unrequested_time_in_server", accept_wait_s)]
    # gRPC's own overload protection counts a stream until the client has seen it close, so a client that opens
    # the next one as soon as an answer arrives is refused the stream (RST_STREAM REFUSED_STREAM, UNAVAILABLE to
    # the caller; measured: thousands a second from a flood at the bound): off, the bound is HTTP/2's own.
    streams = (
        [("grpc.max_concurrent_streams", max_streams), ("grpc.http.overload_protection", 0)] if max_streams > 0 else []
    )
    return [*_COMMON_OPTIONS, *_pings(10_000, 10_000), *accept, *streams, ("grpc.max_connection_age_ms", 600_000)]


def agent_server_options(link_ping_s: float, timeout_s: float) -> list[tuple[str, Any]]:
    """Agents: their link is their liveness, so a dead one must be seen within link_ping_s + timeout_s."""
    return [*_COMMON_OPTIONS, *_pings(max(1, round(link_ping_s * 1000)), max(1, round(timeout_s * 1000)))]


SOLVERS = {"engine": placement.solve, "greedy": placement.greedy.solve}


def _security(
    cfg: BrokerConfig,
) -> tuple[Guard, auth.SessionTokens, tuple[tls.ServerCredentials, tls.ServerCredentials] | None]:
    """The guard at the door, the session token capability, and the server's TLS credentials (None: plaintext):
    one for token holders, one requiring client certificates for agents."""
    sec = cfg.security
    if sec is None:
        log.warning("authentication is OFF: plaintext, every caller trusted (--insecure)")
        guard = Guard(None, max_inflight=cfg.max_inflight, shared_inflight=_shared_inflight(cfg))
        return guard, auth.SessionTokens(None, None), None
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
    guard = Guard(verifier, limits, max_inflight=cfg.max_inflight, shared_inflight=_shared_inflight(cfg))
    return guard, auth.SessionTokens(auth.TokenIssuer(signing), verifier), credentials


def _shared_inflight(cfg: BrokerConfig) -> int:
    """How many of the calls in progress (--max-inflight) a process's active tenants share (broker.overload.Slots):
    --fair-inflight, by default about what it works on at once without queueing, twice its database connections."""
    return cfg.fair_inflight or 2 * cfg.db_pool_max


def _reachable_at(configured: str | None, listen: str, port: int) -> str:
    """Where other broker processes reach a port: the configured address's host, else `listen`'s (this machine's
    host name when `listen` is a wildcard such as 0.0.0.0), with the port bound."""
    host = (configured or listen).rpartition(":")[0]
    if host in ("", "0.0.0.0", "[::]", "::", "*"):
        host = socket.gethostname()
    return f"{host}:{port}"


class Broker:
    """One broker process running `roles`. `await start()`, then `await stop()`; `port` is the tenant port,
    `agent_port` where agents connect, `relay_port` a gateway's relay port (0 where there is none)."""

    def __init__(
        self,
        config: BrokerConfig,
        *,
        roles: frozenset[Role] = ALL_ROLES,
        counters: Counters | None = None,
        migrate: bool = True,
    ) -> None:
        if not roles:
            raise ValueError("a broker process runs at least one role")
        self.config = config
        self.roles = roles
        self.counters = counters or Counters()
        self._migrate = migrate
        self.port = 0
        self.agent_port = 0
        self.relay_port = 0
        self.pool: asyncpg.Pool | None = None
        self.health = health.aio.HealthServicer()
        self._servers: list[aio.Server] = []
        self._hub: SessionHub | None = None
        self._forwarder: Forwarder | None = None
        self.links: LinkRegistry | None = None
        self._reports: ReportBatcher | None = None
        self._stats: StatsBatcher | None = None
        self._presence: Presence | None = None
        self._probe: LoopProbe | None = None
        # Security alerts (broker.alarms): repeated refusals from one peer, counted, logged and audited.
        self.alarms: Alarms | None = None
        self.scheduler: Scheduler | None = None
        # The placement queue's backlog as this process hears it (broker.backlog; None: not a tenant worker, or off).
        self.backlog: Backlog | None = None
        self.leadership: Leadership | None = None
        self.database_url = ""
        self.credentials: tls.ServerCredentials | None = None
        # The web consoles and /metrics (--http-listen, tenant processes); console_url once serving, None when off.
        self.console: Console | None = None
        self.console_url: str | None = None

    async def start(self) -> int:
        cfg = self.config
        if cfg.security is None and not cfg.insecure:
            raise errors.FailedPrecondition(
                "security: the broker needs TLS and token keys (--tls-cert, --tls-key, --tls-ca, --token-key; "
                "`cloudseat-broker certs` makes development ones), or --insecure to run without authentication"
            )
        if cfg.agent_listen is None and Role.AGENTS in self.roles and Role.TENANT not in self.roles:
            raise errors.FailedPrecondition(
                "agent_listen: a process with the agents role alone needs its own port"
            )
        url = cfg.database_url
        if url is None:
            url = await asyncio.to_thread(embedded.start, cfg.data_dir)
        self.database_url = url
        if self._migrate:
            conn = await asyncpg.connect(url)
            try:
                applied = await migrate.apply(conn)
            finally:
                await conn.close()
            log.info("database ready", migrations_applied=applied)
        self.pool = pool = await database.create_pool(
            url, cfg.db_pool_min, cfg.db_pool_max, name="cloudseat-" + "+".join(sorted(self.roles))
        )
        self._hub = hub = SessionHub(url, pool)

        guard, tokens, credentials = _security(cfg)
        self.alarms = Alarms(pool, self.counters)
        guard.on_refusal = self.alarms.note
        if Role.TENANT in self.roles and cfg.shed_lag_ms > 0:
            admission = Admission(OverloadPolicy(target_ms=cfg.shed_lag_ms, busy_target=cfg.shed_busy))
            self._probe = LoopProbe(admission)
            self._probe.start()
        interceptor = Interceptor(guard, self.counters, self._probe.admission if self._probe else None)
        sec = cfg.security
        # Calls needing an agent linked to another process go there; over TLS trusting the region's CA when secure.
        self._forwarder = forwarder = Forwarder(
            None if sec is None else tls.CertFiles(sec.cert, sec.key, sec.client_ca)
        )
        if credentials is not None:
            self.credentials = credentials[0]

        if Role.AGENTS in self.roles:
            self.links = links = LinkRegistry(pool)
            self._reports = ReportBatcher(pool)
            self._stats = StatsBatcher(pool, links)
            hub.add_listener(links.on_change)
            hub.add_host_listener(links.on_host_change, on_resync=links.resync_hosts)
            hub.add_site_listener(links.on_sites_change)
        if Role.LEADER in self.roles:
            self._start_leader(url, pool, hub)
        await hub.start()

        if Role.TENANT in self.roles and cfg.start_backlog_ms > 0:
            self.backlog = heard = Backlog(cfg.start_backlog_ms)
            hub.add_listener(lambda change: heard.on_change(change, time.monotonic()), on_resync=heard.resync)
        session_service = SessionService(
            pool,
            hub,
            self.links,
            cfg.negotiate_timeout_s,
            tokens,
            forwarder,
            cfg.patron_time,
            drain_config=cfg.drain,
            start_db_wait_s=cfg.start_db_wait_ms / 1000 if cfg.start_db_wait_ms > 0 else None,
            backlog=self.backlog,
        )
        tenant: aio.Server | None = None
        if Role.TENANT in self.roles:
            # Agents without a port of their own (no security, one process) share this server and its pings.
            shared = Role.AGENTS in self.roles and cfg.agent_listen is None
            # A server that carries agents' links takes every call it is sent: a refused reconnect costs more.
            options = (
                agent_server_options(cfg.link_ping_s, cfg.link_ping_timeout_s)
                if shared
                else tenant_server_options(cfg.accept_wait_s, cfg.max_streams_per_connection)
            )
            tenant = self._server(interceptor, options, ahead=0 if shared else cfg.accept_ahead)
            session_pb2_grpc.add_SessionServiceServicer_to_server(session_service, tenant)
            venue_pb2_grpc.add_VenueServiceServicer_to_server(VenueService(pool), tenant)
            fleet_pb2_grpc.add_FleetServiceServicer_to_server(FleetService(pool), tenant)
            billing_pb2_grpc.add_BillingServiceServicer_to_server(BillingService(pool), tenant)
            lease_pb2_grpc.add_LeaseServiceServicer_to_server(LeaseService(pool), tenant)
            audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditService(pool), tenant)
            self.port = self._bind(tenant, cfg.listen, credentials[0] if credentials else None)
            forwarder.address = _reachable_at(cfg.advertise, cfg.listen, self.port)
        if Role.AGENTS in self.roles:
            await self._start_agents(tenant, interceptor, session_service, credentials, forwarder)
        elif tenant is None:
            # The leader alone: a port for its health probes and nothing else.
            self.relay_port = self._bind(
                self._server(interceptor, tenant_server_options()), cfg.relay_listen, None
            )

        for server in self._servers:
            await server.start()
        if tenant is not None and cfg.http_listen is not None:
            self.console = Console(
                cfg.http_listen,
                pool,
                hub,
                guard,
                self.counters,
                None if sec is None else tls.CertFiles(sec.cert, sec.key, sec.client_ca),
            )
            self.console_url = await self.console.start()
        if self.leadership is not None:
            self.leadership.start()
        for name in ("", *self._services()):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            # A whole broker in this process, or one of a broker's processes (broker.supervisor says "broker serving").
            "broker serving" if self.roles == ALL_ROLES else "broker process serving",
            roles=sorted(str(r) for r in self.roles),
            listen=cfg.listen,
            port=self.port,
            agent_port=self.agent_port,
            relay_port=self.relay_port,
            advertise=forwarder.address,
        )
        return self.port

    def _start_leader(self, url: str, pool: asyncpg.Pool, hub: SessionHub) -> None:
        cfg = self.config
        self.scheduler = scheduler = Scheduler(
            PostgresSchedulerStore(pool),
            solver=SOLVERS[cfg.solver],
            window_s=cfg.batch_window_s,
            batch_max=cfg.batch_max,
            counters=self.counters,
            shares_loop=bool(self.roles - {Role.LEADER}),
            site_watch_s=cfg.host_lost_after_s,
        )
        hub.add_listener(scheduler.on_change, on_resync=scheduler.resync)
        # Hosts that came online, went away or cache other games are read again before the next round.
        hub.add_host_listener(
            lambda change: scheduler.host_changed(change["host_id"]), on_resync=scheduler.resync
        )
        liveness = Liveness(
            pool,
            link_grace_s=cfg.link_grace_s,
            lost_after_s=cfg.host_lost_after_s,
            timeouts=cfg.timeouts,
            on_lost=scheduler.hosts_lost,
            time_up_grace_s=cfg.patron_time.grace_s,
        )
        meter = MeteringDuty(pool, cfg.metering)
        seal = AuditSealDuty(pool)
        sampler = HistoryDuty(pool)

        def duties() -> list[Awaitable[None]]:
            return [scheduler.run(), liveness.run(), meter.run(), seal.run(), sampler.run()]

        self.leadership = Leadership(url, duties)

    async def _start_agents(
        self,
        tenant: aio.Server | None,
        interceptor: Interceptor,
        session_service: SessionService,
        credentials: tuple[tls.ServerCredentials, tls.ServerCredentials] | None,
        forwarder: Forwarder,
    ) -> None:
        cfg = self.config
        assert self.pool is not None and self.links is not None
        assert self._reports is not None and self._stats is not None
        if cfg.agent_listen is None:
            assert tenant is not None
            agents, self.agent_port = tenant, self.port
        else:
            agents = self._server(interceptor, agent_server_options(cfg.link_ping_s, cfg.link_ping_timeout_s))
            self.agent_port = self._bind(agents, cfg.agent_listen, credentials[1] if credentials else None)
        if tenant is None:
            # A gateway: forwarded Negotiate calls for its agents arrive on a relay port of its own.
            relay = self._server(interceptor, tenant_server_options())
            session_pb2_grpc.add_SessionServiceServicer_to_server(session_service, relay)
            self.relay_port = self._bind(relay, cfg.relay_listen, credentials[0] if credentials else None)
            forwarder.address = _reachable_at(cfg.advertise, cfg.relay_listen, self.relay_port)
        assert forwarder.address is not None
        # Before the first agent can link: the hosts linked here record which process holds them, and where.
        self._presence = presence = Presence(
            self.pool, self.links, address=forwarder.address, refresh_s=cfg.presence_refresh_s
        )
        await presence.start()
        self._reports.start()
        self._stats.start()
        agent_pb2_grpc.add_AgentServiceServicer_to_server(
            AgentService(
                self.pool,
                self.links,
                self._reports,
                self._stats,
                presence,
                heartbeat_interval_s=cfg.heartbeat_interval_s,
                lost_after_s=cfg.host_lost_after_s,
            ),
            agents,
        )

    def _server(self, interceptor: Interceptor, options: list[tuple[str, Any]], ahead: int = 0) -> aio.Server:
        # The tenant port takes new calls with `ahead` requests outstanding (broker.intake); the others as grpc.aio.
        server: aio.Server = (
            intake.Server(interceptors=[interceptor], options=options, ahead=ahead)
            if ahead > 0
            else aio.server(interceptors=[interceptor], options=options)
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (
                *self._services(),
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        self._servers.append(server)
        return server

    def _services(self) -> tuple[str, ...]:
        names: tuple[str, ...] = ()
        if Role.TENANT in self.roles:
            names += TENANT_SERVICES
        if Role.AGENTS in self.roles:
            names += (AGENT_SERVICE,)
        return names

    @staticmethod
    def _bind(server: aio.Server, address: str, credentials: tls.ServerCredentials | None) -> int:
        if credentials is None:
            port: int = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials.credentials())
        if port == 0:
            raise OSError(f"cannot listen on {address}")
        return port

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop taking RPCs, let in-flight unary RPCs finish within the grace period, end streams, release all."""
        grace = self.config.shutdown_grace_s if grace_s is None else grace_s
        for name in ("", *self._services()):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        stopping = [asyncio.ensure_future(s.stop(grace)) for s in self._servers]
        if self.console is not None:
            await self.console.stop()
        # Long-lived streams would otherwise hold the whole grace period: end them now; clients reconnect.
        if self.links is not None:
            await self.links.close()
        if self._hub is not None:
            await self._hub.close()
        for stop in stopping:
            await stop
        for part in (self._stats, self._reports, self._presence, self._probe, self.alarms):
            if part is not None:
                with contextlib.suppress(Exception):
                    await part.close()
        if self._forwarder is not None:
            await self._forwarder.close()
        if self.leadership is not None:
            await self.leadership.close()
        if self.pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pool.close(), timeout=5)
        log.info("broker stopped")
