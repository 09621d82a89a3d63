"""The broker process: database, notification hub, agent registry, placement leadership and the gRPC server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable

import asyncpg
import structlog
from cloudseat.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    fleet_pb2,
    fleet_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
    venue_pb2,
    venue_pb2_grpc,
)
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from broker import placement
from broker.agents import AgentRegistry
from broker.config import BrokerConfig
from broker.hub import SessionHub
from broker.leader import Leadership
from broker.liveness import Liveness
from broker.rpc.agent_service import AgentService
from broker.rpc.fleet_service import FleetService
from broker.rpc.interceptor import Interceptor
from broker.rpc.session_service import SessionService
from broker.rpc.venue_service import VenueService
from broker.scheduler import Scheduler
from broker.store import database, embedded, migrate

log = structlog.get_logger(__name__)

SERVICE_NAMES = (
    session_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name,
    venue_pb2.DESCRIPTOR.services_by_name["VenueService"].full_name,
    fleet_pb2.DESCRIPTOR.services_by_name["FleetService"].full_name,
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


class Broker:
    """One broker replica. `await start()`, then `await stop()`; `port` is the bound port."""

    def __init__(self, config: BrokerConfig, *, solver: str = "engine") -> None:
        self.config = config
        self._solver_name = solver
        self.port = 0
        self.pool: asyncpg.Pool | None = None
        self.server: aio.Server | None = None
        self.health = health.aio.HealthServicer()
        self._hub: SessionHub | None = None
        self.agents: AgentRegistry | None = None
        self.scheduler: Scheduler | None = None
        self.leadership: Leadership | None = None
        self.database_url = ""

    async def start(self) -> int:
        cfg = self.config
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
            pool, solver=SOLVERS[self._solver_name], window_s=cfg.batch_window_s, batch_max=cfg.batch_max
        )
        self._hub = hub = SessionHub(url, pool)
        hub.add_listener(agents.on_change)
        hub.add_listener(scheduler.on_change, on_resync=scheduler.wake)
        await hub.start()
        liveness = Liveness(
            pool, lost_after_s=cfg.host_lost_after_s, timeouts=cfg.timeouts, on_lost=agents.hosts_lost
        )

        def duties() -> list[Awaitable[None]]:
            return [scheduler.run(), liveness.run()]

        self.leadership = Leadership(url, duties)
        self.leadership.start()

        server = aio.server(interceptors=[Interceptor()], options=_SERVER_OPTIONS)
        session_pb2_grpc.add_SessionServiceServicer_to_server(
            SessionService(pool, hub, agents, cfg.negotiate_timeout_s), server
        )
        venue_pb2_grpc.add_VenueServiceServicer_to_server(VenueService(pool), server)
        fleet_pb2_grpc.add_FleetServiceServicer_to_server(FleetService(pool, agents), server)
        agent_pb2_grpc.add_AgentServiceServicer_to_server(
            AgentService(
                pool,
                agents,
                heartbeat_interval_s=cfg.heartbeat_interval_s,
                lost_after_s=cfg.host_lost_after_s,
                on_register=scheduler.wake,
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
        self.port = server.add_insecure_port(cfg.listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {cfg.listen}")
        await server.start()
        self.server = server
        for name in ("", *SERVICE_NAMES):
            await self._set_health(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("broker serving", listen=cfg.listen, port=self.port)
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
        # Long-lived streams would otherwise hold the whole grace period: end them now; clients reconnect.
        if self.agents is not None:
            await self.agents.close()
        if self._hub is not None:
            await self._hub.close()
        if stopping is not None:
            await stopping
        if self.leadership is not None:
            await self.leadership.close()
        if self.pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pool.close(), timeout=5)
        log.info("broker stopped")
