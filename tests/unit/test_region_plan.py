"""Planning a region over what the database holds: create, change or leave per object; refusals name the path."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from cloudseat.errors import InvalidArgument

from broker.region import cli, model
from broker.region.plan import GameRow, Held, LeaseRow, PriceRow, SiteRow, VenueRow, Verdict, plan

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "region.yaml"
T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def region() -> model.Region:
    return cli.read(EXAMPLE)


def held_as(region: model.Region) -> Held:
    """What the database holds after `region` was applied (its lease made at T0)."""
    venue = region.venues[0]
    lease = venue.leases[0]
    return Held(
        providers={p.provider_id: p.name for p in region.providers},
        sites={s.site_id: SiteRow(s.provider_id, s.place, s.region) for s in region.sites},
        prices={
            (s.site_id, p.gpu_class): PriceRow(p.base_micros, p.bands, p.utc_offset_minutes, p.currency)
            for s in region.sites
            for p in s.prices
        },
        enrolled_hosts={h: (s.provider_id, s.site_id) for s in region.sites for h in s.hosts},
        enrolled_prefixes={h: (s.provider_id, s.site_id) for s in region.sites for h in s.host_prefixes},
        games={g.game_id: GameRow(g.name, g.version or "1", g.image_size_bytes, g.image_ref) for g in region.games},
        venues={venue.venue_id: VenueRow(venue.name, venue.time_zone)},
        zones={(venue.venue_id, z.zone_id): (z.tier.value, z.cap_ms, z.playout or "AUTO") for z in venue.zones},
        seats={(venue.venue_id, s.seat_id): s.zone_id for s in venue.seats},
        latencies={(venue.venue_id, lat.site_id): lat.rtt_ms for lat in venue.latencies},
        leases={
            lease.lease_id: LeaseRow(
                venue.venue_id, lease.site_id, lease.gpu_class, lease.slots, T0, T0 + dt.timedelta(days=90),
                (18 * 60, 8 * 60), lease.time_zone, lease.price_micros, lease.note, cancelled=False,
            )
        },
    )  # fmt: skip


def test_over_an_empty_database_everything_is_created_each_after_what_it_refers_to(
    region: model.Region,
) -> None:
    steps = plan(region, Held())
    assert {s.verdict for s in steps} == {Verdict.CREATE}
    kinds = [s.kind for s in steps]
    order = ["provider", "site", "enrolment", "price", "game", "venue", "zone", "seat", "latency", "lease"]
    assert sorted(set(kinds), key=order.index) == order
    assert kinds == sorted(kinds, key=order.index)  # a venue's rows follow the venue; one venue here
    assert len([k for k in kinds if k == "seat"]) == 8
    assert next(s for s in steps if s.kind == "lease").extra["provider_id"] == "sh-edge"


def test_applied_again_nothing_changes(region: model.Region) -> None:
    steps = plan(region, held_as(region))
    assert [s for s in steps if s.verdict is not Verdict.SAME] == []


def test_what_changes_is_said_field_by_field(region: model.Region) -> None:
    held = held_as(region)
    held = dataclasses.replace(
        held,
        providers={**held.providers, "sh-edge": "Old name"},
        sites={**held.sites, "hz-xihu": SiteRow("hz-cloud", "Xihu", "cn-south")},
        prices={**held.prices, ("sh-pudong", "rtx4090"): PriceRow(4_500_000, (), 480, "USD")},
        enrolled_hosts={"pilot-sh-01": ("sh-edge", "sh-jiading")},
        games={**held.games, "arena": GameRow("Arena Tactics", "2", 42_000_000_000, "")},
        venues={"pilot-cafe": VenueRow("Pilot Internet Cafe, Xuhui", "UTC")},
        zones={**held.zones, ("pilot-cafe", "esports"): ("1080P60", 15, "SMOOTH")},
        seats={**held.seats, ("pilot-cafe", "e-02"): "standard"},
        latencies={**held.latencies, ("pilot-cafe", "hz-xihu"): 25},
    )
    changed = {(s.kind, s.key): s.changes for s in plan(region, held) if s.verdict is Verdict.CHANGE}
    assert changed == {
        ("provider", "sh-edge"): ("name: 'Old name' -> 'Shanghai Edge Compute'",),
        ("site", "hz-xihu"): (
            "place: 'Xihu' -> 'Xihu machine hall, Hangzhou'",
            "region: 'cn-south' -> 'cn-east'",
        ),
        ("enrolment", "sh-pudong:pilot-sh-01"): ("site: 'sh-jiading' -> 'sh-pudong'",),
        ("price", "sh-pudong/rtx4090"): (
            "bands: () -> [18:00-23:00 6.8, 23:00-02:00 5.2, 02:00-09:00 2.4]",
            "currency: 'USD' -> 'CNY'",
        ),
        ("game", "arena"): ("version: '2' -> '3'",),
        ("venue", "pilot-cafe"): ("time_zone: 'UTC' -> 'Asia/Shanghai'",),
        ("zone", "pilot-cafe/esports"): (
            "tier: '1080P60' -> '1080P120'",
            "cap_ms: 15 -> 10",
            "playout: 'SMOOTH' -> 'LOW_LATENCY'",
        ),
        ("seat", "pilot-cafe/e-02"): ("zone: 'standard' -> 'esports'",),
        ("latency", "pilot-cafe->hz-xihu"): ("rtt_ms: 25 -> 18",),
    }


def test_a_zone_without_playout_keeps_its_mode(region: model.Region) -> None:
    # The standard zone's file entry has no playout: whatever the zone holds (set by PutZone) is no change.
    held = held_as(region)
    for mode in ("AUTO", "LOW_LATENCY", "SMOOTH"):
        zones = {**held.zones, ("pilot-cafe", "standard"): ("720P60", 30, mode)}
        steps = plan(region, dataclasses.replace(held, zones=zones))
        (standard,) = [s for s in steps if s.key == "pilot-cafe/standard"]
        assert (standard.verdict, standard.changes, standard.item.playout) == (Verdict.SAME, (), None)


def test_a_game_without_a_version_keeps_the_catalogues(region: model.Region) -> None:
    held = held_as(region)
    held = dataclasses.replace(held, games={**held.games, "demo": GameRow("cloudseat demo game", "7", 0, "")})
    demo = next(s for s in plan(region, held) if s.key == "demo")
    assert demo.verdict is Verdict.SAME


def test_what_the_file_does_not_mention_is_never_touched(region: model.Region) -> None:
    held = held_as(region)
    held = dataclasses.replace(
        held,
        venues={**held.venues, "other-cafe": VenueRow("Other", "UTC")},
        seats={**held.seats, ("pilot-cafe", "z-99"): "standard"},
        providers={**held.providers, "gone": "Not in the file"},
    )
    keys = {s.key for s in plan(region, held)}
    assert not {"other-cafe", "pilot-cafe/z-99", "gone"} & keys


def _refused(region: model.Region, held: Held) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as refused:
        plan(region, held)
    return refused.value


def test_a_site_of_another_provider_is_refused(region: model.Region) -> None:
    held = dataclasses.replace(held_as(region), sites={"sh-jiading": SiteRow("hz-cloud", "x", "")})
    err = _refused(region, held)
    assert err.field == "providers[0].sites[1].id"
    assert "belongs to provider 'hz-cloud'" in err.message


def test_a_host_another_provider_enrolled_or_runs_is_refused(region: model.Region) -> None:
    for held in (
        Held(enrolled_hosts={"pilot-sh-01": ("hz-cloud", "hz-xihu")}),
        Held(bound_hosts={"pilot-sh-01": "hz-cloud"}),
    ):
        err = _refused(region, held)
        assert (err.field, "another provider" in err.message) == ("providers[0].sites[0].hosts", True)
    err = _refused(region, Held(enrolled_prefixes={"jd-": ("hz-cloud", "hz-xihu")}))
    assert err.field == "providers[0].sites[1].host_prefix"


def test_a_latency_or_lease_to_an_unknown_site_is_refused() -> None:
    venue = model.Venue(
        "venues[0]", "cafe", "Cafe", "UTC", (), (),
        (model.Latency("venues[0].latency_ms.nowhere", "nowhere", 5),), (),
    )  # fmt: skip
    err = _refused(model.Region((), (), (venue,)), Held())
    assert (err.field, err.message) == (
        "venues[0].latency_ms.nowhere",
        "venues[0].latency_ms.nowhere: no site 'nowhere' in the file or the database",
    )
    # Known to the database only: fine.
    steps = plan(model.Region((), (), (venue,)), Held(sites={"nowhere": SiteRow("p", "x", "")}))
    assert [s.kind for s in steps] == ["venue", "latency"]
    lease = model.Lease(
        "venues[0].leases[0]", "l1", "cafe", "nowhere", "rtx", 1, None, None, 30, None, "UTC", 0, ""
    )
    venue = dataclasses.replace(venue, latencies=(), leases=(lease,))
    err = _refused(model.Region((), (), (venue,)), Held())
    assert err.field == "venues[0].leases[0].site"


def test_a_lease_never_changes(region: model.Region) -> None:
    held = held_as(region)
    row = held.leases["pilot-cafe-evenings"]
    for changed, words in [
        (dataclasses.replace(row, slots=2), "slots: 2 -> 1"),
        (dataclasses.replace(row, ends_at=T0 + dt.timedelta(days=60)), "term:"),
        (dataclasses.replace(row, daily=None), "daily: None -> (1080, 480)"),
        (dataclasses.replace(row, price_micros=1), "per_slot_hour: 0.000001 -> 3.8"),
    ]:
        err = _refused(region, dataclasses.replace(held, leases={"pilot-cafe-evenings": changed}))
        assert err.field == "venues[0].leases[0].id"
        assert words in err.message and "cancel it and declare a new id" in err.message
    cancelled = dataclasses.replace(row, cancelled=True)
    err = _refused(region, dataclasses.replace(held, leases={"pilot-cafe-evenings": cancelled}))
    assert "was cancelled" in err.message


def test_a_lease_given_by_dates_matches_its_own_term(region: model.Region) -> None:
    venue = region.venues[0]
    lease = dataclasses.replace(venue.leases[0], starts_at=T0, ends_at=T0 + dt.timedelta(days=90), days=None)
    dated = dataclasses.replace(region, venues=(dataclasses.replace(venue, leases=(lease,)),))
    step = next(s for s in plan(dated, held_as(region)) if s.kind == "lease")
    assert step.verdict is Verdict.SAME
    moved = dataclasses.replace(
        lease, starts_at=T0 + dt.timedelta(days=1), ends_at=T0 + dt.timedelta(days=91)
    )
    dated = dataclasses.replace(region, venues=(dataclasses.replace(venue, leases=(moved,)),))
    assert "starts_at" in _refused(dated, held_as(region)).message
