"""Conversions between the wire (protobuf) and the broker: requests in (validated), rows out.

Rows are asyncpg Records or the JSON objects the database notifies; both are mappings with the same keys, so one
function converts either. Nothing else in the broker builds or reads protobuf messages for these types.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, cast

from cloudseat import validate as v
from cloudseat.errors import InvalidArgument
from cloudseat.v1 import agent_pb2, common_pb2, fleet_pb2, session_pb2, venue_pb2
from google.protobuf import timestamp_pb2

from broker import metering, patron_time, tiers
from broker.store import hosts as host_store
from broker.store import sessions as session_store

Row = Mapping[str, Any]

# The contract's enums by the names the store uses. The generated stubs type an enum's values as the enum, while
# `Value()` and `items()` give plain ints: the casts say they are the same thing.
STATE_TO_PB: dict[str, common_pb2.SessionState] = {
    name: cast(common_pb2.SessionState, common_pb2.SessionState.Value(f"SESSION_STATE_{name}"))
    for name in ("PENDING", "PLACED", "STARTING", "READY", "STREAMING", "ENDED")
}
STATE_FROM_PB: dict[int, str] = {value: name for name, value in STATE_TO_PB.items()}
END_REASON_TO_PB: dict[str, common_pb2.EndReason] = {
    name[len("END_REASON_") :]: cast(common_pb2.EndReason, value)
    for name, value in common_pb2.EndReason.items()
    if value != common_pb2.END_REASON_UNSPECIFIED
}
END_REASON_FROM_PB: dict[int, str] = {value: name for name, value in END_REASON_TO_PB.items()}
PENDING_REASON_TO_PB: dict[str, common_pb2.PendingReason] = {
    name[len("PENDING_REASON_") :]: cast(common_pb2.PendingReason, value)
    for name, value in common_pb2.PendingReason.items()
    if value != common_pb2.PENDING_REASON_UNSPECIFIED
}
TIER_TO_PB: dict[tiers.Tier, common_pb2.Tier] = {
    tiers.Tier.T720P30: common_pb2.TIER_720P30,
    tiers.Tier.T720P60: common_pb2.TIER_720P60,
    tiers.Tier.T1080P60: common_pb2.TIER_1080P60,
    tiers.Tier.T1080P120: common_pb2.TIER_1080P120,
}
TIER_FROM_PB: dict[int, tiers.Tier] = {value: tier for tier, value in TIER_TO_PB.items()}
# A zone's playout mode as the store names it (zones.playout, sessions.playout): AUTO, LOW_LATENCY, SMOOTH.
PLAYOUT_TO_PB: dict[str, common_pb2.PlayoutMode] = {
    name[len("PLAYOUT_MODE_") :]: cast(common_pb2.PlayoutMode, value)
    for name, value in common_pb2.PlayoutMode.items()
    if value != common_pb2.PLAYOUT_MODE_UNSPECIFIED
}
PLAYOUT_FROM_PB: dict[int, str] = {value: name for name, value in PLAYOUT_TO_PB.items()}
HOST_STATUS_TO_PB = {
    "online": fleet_pb2.HOST_STATUS_ONLINE,
    "lost": fleet_pb2.HOST_STATUS_LOST,
    "offline": fleet_pb2.HOST_STATUS_OFFLINE,
}

MAX_PRICE_MICROS = 10**12


def timestamp(value: dt.datetime | str | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


# -- out ------------------------------------------------------------------------------------------------------


def session(row: Row) -> common_pb2.Session:
    return common_pb2.Session(
        session_id=str(row["session_id"]),
        venue_id=row["venue_id"],
        seat_id=row["seat_id"],
        zone_id=row["zone_id"],
        game_id=row["game_id"],
        request_id=row["request_id"],
        patron_id=row["patron_id"],
        state=STATE_TO_PB[row["state"]],
        end_reason=END_REASON_TO_PB.get(row["end_reason"] or "", common_pb2.END_REASON_UNSPECIFIED),
        pending_reason=PENDING_REASON_TO_PB.get(
            row["pending_reason"] or "", common_pb2.PENDING_REASON_UNSPECIFIED
        ),
        host_id=row["host_id"] or "",
        site_id=row["site_id"] or "",
        tier=TIER_TO_PB[tiers.Tier(row["tier"])],
        latency_cap_ms=row["latency_cap_ms"],
        slots=row["slots"],
        latency_ms=row["latency_ms"] or 0,
        price_micros_per_slot_hour=row["price_micros"] or 0,
        created_at=timestamp(row["created_at"]),
        updated_at=timestamp(row["updated_at"]),
        placed_at=timestamp(row["placed_at"]),
        ready_at=timestamp(row["ready_at"]),
        streaming_at=timestamp(row["streaming_at"]),
        ended_at=timestamp(row["ended_at"]),
        end_detail=row["end_detail"],
        resumes_session_id=str(row["resumes"] or ""),
        paid_time_s=row.get("paid_time_s") or 0,
        paid_until=timestamp(row.get("paid_until")),
    )


def stream_stats(row: Row) -> common_pb2.StreamStats:
    """The latest stats a session's agent reported (store.metering.stream_stats)."""
    return common_pb2.StreamStats(
        fps_sent=row["fps_sent"],
        bitrate_kbps=row["bitrate_kbps"],
        rtt_ms=row["rtt_ms"],
        loss_pct=row["loss_pct"],
        encode_ms=row["encode_ms"],
        reported_at=timestamp(row["reported_at"]),
    )


def transition(row: Row) -> common_pb2.SessionTransition:
    return common_pb2.SessionTransition(
        seq=row["seq"],
        from_state=STATE_TO_PB.get(row["from_state"] or "", common_pb2.SESSION_STATE_UNSPECIFIED),
        to_state=STATE_TO_PB[row["to_state"]],
        end_reason=END_REASON_TO_PB.get(row["end_reason"] or "", common_pb2.END_REASON_UNSPECIFIED),
        at=timestamp(row["at"]),
        detail=row["detail"],
    )


def tier_spec(spec: tiers.TierSpec) -> common_pb2.TierSpec:
    return common_pb2.TierSpec(
        tier=TIER_TO_PB[spec.tier],
        width=spec.width,
        height=spec.height,
        fps=spec.fps,
        bitrate_kbps=spec.bitrate_kbps,
    )


def zone(row: Row) -> venue_pb2.Zone:
    tier = tiers.Tier(row["tier"])
    return venue_pb2.Zone(
        venue_id=row["venue_id"],
        zone_id=row["zone_id"],
        tier=TIER_TO_PB[tier],
        latency_cap_ms=row["latency_cap_ms"],
        tier_spec=tier_spec(tiers.SPECS[tier]),
        playout=PLAYOUT_TO_PB[row["playout"]],
    )


def venue(row: Row, zones: list[Row], latencies: list[Row]) -> venue_pb2.Venue:
    return venue_pb2.Venue(
        venue_id=row["venue_id"],
        name=row["name"],
        zones=[zone(z) for z in zones],
        latencies=[
            venue_pb2.SiteLatency(
                site_id=r["site_id"], rtt_ms=r["rtt_ms"], measured_at=timestamp(r["measured_at"])
            )
            for r in latencies
        ],
        created_at=timestamp(row["created_at"]),
        time_zone=row["time_zone"],
    )


def seat(row: Row) -> venue_pb2.Seat:
    return venue_pb2.Seat(venue_id=row["venue_id"], seat_id=row["seat_id"], zone_id=row["zone_id"])


def host(row: Row) -> fleet_pb2.Host:
    return fleet_pb2.Host(
        host_id=row["host_id"],
        provider_id=row["provider_id"],
        site_id=row["site_id"],
        gpu_class=row["gpu_class"],
        status=HOST_STATUS_TO_PB[row["status"]],
        drained=row["drained"],
        draining=row["draining"],
        slots=row["slots"],
        free_slots=row["free_slots"],
        price_micros_per_slot_hour=row["price_micros"],
        games_cached=row["games_cached"],
        images_cached=row.get("images_cached") or [],
        image_fetches=[common_pb2.ImageFetch(**f) for f in row.get("image_fetches") or []],
        gpus=[fleet_pb2.Gpu(**g) for g in row["gpus"]],
        epoch=row["epoch"],
        last_heartbeat_at=timestamp(row["last_heartbeat_at"]),
        live_sessions=row["live_sessions"],
        agent_version=row["agent_version"],
        drain_deadline=timestamp(row.get("drain_deadline")),
    )


def provider(row: Row) -> fleet_pb2.Provider:
    return fleet_pb2.Provider(
        provider_id=row["provider_id"], name=row["name"], created_at=timestamp(row["created_at"])
    )


def site(row: Row) -> fleet_pb2.Site:
    return fleet_pb2.Site(
        site_id=row["site_id"],
        provider_id=row["provider_id"],
        name=row["name"],
        region=row["region"],
        created_at=timestamp(row["created_at"]),
    )


def image_fetches(fetches: Any, field: str) -> list[dict[str, Any]]:
    """A heartbeat's image fetches as the store keeps them; InvalidArgument names a bad one."""
    if len(fetches) > 256:
        raise InvalidArgument(field, "has more than 256 fetches")
    out = []
    for i, f in enumerate(fetches):
        v.image_ref(f.image, f"{field}[{i}].image")
        if f.bytes_done > f.bytes_total:
            raise InvalidArgument(f"{field}[{i}].bytes_done", "must not exceed bytes_total")
        error = v.text(f.error[:500], f"{field}[{i}].error", max_len=500)
        out.append(
            {"image": f.image, "bytes_done": f.bytes_done, "bytes_total": f.bytes_total, "error": error}
        )
    return out


def game(row: Row, lacking_from: Mapping[str, int] | None = None) -> fleet_pb2.Game:
    return fleet_pb2.Game(
        game_id=row["game_id"],
        name=row["name"],
        image_size_bytes=row["image_size_bytes"],
        version=row.get("version") or "",
        image_ref=row.get("image_ref") or "",
        image_digest=row.get("image_digest") or "",
        update_bytes=row.get("update_bytes") or 0,
        lacking_from=dict(lacking_from or {}),
    )


#: The most earlier versions a PutGame may say the bytes they lack of for one version.
MAX_LACKING_FROM = 64


def lacking_from(given: Mapping[str, int]) -> dict[str, int]:
    """PutGameRequest.lacking_from checked: version ids and byte counts, at most MAX_LACKING_FROM of them."""
    if len(given) > MAX_LACKING_FROM:
        raise InvalidArgument("lacking_from", f"must name at most {MAX_LACKING_FROM} versions")
    out: dict[str, int] = {}
    for version in sorted(given):
        v.ident(version, f"lacking_from[{version[:64]!r}]")
        out[version] = v.int_range(given[version], f"lacking_from[{version!r}]", 0, 2**63 - 1)
    return out


def price(row: Row) -> fleet_pb2.Price:
    schedule = metering.Schedule.from_row(row["price_micros"], row["bands"], row["utc_offset_minutes"])
    return fleet_pb2.Price(
        site_id=row["site_id"],
        gpu_class=row["gpu_class"],
        price_micros_per_slot_hour=row["price_micros"],
        bands=[
            fleet_pb2.PriceBand(
                start_minute=b.start_minute,
                end_minute=b.end_minute,
                price_micros_per_slot_hour=b.price_micros,
            )
            for b in schedule.bands
        ],
        utc_offset_minutes=row["utc_offset_minutes"],
        price_now_micros_per_slot_hour=row["price_now_micros"],
        currency=row["currency"],
    )


def price_bands(msg: fleet_pb2.SetPriceRequest) -> tuple[metering.Band, ...]:
    """The request's time-of-day bands, checked (InvalidArgument names the field)."""
    return metering.parse_bands(
        [(b.start_minute, b.end_minute, b.price_micros_per_slot_hour) for b in msg.bands],
        msg.utc_offset_minutes,
    )


# -- in -------------------------------------------------------------------------------------------------------


def start_request(msg: session_pb2.StartSessionRequest) -> session_store.StartRequest:
    return session_store.StartRequest(
        request_id=v.request_id(msg.request_id),
        venue_id=v.ident(msg.venue_id, "venue_id"),
        seat_id=v.ident(msg.seat_id, "seat_id"),
        game_id=v.ident(msg.game_id, "game_id"),
        patron_id=v.ident(msg.patron_id, "patron_id", required=False),
        slots=v.int_range(msg.slots or 1, "slots", 1, 8),
        zone_id=v.ident(msg.zone_id, "zone_id", required=False),
        resume=(
            session_store.ResumeRef(
                session_id=v.session_id(msg.resume.session_id, "resume.session_id"),
                token=v.token(msg.resume.session_token, "resume.session_token"),
            )
            if msg.HasField("resume")
            else None
        ),
        paid_time_s=v.int_range(msg.paid_time_s, "paid_time_s", 0, patron_time.MAX_START_S),
    )


# A seat's stream stats report (SessionService.ReportStreamStats): how many samples, how old and how far ahead.
MAX_STREAM_SAMPLES = 60
SAMPLE_MAX_AGE_S = 300.0
SAMPLE_MAX_AHEAD_S = 5.0


def stream_samples(
    msg: session_pb2.ReportStreamStatsRequest, now: dt.datetime
) -> list[tuple[dt.datetime, float, float | None]]:
    """The seat's samples as (at, fps, rtt ms or None), each checked; InvalidArgument names the field."""
    if not msg.samples:
        raise InvalidArgument("samples", "at least one sample is required")
    if len(msg.samples) > MAX_STREAM_SAMPLES:
        raise InvalidArgument("samples", f"at most {MAX_STREAM_SAMPLES} samples per report")
    out = []
    for i, sample in enumerate(msg.samples):
        here = f"samples[{i}]"
        if not sample.HasField("at"):
            raise InvalidArgument(f"{here}.at", "is required")
        at = v.instant(sample.at.seconds, sample.at.nanos, f"{here}.at")
        v.recent(at, now, f"{here}.at", max_age_s=SAMPLE_MAX_AGE_S, max_ahead_s=SAMPLE_MAX_AHEAD_S)
        fps = v.number(sample.fps, f"{here}.fps", 0, 1_000)
        rtt = v.number(sample.rtt_ms, f"{here}.rtt_ms", 0, 60_000) if sample.HasField("rtt_ms") else None
        out.append((at, fps, rtt))
    return out


def tier(value: int, field: str) -> tiers.Tier:
    if value not in TIER_FROM_PB:
        raise InvalidArgument(
            field, "must be one of " + ", ".join(common_pb2.Tier.Name(t) for t in TIER_FROM_PB)
        )
    return TIER_FROM_PB[value]


def playout(value: int, field: str) -> str | None:
    """A requested playout mode by the store's name; None for UNSPECIFIED (keep what is there)."""
    if value == common_pb2.PLAYOUT_MODE_UNSPECIFIED:
        return None
    if value not in PLAYOUT_FROM_PB:
        raise InvalidArgument(
            field,
            "must be one of " + ", ".join(common_pb2.PlayoutMode.Name(p) for p in PLAYOUT_FROM_PB)
            + f" (or unset to keep the zone's), not {value}",
        )
    return PLAYOUT_FROM_PB[value]


def price_micros(value: int, field: str) -> int:
    return v.int_range(value, field, 0, MAX_PRICE_MICROS)


def _peer_address(value: str) -> str:
    if not value:
        return ""
    _, port = v.host_port(value, "register.inventory.peer_address")
    if port == 0:
        raise InvalidArgument("register.inventory.peer_address", "must name the port the agent listens on")
    return value


def registration(msg: agent_pb2.Register) -> host_store.Registration:
    inv = msg.inventory
    if not msg.HasField("inventory"):
        raise InvalidArgument("register.inventory", "is required")
    if len(inv.games_cached) > 10_000:
        raise InvalidArgument("register.inventory.games_cached", "must list at most 10000 games")
    if len(inv.media_addresses) > 16:
        raise InvalidArgument("register.inventory.media_addresses", "must list at most 16 addresses")
    if len(inv.gpus) > 64:
        raise InvalidArgument("register.inventory.gpus", "must list at most 64 GPUs")
    return host_store.Registration(
        host_id=v.ident(msg.host_id, "register.host_id"),
        provider_id=v.ident(msg.provider_id, "register.provider_id"),
        site_id=v.ident(msg.site_id, "register.site_id"),
        epoch=v.int_range(msg.epoch, "register.epoch", 1, 2**63 - 1),
        agent_version=v.text(msg.agent_version, "register.agent_version", max_len=64),
        gpu_class=v.ident(inv.gpu_class, "register.inventory.gpu_class"),
        slots=v.int_range(inv.slots, "register.inventory.slots", 1, 256),
        price_micros=price_micros(
            inv.price_micros_per_slot_hour, "register.inventory.price_micros_per_slot_hour"
        ),
        games_cached=tuple(
            v.image_ref(g, f"register.inventory.games_cached[{i}]") for i, g in enumerate(inv.games_cached)
        ),
        media_addresses=tuple(
            v.text(a, f"register.inventory.media_addresses[{i}]", max_len=256, required=True)
            for i, a in enumerate(inv.media_addresses)
        ),
        peer_address=_peer_address(inv.peer_address),
        gpus=tuple(
            {
                "model": v.text(g.model, f"register.inventory.gpus[{i}].model", max_len=128),
                "memory_bytes": g.memory_bytes,
                "encoder_engines": v.int_range(
                    g.encoder_engines, f"register.inventory.gpus[{i}].encoder_engines", 0, 64
                ),
                "uuid": v.text(g.uuid, f"register.inventory.gpus[{i}].uuid", max_len=128),
            }
            for i, g in enumerate(inv.gpus)
        ),
    )
