"""The consoles' money (issue 17): amounts in the price's currency, never added across currencies; "today" and a
statement's days in the venue's time zone; today's cost counting a session that ended before the metering duty
wrote it, so it agrees with the statement before and after (broker.console.business over a real broker).

As in test_billing.py, the duty stays out of the way and the test meters when it chooses; sessions are real, then
moved in time (test data) where a time of day matters.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

import pytest
from cloudseat.client import BrokerClient
from cloudseat.v1 import billing_pb2, common_pb2, fleet_pb2
from google.protobuf import timestamp_pb2

from broker import metering
from broker.config import BrokerConfig
from broker.console import business
from broker.server import Broker
from broker.store import metering as metering_store
from tests.integration.conftest import FAST
from tests.integration.scripted_agent import ScriptedAgent

S = common_pb2.SessionState
UTC = dt.UTC
POLICY = metering.Policy(interval_s=3600, sla_settle_s=0)
# 36 a slot-hour, 0.01 (10,000 micros) a second; a price far above what the demo hosts declare would leave sessions
# waiting (placement prefers staying pending to an absurd price).
PRICE = 36_000_000
PER_S = 10_000


@pytest.fixture
def broker_config(db_url: str) -> BrokerConfig:
    return dataclasses.replace(FAST, database_url=db_url, metering=POLICY)


def ts(at: dt.datetime) -> timestamp_pb2.Timestamp:
    t = timestamp_pb2.Timestamp()
    t.FromDatetime(at)
    return t


async def price(world: BrokerClient, site: str, currency: str) -> None:
    await world.fleet.SetPrice(
        fleet_pb2.SetPriceRequest(
            site_id=site, gpu_class="rtx4080", price_micros_per_slot_hour=PRICE, currency=currency
        )
    )


async def played(world: BrokerClient, seat: str, *, for_s: float = 0.0) -> str:
    started = await world.start_session("cafe", seat, "demo")
    sid = started.session.session_id
    await world.wait_for(sid, S.SESSION_STATE_READY)
    await asyncio.sleep(for_s)
    await world.end_session(sid, started.session_token)
    return sid


def zone_past_one_am() -> tuple[str, dt.datetime]:
    """A time zone whose day began over an hour ago, and that midnight (so sessions can sit either side of it)."""
    now = dt.datetime.now(UTC)
    for name in ("Asia/Shanghai", "America/New_York", "Europe/Berlin", "Pacific/Auckland", "UTC"):
        midnight, _ = metering.local_day(metering.local_date(now, name), name)
        if now - midnight > dt.timedelta(hours=1):
            return name, midnight
    raise AssertionError("one of five zones is past 01:00")  # pragma: no cover


async def test_money_is_in_its_currency_today_is_the_venues_and_an_ended_session_counts_at_once(
    world: BrokerClient, broker: Broker
) -> None:
    pool = broker.pool
    assert pool is not None
    # site-near bills in USD, site-far in CNY (SetPrice's default): one host at a time (the first drained after its
    # session), so placement has one choice.
    await price(world, "site-near", "USD")
    await price(world, "site-far", "")
    async with ScriptedAgent(world, "host-1", site_id="site-near"):
        before_midnight = await played(world, "s1")
        await world.fleet.DrainHost(fleet_pb2.DrainHostRequest(host_id="host-1"))
    async with ScriptedAgent(world, "host-2", site_id="site-far"):
        after_midnight = await played(world, "s2")
        await played(world, "s3", for_s=1.1)  # ends now, not moved: the duty has not metered it
    zone, midnight = zone_past_one_am()
    await pool.execute("UPDATE venues SET time_zone = $1 WHERE venue_id = 'cafe'", zone)
    for sid, at in ((before_midnight, midnight - dt.timedelta(seconds=120)), (after_midnight, midnight)):
        await pool.execute(
            "UPDATE sessions SET placed_at = $2, ended_at = $3 WHERE session_id = $1::uuid",
            sid, at, at + dt.timedelta(seconds=60),
        )  # fmt: skip

    # Nothing metered yet: today's cost holds what the ended sessions ran up in the venue's today (the one after its
    # midnight and the one just ended, in CNY), not the USD one from before its midnight.
    before = await business.cost_today(pool, "cafe")
    assert before["time_zone"] == zone and before["day"] == metering.local_date(dt.datetime.now(UTC), zone).isoformat()
    ((currency, billed, running, total),) = [
        (t["currency"], t["billed_micros"], t["running_micros"], t["total_micros"]) for t in before["totals"]
    ]
    assert currency == "CNY" and billed == 0 and running == total >= 61 * PER_S
    assert before["summary"]["total"].endswith(" CNY")

    # Metered: the same total, now billed; and the statement of the venue's today says so too.
    await metering_store.meter(pool, POLICY)
    after = await business.cost_today(pool, "cafe")
    assert after["totals"] == [
        {"currency": "CNY", "billed_micros": total, "running_micros": 0, "total_micros": total}
    ]
    today = dt.date.fromisoformat(after["day"])
    statement = await business.venue_statement(pool, "cafe", today, today + dt.timedelta(days=1))
    assert [(t["currency"], t["total_micros"]) for t in statement["totals"]] == [("CNY", total)]
    assert statement["summary"]["period"].endswith(f"({zone})")

    # Yesterday and today together hold both currencies, each totalled apart, never summed into one figure.
    both = await business.venue_statement(pool, "cafe", today - dt.timedelta(days=1), today + dt.timedelta(days=1))
    assert [(t["currency"], t["total_micros"]) for t in both["totals"]] == [("CNY", total), ("USD", 60 * PER_S)]
    assert both["summary"]["total"] == f"{total / 1e6:,.2f} CNY" and both["summary"]["total (USD)"] == "0.60 USD"
    assert {row["currency"] for row in both["rows"]} == {"CNY", "USD"}

    # The same over gRPC: a total per currency, no sum across them, and each line and ledger row with its currency.
    lo, _ = metering.local_day(today - dt.timedelta(days=1), zone)
    _, hi = metering.local_day(today, zone)
    span = {"start": ts(lo), "end": ts(hi)}
    st = await world.billing.GetStatement(billing_pb2.GetStatementRequest(venue_id="cafe", **span))
    assert [(t.currency, t.total_micros) for t in st.totals] == [("CNY", total), ("USD", 60 * PER_S)]
    assert (st.currency, st.total_micros) == ("", 0)
    assert sorted(line.currency for line in st.lines) == ["CNY", "USD"]
    page = await world.billing.ListLedger(billing_pb2.ListLedgerRequest(venue_id="cafe", **span))
    assert {e.currency for e in page.entries} == {"CNY", "USD"}
    one = await world.billing.GetStatement(
        billing_pb2.GetStatementRequest(venue_id="cafe", start=ts(midnight), end=ts(hi))
    )
    assert (one.currency, one.total_micros, len(one.totals)) == ("CNY", total, 1)
