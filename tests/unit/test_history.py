"""broker.history: which minute the sampler writes, and how rows become chart series (pure)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

from broker import history as h

UTC = dt.UTC
NOW = dt.datetime(2026, 12, 4, 20, 7, 30, tzinfo=UTC)


def test_the_sampler_writes_the_minute_just_ended_and_wakes_after_the_next() -> None:
    assert h.minute_to_sample(NOW) == (NOW.replace(minute=6, second=0), NOW.replace(minute=7, second=0))
    # Within the settle time after a minute ends, that minute is not yet taken: what committed in it may be in flight.
    just = dt.datetime(2026, 12, 4, 20, 8, 1, tzinfo=UTC)
    assert h.minute_to_sample(just)[0] == NOW.replace(minute=6, second=0)
    wake = h.next_wake(NOW)
    assert wake == dt.datetime(2026, 12, 4, 20, 8, 2, tzinfo=UTC)
    assert h.minute_to_sample(wake)[0] == NOW.replace(minute=7, second=0)
    assert h.forget_before(NOW) == NOW - dt.timedelta(hours=48)


def test_a_span_is_the_last_24_hours_in_whole_buckets_ending_after_now() -> None:
    span = h.Span.last(NOW)
    starts = span.starts()
    assert len(starts) == 288 and span.end - span.start == dt.timedelta(hours=24)
    assert starts[-1] == dt.datetime(2026, 12, 4, 20, 5, tzinfo=UTC) and span.end > NOW
    assert all(at.minute % 5 == 0 and at.second == 0 for at in starts)


def zone_row(at: dt.datetime, zone: str = "std", venue: str = "cafe", **kw: float) -> dict[str, object]:
    row: dict[str, object] = dict(
        venue_id=venue, zone_id=zone, at=at, minutes=5, queued_sum=0, oldest_wait_s=0.0, placed=0, wait_s_sum=0.0,
        serving_sum=0, within_cap_sum=0,
    )  # fmt: skip
    row.update(kw)
    return row


def test_zone_series_are_exact_over_a_bucket_and_gaps_stay_gaps() -> None:
    span = h.Span.last(NOW)
    last = span.starts()[-1]
    rows = [
        # 5 minutes: 10 queued-minutes (2 on average), 4 placed waiting 6 s in all, 20 session-minutes, 15 in cap.
        zone_row(last, queued_sum=10, oldest_wait_s=9.5, placed=4, wait_s_sum=6.0, serving_sum=20, within_cap_sum=15),
        zone_row(last, zone="vip", serving_sum=5, within_cap_sum=5),
    ]
    out = h.zone_series(span, rows)
    std = {s["name"]: s["points"] for s in out["queue_length"]}["std"]
    assert len(std) == 288 and std[-1] == [int(last.timestamp() * 1000), 2.0]
    assert all(v is None for _, v in std[:-1])  # never sampled: a gap, not a zero
    pick = lambda figure, name: {s["name"]: s["points"][-1][1] for s in out[figure]}[name]  # noqa: E731
    assert pick("mean_wait_s", "std") == 1.5 and pick("mean_wait_s", "vip") is None  # none placed: no mean
    assert pick("oldest_wait_s", "std") == 9.5
    assert pick("sessions", "std") == 4.0 and pick("service_level", "std") == 0.75
    assert pick("service_level", "vip") == 1.0
    # The region sums a venue's zones before dividing: 25 session-minutes, 20 within the cap.
    region = h.zone_series(span, rows, key="venue")
    assert [s["name"] for s in region["service_level"]] == ["cafe"]
    assert region["service_level"][0]["points"][-1][1] == 0.8 and region["sessions"][0]["points"][-1][1] == 5.0


def test_site_series_weigh_utilisation_by_slot_minutes() -> None:
    span = h.Span.last(NOW)
    last = span.starts()[-1]
    rows = [
        {"site_id": "near", "at": last, "slot_minutes": 40, "used_slot_minutes": 10, "hosts_online": 2.0},
        {"site_id": "dark", "at": last, "slot_minutes": 0, "used_slot_minutes": 0, "hosts_online": 0.0},
    ]
    out = h.site_series(span, rows)
    util = {s["name"]: s["points"][-1][1] for s in out["utilisation"]}
    assert util == {"dark": None, "near": 0.25}
    assert {s["name"]: s["points"][-1][1] for s in out["hosts_online"]} == {"dark": 0.0, "near": 2.0}


def test_history_imports_no_io() -> None:
    code = "import sys, broker.history; print(sorted({'asyncio', 'asyncpg', 'aiohttp', 'grpc'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
