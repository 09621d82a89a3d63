"""Security on: mutual TLS for agents, tenant tokens for everyone else, every RPC authorised by tenant.

Two venues (cafe, rival) and two providers (prov, other) share one broker. Every RPC of every service is probed with
a token of the wrong tenant and must be refused; agents must present their own host's certificate; a tenant over
its rate is told RESOURCE_EXHAUSTED; the broker's certificate is rotated without a restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from cloudseat import tls
from cloudseat.client import AgentLinkClient, BrokerClient
from cloudseat.v1 import agent_pb2, billing_pb2, common_pb2, fleet_pb2, lease_pb2, session_pb2, venue_pb2
from google.protobuf import timestamp_pb2
from grpc import aio

from broker import issuing
from broker.config import BrokerConfig, SecurityConfig
from broker.server import SERVICE_NAMES, Broker
from tests.integration.conftest import FAST

pytestmark = pytest.mark.slow
S = common_pb2.SessionState


@pytest.fixture
def creds(tmp_path: Path) -> issuing.Credentials:
    return issuing.make(tmp_path / "creds", ["host-1", "host-2"])


@pytest.fixture
def broker_config(db_url: str, creds: issuing.Credentials) -> BrokerConfig:
    security = SecurityConfig(
        cert=creds.broker.cert,
        key=creds.broker.key,
        client_ca=creds.ca,
        token_key=creds.token_key,
        rate_per_s=50,
        burst=100,
    )
    return dataclasses.replace(
        FAST, database_url=db_url, insecure=False, security=security, agent_listen="127.0.0.1:0"
    )


Connect = Callable[..., Awaitable[BrokerClient]]


@pytest.fixture
async def connect(broker: Broker, creds: issuing.Credentials) -> AsyncIterator[Connect]:
    """A client holding a token of the given role and claims, over TLS."""
    opened: list[BrokerClient] = []

    async def make(role: str, **claims: str) -> BrokerClient:
        token = issuing.issue_token(creds.token_key, role, ttl_s=600, **claims)
        client = BrokerClient(
            f"127.0.0.1:{broker.port}", token=token, credentials=tls.client_credentials(creds.ca)
        )
        opened.append(client)
        return client

    yield make
    for c in opened:
        await c.close()


async def _seed(op: BrokerClient) -> None:
    for provider in ("prov", "other"):
        await op.fleet.CreateProvider(fleet_pb2.CreateProviderRequest(provider_id=provider, name=provider))
    await op.fleet.PutGame(fleet_pb2.PutGameRequest(game_id="demo", name="Demo"))
    for venue in ("cafe", "rival"):
        await op.venues.CreateVenue(venue_pb2.CreateVenueRequest(venue_id=venue, name=venue))


async def _agent(broker: Broker, files: tls.CertFiles | None, host_id: str, provider: str) -> AgentLinkClient:
    client = BrokerClient(
        f"127.0.0.1:{broker.agent_port}", credentials=tls.channel_credentials(files) if files else None
    )
    link = AgentLinkClient(
        client,
        agent_pb2.Register(
            host_id=host_id,
            provider_id=provider,
            site_id=f"{provider}-site",
            epoch=1,
            agent_version="test",
            inventory=agent_pb2.HostInventory(
                gpu_class="rtx", slots=2, games_cached=["demo"], media_addresses=["127.0.0.1"],
                price_micros_per_slot_hour=1,
            ),
        ),
    )  # fmt: skip
    return link


async def test_every_rpc_refuses_other_tenants(
    connect: Connect, broker: Broker, creds: issuing.Credentials
) -> None:
    op = await connect("operator")
    await _seed(op)
    prov = await connect("provider", provider_id="prov")
    other_prov = await connect("provider", provider_id="other")
    await prov.fleet.CreateSite(
        fleet_pb2.CreateSiteRequest(site_id="prov-site", provider_id="prov", name="P")
    )
    await other_prov.fleet.CreateSite(
        fleet_pb2.CreateSiteRequest(site_id="other-site", provider_id="other", name="O")
    )
    cafe = await connect("venue", venue_id="cafe")
    rival = await connect("venue", venue_id="rival")
    for venue, client, site in (("cafe", cafe, "prov-site"), ("rival", rival, "other-site")):
        await client.venues.PutZone(
            venue_pb2.PutZoneRequest(
                venue_id=venue, zone_id="z", tier=common_pb2.TIER_720P60, latency_cap_ms=30
            )
        )
        for seat in ("s1", "s2"):
            await client.venues.PutSeat(venue_pb2.PutSeatRequest(venue_id=venue, seat_id=seat, zone_id="z"))
        await client.venues.ReportLatency(
            venue_pb2.ReportLatencyRequest(
                venue_id=venue, samples=[venue_pb2.LatencySample(site_id=site, rtt_ms=5)]
            )
        )
    # Each provider's host, on its own certificate.
    link = await _agent(broker, creds.agent("host-1"), "host-1", "prov")
    await link.open()
    seat1 = await connect("seat", venue_id="cafe", seat_id="s1")
    seat2 = await connect("seat", venue_id="cafe", seat_id="s2")
    mine = await seat1.start_session("cafe", "s1", "demo")
    theirs = await (await connect("venue", venue_id="rival")).start_session("rival", "s1", "demo")
    sid, token = mine.session.session_id, mine.session_token
    offer = common_pb2.SessionDescription(type="offer", sdp="v=0\r\n")
    negotiate = session_pb2.NegotiateRequest(session_id=sid, session_token=token, offer=offer)
    zone = venue_pb2.PutZoneRequest(venue_id="cafe", zone_id="z", tier=2, latency_cap_ms=9)
    latency = venue_pb2.ReportLatencyRequest(
        venue_id="cafe", samples=[venue_pb2.LatencySample(site_id="prov-site", rtt_ms=1)]
    )
    site = fleet_pb2.CreateSiteRequest(site_id="x", provider_id="prov", name="X")
    price = fleet_pb2.SetPriceRequest(site_id="prov-site", gpu_class="rtx", price_micros_per_slot_hour=1)
    t0, t1 = timestamp_pb2.Timestamp(seconds=1_700_000_000), timestamp_pb2.Timestamp(seconds=1_700_086_400)

    def statement(**who: str) -> billing_pb2.GetStatementRequest:
        return billing_pb2.GetStatementRequest(start=t0, end=t1, **who)

    def ledger(**who: str) -> billing_pb2.ListLedgerRequest:
        return billing_pb2.ListLedgerRequest(start=t0, end=t1, **who)

    # A lease prov wrote for cafe on host-1's slots.
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    lease = lease_pb2.CreateLeaseRequest(
        lease_id="cafe-lease", venue_id="cafe", gpu_class="rtx", slots=1, site_id="prov-site",
        starts_at=_ts(now), ends_at=_ts(now + dt.timedelta(days=1)), price_micros_per_slot_hour=1,
    )  # fmt: skip
    await prov.leases.CreateLease(lease)
    cancel = lease_pb2.CancelLeaseRequest(lease_id="cafe-lease")
    use = lease_pb2.GetLeaseUseRequest(
        lease_id="cafe-lease", start=_ts(now), end=_ts(now + dt.timedelta(hours=1))
    )
    venue_use = lease_pb2.GetLeaseUseRequest(venue_id="cafe", start=use.start, end=use.end)

    probes: dict[str, list[tuple[BrokerClient, Callable[[BrokerClient], Awaitable[Any]]]]] = {
        "SessionService/StartSession": [
            (seat1, lambda c: c.start_session("cafe", "s2", "demo")),  # another seat of the same venue
            (rival, lambda c: c.start_session("cafe", "s2", "demo")),
            (prov, lambda c: c.start_session("cafe", "s2", "demo")),
        ],
        "SessionService/GetSession": [
            (rival, lambda c: c.sessions.GetSession(session_pb2.GetSessionRequest(session_id=sid))),
            (seat2, lambda c: c.sessions.GetSession(session_pb2.GetSessionRequest(session_id=sid))),
        ],
        "SessionService/WatchSession": [
            (rival, lambda c: c.wait_for(sid, S.SESSION_STATE_ENDED, timeout_s=5)),
        ],
        "SessionService/Negotiate": [
            # The venue owns the seat but media is the seat's; the neighbouring seat even with the token.
            (cafe, lambda c: c.sessions.Negotiate(negotiate)),
            (seat2, lambda c: c.sessions.Negotiate(negotiate)),
        ],
        "SessionService/EndSession": [
            (rival, lambda c: c.sessions.EndSession(session_pb2.EndSessionRequest(session_id=sid))),
            (seat2, lambda c: c.end_session(sid, token)),
            # A patron's token opens only its own session.
            (seat1, lambda c: c.end_session(theirs.session.session_id, token)),
        ],
        "SessionService/ReportStreamStats": [
            # The stream is the seat's: not the venue's staff, nor the neighbouring seat even with the token.
            (cafe, lambda c: c.report_stream_stats(sid, token, [(time.time(), 60.0, None)])),
            (seat2, lambda c: c.report_stream_stats(sid, token, [(time.time(), 60.0, None)])),
            (rival, lambda c: c.report_stream_stats(sid, token, [(time.time(), 60.0, None)])),
        ],
        "SessionService/ListGames": [],  # the catalogue is public to every authenticated caller
        "VenueService/CreateVenue": [
            (cafe, lambda c: c.venues.CreateVenue(venue_pb2.CreateVenueRequest(venue_id="new", name="N"))),
        ],
        "VenueService/GetVenue": [(rival, lambda c: c.venues.GetVenue(venue_pb2.GetVenueRequest(venue_id="cafe")))],
        "VenueService/PutZone": [
            (rival, lambda c: c.venues.PutZone(zone)),
            (seat1, lambda c: c.venues.PutZone(zone)),
        ],
        "VenueService/PutSeat": [
            (rival, lambda c: c.venues.PutSeat(venue_pb2.PutSeatRequest(venue_id="cafe", seat_id="s9", zone_id="z"))),
        ],
        "VenueService/ReportLatency": [
            (rival, lambda c: c.venues.ReportLatency(latency)),
        ],
        "VenueService/ListSeats": [(rival, lambda c: c.venues.ListSeats(venue_pb2.ListSeatsRequest(venue_id="cafe")))],
        "VenueService/ListSessions": [
            (rival, lambda c: c.venues.ListSessions(venue_pb2.ListSessionsRequest(venue_id="cafe"))),
            (prov, lambda c: c.venues.ListSessions(venue_pb2.ListSessionsRequest(venue_id="cafe"))),
        ],
        "VenueService/AddTime": [
            (rival, lambda c: c.add_time("cafe", sid, 60)),
            (seat1, lambda c: c.add_time("cafe", sid, 60)),  # the seat cannot buy itself time
            (prov, lambda c: c.add_time("cafe", sid, 60)),
        ],
        "FleetService/CreateProvider": [
            (prov, lambda c: c.fleet.CreateProvider(fleet_pb2.CreateProviderRequest(provider_id="p3", name="P"))),
        ],
        "FleetService/CreateSite": [
            (other_prov, lambda c: c.fleet.CreateSite(site)),
            (cafe, lambda c: c.fleet.CreateSite(site)),
        ],
        "FleetService/PutGame": [(prov, lambda c: c.fleet.PutGame(fleet_pb2.PutGameRequest(game_id="g", name="G")))],
        "FleetService/PrewarmGame": [
            (other_prov, lambda c: c.prewarm_game("prov-site", "demo")),
            (cafe, lambda c: c.prewarm_game("prov-site", "demo")),
        ],
        "FleetService/SetPrice": [
            (other_prov, lambda c: c.fleet.SetPrice(price)),
        ],
        "FleetService/GetHost": [(other_prov, lambda c: c.fleet.GetHost(fleet_pb2.GetHostRequest(host_id="host-1")))],
        "FleetService/ListHosts": [
            (other_prov, lambda c: c.fleet.ListHosts(fleet_pb2.ListHostsRequest(provider_id="prov"))),
            (cafe, lambda c: c.fleet.ListHosts(fleet_pb2.ListHostsRequest())),
        ],
        "FleetService/DrainHost": [
            (other_prov, lambda c: c.fleet.DrainHost(fleet_pb2.DrainHostRequest(host_id="host-1"))),
        ],
        "FleetService/UndrainHost": [
            (other_prov, lambda c: c.fleet.UndrainHost(fleet_pb2.UndrainHostRequest(host_id="host-1"))),
        ],
        "BillingService/GetStatement": [
            (rival, lambda c: c.billing.GetStatement(statement(venue_id="cafe"))),
            (seat1, lambda c: c.billing.GetStatement(statement(venue_id="cafe"))),
            (other_prov, lambda c: c.billing.GetStatement(statement(provider_id="prov"))),
            (cafe, lambda c: c.billing.GetStatement(statement(provider_id="prov"))),
        ],
        "BillingService/ListLedger": [
            (rival, lambda c: c.billing.ListLedger(ledger(venue_id="cafe"))),
            (other_prov, lambda c: c.billing.ListLedger(ledger(provider_id="prov"))),
        ],
        "AgentService/Connect": [],  # certificates, below
        "LeaseService/CreateLease": [
            (other_prov, lambda c: c.leases.CreateLease(lease)),
            (cafe, lambda c: c.leases.CreateLease(lease)),  # a venue does not write its own leases
        ],
        "LeaseService/ListLeases": [
            (rival, lambda c: c.leases.ListLeases(lease_pb2.ListLeasesRequest(venue_id="cafe"))),
            (other_prov, lambda c: c.leases.ListLeases(lease_pb2.ListLeasesRequest(provider_id="prov"))),
            (seat1, lambda c: c.leases.ListLeases(lease_pb2.ListLeasesRequest(venue_id="cafe"))),
        ],
        "LeaseService/CancelLease": [
            (rival, lambda c: c.leases.CancelLease(cancel)),
            (other_prov, lambda c: c.leases.CancelLease(cancel)),
            (seat1, lambda c: c.leases.CancelLease(cancel)),
        ],
        "LeaseService/GetLeaseUse": [
            (rival, lambda c: c.leases.GetLeaseUse(use)),
            (other_prov, lambda c: c.leases.GetLeaseUse(use)),
            (rival, lambda c: c.leases.GetLeaseUse(venue_use)),
        ],
    }  # fmt: skip
    every = {f"{svc.split('.')[-1]}/{m.name}" for svc in SERVICE_NAMES for m in _service(svc).methods}
    assert set(probes) == every, "every RPC is probed"
    for name, cases in probes.items():
        for client, call in cases:
            with pytest.raises(aio.AioRpcError) as refused:
                await call(client)
            assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED, (name, refused.value.details())
    # The owners themselves may (a few of the same calls, allowed).
    await prov.fleet.DrainHost(fleet_pb2.DrainHostRequest(host_id="host-1"))
    hosts = await other_prov.fleet.ListHosts(fleet_pb2.ListHostsRequest())
    assert [h.host_id for h in hosts.hosts] == []  # other's own hosts only: none
    assert (await cafe.venues.ListSessions(venue_pb2.ListSessionsRequest(venue_id="cafe"))).sessions
    ended = await cafe.sessions.EndSession(
        session_pb2.EndSessionRequest(session_id=sid, detail="closing time")
    )
    assert ended.session.end_reason == common_pb2.END_REASON_ENDED_BY_VENUE
    assert [g.game_id for g in await seat2.list_games()] == ["demo"]
    assert [x.lease_id for x in (await cafe.leases.ListLeases(lease_pb2.ListLeasesRequest())).leases] == [
        "cafe-lease"
    ]
    assert (await other_prov.leases.ListLeases(lease_pb2.ListLeasesRequest())).leases == []
    assert (await prov.leases.GetLeaseUse(use)).leased_slot_seconds == 3600
    await link.close()


def _ts(t: dt.datetime) -> Any:
    from google.protobuf import timestamp_pb2

    out = timestamp_pb2.Timestamp()
    out.FromDatetime(t)
    return out


def _service(full_name: str) -> Any:
    from google.protobuf import descriptor_pool

    return descriptor_pool.Default().FindServiceByName(full_name)


async def test_agents_act_only_for_their_own_host(
    broker: Broker, creds: issuing.Credentials, connect: Connect
) -> None:
    op = await connect("operator")
    await _seed(op)
    await op.fleet.CreateSite(fleet_pb2.CreateSiteRequest(site_id="prov-site", provider_id="prov", name="P"))
    # host-1's certificate claiming host-2: refused.
    impostor = await _agent(broker, creds.agent("host-1"), "host-2", "prov")
    with pytest.raises(aio.AioRpcError) as refused:
        await impostor.open()
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "register.host_id" in (refused.value.details() or "")
    await impostor.close()
    # No certificate at all (TLS, but anonymous): refused.
    # No certificate at all: the agents' port does not complete the handshake; the token port has no agent service.
    # The stream is read before anything is written: a write that races the refusal fails with gRPC's own INTERNAL,
    # which replaces the broker's status on the call (grpc.aio's _write), so only reading shows that status reliably.
    for port, code in (
        (broker.agent_port, grpc.StatusCode.UNAVAILABLE),
        (broker.port, grpc.StatusCode.UNIMPLEMENTED),
    ):
        async with BrokerClient(f"127.0.0.1:{port}", credentials=tls.client_credentials(creds.ca)) as anonymous:
            call = anonymous.agents.Connect()
            with pytest.raises(aio.AioRpcError) as no_cert:
                await asyncio.wait_for(call.read(), 10)
            assert no_cert.value.code() is code
    # A broker's certificate used as a client: TLS refuses it (it is for serving, not a client); were it accepted,
    # the guard would refuse its role (tests/unit/test_auth.py).
    as_broker = await _agent(broker, creds.broker, "host-1", "prov")
    with pytest.raises(aio.AioRpcError) as wrong_role:
        await as_broker.open()
    assert wrong_role.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.PERMISSION_DENIED)
    await as_broker.close()
    # Its own: welcome.
    own = await _agent(broker, creds.agent("host-1"), "host-1", "prov")
    registered = await own.open()
    assert registered.host_id == "host-1"
    await own.close()


async def test_tenant_rate_limit_answers_resource_exhausted(connect: Connect) -> None:
    op = await connect("operator")
    await _seed(op)
    cafe = await connect("venue", venue_id="cafe")
    rival = await connect("venue", venue_id="rival")
    codes = []
    for _ in range(150):  # burst 100, 50/s: a tight loop runs out
        try:
            await cafe.venues.GetVenue(venue_pb2.GetVenueRequest(venue_id="cafe"))
            codes.append(grpc.StatusCode.OK)
        except aio.AioRpcError as exc:
            codes.append(exc.code())
            assert "rate limit" in (exc.details() or "")
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes and codes[0] is grpc.StatusCode.OK
    # Another tenant is not slowed by it.
    await rival.venues.GetVenue(venue_pb2.GetVenueRequest(venue_id="rival"))


async def test_broker_certificate_rotates_without_restart(
    broker: Broker, creds: issuing.Credentials, tmp_path: Path, connect: Connect
) -> None:
    op = await connect("operator")
    await _seed(op)
    # A new CA and a new broker certificate, written over the files the broker serves.
    new = tmp_path / "rotated"
    new_ca, new_ca_key = tls.make_ca(new)
    fresh = tls.issue(new_ca, new_ca_key, new, role="broker", name="broker")
    bundle = creds.folder / "bundle.pem"
    bundle.write_bytes(creds.ca.read_bytes() + new_ca.read_bytes())
    shutil.copyfile(fresh.cert, creds.broker.cert)
    shutil.copyfile(fresh.key, creds.broker.key)
    token = issuing.issue_token(creds.token_key, "operator", ttl_s=60)
    async with BrokerClient(
        f"127.0.0.1:{broker.port}", token=token, credentials=tls.client_credentials(new_ca)
    ) as trusting_new:
        # A new connection gets the new certificate: only the new CA's clients can check it.
        game = await trusting_new.fleet.PutGame(fleet_pb2.PutGameRequest(game_id="g2", name="G2"), timeout=10)
        assert game.game_id == "g2"
    async with BrokerClient(
        f"127.0.0.1:{broker.port}", token=token, credentials=tls.client_credentials(creds.ca)
    ) as trusting_old:
        with pytest.raises(aio.AioRpcError) as old:
            await trusting_old.fleet.PutGame(fleet_pb2.PutGameRequest(game_id="g3", name="G3"), timeout=5)
        assert old.value.code() is grpc.StatusCode.UNAVAILABLE
    assert broker.credentials is not None and broker.credentials.reloads >= 1
    await asyncio.sleep(0)


async def test_business_actions_are_audited_append_only(connect: Connect, broker: Broker) -> None:
    op = await connect("operator")
    await _seed(op)
    prov = await connect("provider", provider_id="prov")
    await prov.fleet.CreateSite(
        fleet_pb2.CreateSiteRequest(site_id="prov-site", provider_id="prov", name="P")
    )
    await prov.fleet.SetPrice(
        fleet_pb2.SetPriceRequest(site_id="prov-site", gpu_class="rtx", price_micros_per_slot_hour=2_000_000)
    )
    cafe = await connect("venue", venue_id="cafe")
    await cafe.venues.PutZone(
        venue_pb2.PutZoneRequest(venue_id="cafe", zone_id="z", tier=common_pb2.TIER_720P60, latency_cap_ms=30)
    )
    await cafe.venues.PutSeat(venue_pb2.PutSeatRequest(venue_id="cafe", seat_id="s1", zone_id="z"))
    seat = await connect("seat", venue_id="cafe", seat_id="s1")
    started = await seat.start_session("cafe", "s1", "demo")
    await seat.end_session(started.session.session_id, started.session_token, "done")
    assert broker.pool is not None
    rows = await broker.pool.fetch(
        "SELECT actor, tenant, action, target, detail, peer FROM audit_log ORDER BY seq"
    )
    by_action = {r["action"]: r for r in rows}
    for action in (
        "provider.create",
        "game.put",
        "venue.create",
        "site.create",
        "price.set",
        "zone.put",
        "seat.put",
    ):
        assert action in by_action, action
    price = by_action["price.set"]
    assert (price["actor"], price["tenant"], price["target"]) == (
        "provider:prov",
        "provider:prov",
        "site:prov-site/rtx",
    )
    assert price["peer"].startswith("ipv4:127.0.0.1:")
    start, end = by_action["session.start"], by_action["session.end"]
    assert (start["actor"], start["tenant"]) == ("seat:cafe/s1", "venue:cafe")
    assert start["target"] == end["target"] == f"session:{started.session.session_id}"
    assert end["detail"]["reason"] == "ENDED_BY_PATRON" and end["actor"] == "seat:cafe/s1"
    # Append-only, whoever asks.
    for statement in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log", "TRUNCATE audit_log"):
        with pytest.raises(Exception, match="append-only"):
            await broker.pool.execute(statement)
