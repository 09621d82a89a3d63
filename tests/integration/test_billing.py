"""Prices with time-of-day bands, the metering ledger and statements (issue 8), on a real broker and PostgreSQL.

Time is the database's: a test that needs a session at a given time of day ends a real session, then moves its
placed_at and ended_at to that time (test data, like any fixture row) and runs the meter (broker.store.metering)
itself; the leader's own metering duty is tested with a short period.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

import asyncpg
import grpc
import pytest
from cloudseat.client import BrokerClient
from cloudseat.v1 import agent_pb2, billing_pb2, common_pb2, fleet_pb2, lease_pb2, venue_pb2
from google.protobuf import timestamp_pb2
from grpc import aio

from broker import metering
from broker.config import BrokerConfig
from broker.server import Broker
from broker.store import metering as metering_store
from tests.integration.conftest import FAST
from tests.integration.scripted_agent import ScriptedAgent

S = common_pb2.SessionState
UTC = dt.UTC
BASE, PEAK = 3_600_000, 7_200_000  # micros per slot-hour: 1000 and 2000 micros a second
POLICY = metering.Policy(interval_s=3600, sla_settle_s=0, credit_pct=100)


@pytest.fixture
def broker_config(db_url: str, request: pytest.FixtureRequest) -> BrokerConfig:
    # The duty stays out of the way (one round an hour) and tests meter when they choose; except where the duty
    # itself is tested.
    duty = request.node.name.startswith("test_the_leaders_duty")
    policy = dataclasses.replace(POLICY, interval_s=0.1) if duty else POLICY
    return dataclasses.replace(FAST, database_url=db_url, metering=policy)


def ts(at: dt.datetime) -> timestamp_pb2.Timestamp:
    t = timestamp_pb2.Timestamp()
    t.FromDatetime(at)
    return t


async def set_price(
    world: BrokerClient, bands: list[tuple[int, int, int]], offset: int = 0
) -> fleet_pb2.Price:
    price: fleet_pb2.Price = await world.fleet.SetPrice(
        fleet_pb2.SetPriceRequest(
            site_id="site-near",
            gpu_class="rtx4080",
            price_micros_per_slot_hour=BASE,
            bands=[
                fleet_pb2.PriceBand(start_minute=a, end_minute=b, price_micros_per_slot_hour=p)
                for a, b, p in bands
            ],
            utc_offset_minutes=offset,
        )
    )
    return price


async def ended_session(world: BrokerClient, seat: str = "s1") -> str:
    started = await world.start_session("cafe", seat, "demo")
    sid = started.session.session_id
    await world.wait_for(sid, S.SESSION_STATE_READY)
    await world.end_session(sid, started.session_token)
    return sid


async def move(pool: asyncpg.Pool, sid: str, placed: dt.datetime, ended: dt.datetime) -> None:
    await pool.execute(
        "UPDATE sessions SET placed_at = $2, ended_at = $3 WHERE session_id = $1::uuid", sid, placed, ended
    )


def later() -> dt.datetime:
    return dt.datetime.now(UTC) + dt.timedelta(days=1)


async def ledger(
    world: BrokerClient, start: dt.datetime, end: dt.datetime, **who: str
) -> list[billing_pb2.LedgerEntry]:
    entries: list[billing_pb2.LedgerEntry] = []
    token = ""
    while True:
        page = await world.billing.ListLedger(
            billing_pb2.ListLedgerRequest(start=ts(start), end=ts(end), page_size=2, page_token=token, **who)
        )
        entries += page.entries
        token = page.next_page_token
        if not token:
            return entries


async def test_a_session_across_a_band_edge_is_billed_at_both_prices_to_the_second(
    world: BrokerClient, broker: Broker
) -> None:
    assert broker.pool is not None
    # Peak 18:00-02:00 China time (UTC+8): 10:00-18:00 UTC.
    price = await set_price(world, [(1080, 120, PEAK)], offset=480)
    assert [(b.start_minute, b.end_minute) for b in price.bands] == [
        (1080, 120)
    ] and price.utc_offset_minutes == 480
    async with ScriptedAgent(world, "host-1", price_micros=999):
        sid = await ended_session(world)
        other = await ended_session(world, "s2")
    edge = dt.datetime(2024, 5, 1, 10, 0, tzinfo=UTC)  # 18:00 in UTC+8
    # 17:59:30.4 to 18:00:45.9 local: 30 s before the edge, 45 s after (whole seconds).
    await move(broker.pool, sid, edge - dt.timedelta(seconds=29.6), edge + dt.timedelta(seconds=45.9))
    await move(
        broker.pool, other, edge + dt.timedelta(hours=2, seconds=1), edge + dt.timedelta(hours=2, seconds=11)
    )
    await metering_store.meter(broker.pool, POLICY, now=later())
    day = (edge - dt.timedelta(hours=10), edge + dt.timedelta(hours=14))
    entries = await ledger(world, *day, venue_id="cafe")
    mine = sorted((e for e in entries if e.session_id == sid), key=lambda e: e.start.seconds)
    assert [
        (e.start.ToDatetime(UTC), e.seconds, e.price_micros_per_slot_hour, e.amount_micros) for e in mine
    ] == [
        (edge - dt.timedelta(seconds=30), 30, BASE, 30_000),
        (edge, 45, PEAK, 90_000),
    ]
    assert {e.kind for e in entries} == {billing_pb2.ENTRY_KIND_USAGE}
    assert {e.basis for e in entries} == {billing_pb2.BASIS_ON_DEMAND}
    # The statement adds up to the ledger, for the venue and for the provider.
    for who in ({"venue_id": "cafe"}, {"provider_id": "prov"}):
        st = await world.billing.GetStatement(
            billing_pb2.GetStatementRequest(start=ts(day[0]), end=ts(day[1]), **who)
        )
        assert st.total_micros == sum(e.amount_micros for e in entries) == 30_000 + 90_000 + 20_000
        assert st.usage_micros == st.total_micros and st.credit_micros == 0
        assert st.seconds == 30 + 45 + 10 and st.entries == 3
        assert sorted((ln.price_micros_per_slot_hour, ln.seconds, ln.usage_micros) for ln in st.lines) == [
            (BASE, 30, 30_000),
            (PEAK, 55, 110_000),
        ]
    # A period that ends at the edge holds the first entry only.
    before = await world.billing.GetStatement(
        billing_pb2.GetStatementRequest(venue_id="cafe", start=ts(day[0]), end=ts(edge))
    )
    assert before.total_micros == 30_000
    # Metering again writes nothing twice.
    await metering_store.meter(broker.pool, POLICY, now=later())
    assert len(await ledger(world, *day, venue_id="cafe")) == 3
    # Every entry is in the audit log; the ledger is append-only.
    audited = await broker.pool.fetchval("SELECT count(*) FROM audit_log WHERE action = 'billing.usage'")
    assert audited == 3
    for statement in ("UPDATE ledger SET amount_micros = 0", "DELETE FROM ledger", "TRUNCATE ledger"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await broker.pool.execute(statement)
    # Overlapping entries are refused by the database.
    with pytest.raises(asyncpg.ExclusionViolationError):
        await broker.pool.execute(
            "INSERT INTO ledger (session_id, venue_id, provider_id, host_id, site_id, gpu_class, slots, kind, basis,"
            " price_micros, start_at, end_at, seconds, amount_micros)"
            " SELECT session_id, venue_id, provider_id, host_id, site_id, gpu_class, slots, kind, basis, price_micros,"
            " start_at, end_at, seconds, amount_micros FROM ledger WHERE session_id = $1::uuid LIMIT 1",
            sid,
        )


async def test_a_session_partly_on_a_lease_is_billed_on_demand_for_the_slots_the_lease_does_not_pay(
    world: BrokerClient, broker: Broker
) -> None:
    assert broker.pool is not None
    await set_price(world, [])
    now = dt.datetime.now(UTC)
    # A 2-slot session on a 2-slot host, one of whose slots the cafe leases: placed with 1 slot on the lease.
    async with ScriptedAgent(world, "host-1", slots=2):
        await world.leases.CreateLease(
            lease_pb2.CreateLeaseRequest(
                lease_id="cafe-lease", venue_id="cafe", site_id="site-near", gpu_class="rtx4080", slots=1,
                starts_at=ts(now - dt.timedelta(hours=1)), ends_at=ts(now + dt.timedelta(days=1)),
                price_micros_per_slot_hour=500_000,
            )
        )  # fmt: skip
        started = await world.start_session("cafe", "s1", "demo", slots=2)
        sid = started.session.session_id
        await world.wait_for(sid, S.SESSION_STATE_READY)
        await world.end_session(sid, started.session_token)
    row = await broker.pool.fetchrow(
        "SELECT slots, lease_id, lease_slots FROM sessions WHERE session_id = $1::uuid", sid
    )
    assert tuple(row) == (2, "cafe-lease", 1)
    hour = dt.datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    await move(broker.pool, sid, hour + dt.timedelta(seconds=10), hour + dt.timedelta(seconds=110))
    await metering_store.meter(broker.pool, POLICY, now=later())
    period = (hour, hour + dt.timedelta(hours=1))
    entries = await ledger(world, *period, venue_id="cafe")
    # One slot at the price in force, one as lease (paid by the lease: 0 here), over the same 100 seconds.
    assert sorted(
        (e.basis, e.lease_id, e.slots, e.price_micros_per_slot_hour, e.seconds, e.amount_micros)
        for e in entries
    ) == [
        (billing_pb2.BASIS_ON_DEMAND, "", 1, BASE, 100, 100_000),
        (billing_pb2.BASIS_LEASE, "cafe-lease", 1, 0, 100, 0),
    ]
    # The statement's lines are the ledger's sums, per basis.
    st = await world.billing.GetStatement(
        billing_pb2.GetStatementRequest(venue_id="cafe", start=ts(period[0]), end=ts(period[1]))
    )
    assert sorted(
        (ln.basis, ln.price_micros_per_slot_hour, ln.seconds, ln.slot_seconds, ln.usage_micros)
        for ln in st.lines
    ) == [(billing_pb2.BASIS_ON_DEMAND, BASE, 100, 100, 100_000), (billing_pb2.BASIS_LEASE, 0, 100, 100, 0)]
    assert st.total_micros == sum(e.amount_micros for e in entries) == 100_000
    # Metering again writes nothing twice; the database refuses a second of a part billed twice, and a slot billed
    # on both bases (the whole session on demand while its lease part is billed).
    await metering_store.meter(broker.pool, POLICY, now=later())
    assert len(await ledger(world, *period, venue_id="cafe")) == 2
    insert = (
        "INSERT INTO ledger (session_id, venue_id, provider_id, host_id, site_id, gpu_class, slots, kind, basis,"
        " lease_id, price_micros, start_at, end_at, seconds, amount_micros)"
        " SELECT session_id, venue_id, provider_id, host_id, site_id, gpu_class, $2, kind, basis, lease_id,"
        " price_micros, start_at + $4::interval, end_at + $4::interval, seconds, amount_micros FROM ledger"
        " WHERE session_id = $1::uuid AND basis = $3"
    )
    for basis in ("on_demand", "lease"):
        with pytest.raises(asyncpg.ExclusionViolationError):
            await broker.pool.execute(insert, sid, 1, basis, dt.timedelta(0))
    with pytest.raises(asyncpg.ExclusionViolationError):
        async with broker.pool.acquire() as conn, conn.transaction():
            # Later seconds (test data): both slots on demand, then the lease's slot too would be three.
            await conn.execute(insert, sid, 2, "on_demand", dt.timedelta(hours=1))
            await conn.execute(insert, sid, 1, "lease", dt.timedelta(hours=1))
    assert len(await ledger(world, *period, venue_id="cafe")) == 2


async def test_placement_sees_the_price_in_force_now(world: BrokerClient, broker: Broker) -> None:
    assert broker.pool is not None
    # A band over the whole day: in force whatever the time (a narrower one would depend on when the test runs).
    await set_price(world, [(0, 1440, PEAK)])
    async with ScriptedAgent(world, "host-1", price_micros=999):
        from broker.scheduler import HostCache, PriceCache
        from broker.store import placement as placement_store

        store = placement_store.PostgresSchedulerStore(broker.pool)
        in_force = await PriceCache().in_force(store, 0.0)
        assert [h.price_micros for h in await HostCache().hosts(store, 0.0, in_force)] == [PEAK]
        # The provider sees the same price on its hosts.
        host = await world.fleet.GetHost(fleet_pb2.GetHostRequest(host_id="host-1"))
        assert host.price_micros_per_slot_hour == PEAK
        listed = await world.fleet.ListHosts(fleet_pb2.ListHostsRequest(site_id="site-near"))
        assert [h.price_micros_per_slot_hour for h in listed.hosts] == [PEAK]


async def test_a_price_change_bills_running_sessions_at_the_old_price_up_to_that_second(
    world: BrokerClient, broker: Broker
) -> None:
    assert broker.pool is not None
    await set_price(world, [])
    async with ScriptedAgent(world, "host-1", price_micros=999):
        started = await world.start_session("cafe", "s1", "demo")
        sid = started.session.session_id
        await world.wait_for(sid, S.SESSION_STATE_READY)
        placed = await broker.pool.fetchval("SELECT placed_at FROM sessions WHERE session_id = $1::uuid", sid)
        # Placed two minutes ago (test data), so the old price has whole seconds to bill.
        await broker.pool.execute(
            "UPDATE sessions SET placed_at = placed_at - interval '2 minutes' WHERE session_id = $1::uuid",
            sid,
        )
        changed = await set_price(world, [], offset=0)
        await world.fleet.SetPrice(
            fleet_pb2.SetPriceRequest(
                site_id="site-near", gpu_class="rtx4080", price_micros_per_slot_hour=PEAK
            )
        )
        await asyncio.sleep(1.1)  # a whole second at the new price
        await world.end_session(sid, started.session_token)
    assert changed.price_now_micros_per_slot_hour == BASE
    await metering_store.meter(broker.pool, POLICY, now=later())
    start = placed - dt.timedelta(hours=1)
    entries = sorted(await ledger(world, start, later(), venue_id="cafe"), key=lambda e: e.start.seconds)
    assert entries[0].price_micros_per_slot_hour == BASE
    assert entries[-1].price_micros_per_slot_hour == PEAK
    assert [e.start.ToDatetime(UTC) for e in entries[1:]] == [e.end.ToDatetime(UTC) for e in entries[:-1]]
    assert sum(e.seconds for e in entries) >= 120


async def test_minutes_below_the_promise_are_flagged_and_credited(
    world: BrokerClient, broker: Broker
) -> None:
    assert broker.pool is not None
    await set_price(world, [])
    async with ScriptedAgent(world, "host-1", price_micros=999) as agent:
        started = await world.start_session("cafe", "s1", "demo")
        sid = started.session.session_id
        await world.wait_for(sid, S.SESSION_STATE_READY)
        await agent.link.report(sid, S.SESSION_STATE_STREAMING)
        await world.wait_for(sid, S.SESSION_STATE_STREAMING)
        # The zone promises 30 ms; the agent measures 80 ms.
        for _ in range(3):
            await agent.link.heartbeat(
                sessions=[agent_pb2.SessionStats(session_id=sid, rtt_ms=80, fps_sent=60)]
            )
        async with asyncio.timeout(10):
            while not await broker.pool.fetchval(
                "SELECT count(*) FROM stream_minutes WHERE session_id = $1::uuid", sid
            ):
                await asyncio.sleep(0.05)
        minute = await broker.pool.fetchval(
            "SELECT minute FROM stream_minutes WHERE session_id = $1::uuid", sid
        )
        await world.end_session(sid, started.session_token)
    # The session ran over the whole flagged minute (test data: its times moved around it).
    await move(broker.pool, sid, minute - dt.timedelta(seconds=20), minute + dt.timedelta(seconds=70))
    await metering_store.meter(broker.pool, POLICY, now=later())
    entries = await ledger(
        world, minute - dt.timedelta(hours=1), minute + dt.timedelta(hours=1), venue_id="cafe"
    )
    credits = [e for e in entries if e.kind == billing_pb2.ENTRY_KIND_SLA_CREDIT]
    assert [(c.start.ToDatetime(UTC), c.seconds, c.amount_micros) for c in credits] == [(minute, 60, -60_000)]
    usage = [e for e in entries if e.kind == billing_pb2.ENTRY_KIND_USAGE]
    assert sum(e.seconds for e in usage) == 90 and sum(e.amount_micros for e in usage) == 90_000
    st = await world.billing.GetStatement(
        billing_pb2.GetStatementRequest(
            venue_id="cafe", start=ts(minute - dt.timedelta(hours=1)), end=ts(minute + dt.timedelta(hours=1))
        )
    )
    assert (st.usage_micros, st.credit_micros, st.total_micros, st.credited_seconds) == (
        90_000,
        -60_000,
        30_000,
        60,
    )
    assert st.total_micros == sum(e.amount_micros for e in entries)
    assert await broker.pool.fetchval("SELECT count(*) FROM audit_log WHERE action = 'billing.credit'") == 1


async def test_the_leaders_duty_meters_ended_sessions(world: BrokerClient, broker: Broker) -> None:
    assert broker.pool is not None
    async with ScriptedAgent(world, "host-1"):
        started = await world.start_session("cafe", "s1", "demo")
        sid = started.session.session_id
        await world.wait_for(sid, S.SESSION_STATE_READY)
        await asyncio.sleep(2.1)  # so that it holds its slot for whole seconds
        await world.end_session(sid, started.session_token)
    async with asyncio.timeout(20):
        while not await broker.pool.fetchval(
            "SELECT done FROM metering_cursor WHERE session_id = $1::uuid", sid
        ):
            await asyncio.sleep(0.05)
    held = await broker.pool.fetchval(
        "SELECT extract(epoch FROM date_trunc('second', ended_at) - date_trunc('second', placed_at))::integer"
        " FROM sessions WHERE session_id = $1::uuid",
        sid,
    )
    assert held >= 2
    assert (
        await broker.pool.fetchval("SELECT sum(seconds) FROM ledger WHERE session_id = $1::uuid", sid) == held
    )


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (billing_pb2.GetStatementRequest(start=ts(dt.datetime(2024, 1, 1, tzinfo=UTC))), "venue_id"),
        (billing_pb2.GetStatementRequest(venue_id="cafe", provider_id="prov"), "provider_id"),
        (billing_pb2.GetStatementRequest(venue_id="cafe"), "start"),
        (
            billing_pb2.GetStatementRequest(venue_id="cafe", start=ts(dt.datetime(2024, 1, 1, tzinfo=UTC))),
            "end",
        ),
        (
            billing_pb2.GetStatementRequest(
                venue_id="cafe",
                start=ts(dt.datetime(2024, 1, 2, tzinfo=UTC)),
                end=ts(dt.datetime(2024, 1, 1, tzinfo=UTC)),
            ),
            "end",
        ),
        (
            billing_pb2.GetStatementRequest(venue_id="bad id", start=ts(dt.datetime(2024, 1, 1, tzinfo=UTC))),
            "venue_id",
        ),
    ],
)
async def test_bad_statement_requests_name_the_field(
    world: BrokerClient, request_: billing_pb2.GetStatementRequest, field: str
) -> None:
    with pytest.raises(aio.AioRpcError) as bad:
        await world.billing.GetStatement(request_)
    assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (bad.value.details() or "").startswith(f"{field}:")


async def test_bad_prices_name_the_field_and_write_nothing(world: BrokerClient, broker: Broker) -> None:
    assert broker.pool is not None
    for bands, offset, field in (
        ([(600, 700, 1), (650, 800, 1)], 0, "bands[1]"),
        ([(600, 600, 1)], 0, "bands[0].end_minute"),
        ([(2000, 10, 1)], 0, "bands[0].start_minute"),
        ([(600, 700, -5)], 0, "bands[0].price_micros_per_slot_hour"),
        ([], 900, "utc_offset_minutes"),
    ):
        with pytest.raises(aio.AioRpcError) as bad:
            await set_price(world, bands, offset)
        assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert (bad.value.details() or "").startswith(f"{field}:"), bad.value.details()
    assert await broker.pool.fetchval("SELECT count(*) FROM prices") == 0
    with pytest.raises(aio.AioRpcError) as unknown:
        await world.billing.GetStatement(
            billing_pb2.GetStatementRequest(
                venue_id="nowhere",
                start=ts(dt.datetime(2024, 1, 1, tzinfo=UTC)),
                end=ts(dt.datetime(2024, 1, 2, tzinfo=UTC)),
            )
        )
    assert unknown.value.code() is grpc.StatusCode.NOT_FOUND


async def test_a_price_keeps_its_currency_and_a_venue_its_time_zone(world: BrokerClient) -> None:
    # Unsaid, a price is in CNY and a venue keeps UTC's days: what every amount and day meant before either existed.
    price = await set_price(world, [])
    assert price.currency == "CNY"
    usd = await world.fleet.SetPrice(
        fleet_pb2.SetPriceRequest(
            site_id="site-near", gpu_class="rtx4080", price_micros_per_slot_hour=BASE, currency="USD"
        )
    )
    assert usd.currency == "USD"
    venue = await world.venues.GetVenue(venue_pb2.GetVenueRequest(venue_id="cafe"))
    assert venue.time_zone == "UTC"
    hotel = await world.venues.CreateVenue(
        venue_pb2.CreateVenueRequest(venue_id="hotel", name="Hotel", time_zone="Asia/Shanghai")
    )
    assert hotel.time_zone == "Asia/Shanghai"
    again = await world.venues.GetVenue(venue_pb2.GetVenueRequest(venue_id="hotel"))
    assert again.time_zone == "Asia/Shanghai"
