"""broker.console.views: what the consoles show, from rows (pure)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

from broker.console import views

NOW = dt.datetime(2026, 1, 1, 20, 0, tzinfo=dt.UTC)
ROW = {"seat_id": "s1", "zone_id": "std", "zone_tier": "720P60", "zone_latency_cap_ms": 30, "now": NOW}


def test_an_idle_seat_shows_its_zone_and_nothing_else() -> None:
    seat = views.seat({**ROW, "session": None}, {})
    assert seat["state"] == views.IDLE and seat["zone_id"] == "std" and seat["session_id"] is None


def test_a_live_seat_shows_game_site_latency_fps_and_time_left() -> None:
    session = {
        "session_id": "8b0c3f4e-0000-4000-8000-000000000001",
        "state": "STREAMING",
        "game_id": "demo",
        "site_id": "near",
        "host_id": "h1",
        "latency_ms": 7,
        "paid_time_s": 3600,
        "paid_until": "2026-01-01T20:05:00+00:00",
        "updated_at": "2026-01-01T19:05:00+00:00",
    }
    seat = views.seat({**ROW, "session": session}, {session["session_id"]: 59.5})
    assert (seat["state"], seat["game_id"], seat["site_id"], seat["latency_ms"]) == (
        "STREAMING",
        "demo",
        "near",
        7,
    )
    assert seat["fps"] == 59.5 and seat["time_left_s"] == 300.0


def test_time_left_before_streaming_is_all_of_it_and_never_below_zero() -> None:
    assert views.time_left_s({"paid_time_s": 600, "paid_until": None}, NOW) == 600.0
    assert views.time_left_s({"paid_time_s": 600, "paid_until": "2026-01-01T19:00:00+00:00"}, NOW) == 0.0
    assert views.time_left_s({"paid_time_s": 0}, NOW) is None


def test_service_level_shares_and_an_empty_zone() -> None:
    row = {"zone_id": "z", "tier": "720P60", "latency_cap_ms": 30, "playout": "SMOOTH", "sessions": 4,
           "sessions_within": 3, "seconds": 600.0, "seconds_within": 300.0}  # fmt: skip
    zone = views.zone_service(row)
    assert zone["sessions_share"] == 0.75 and zone["minutes_share"] == 0.5 and zone["minutes"] == 10.0
    assert zone["playout"] == "SMOOTH"
    empty = views.zone_service(
        {**row, "sessions": 0, "sessions_within": 0, "seconds": 0.0, "seconds_within": 0.0}
    )
    assert empty["sessions_share"] is None and empty["minutes_share"] is None


def test_views_import_no_io() -> None:
    code = (
        "import sys, broker.console.views; "
        "bad = {'asyncio', 'asyncpg', 'aiohttp', 'grpc'} & set(sys.modules); print(sorted(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_an_image_fetch_shows_its_progress_or_why_it_failed() -> None:
    going = views.image_fetch(
        {"image": "arena@2", "bytes_done": 1_200_000, "bytes_total": 3_000_000, "error": ""}
    )
    assert going["text"] == "arena@2 40% (1.2 of 3.0 MB)"
    failed = views.image_fetch(
        {
            "image": "arena@2",
            "bytes_done": 0,
            "bytes_total": 0,
            "error": "the disk is full at /var/lib/images",
        }
    )
    assert failed["text"] == "arena@2 failed: the disk is full at /var/lib/images"
    assert views.image_fetch({"image": "arena@2", "bytes_done": 0, "bytes_total": 0, "error": ""})[
        "text"
    ] == ("arena@2 starting")
