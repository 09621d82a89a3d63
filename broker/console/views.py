"""What the consoles show, from store rows: pure (no I/O, no aiohttp, asyncpg or protobuf), so it is tested alone.

Each function takes mappings (a row, a session as the database's JSON) and plain values (the database clock, fps by
session) and returns JSON-ready dicts.
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Mapping
from typing import Any

# A seat without a live session.
IDLE = "IDLE"


def dumps(value: Any) -> str:
    """JSON with timestamps in ISO 8601 (what `Date.parse` reads) and ids as strings."""
    return json.dumps(value, default=_default, separators=(",", ":"))


def _default(value: Any) -> Any:
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def _when(value: Any) -> datetime.datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        return value
    return datetime.datetime.fromisoformat(str(value))


def time_left_s(session: Mapping[str, Any], now: datetime.datetime) -> float | None:
    """Seconds of the patron's paid time left, or None when the session has no limit (broker.patron_time: the
    paid time counts from STREAMING, so before that all of it is left)."""
    paid = int(session.get("paid_time_s") or 0)
    if paid <= 0:
        return None
    ends = _when(session.get("paid_until"))
    if ends is None:
        return float(paid)
    return max((ends - now).total_seconds(), 0.0)


def seat(row: Mapping[str, Any], fps: Mapping[str, float]) -> dict[str, Any]:
    """One seat of the map: its zone, and what its live session (if any) is doing: state, game, site, latency,
    fps (as the host last reported it; None before its first report), time left."""
    s: Mapping[str, Any] | None = row["session"]
    out: dict[str, Any] = {
        "seat_id": row["seat_id"],
        "zone_id": row["zone_id"],
        "tier": row["zone_tier"],
        "latency_cap_ms": row["zone_latency_cap_ms"],
        "state": IDLE,
        "session_id": None,
        "game_id": None,
        "site_id": None,
        "host_id": None,
        "latency_ms": None,
        "pending_reason": None,
        "since": None,
        "fps": None,
        "time_left_s": None,
    }
    if s is not None:
        sid = str(s["session_id"])
        out.update(
            state=s["state"],
            session_id=sid,
            game_id=s["game_id"],
            site_id=s.get("site_id"),
            host_id=s.get("host_id"),
            latency_ms=s.get("latency_ms"),
            pending_reason=s.get("pending_reason"),
            since=s.get("updated_at"),
            fps=fps.get(sid),
            time_left_s=time_left_s(s, row["now"]),
        )
    return out


def _share(part: float, whole: float) -> float | None:
    return None if whole <= 0 else part / whole


def zone_service(row: Mapping[str, Any]) -> dict[str, Any]:
    """A zone's service level today: the share of its sessions, and of their minutes, within the latency cap."""
    return {
        "zone_id": row["zone_id"],
        "tier": row["tier"],
        "latency_cap_ms": row["latency_cap_ms"],
        "playout": row["playout"],
        "sessions": row["sessions"],
        "sessions_within": row["sessions_within"],
        "sessions_share": _share(row["sessions_within"], row["sessions"]),
        "minutes": row["seconds"] / 60.0,
        "minutes_within": row["seconds_within"] / 60.0,
        "minutes_share": _share(row["seconds_within"], row["seconds"]),
    }


def image_fetch(f: Mapping[str, Any]) -> dict[str, Any]:
    """A fetch as one line of the console: "arena@2 40% (1.2 of 3.0 MB)" or "arena@2 failed: why"."""
    total = int(f["bytes_total"])
    done = int(f["bytes_done"])
    if f.get("error"):
        text = f"{f['image']} failed: {f['error']}"
    elif total:
        text = f"{f['image']} {100 * done // total}% ({done / 1e6:.1f} of {total / 1e6:.1f} MB)"
    else:
        text = f"{f['image']} starting"
    return {
        "image": f["image"],
        "bytes_done": done,
        "bytes_total": total,
        "error": f.get("error") or "",
        "text": text,
    }


def host(row: Mapping[str, Any]) -> dict[str, Any]:
    """A host as the provider's console shows it (a host_view row)."""
    slots = row["slots"]
    return {
        "host_id": row["host_id"],
        "site_id": row["site_id"],
        "gpu_class": row["gpu_class"],
        "status": row["status"],
        "drained": row["drained"],
        # A drain's deadline (broker.drain): when the sessions still on the host move; None without one.
        "drain_deadline": row.get("drain_deadline"),
        "draining": row["draining"],
        "slots": slots,
        "free_slots": row["free_slots"],
        "sessions": row["live_sessions"],
        "utilisation": _share(slots - row["free_slots"], slots),
        "gpu_load": row["gpu_load"],
        "cpu_load": row["cpu_load"],
        # The images the agent reports (GAME@VERSION) where the broker keeps them, else the games it holds.
        "images": list(row.get("images_cached") or row["games_cached"]),
        # Image fetches under way or failed, as the agent last reported them.
        "fetches": [image_fetch(f) for f in row.get("image_fetches") or []],
        "price_micros_per_slot_hour": row["price_micros"],
        "last_heartbeat_at": row["last_heartbeat_at"],
    }


def site(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "site_id": row["site_id"],
        "name": row["name"],
        "region": row["region"],
        "hosts": row["hosts"],
        "hosts_serving": row["hosts_serving"],
        "slots": row["slots"],
        "slots_used": row["slots_used"],
        "utilisation": _share(row["slots_used"], row["slots"]),
    }


def unavailable(what: str, why: str) -> dict[str, Any]:
    """A section whose data the broker cannot give yet: said plainly, never made up."""
    return {"available": False, "what": what, "reason": why}


def region_site(row: Mapping[str, Any]) -> dict[str, Any]:
    """A site in the operator's region view: a provider's site, with its provider."""
    return {**site(row), "provider_id": row["provider_id"]}


def region_venue(row: Mapping[str, Any]) -> dict[str, Any]:
    """A venue in the operator's region view: its seats and what its sessions do now."""
    return {
        "venue_id": row["venue_id"],
        "name": row["name"],
        "time_zone": row["time_zone"],
        "seats": row["seats"],
        "sessions": row["sessions"],
        "queued": row["queued"],
        "serving": row["serving"],
        "service_level": _share(row["within_cap"], row["serving"]),
    }
