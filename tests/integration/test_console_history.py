"""The consoles' history (issue 17): the placement leader samples each minute into compact rows, once per region,
and forgets them after 48 hours; a minute's row holds the queue, the waits, the sessions served and within their
cap, and each site's use (broker.history_duty, broker.store.history, migration 0018), on a real broker and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

import asyncpg
import pytest
from cloudseat.client import BrokerClient
from cloudseat.v1 import common_pb2

from broker import history
from broker.server import Broker
from broker.store import history as history_store
from tests.integration.conftest import FAST
from tests.integration.scripted_agent import ScriptedAgent

S = common_pb2.SessionState
UTC = dt.UTC


async def test_the_leader_samples_the_minute_once_and_forgets_rows_past_48_hours(db_url: str) -> None:
    # A region written before the broker starts, and a row from three days ago (test data) for the retention.
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("INSERT INTO providers (provider_id, name) VALUES ('prov', 'Prov')")
        await conn.execute("INSERT INTO sites (site_id, provider_id, name) VALUES ('near', 'prov', 'Near')")
        await conn.execute("INSERT INTO venues (venue_id, name) VALUES ('cafe', 'Cafe')")
        await conn.execute(
            "INSERT INTO zones (venue_id, zone_id, tier, latency_cap_ms) VALUES ('cafe', 'std', '720P60', 30)"
        )
        old = dt.datetime.now(UTC).replace(second=0, microsecond=0) - dt.timedelta(days=3)
        await conn.execute(
            "INSERT INTO history_site_minutes VALUES ($1, 'near', 'prov', 1, 4, 2)", old
        )
        # The rows' constraints: a whole minute, no more slots used than there are.
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("INSERT INTO history_site_minutes VALUES ($1, 'x', 'prov', 1, 4, 5)", old)
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO history_zone_minutes VALUES ($1, 'cafe', 'std', 0, 0, 0, 0, 1, 2)", old
            )
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO history_site_minutes VALUES ($1, 'y', 'prov', 1, 4, 2)", old + dt.timedelta(seconds=7)
            )
    finally:
        await conn.close()

    broker = Broker(dataclasses.replace(FAST, database_url=db_url))
    await broker.start()
    try:
        pool = broker.pool
        assert pool is not None
        # The leader samples the minute that has just ended as soon as it leads.
        async with asyncio.timeout(20):
            while not await pool.fetchval("SELECT count(*) FROM history_zone_minutes"):
                await asyncio.sleep(0.1)
        sites = await pool.fetch("SELECT * FROM history_site_minutes ORDER BY minute")
        zones = await pool.fetch("SELECT * FROM history_zone_minutes")
        assert [(r["site_id"], r["hosts_online"], r["slots"]) for r in sites] == [("near", 0, 0)]  # the old one gone
        assert sites[0]["minute"] > old + dt.timedelta(days=2)
        assert [(r["venue_id"], r["zone_id"], r["queued"], r["serving"]) for r in zones] == [("cafe", "std", 0, 0)]
        # The same minute sampled again (a second leader, a restart) is written once.
        minute = sites[0]["minute"]
        assert await history_store.sample(pool, minute, minute + history.MINUTE) == (0, 0)
        assert await pool.fetchval("SELECT count(*) FROM history_site_minutes") == 1
    finally:
        await broker.stop(grace_s=1.0)


async def test_a_minute_holds_the_queue_the_waits_the_sessions_and_each_sites_use(
    world: BrokerClient, broker: Broker
) -> None:
    pool = broker.pool
    assert pool is not None
    async with ScriptedAgent(world, "host-1", site_id="site-near", slots=1):
        served = await world.start_session("cafe", "s1", "demo")
        await world.wait_for(served.session.session_id, S.SESSION_STATE_READY)
        waiting = await world.start_session("cafe", "s2", "demo")  # one slot: it queues
        assert waiting.session.state == S.SESSION_STATE_PENDING
        await asyncio.sleep(0.3)
        now = await history_store.clock(pool)
        minute = now.replace(second=0, microsecond=0)
        # The minute under way, as the sampler will write it once it ends (the served session was placed in it,
        # unless the clock turned a minute since: then its placement is the minute before's).
        placed_at = await pool.fetchval(
            "SELECT placed_at FROM sessions WHERE session_id = $1::uuid", served.session.session_id
        )
        placed_in = placed_at.replace(second=0, microsecond=0)
        await history_store.sample(pool, minute, now)
        if placed_in != minute:
            await history_store.sample(pool, placed_in, minute)
    zone = await pool.fetchrow("SELECT * FROM history_zone_minutes WHERE minute = $1", minute)
    assert (zone["queued"], zone["serving"], zone["within_cap"]) == (1, 1, 1)
    assert zone["oldest_wait_s"] >= 0.3
    placed = await pool.fetchrow("SELECT * FROM history_zone_minutes WHERE minute = $1", placed_in)
    assert placed["placed"] == 1 and 0 <= placed["wait_s_sum"] < 10
    sites = {r["site_id"]: r for r in await pool.fetch("SELECT * FROM history_site_minutes WHERE minute = $1", minute)}
    assert (sites["site-near"]["hosts_online"], sites["site-near"]["slots"], sites["site-near"]["slots_used"]) == (
        1, 1, 1,
    )  # fmt: skip
    assert sites["site-far"]["slots"] == 0

    # Read back as the charts read it: this minute's bucket shows the queue, the session and full service.
    span = history.Span.last(now)
    figures = history.zone_series(span, await history_store.zones(pool, "cafe", span))
    last = {name: {s["name"]: [p for p in s["points"] if p[1] is not None] for s in series}
            for name, series in figures.items()}  # fmt: skip
    assert last["service_level"]["std"][-1][1] == 1.0 and last["sessions"]["std"][-1][1] >= 1.0
    assert last["queue_length"]["std"][-1][1] >= 1.0
    use = history.site_series(span, await history_store.sites(pool, "prov", span))
    assert {s["name"] for s in use["utilisation"]} == {"site-near", "site-far"}
    assert await history_store.sites(pool, "nobody", span) == []
