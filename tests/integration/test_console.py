"""The web consoles (broker.console): the JSON API with tenant tokens, /metrics, and both pages in headless Chromium.

A broker with security on serves the consoles on 127.0.0.1 (a free port). Two venues (cafe, rival) and two providers
(prov, other) share it, each provider with one scripted agent (a real AgentService client over mutual TLS). The API
must refuse a call without a token (401) and another tenant's venue or provider (403), and answer another's host as
an unknown one (404); a provider's drain from the console goes through the same store function as
FleetService.DrainHost, so it is audited and reaches the agent.
The browser tests drive the distribution's Chromium (tests/integration/browser.py) and keep screenshots in
test-artifacts/ (and, for the money and history pages, in the test's own tmp dir).
Money, time zones and history (issue 17): today's cost follows the ledger live and agrees with the statement on the
page seconds after a session ends, in the price's currency; the venue's charts and the operator's region view draw
the last 24 h from the sampler's rows; only the operator sees the region.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cloudseat import tls
from cloudseat.client import BrokerClient
from cloudseat.v1 import agent_pb2, common_pb2, fleet_pb2, session_pb2, venue_pb2

from broker import history, issuing, metering
from broker.config import BrokerConfig, SecurityConfig
from broker.server import Broker
from broker.store import audit
from broker.store import history as history_store
from tests.integration import browser as b
from tests.integration.conftest import FAST
from tests.integration.scripted_agent import ScriptedAgent

pytestmark = pytest.mark.slow

VENUE_SEATS = {"cafe": ["c1", "c2", "c3"], "rival": ["r1", "r2"]}
PROVIDER_HOSTS = {"prov": "host-1", "other": "host-2"}


@pytest.fixture
def creds(tmp_path: Path) -> issuing.Credentials:
    return issuing.make(tmp_path / "creds", list(PROVIDER_HOSTS.values()))


@pytest.fixture
def broker_config(db_url: str, creds: issuing.Credentials) -> BrokerConfig:
    security = SecurityConfig(
        cert=creds.broker.cert, key=creds.broker.key, client_ca=creds.ca, token_key=creds.token_key
    )
    return dataclasses.replace(
        FAST,
        database_url=db_url,
        insecure=False,
        security=security,
        agent_listen="127.0.0.1:0",
        http_listen="127.0.0.1:0",
        # Ledger rows within half a second of a session's end, so the page's money moves within a test's patience.
        metering=metering.Policy(interval_s=0.5, sla_settle_s=0),
    )


Token = Callable[..., str]


@pytest.fixture
def token(creds: issuing.Credentials) -> Token:
    def make(role: str, **claims: str) -> str:
        return issuing.issue_token(creds.token_key, role, ttl_s=600, **claims)

    return make


@dataclasses.dataclass
class Region:
    broker: Broker
    op: BrokerClient
    agents: dict[str, ScriptedAgent]
    url: str
    # Trusts the region's CA: the console serves HTTPS with the broker's certificate.
    trust: ssl.SSLContext

    def http(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.trust))

    async def start(self, venue: str, seat: str) -> session_pb2.Session:
        reply = await self.op.sessions.StartSession(
            session_pb2.StartSessionRequest(
                request_id=f"r-{seat}", venue_id=venue, seat_id=seat, game_id="demo"
            )
        )
        return reply.session


@pytest.fixture
async def region(broker: Broker, creds: issuing.Credentials, token: Token) -> AsyncIterator[Region]:
    """Two providers with a site and an online host each, two venues with a zone and seats, measured near."""
    assert broker.console_url is not None
    op = BrokerClient(
        f"127.0.0.1:{broker.port}", token=token("operator"), credentials=tls.client_credentials(creds.ca)
    )
    await op.fleet.PutGame(fleet_pb2.PutGameRequest(game_id="demo", name="Demo"))
    for provider in PROVIDER_HOSTS:
        await op.fleet.CreateProvider(fleet_pb2.CreateProviderRequest(provider_id=provider, name=provider))
        await op.fleet.CreateSite(
            fleet_pb2.CreateSiteRequest(
                site_id=f"{provider}-site", provider_id=provider, name=f"{provider} site"
            )
        )
        await op.enrol_hosts(f"{provider}-site", [PROVIDER_HOSTS[provider]])
    for venue, seats in VENUE_SEATS.items():
        await op.venues.CreateVenue(venue_pb2.CreateVenueRequest(venue_id=venue, name=venue.title()))
        await op.venues.PutZone(
            venue_pb2.PutZoneRequest(
                venue_id=venue, zone_id="std", tier=common_pb2.TIER_720P60, latency_cap_ms=30
            )
        )
        for seat in seats:
            await op.venues.PutSeat(venue_pb2.PutSeatRequest(venue_id=venue, seat_id=seat, zone_id="std"))
        await op.venues.ReportLatency(
            venue_pb2.ReportLatencyRequest(
                venue_id=venue,
                samples=[venue_pb2.LatencySample(site_id=f"{p}-site", rtt_ms=5) for p in PROVIDER_HOSTS],
            )
        )
    agents: dict[str, ScriptedAgent] = {}
    links: list[BrokerClient] = []
    try:
        for provider, host in PROVIDER_HOSTS.items():
            link = BrokerClient(
                f"127.0.0.1:{broker.agent_port}", credentials=tls.channel_credentials(creds.agent(host))
            )
            links.append(link)
            agents[host] = await ScriptedAgent(
                link, host, site_id=f"{provider}-site", provider_id=provider
            ).__aenter__()
        trust = ssl.create_default_context(cafile=creds.ca)
        yield Region(broker, op, agents, broker.console_url, trust)
    finally:
        for agent in agents.values():
            await agent.close()
        for link in links:
            await link.close()
        await op.close()


async def _get(http: aiohttp.ClientSession, url: str, tok: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {tok}"} if tok else {}
    async with http.get(url, headers=headers) as r:
        return r.status, await r.json()


async def _post(
    http: aiohttp.ClientSession, url: str, tok: str | None, body: dict[str, Any]
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {tok}"} if tok else {}
    async with http.post(url, headers=headers, json=body) as r:
        return r.status, await r.json()


async def _drain_command(agent: ScriptedAgent, drained: bool) -> None:
    async with asyncio.timeout(10):
        while not any(m.WhichOneof("body") == "drain" and m.drain.drained == drained for m in agent.commands):
            await asyncio.sleep(0.05)


async def test_api_needs_a_token_and_keeps_tenants_apart(region: Region, token: Token) -> None:
    api = region.url + "api"
    cafe, rival = token("venue", venue_id="cafe"), token("venue", venue_id="rival")
    prov = token("provider", provider_id="prov")
    assert api.startswith("https://")
    async with region.http() as http:
        # No token, a malformed one, a forged one: 401 naming the authorization.
        for tok in (None, "not-a-jwt"):
            status, body = await _get(http, f"{api}/venues/cafe/seats", tok)
            assert status == 401, body
            assert body["field"] == "authorization"
        status, _ = await _get(http, f"{api}/whoami")
        assert status == 401
        async with http.get(region.url) as page:
            assert page.headers["Strict-Transport-Security"] == "max-age=31536000"

        # A venue sees its own seats, and only them; another venue's are 403 (the feed too).
        status, body = await _get(http, f"{api}/venues/cafe/seats", cafe)
        assert status == 200
        assert [s["seat_id"] for s in body["seats"]] == VENUE_SEATS["cafe"]
        assert {s["state"] for s in body["seats"]} == {"IDLE"}
        for path in (
            "seats",
            "events",
            "service-level",
            "leases",
            "cost",
            "statements?from=2025-01-01&to=2025-02-01",
        ):
            status, body = await _get(http, f"{api}/venues/rival/{path}", cafe)
            assert (status, body["field"]) == (403, "venue_id"), (path, body)
        status, body = await _get(http, f"{api}/whoami", cafe)
        assert [v["venue_id"] for v in body["venues"]] == ["cafe"] and body["providers"] == []
        status, body = await _get(http, f"{api}/venues/rival/seats", rival)
        assert [s["seat_id"] for s in body["seats"]] == VENUE_SEATS["rival"]

        # Every input validated, the field named.
        status, body = await _get(http, f"{api}/venues/no%20such/seats", cafe)
        assert (status, body["field"]) == (400, "venue_id")
        status, body = await _get(http, f"{api}/venues/cafe/statements?from=2025-01-01", cafe)
        assert (status, body["field"]) == (400, "to")
        status, body = await _get(http, f"{api}/venues/cafe/statements?from=2025-13-01&to=2025-01-02", cafe)
        assert (status, body["field"]) == (400, "from")

        # A session started at the venue shows on its seat map (placed on a host, with site and latency).
        await region.start("cafe", "c2")
        async with asyncio.timeout(15):
            while True:
                _, body = await _get(http, f"{api}/venues/cafe/seats", cafe)
                seat = next(s for s in body["seats"] if s["seat_id"] == "c2")
                if seat["state"] == "READY":
                    break
                await asyncio.sleep(0.05)
        assert seat["game_id"] == "demo" and seat["site_id"] in ("prov-site", "other-site")
        assert seat["latency_ms"] == 5
        # The business sections come from the leases and metering modules (nothing made up when they are empty).
        for path in ("leases", "cost", "statements?from=2025-01-01&to=2025-02-01"):
            status, body = await _get(http, f"{api}/venues/cafe/{path}", cafe)
            assert status == 200 and body["available"] is True, (path, body)
        status, body = await _get(http, f"{api}/venues/cafe/service-level", cafe)
        assert status == 200 and body["zones"][0]["zone_id"] == "std" and body["zones"][0]["sessions"] == 1
        assert body["zones"][0]["sessions_share"] == 1.0 and body["zones"][0]["playout"] == "AUTO"

        # A provider sees its hosts only, drains its own host, not another's; a venue drains nothing.
        status, body = await _get(http, f"{api}/providers/prov/fleet", prov)
        assert status == 200 and [h["host_id"] for h in body["hosts"]] == ["host-1"]
        assert [s["site_id"] for s in body["sites"]] == ["prov-site"]
        for path in ("fleet", "events", "revenue"):
            status, body = await _get(http, f"{api}/providers/other/{path}", prov)
            assert (status, body["field"]) == (403, "provider_id"), (path, body)
        status, body = await _get(http, f"{api}/providers/prov/revenue", prov)
        assert status == 200 and body["available"] is True
        # Another's host answers exactly as a host that does not exist (no existence oracle).
        unknown = await _post(http, f"{api}/hosts/host-0/drain", prov, {"reason": "x"})
        assert unknown == (404, {"error": "host_id: no host 'host-0'", "field": "host_id"})
        status, body = await _post(http, f"{api}/hosts/host-2/drain", prov, {"reason": "x"})
        assert (status, body) == (404, {"error": "host_id: no host 'host-2'", "field": "host_id"})
        status, body = await _post(http, f"{api}/hosts/host-1/drain", cafe, {"reason": "x"})
        assert (status, body["field"]) == (404, "host_id")
        status, body = await _post(http, f"{api}/hosts/host-1/drain", prov, {"reason": 7})
        assert (status, body["field"]) == (400, "reason")
        for bad in ("30m", -60, 8 * 86_400, True, 1.5):
            status, body = await _post(http, f"{api}/hosts/host-1/drain", prov, {"reason": "x", "deadline_s": bad})
            assert (status, body["field"]) == (400, "deadline_s"), bad
        status, body = await _post(http, f"{api}/hosts/host-1/drain", prov, {"reason": "fan swap"})
        assert status == 200 and body["drained"] is True
        _, body = await _get(http, f"{api}/providers/prov/fleet", prov)
        assert body["hosts"][0]["drained"] is True

        # The audit trail: each tenant its own rows, filtered and paged; the operator's anyone's; an export.
        status, body = await _get(http, f"{api}/audit?action=host.drain", prov)
        assert status == 200 and [e["target"] for e in body["entries"]] == ["host:host-1"]
        assert body["entries"][0]["detail"] == {"reason": "fan swap"}
        status, body = await _get(http, f"{api}/audit?limit=1", cafe)
        assert status == 200 and len(body["entries"]) == 1 and body["next"] is not None
        assert {e["tenant"] for e in (await _get(http, f"{api}/audit?limit=1000", cafe))[1]["entries"]} == {
            "venue:cafe"
        }
        status, body = await _get(http, f"{api}/audit?tenant=provider:prov", cafe)
        assert (status, body["field"]) == (403, "tenant")
        status, body = await _get(http, f"{api}/audit?from=yesterday", prov)
        assert (status, body["field"]) == (400, "from")
        as_operator = {"Authorization": f"Bearer {token('operator')}"}
        async with http.get(f"{api}/audit.jsonl?tenant=provider:prov", headers=as_operator) as r:
            lines = [json.loads(line) for line in (await r.text()).splitlines()]
        assert r.status == 200 and lines and {x["tenant"] for x in lines} == {"provider:prov"}
        assert "host.drain" in {x["action"] for x in lines}
        # A drain with a deadline (the button's minutes): the sessions left move then.
        status, body = await _post(http, f"{api}/hosts/host-1/drain", prov, {"reason": "fan", "deadline_s": 1800})
        assert status == 200 and body["drained"] is True and body["drain_deadline"]

    # The same drain as FleetService's: the host is drained for gRPC too, the agent told, the action audited.
    host = await region.op.fleet.GetHost(fleet_pb2.GetHostRequest(host_id="host-1"))
    assert host.drained
    await _drain_command(region.agents["host-1"], True)
    assert region.broker.pool is not None
    rows = await audit.read(region.broker.pool, "provider:prov")
    assert any(r["action"] == "host.drain" and r["target"] == "host:host-1" for r in rows)


async def test_metrics_are_tenant_free_and_need_no_token(region: Region) -> None:
    await region.start("cafe", "c1")
    async with region.http() as http:
        async with asyncio.timeout(15):
            while True:
                async with http.get(region.url + "metrics") as r:
                    assert r.status == 200
                    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                    text = await r.text()
                if (
                    "cloudseat_placements_total 1.0" in text
                    and 'cloudseat_sessions{state="READY"} 1.0' in text
                ):
                    break
                await asyncio.sleep(0.05)
    for series in (
        'cloudseat_sessions{state="PENDING"} 0.0',
        "cloudseat_queue_length 0.0",
        'cloudseat_hosts{drained="false",status="online"} 2.0',
        "cloudseat_placement_latency_seconds_count 1.0",
        "cloudseat_metered_seconds_total ",
        'cloudseat_placement_latency_seconds_bucket{le="+Inf"} 1.0',
    ):
        assert series in text, series
    # Aggregates only: no tenant's or host's id anywhere.
    for name in ("cafe", "rival", "prov", "host-1", "c1"):
        assert name not in text.replace("provider", ""), name


async def test_with_authentication_off_everything_is_allowed(db_url: str) -> None:
    broker = Broker(dataclasses.replace(FAST, database_url=db_url, http_listen="127.0.0.1:0"))
    await broker.start()
    try:
        async with BrokerClient(f"127.0.0.1:{broker.port}") as op:
            await op.venues.CreateVenue(venue_pb2.CreateVenueRequest(venue_id="cafe", name="Cafe"))
        # Plaintext only here, with authentication off (--insecure): no tokens to carry.
        assert broker.console_url is not None and broker.console_url.startswith("http://")
        async with aiohttp.ClientSession() as http:
            status, body = await _get(http, f"{broker.console_url}api/whoami")
            assert status == 200 and body["trusted"] is True and body["venues"][0]["venue_id"] == "cafe"
            status, body = await _get(http, f"{broker.console_url}api/venues/cafe/seats")
            assert status == 200 and body["seats"] == []
            status, body = await _get(http, f"{broker.console_url}api/venues/nowhere/seats")
            assert (status, body["field"]) == (404, "venue_id")
    finally:
        await broker.stop(grace_s=1.0)


async def test_the_pages_show_seats_live_keep_venues_apart_and_drain_hosts(
    region: Region, token: Token, artifacts_dir: Path
) -> None:
    """In headless Chromium:
    1. the venue page (token from ?token=, then kept in sessionStorage and gone from the address bar) shows the
       cafe's seats; a session started elsewhere changes its seat's state on the page without a reload;
    2. asking the same page for the rival venue shows the refusal and none of the rival's seats;
    3. the provider page drains its host with the button: the row shows it, the broker has it, the agent is told.
    """
    cafe, prov = token("venue", venue_id="cafe"), token("provider", provider_id="prov")
    async with b.chromium() as browser:
        # The browser does not hold the test's CA; the broker's certificate is checked by the API tests above.
        page = await browser.new_page(viewport={"width": 1280, "height": 900}, ignore_https_errors=True)
        await page.goto(f"{region.url}?token={cafe}#venue/cafe")
        await page.wait_for_function(
            "() => window.cloudseatConsole.ready && window.cloudseatConsole.seats.c3 === 'IDLE'"
        )
        assert "token=" not in page.url
        assert await page.evaluate("sessionStorage.getItem('cloudseat.console.token')") == cafe
        assert (
            sorted(await page.evaluate("Object.keys(window.cloudseatConsole.seats)")) == VENUE_SEATS["cafe"]
        )
        await page.evaluate("window.notReloaded = true")

        await region.start("cafe", "c3")
        await page.wait_for_function("() => window.cloudseatConsole.seats.c3 === 'READY'", timeout=15_000)
        assert await page.evaluate("window.notReloaded") is True
        card = page.locator('.seat[data-seat="c3"]')
        assert await card.get_attribute("data-state") == "READY"
        assert "demo" in await card.inner_text()
        await page.screenshot(path=str(artifacts_dir / "console-venue.png"), full_page=True)

        await page.evaluate("location.hash = '#venue/rival'")
        await page.wait_for_function(
            "() => window.cloudseatConsole.error && window.cloudseatConsole.error.status === 403"
        )
        assert "venue_id" in await page.locator("#error").inner_text()
        assert await page.locator('.seat[data-seat^="r"]').count() == 0
        await page.screenshot(path=str(artifacts_dir / "console-venue-refused.png"), full_page=True)

        provider = await browser.new_page(viewport={"width": 1280, "height": 900}, ignore_https_errors=True)
        await provider.goto(f"{region.url}?token={prov}")
        await provider.wait_for_selector('#hosts tr[data-host="host-1"][data-drained="false"]')
        assert await provider.locator('#hosts tr[data-host="host-2"]').count() == 0
        await provider.fill("#drain-reason", "fan swap")
        await provider.click('#hosts tr[data-host="host-1"] button.drain')
        await provider.wait_for_selector('#hosts tr[data-host="host-1"][data-drained="true"]')
        state = provider.locator('#hosts tr[data-host="host-1"] .host-state')
        assert "drained" in await state.inner_text() and "left, no deadline" in await state.inner_text()
        # Undrained, then drained again with a deadline in the page's minutes: the row shows live the sessions
        # left and when they move (broker.drain).
        await provider.click('#hosts tr[data-host="host-1"] button.undrain')
        await provider.wait_for_selector('#hosts tr[data-host="host-1"][data-drained="false"]')
        await provider.fill("#drain-deadline-min", "60")
        await provider.click('#hosts tr[data-host="host-1"] button.drain')
        await provider.wait_for_function(
            """() => document.querySelector('#hosts tr[data-host="host-1"] .host-state')
                     .textContent.includes('moving at')"""
        )
        assert " left, moving at " in await state.inner_text()
        await provider.screenshot(path=str(artifacts_dir / "console-provider.png"), full_page=True)
        # The audit trail page: the provider's own rows, the drain just made among them.
        await provider.goto(f"{region.url}#audit")
        await provider.reload()
        await provider.wait_for_selector("#audit-rows tbody tr")
        table = await provider.locator("#audit-rows tbody").inner_text()
        assert "host.drain" in table and "host:host-1" in table and "venue:" not in table
        await provider.screenshot(path=str(artifacts_dir / "console-audit.png"), full_page=True)

    host = await region.op.fleet.GetHost(fleet_pb2.GetHostRequest(host_id="host-1"))
    assert host.drained and host.status == fleet_pb2.HOST_STATUS_ONLINE
    await _drain_command(region.agents["host-1"], True)
    assert agent_pb2.DrainCommand(drained=True) in [m.drain for m in region.agents["host-1"].commands]


async def test_the_region_is_the_operators_and_history_keeps_tenants_apart(region: Region, token: Token) -> None:
    api = region.url + "api"
    cafe, prov, operator = token("venue", venue_id="cafe"), token("provider", provider_id="prov"), token("operator")
    assert region.broker.pool is not None
    async with region.http() as http:
        for tok in (cafe, prov):
            for path in ("region", "region/history"):
                status, body = await _get(http, f"{api}/{path}", tok)
                assert (status, body["field"]) == (403, "region"), (path, body)
            assert (await _get(http, f"{api}/whoami", tok))[1]["region"] is False
        assert (await _get(http, f"{api}/whoami", operator))[1]["region"] is True
        status, body = await _get(http, f"{api}/venues/rival/history", cafe)
        assert (status, body["field"]) == (403, "venue_id")
        status, body = await _get(http, f"{api}/providers/other/history", prov)
        assert (status, body["field"]) == (403, "provider_id")

        await region.start("cafe", "c1")
        now = await history_store.clock(region.broker.pool)
        await history_store.sample(region.broker.pool, *history.minute_to_sample(now + history.MINUTE))
        status, body = await _get(http, f"{api}/region", operator)
        assert status == 200
        assert [s["site_id"] for s in body["sites"]] == ["other-site", "prov-site"]
        assert {v["venue_id"]: v["seats"] for v in body["venues"]} == {"cafe": 3, "rival": 2}
        status, body = await _get(http, f"{api}/region/history", operator)
        assert status == 200 and len(body["utilisation"]) == 2 and body["span"]["bucket_s"] == history.BUCKET_S
        assert {s["name"] for s in body["sessions"]} == {"cafe", "rival"}
        # A tenant's own history: its zones, or its sites, and none of another's.
        status, body = await _get(http, f"{api}/venues/cafe/history", cafe)
        assert status == 200 and [s["name"] for s in body["sessions"]] == ["std"] and body["time_zone"] == "UTC"
        status, body = await _get(http, f"{api}/providers/prov/history", prov)
        assert status == 200 and [s["name"] for s in body["utilisation"]] == ["prov-site"]


async def test_money_is_live_in_its_currency_and_the_charts_and_region_draw_the_last_day(
    region: Region, token: Token, tmp_path: Path
) -> None:
    """In headless Chromium, with both sites priced in USD and the cafe in Shanghai's time zone:
    1. the venue page shows today's cost in USD, growing while a session runs (pushed, no reload);
    2. seconds after the session ends, today's cost and the statement on the same page agree to the micro;
    3. its charts draw the sampled minutes (a path with points, hour labels on Shanghai's clock);
    4. the provider whose host ran the session sees its month's revenue in USD pushed once the ledger has it;
    5. the operator's region page shows every site and venue and its charts; a venue's token is refused it.
    """
    pool = region.broker.pool
    assert pool is not None
    for provider in PROVIDER_HOSTS:
        await region.op.fleet.SetPrice(
            fleet_pb2.SetPriceRequest(
                site_id=f"{provider}-site", gpu_class="rtx4080", price_micros_per_slot_hour=36_000_000,
                currency="USD",
            )
        )  # fmt: skip
    await pool.execute("UPDATE venues SET time_zone = 'Asia/Shanghai' WHERE venue_id = 'cafe'")
    started = await region.op.sessions.StartSession(
        session_pb2.StartSessionRequest(request_id="r-money", venue_id="cafe", seat_id="c1", game_id="demo")
    )
    sid = started.session.session_id
    await region.op.wait_for(sid, common_pb2.SESSION_STATE_READY, timeout_s=15)
    # Three minutes of history (the sampler's own writes, taken now rather than waited for).
    now = await history_store.clock(pool)
    for back in (2, 1, 0):
        await history_store.sample(pool, *history.minute_to_sample(now - back * history.MINUTE))

    cafe = token("venue", venue_id="cafe")
    async with b.chromium() as browser:
        page = await browser.new_page(viewport={"width": 1280, "height": 1400}, ignore_https_errors=True)
        await page.goto(f"{region.url}?token={cafe}#venue/cafe")
        await page.wait_for_function(
            """() => { const c = window.cloudseatConsole.cost;
                       return c && c.totals.length === 1 && c.totals[0].running_micros > 0; }""",
            timeout=20_000,
        )
        await page.evaluate("window.notReloaded = true")
        cost = await page.evaluate("window.cloudseatConsole.cost")
        assert cost["time_zone"] == "Asia/Shanghai" and cost["totals"][0]["currency"] == "USD"
        assert "USD" in await page.locator("#cost").inner_text()
        assert "(Asia/Shanghai)" in await page.locator("#cost").inner_text()
        # The charts: a line with the sampled points, labels on the venue's clock.
        await page.wait_for_function("() => (window.cloudseatConsole.charts['chart-sessions'] || []).length > 0")
        path = page.locator('#chart-sessions path.series[data-series="std"]')
        assert int(await path.get_attribute("data-points") or 0) >= 1
        assert (await path.get_attribute("d") or "").startswith("M")
        assert await page.locator("#chart-service path.series").count() == 1
        assert "times in Asia/Shanghai" in await page.locator("#venue-clock").inner_text()
        await page.screenshot(path=str(tmp_path / "console-money-running.png"), full_page=True)
        # The provider whose host runs it: nothing billed this month yet, its page open before the session ends.
        host_provider = await pool.fetchval(
            "SELECT h.provider_id FROM sessions s JOIN hosts h USING (host_id) WHERE s.session_id = $1::uuid", sid
        )
        provider = await browser.new_page(viewport={"width": 1280, "height": 1400}, ignore_https_errors=True)
        await provider.goto(f"{region.url}?token={token('provider', provider_id=host_provider)}")
        await provider.wait_for_function("() => window.cloudseatConsole.revenue !== undefined")
        assert (await provider.evaluate("window.cloudseatConsole.revenue"))["totals"] == []
        await provider.evaluate("window.notReloaded = true")

        await region.op.end_session(sid, started.session_token)
        # Seconds later: nothing left running, and today's cost is the statement's total, on the same page.
        await page.wait_for_function(
            """() => { const c = window.cloudseatConsole.cost, s = window.cloudseatConsole.statement;
                       return c && s && c.totals.length === 1 && c.totals[0].running_micros === 0
                         && s.totals.length === 1 && s.totals[0].total_micros === c.totals[0].total_micros; }""",
            timeout=20_000,
        )
        assert await page.evaluate("window.notReloaded") is True
        cost = await page.evaluate("window.cloudseatConsole.cost")
        statement = await page.evaluate("window.cloudseatConsole.statement")
        assert cost["totals"][0]["total_micros"] > 0 and statement["totals"][0]["currency"] == "USD"
        assert await pool.fetchval(
            "SELECT sum(amount_micros) FROM ledger WHERE venue_id = 'cafe' AND currency = 'USD'"
        ) == cost["totals"][0]["total_micros"]
        assert "USD" in await page.locator("#statements").inner_text()
        await page.screenshot(path=str(tmp_path / "console-money-ended.png"), full_page=True)
        # The provider's revenue follows the ledger, pushed on its page's event stream (no reload).
        await provider.wait_for_function(
            "() => (window.cloudseatConsole.revenue.totals || []).length === 1", timeout=20_000
        )
        revenue = await provider.evaluate("window.cloudseatConsole.revenue")
        assert revenue["totals"] == [{"currency": "USD", "total_micros": cost["totals"][0]["total_micros"]}]
        assert await provider.evaluate("window.notReloaded") is True
        assert "USD" in await provider.locator("#revenue").inner_text()

        # The region is the operator's: a venue's token gets the refusal, the operator's the whole region.
        await page.goto(f"{region.url}#region")
        await page.reload()
        await page.wait_for_function(
            "() => window.cloudseatConsole.error && window.cloudseatConsole.error.status === 403"
        )
        assert "region" in await page.locator("#error").inner_text()
        operator = await browser.new_page(viewport={"width": 1280, "height": 1400}, ignore_https_errors=True)
        await operator.goto(f"{region.url}?token={token('operator')}#region")
        await operator.wait_for_function(
            "() => window.cloudseatConsole.region && (window.cloudseatConsole.charts['chart-region-util'] || []).length"
        )
        assert await operator.locator("#region-sites tbody tr").count() == 2
        assert await operator.locator("#region-venues tbody tr").count() == 2
        assert await operator.locator("#region-link").is_visible()
        util = operator.locator("#chart-region-util path.series")
        assert await util.count() == 2 and int(await util.first.get_attribute("data-points") or 0) >= 1
        assert await operator.locator("#chart-region-util text.tick").count() >= 2
        # Hovering the chart where its last sample is drawn shows the values sampled there. (Not the last bucket:
        # when a minute turns between the samples above and the page, that bucket holds none.)
        box = await operator.locator("#chart-region-sessions svg").bounding_box()
        assert box is not None
        drawn = await operator.locator("#chart-region-sessions path.series").first.get_attribute("d") or ""
        last_x = float(re.findall(r"[ML]\s*([-\d.]+)[ ,]", drawn)[-1])
        await operator.mouse.move(box["x"] + box["width"] * last_x / 640, box["y"] + box["height"] / 2)
        tip = await operator.locator("#chart-region-sessions .chart-tip").inner_text()
        assert "cafe: 0" in tip or "cafe: 1" in tip, tip
        await operator.screenshot(path=str(tmp_path / "console-region.png"), full_page=True)
    for name in ("console-money-running.png", "console-money-ended.png", "console-region.png"):
        assert (tmp_path / name).stat().st_size > 10_000, name
