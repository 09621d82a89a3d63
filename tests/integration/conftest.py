"""A real broker on 127.0.0.1 port 0 over a fresh database, a client for it, and a seeded fleet and venue."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from cloudseat.client import BrokerClient
from cloudseat.images.local_registry import RegistryProcesses
from cloudseat.v1 import common_pb2, fleet_pb2, venue_pb2

from broker.config import BrokerConfig
from broker.server import Broker

# Short liveness times so host loss is seen within a test's patience; the logic is the same as with 5 s / 15 s.
FAST = BrokerConfig(
    listen="127.0.0.1:0",
    heartbeat_interval_s=0.3,
    link_ping_s=0.25,
    link_ping_timeout_s=0.25,
    host_lost_after_s=1.5,
    shutdown_grace_s=2.0,
    batch_window_s=0.002,
    db_pool_min=1,
    db_pool_max=5,
    insecure=True,
    # Agents share the tenant port (one process, no security), as the tests' agents expect.
    agent_listen=None,
    # No refusals for a busy loop: a shared test machine's loop runs late for reasons of its own, and the tests
    # count the answers they get; nor for a database connection slow to come, nor for a placement queue behind.
    # Admission past capacity has its own tests (test_overload.py).
    shed_lag_ms=0,
    start_db_wait_ms=0,
    start_backlog_ms=0,
)


@pytest.fixture
def broker_config(db_url: str) -> BrokerConfig:
    return dataclasses.replace(FAST, database_url=db_url)


@pytest.fixture
async def broker(broker_config: BrokerConfig) -> AsyncIterator[Broker]:
    b = Broker(broker_config)
    await b.start()
    try:
        yield b
    finally:
        await b.stop(grace_s=1.0)


@pytest.fixture
async def client(broker: Broker) -> AsyncIterator[BrokerClient]:
    async with BrokerClient(f"127.0.0.1:{broker.port}") as c:
        yield c


@pytest.fixture
async def world(client: BrokerClient) -> BrokerClient:
    """A provider with two sites, a game, and a venue with a standard zone (30 ms) and seats s1..s4 measured at
    5 ms to site-near and 25 ms to site-far."""
    await client.fleet.CreateProvider(fleet_pb2.CreateProviderRequest(provider_id="prov", name="Provider"))
    for site in ("site-near", "site-far"):
        await client.fleet.CreateSite(
            fleet_pb2.CreateSiteRequest(site_id=site, provider_id="prov", name=site)
        )
    await client.fleet.PutGame(fleet_pb2.PutGameRequest(game_id="demo", name="Demo"))
    await client.venues.CreateVenue(venue_pb2.CreateVenueRequest(venue_id="cafe", name="Cafe"))
    await client.venues.PutZone(
        venue_pb2.PutZoneRequest(
            venue_id="cafe", zone_id="std", tier=common_pb2.TIER_720P60, latency_cap_ms=30
        )
    )
    for i in range(1, 5):
        await client.venues.PutSeat(venue_pb2.PutSeatRequest(venue_id="cafe", seat_id=f"s{i}", zone_id="std"))
    await client.venues.ReportLatency(
        venue_pb2.ReportLatencyRequest(
            venue_id="cafe",
            samples=[
                venue_pb2.LatencySample(site_id="site-near", rtt_ms=5),
                venue_pb2.LatencySample(site_id="site-far", rtt_ms=25),
            ],
        )
    )
    return client


# A real agent (python -m gpu_agent) on the demo game, VP8, ICE on 127.0.0.1 only; {host}, {port} filled in.
CONFIG = """
host_id = "{host}"
provider_id = "prov"
site_id = "site-near"
broker = "127.0.0.1:{port}"
slots = 2
gpu_class = "cpu"
price_micros_per_slot_hour = 1000000
games_cached = ["demo"]
media_addresses = ["127.0.0.1"]
codec = "vp8"
drain_grace_s = 1
insecure = true
"""

Launch = Callable[..., Awaitable[asyncio.subprocess.Process]]


@pytest.fixture
async def launch(tmp_path: Path, broker: Broker) -> AsyncIterator[Launch]:
    """Start real agent processes (config text: CONFIG by default); killed at the end of the test."""
    procs: list[asyncio.subprocess.Process] = []

    async def start(host: str = "agent-1", text: str | None = None) -> asyncio.subprocess.Process:
        path = tmp_path / f"{host}.toml"
        path.write_text(text if text is not None else CONFIG.format(host=host, port=broker.port))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gpu_agent",
            "run",
            "--config",
            str(path),
            "--log-format",
            "json",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        if p.returncode is None:
            p.kill()
            await p.wait()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryProcesses]:
    """The embedded image registry (Distribution): a writer and a read-only reader over one storage directory, on
    free ports of 127.0.0.1; stopped at the end of the test."""
    processes = RegistryProcesses(tmp_path / "registry")
    processes.start()
    try:
        yield processes
    finally:
        processes.stop()
