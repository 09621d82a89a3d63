"""The broker as a program, secure by default: credentials from `cloudseat-broker certs` and `token`, TLS and tenant
tokens on every call, embedded PostgreSQL, health, reflection, SIGTERM, and a restart on the same data."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cloudseat.client import BrokerClient
from cloudseat.tls import client_credentials
from cloudseat.v1 import common_pb2, fleet_pb2, session_pb2, venue_pb2
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

pytestmark = pytest.mark.slow


class BrokerProcess:
    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        port: int,
        log: list[dict[str, object]],
        reader: asyncio.Task[None],
    ) -> None:
        self.proc, self.port, self.log, self.reader = proc, port, log, reader

    async def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), 30)


async def _drain(
    stream: asyncio.StreamReader, log: list[dict[str, object]], ready: asyncio.Future[int]
) -> None:
    while line := await stream.readline():
        try:
            entry = json.loads(line)
        except ValueError:  # kept for a failure's message (a traceback, a child's plain output)
            log.append({"raw": line.decode(errors="replace").rstrip()})
            continue
        if not isinstance(entry, dict):
            continue
        log.append(entry)
        if entry.get("event") == "broker serving" and not ready.done():
            ready.set_result(int(entry["port"]))  # type: ignore[call-overload]
    if not ready.done():
        ready.set_exception(RuntimeError(f"broker exited before serving: {log[-5:]}"))


def _cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "broker", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def creds(tmp_path: Path) -> Path:
    folder = tmp_path / "creds"
    _cli("certs", "--out", str(folder), "--host", "host-1")
    return folder


def _token(creds: Path, *args: str) -> str:
    return _cli("token", "--key", str(creds / "token-key.pem"), *args)


@pytest.fixture
async def launch(tmp_path: Path, creds: Path) -> AsyncIterator[object]:
    procs: list[asyncio.subprocess.Process] = []
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CLOUDSEAT_DATABASE_URL")}

    async def start() -> BrokerProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "broker",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(tmp_path / "data"),
            "--agent-listen",
            "127.0.0.1:0",
            "--tls-cert",
            str(creds / "broker.pem"),
            "--tls-key",
            str(creds / "broker.key"),
            "--tls-ca",
            str(creds / "ca.pem"),
            "--token-key",
            str(creds / "token-key.pem"),
            "--log-format",
            "json",
            stderr=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            env=env,
        )
        procs.append(proc)
        log: list[dict[str, object]] = []
        ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        assert proc.stderr is not None
        reader = asyncio.create_task(_drain(proc.stderr, log, ready))
        try:
            port = await asyncio.wait_for(ready, 60)
        except TimeoutError:
            raise AssertionError(f"the broker was not serving within 60 s; its last lines: {log[-12:]}") from None
        return BrokerProcess(proc, port, log, reader)

    yield start
    for p in procs:
        if p.returncode is None:
            p.kill()
            await p.wait()


def _health_and_services(port: int, ca: Path) -> tuple[int, list[str]]:
    # Health and reflection need TLS but no token: probes and tools use them before anyone has a token.
    credentials = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="")).status
        services = sorted(ProtoReflectionDescriptorDatabase(channel).get_services())
    return status, services


async def test_serve_health_reflection_sigterm_and_restart(launch, creds: Path) -> None:  # type: ignore[no-untyped-def]
    first = await launch()
    status, services = await asyncio.to_thread(_health_and_services, first.port, creds / "ca.pem")
    assert status == health_pb2.HealthCheckResponse.SERVING
    for name in ("SessionService", "VenueService", "FleetService"):
        assert f"cloudseat.v1.{name}" in services
    assert "grpc.health.v1.Health" in services
    # The agents' links are served by a process of their own, on their own port (broker.supervisor).
    assert "cloudseat.v1.AgentService" not in services

    tls = client_credentials(creds / "ca.pem")
    operator = _token(creds, "--role", "operator", "--ttl", "10m")
    # No token, or plaintext: refused.
    async with BrokerClient(f"127.0.0.1:{first.port}", credentials=tls) as anonymous:
        with pytest.raises(aio.AioRpcError) as refused:
            await anonymous.fleet.PutGame(fleet_pb2.PutGameRequest(game_id="demo", name="Demo"))
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    async with BrokerClient(f"127.0.0.1:{first.port}", token=operator) as plain:
        with pytest.raises(aio.AioRpcError) as plaintext:
            await plain.fleet.PutGame(fleet_pb2.PutGameRequest(game_id="demo", name="Demo"), timeout=5)
        assert plaintext.value.code() is grpc.StatusCode.UNAVAILABLE

    async with BrokerClient(f"127.0.0.1:{first.port}", token=operator, credentials=tls) as c:
        await c.fleet.PutGame(fleet_pb2.PutGameRequest(game_id="demo", name="Demo"))
        await c.venues.CreateVenue(venue_pb2.CreateVenueRequest(venue_id="cafe", name="Cafe"))
        await c.venues.PutZone(
            venue_pb2.PutZoneRequest(venue_id="cafe", zone_id="std", tier=2, latency_cap_ms=30)
        )
        await c.venues.PutSeat(venue_pb2.PutSeatRequest(venue_id="cafe", seat_id="s1", zone_id="std"))
    seat = _token(creds, "--role", "seat", "--venue", "cafe", "--seat", "s1", "--ttl", "10m")
    async with BrokerClient(f"127.0.0.1:{first.port}", token=seat, credentials=tls) as c:
        started = await c.start_session("cafe", "s1", "demo", request_id="keep-me")
        await c.end_session(started.session.session_id, started.session_token, "before restart")
        before = await c.sessions.GetSession(
            session_pb2.GetSessionRequest(session_id=started.session.session_id, include_history=True)
        )
    # One summary line per RPC, with method, status, duration and the ids.
    rpc_lines = [e for e in first.log if e.get("event") == "rpc"]
    assert any(
        e["method"] == "/cloudseat.v1.SessionService/StartSession"
        and e["status"] == "OK"
        and e.get("venue_id") == "cafe"
        and "duration_ms" in e
        for e in rpc_lines
    )

    assert await first.stop() == 0

    second = await launch()
    async with BrokerClient(f"127.0.0.1:{second.port}", token=seat, credentials=tls) as c:
        after = await c.sessions.GetSession(
            session_pb2.GetSessionRequest(session_id=started.session.session_id, include_history=True)
        )
        assert after == before
        assert after.session.state == common_pb2.SESSION_STATE_ENDED
        assert [t.to_state for t in after.history] == [
            common_pb2.SESSION_STATE_PENDING,
            common_pb2.SESSION_STATE_ENDED,
        ]
        retry = await c.start_session("cafe", "s1", "demo", request_id="keep-me")
        assert not retry.created and retry.session.session_id == started.session.session_id
    migrations = [e for e in second.log if e.get("event") == "migration applied"]
    assert migrations == []  # nothing applied twice
    assert await second.stop() == 0
