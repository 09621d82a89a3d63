"""Leases end to end: a provider writes a lease for a venue; placement uses it first and keeps it for that venue; use
per hour; a storm of concurrent requests never oversells; bad requests name the field and write nothing.

(Another tenant's probes of every LeaseService RPC are in test_security.py, with authentication on.)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from cloudseat.client import BrokerClient
from cloudseat.v1 import common_pb2, lease_pb2, venue_pb2
from google.protobuf import timestamp_pb2
from grpc import aio

from broker import leasing
from tests.integration.scripted_agent import ScriptedAgent

S = common_pb2.SessionState
UTC = dt.UTC
CLASS = "rtx4080"  # what ScriptedAgent registers
FAILED = grpc.StatusCode.FAILED_PRECONDITION
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def ts(t: dt.datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(t)
    return out


def hour_now() -> dt.datetime:
    return dt.datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def request(
    lease_id: str, slots: int, start: dt.datetime, end: dt.datetime, **kw: object
) -> lease_pb2.CreateLeaseRequest:
    fields: dict[str, object] = {
        "lease_id": lease_id,
        "venue_id": "cafe",
        "gpu_class": CLASS,
        "slots": slots,
        "starts_at": ts(start),
        "ends_at": ts(end),
        "price_micros_per_slot_hour": 500_000,
        "site_id": "site-near",
    }
    fields.update(kw)
    return lease_pb2.CreateLeaseRequest(**fields)  # type: ignore[arg-type]


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(db_url)
    yield conn
    await conn.close()


async def _code(call: object) -> tuple[grpc.StatusCode, str]:
    try:
        await call  # type: ignore[misc]
    except aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


async def test_create_list_cancel_and_audit(world: BrokerClient, db: asyncpg.Connection) -> None:
    async with ScriptedAgent(world, "h1", slots=2), ScriptedAgent(world, "h2", slots=2):
        start = hour_now() - dt.timedelta(hours=1)
        made = await world.leases.CreateLease(
            request("l1", 2, start, start + dt.timedelta(days=1), note="evening deal")
        )
        assert made.state == lease_pb2.LEASE_STATE_ACTIVE and made.in_force
        assert (made.provider_id, made.site_id, made.slots, made.time_zone) == ("prov", "site-near", 2, "UTC")
        # Every evening 18:00-02:00 Shanghai time, from tomorrow: overlaps l1 for part of its term.
        evening = await world.leases.CreateLease(
            request(
                "l2", 2, start + dt.timedelta(hours=2), start + dt.timedelta(days=7),
                daily=lease_pb2.DailyWindow(start_minute=18 * 60, duration_minutes=8 * 60), time_zone="Asia/Shanghai",
            )
        )  # fmt: skip
        assert evening.daily.duration_minutes == 480
        # Full at site-near while l1 and l2 overlap: one more slot is refused, naming the field.
        code, details = await _code(
            world.leases.CreateLease(request("l3", 1, start, start + dt.timedelta(days=2)))
        )
        assert code is FAILED and details.startswith("slots:"), details
        assert code, details
        ids = [
            x.lease_id
            for x in (await world.leases.ListLeases(lease_pb2.ListLeasesRequest(venue_id="cafe"))).leases
        ]
        assert ids == ["l1", "l2"]
        by_provider = await world.leases.ListLeases(lease_pb2.ListLeasesRequest(provider_id="prov"))
        assert len(by_provider.leases) == 2

        cancelled = await world.leases.CancelLease(
            lease_pb2.CancelLeaseRequest(lease_id="l1", reason="closing")
        )
        assert cancelled.state == lease_pb2.LEASE_STATE_CANCELLED and not cancelled.in_force
        again = await world.leases.CancelLease(lease_pb2.CancelLeaseRequest(lease_id="l1"))
        assert again.cancelled_at == cancelled.cancelled_at  # a no-op
        active = await world.leases.ListLeases(lease_pb2.ListLeasesRequest(venue_id="cafe", active_only=True))
        assert [x.lease_id for x in active.leases] == ["l2"]
        # l1's slots from now on are free again.
        later = hour_now() + dt.timedelta(hours=1)
        await world.leases.CreateLease(request("l3", 2, later, later + dt.timedelta(days=2)))

    actions = [
        (r["action"], r["target"])
        for r in await db.fetch(
            "SELECT action, target FROM audit_log WHERE action LIKE 'lease.%' ORDER BY seq"
        )
    ]
    assert actions == [
        ("lease.create", "lease:l1"),
        ("lease.create", "lease:l2"),
        ("lease.cancel", "lease:l1"),
        ("lease.create", "lease:l3"),
    ]


async def _rival(client: BrokerClient) -> None:
    await client.venues.CreateVenue(venue_pb2.CreateVenueRequest(venue_id="rival", name="Rival"))
    await client.venues.PutZone(
        venue_pb2.PutZoneRequest(
            venue_id="rival", zone_id="std", tier=common_pb2.TIER_720P60, latency_cap_ms=30
        )
    )
    for seat in ("r1", "r2"):
        await client.venues.PutSeat(venue_pb2.PutSeatRequest(venue_id="rival", seat_id=seat, zone_id="std"))
    await client.venues.ReportLatency(
        venue_pb2.ReportLatencyRequest(
            venue_id="rival", samples=[venue_pb2.LatencySample(site_id="site-near", rtt_ms=5)]
        )
    )


async def _pending_reason(client: BrokerClient, session_id: str) -> int:
    async with asyncio.timeout(10):
        while True:
            from cloudseat.v1 import session_pb2

            got = (
                await client.sessions.GetSession(session_pb2.GetSessionRequest(session_id=session_id))
            ).session
            if got.pending_reason:
                assert got.state == S.SESSION_STATE_PENDING
                return got.pending_reason
            await asyncio.sleep(0.05)


async def test_placement_uses_the_lease_first_and_keeps_it_for_the_venue(
    world: BrokerClient, db: asyncpg.Connection
) -> None:
    await _rival(world)
    # The cafe measures site-far (cheap) almost as near as site-near (dear, but leased).
    await world.venues.ReportLatency(
        venue_pb2.ReportLatencyRequest(
            venue_id="cafe", samples=[venue_pb2.LatencySample(site_id="site-far", rtt_ms=6)]
        )
    )
    async with (
        ScriptedAgent(world, "near", site_id="site-near", slots=2, price_micros=3_000_000),
        ScriptedAgent(world, "far", site_id="site-far", slots=2, price_micros=1),
    ):
        start = hour_now()
        await world.leases.CreateLease(request("cafe-lease", 1, start, start + dt.timedelta(days=1)))
        # The rival takes what is open at site-near (one slot); the leased one is kept for the cafe.
        r1 = await world.start_session("rival", "r1", "demo")
        placed = await world.wait_for(r1.session.session_id, S.SESSION_STATE_PLACED, S.SESSION_STATE_READY)
        assert placed.host_id == "near"
        r2 = await world.start_session("rival", "r2", "demo")
        assert (
            await _pending_reason(world, r2.session.session_id)
            == common_pb2.PENDING_REASON_NO_CAPACITY_WITHIN_CAP
        )
        # The cafe's session goes on its leased slot, though site-far is far cheaper on demand.
        mine = await world.start_session("cafe", "s1", "demo")
        got = await world.wait_for(mine.session.session_id, S.SESSION_STATE_READY)
        assert got.host_id == "near"
        row = await db.fetchrow(
            "SELECT lease_id, lease_slots FROM sessions WHERE session_id = $1::uuid", mine.session.session_id
        )
        assert (row["lease_id"], row["lease_slots"]) == ("cafe-lease", 1)
        # The lease is used up: the cafe's next session goes on demand (site-far, cheap), named so.
        other = await world.start_session("cafe", "s2", "demo")
        got2 = await world.wait_for(other.session.session_id, S.SESSION_STATE_READY)
        assert got2.host_id == "far"
        row2 = await db.fetchrow(
            "SELECT lease_id, lease_slots FROM sessions WHERE session_id = $1::uuid", got2.session_id
        )
        assert (row2["lease_id"], row2["lease_slots"]) == (None, 0)
        await world.end_session(mine.session.session_id, mine.session_token)

        # Use per hour: 1 slot leased for each whole hour of the period; the session's time used in this hour.
        period = (start - dt.timedelta(hours=1), start + dt.timedelta(hours=2))
        use = await world.leases.GetLeaseUse(
            lease_pb2.GetLeaseUseRequest(lease_id="cafe-lease", start=ts(period[0]), end=ts(period[1]))
        )
        assert [h.leased_slot_seconds for h in use.hours] == [0, 3600, 3600]
        assert [h.start.ToDatetime(UTC) for h in use.hours] == [
            period[0] + dt.timedelta(hours=i) for i in range(3)
        ]
        assert use.hours[0].used_slot_seconds == 0 and use.hours[2].used_slot_seconds == 0
        assert 0 <= use.hours[1].used_slot_seconds <= 3600
        assert use.leased_slot_seconds == 7200
        venue_use = await world.leases.GetLeaseUse(
            lease_pb2.GetLeaseUseRequest(
                venue_id="cafe", start=ts(period[0]), end=ts(period[1]), time_zone="Asia/Shanghai"
            )
        )
        assert venue_use.leased_slot_seconds == 7200
        assert venue_use.used_slot_seconds == use.used_slot_seconds
        # Cancelled, the lease no longer holds the slot back: the rival's waiting session gets it.
        await world.leases.CancelLease(lease_pb2.CancelLeaseRequest(lease_id="cafe-lease"))
        placed2 = await world.wait_for(r2.session.session_id, S.SESSION_STATE_PLACED, S.SESSION_STATE_READY)
        assert placed2.host_id == "near"


async def test_a_storm_of_concurrent_lease_requests_never_oversells(
    world: BrokerClient, db: asyncpg.Connection
) -> None:
    async with (
        ScriptedAgent(world, "n1", site_id="site-near", slots=3),
        ScriptedAgent(world, "n2", site_id="site-near", slots=1),
        ScriptedAgent(world, "f1", site_id="site-far", slots=2),
    ):
        capacity = {"site-near": 4, "site-far": 2}
        base = hour_now()
        # The same window, one slot each: exactly the site's slots win.
        same = [request(f"same-{i}", 1, base, base + dt.timedelta(hours=6)) for i in range(12)]
        codes = await asyncio.gather(*(_code(world.leases.CreateLease(r)) for r in same))
        assert sum(c is grpc.StatusCode.OK for c, _ in codes) == 4, codes
        assert {c for c, _ in codes} == {grpc.StatusCode.OK, FAILED}

        # Random windows (one-off and every evening), sites and latency-bound, later in the week.
        rng = random.Random(8)
        storm = []
        for i in range(40):
            start = base + dt.timedelta(days=1, hours=rng.randrange(0, 72))
            kw: dict[str, object] = {}
            if rng.random() < 0.4:
                kw["daily"] = lease_pb2.DailyWindow(
                    start_minute=rng.choice([18 * 60, 20 * 60, 23 * 60]),
                    duration_minutes=rng.choice([120, 480]),
                )
                kw["time_zone"] = rng.choice(["UTC", "Asia/Shanghai"])
            if rng.random() < 0.3:
                kw.update(site_id="", max_latency_ms=30, provider_id="prov")
            else:
                kw["site_id"] = rng.choice(["site-near", "site-far"])
            hours = rng.randint(24 if "daily" in kw else 1, 60)  # a daily lease's term holds a window
            storm.append(
                request(f"storm-{i}", rng.randint(1, 3), start, start + dt.timedelta(hours=hours), **kw)
            )
        codes = await asyncio.gather(*(_code(world.leases.CreateLease(r)) for r in storm))
        assert {c for c, _ in codes} <= {grpc.StatusCode.OK, FAILED}, codes
        won = sum(c is grpc.StatusCode.OK for c, _ in codes)
        assert 0 < won < len(storm), codes

    # What the database holds never exceeds a site's slots at any instant: by the leases' own terms...
    leases = (await world.leases.ListLeases(lease_pb2.ListLeasesRequest())).leases
    for site, slots in capacity.items():
        held = [
            (w, x.slots)
            for x in leases
            if x.site_id == site
            for w in leasing.windows(
                x.starts_at.ToDatetime(UTC),
                x.ends_at.ToDatetime(UTC),
                leasing.Daily(x.daily.start_minute, x.daily.duration_minutes)
                if x.HasField("daily")
                else None,
                x.time_zone,
            )
        ]
        assert leasing.peak_load(held) <= slots, site
    # ... and by the stored windows.
    rows = await db.fetch(
        "SELECT site_id, lower(during) AS lo, upper(during) AS hi, slots FROM lease_windows"
    )
    for site, slots in capacity.items():
        assert (
            leasing.peak_load([((r["lo"], r["hi"]), r["slots"]) for r in rows if r["site_id"] == site])
            <= slots
        )
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE action = 'lease.create'") == len(leases)


async def test_bad_requests_name_the_field_and_write_nothing(
    world: BrokerClient, db: asyncpg.Connection
) -> None:
    async with ScriptedAgent(world, "h1", slots=2):
        start = hour_now()
        end = start + dt.timedelta(days=1)
        no_start = lease_pb2.CreateLeaseRequest(
            lease_id="x", venue_id="v", gpu_class="c", slots=1, site_id="s"
        )
        cases = [
            (request("", 1, start, end), "lease_id"),
            (request("x", 0, start, end), "slots"),
            (request("x", 100_001, start, end), "slots"),
            (request("x", 1, start, end, site_id=""), "site_id"),
            (request("x", 1, start, end, max_latency_ms=20), "site_id"),
            (request("x", 1, start, end, site_id="", max_latency_ms=501, provider_id="prov"), "max_latency_ms"),
            (request("x", 1, start, end, site_id="", max_latency_ms=20), "provider_id"),
            (request("x", 1, end, start), "ends_at"),
            (request("x", 1, start, start + dt.timedelta(days=400)), "ends_at"),
            (request("x", 1, start - dt.timedelta(days=3), start - dt.timedelta(days=2)), "ends_at"),
            (no_start, "starts_at"),
            (request("x", 1, start, end, daily=lease_pb2.DailyWindow(start_minute=1440)), "daily.start_minute"),
            (request("x", 1, start, end, daily=lease_pb2.DailyWindow(start_minute=0)), "daily.duration_minutes"),
            (request("x", 1, start, end, time_zone="Mars/Olympus"), "time_zone"),
            (request("x", 1, start, end, time_zone="../../etc/passwd"), "time_zone"),
            (request("x", 1, start, end, price_micros_per_slot_hour=-1), "price_micros_per_slot_hour"),
            (request("x", 1, start, end, note="a\x00b"), "note"),
            (request("x", 1, start, end, provider_id="other"), "provider_id"),
        ]  # fmt: skip
        for req, field in cases:
            code, details = await _code(world.leases.CreateLease(req))
            assert code is grpc.StatusCode.INVALID_ARGUMENT, (field, code, details)
            assert details.startswith(f"{field}:"), (field, details)
        for req, code_want, field in [
            (request("x", 1, start, end, venue_id="nowhere"), NOT_FOUND, "venue_id"),
            (request("x", 1, start, end, site_id="nowhere"), NOT_FOUND, "site_id"),
            (request("x", 3, start, end), FAILED, "slots"),
            (request("x", 1, start, end, gpu_class="a100"), FAILED, "slots"),
            (request("x", 1, start, end, site_id="", max_latency_ms=1, provider_id="prov"), FAILED, "max_latency_ms"),
        ]:  # fmt: skip
            code, details = await _code(world.leases.CreateLease(req))
            assert (code, details.split(":")[0]) == (code_want, field), details
        too_long = lease_pb2.GetLeaseUseRequest(
            venue_id="cafe", start=ts(start), end=ts(start + dt.timedelta(days=40))
        )
        for call, field in [
            (world.leases.CancelLease(lease_pb2.CancelLeaseRequest(lease_id="")), "lease_id"),
            (world.leases.CancelLease(lease_pb2.CancelLeaseRequest(lease_id="x", reason="\x01")), "reason"),
            (world.leases.GetLeaseUse(lease_pb2.GetLeaseUseRequest(start=ts(start), end=ts(end))), "lease_id"),
            (world.leases.GetLeaseUse(lease_pb2.GetLeaseUseRequest(lease_id="x", end=ts(end))), "start"),
            (world.leases.GetLeaseUse(lease_pb2.GetLeaseUseRequest(lease_id="x", start=ts(end), end=ts(start))), "end"),
            (world.leases.GetLeaseUse(too_long), "end"),
            (world.leases.ListLeases(lease_pb2.ListLeasesRequest(venue_id="bad id")), "venue_id"),
        ]:  # fmt: skip
            code, details = await _code(call)
            assert code is grpc.StatusCode.INVALID_ARGUMENT and details.startswith(f"{field}:"), (
                field,
                details,
            )
        code, details = await _code(world.leases.CancelLease(lease_pb2.CancelLeaseRequest(lease_id="nope")))
        assert code is grpc.StatusCode.NOT_FOUND and details.startswith("lease_id:")
    assert await db.fetchval("SELECT count(*) FROM leases") == 0
    assert await db.fetchval("SELECT count(*) FROM lease_windows") == 0
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE action LIKE 'lease.%'") == 0
