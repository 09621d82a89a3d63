"""LeaseService: a provider writes down the lease it agreed with a venue; both see it, either may cancel it, and
both read its use per hour.

Who may: CreateLease the site's provider (for a latency-bound lease, the provider named) or the operator; ListLeases
a venue its own, a provider its own, the operator any; CancelLease and GetLeaseUse the lease's provider or venue or
the operator (GetLeaseUse for a whole venue: that venue or the operator).

The lease's protobuf conversions live here, beside the one service that speaks them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

import asyncpg
import structlog
from cloudseat import errors
from cloudseat import validate as v
from cloudseat.v1 import lease_pb2, lease_pb2_grpc
from google.protobuf import timestamp_pb2
from grpc import aio

from broker import auth, leasing
from broker.rpc import convert
from broker.store import leases as lease_store

log = structlog.get_logger(__name__)

Row = Mapping[str, Any]

_STATE_TO_PB = {
    "ACTIVE": lease_pb2.LEASE_STATE_ACTIVE,
    "EXPIRED": lease_pb2.LEASE_STATE_EXPIRED,
    "CANCELLED": lease_pb2.LEASE_STATE_CANCELLED,
}
MAX_SLOTS = 100_000


def lease(row: Row) -> lease_pb2.Lease:
    out = lease_pb2.Lease(
        lease_id=row["lease_id"],
        provider_id=row["provider_id"],
        venue_id=row["venue_id"],
        gpu_class=row["gpu_class"],
        slots=row["slots"],
        site_id=row["site_id"],
        max_latency_ms=row["max_latency_ms"] or 0,
        starts_at=convert.timestamp(row["starts_at"]),
        ends_at=convert.timestamp(row["ends_at"]),
        time_zone=row["time_zone"],
        price_micros_per_slot_hour=row["price_micros"],
        state=_STATE_TO_PB[row["state"]],
        created_at=convert.timestamp(row["created_at"]),
        cancelled_at=convert.timestamp(row["cancelled_at"]),
        note=row["note"],
        in_force=row["in_force"],
    )
    if row["daily_start_minute"] is not None:
        out.daily.start_minute = row["daily_start_minute"]
        out.daily.duration_minutes = row["daily_duration_minutes"]
    return out


def _instant(ts: timestamp_pb2.Timestamp, field: str) -> dt.datetime:
    t = v.instant(ts.seconds, ts.nanos, field)
    if t >= leasing.LATEST:
        raise errors.InvalidArgument(field, f"must be before {leasing.LATEST.year}")
    return t


def lease_spec(request: lease_pb2.CreateLeaseRequest) -> lease_store.LeaseSpec:
    """The request validated (every field named on error), the provider not yet resolved for a site lease."""
    lease_id = v.ident(request.lease_id, "lease_id")
    venue_id = v.ident(request.venue_id, "venue_id")
    gpu_class = v.ident(request.gpu_class, "gpu_class")
    slots = v.int_range(request.slots, "slots", 1, MAX_SLOTS)
    site_id = v.ident(request.site_id, "site_id", required=False) or None
    max_latency_ms = request.max_latency_ms or None
    if (site_id is None) == (max_latency_ms is None):
        raise errors.InvalidArgument("site_id", "give exactly one of site_id and max_latency_ms")
    if max_latency_ms is not None:
        v.int_range(max_latency_ms, "max_latency_ms", 1, 500)
    provider_id = v.ident(request.provider_id, "provider_id", required=max_latency_ms is not None)
    if not request.HasField("starts_at"):
        raise errors.InvalidArgument("starts_at", "is required")
    if not request.HasField("ends_at"):
        raise errors.InvalidArgument("ends_at", "is required")
    starts_at = _instant(request.starts_at, "starts_at")
    ends_at = _instant(request.ends_at, "ends_at")
    v.period(
        starts_at,
        ends_at,
        max_days=leasing.MAX_TERM.days,
        fields=("starts_at", "ends_at"),
        too_long=f"the term may be at most {leasing.MAX_TERM.days} days",
    )
    daily = None
    if request.HasField("daily"):
        start_minute = v.int_range(request.daily.start_minute, "daily.start_minute", 0, 24 * 60 - 1)
        duration = v.int_range(request.daily.duration_minutes, "daily.duration_minutes", 1, 24 * 60)
        daily = leasing.Daily(start_minute, duration)
    time_zone = v.time_zone(request.time_zone)
    price = convert.price_micros(request.price_micros_per_slot_hour, "price_micros_per_slot_hour")
    note = v.text(request.note, "note")
    return lease_store.LeaseSpec(
        lease_id=lease_id,
        provider_id=provider_id,
        venue_id=venue_id,
        gpu_class=gpu_class,
        slots=slots,
        site_id=site_id,
        max_latency_ms=max_latency_ms,
        starts_at=starts_at,
        ends_at=ends_at,
        daily=daily,
        time_zone=time_zone,
        price_micros=price,
        note=note,
    )


def _may_touch(row: Row) -> None:
    """The lease's provider, its venue, or the operator; anyone else is told there is no such lease."""
    caller = auth.caller()
    if caller.trusted or caller.role is auth.Role.OPERATOR:
        return
    if caller.role is auth.Role.PROVIDER and caller.provider_id == row["provider_id"]:
        return
    if caller.role is auth.Role.VENUE and caller.venue_id == row["venue_id"]:
        return
    raise errors.Concealed.of("lease_id", "lease", row["lease_id"])


class LeaseService(lease_pb2_grpc.LeaseServiceServicer):
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def CreateLease(
        self, request: lease_pb2.CreateLeaseRequest, context: aio.ServicerContext
    ) -> lease_pb2.Lease:
        spec = lease_spec(request)
        caller = auth.caller()
        if spec.site_id is not None:
            # Authorise before saying anything about the site's owner to a caller that is not it.
            caller.require_provider(spec.provider_id or caller.provider_id)
            owner = await lease_store.site_provider(self._pool, spec.site_id)
            caller.require_owner(owner, "site_id", "site", spec.site_id)
            if spec.provider_id and spec.provider_id != owner:
                raise errors.InvalidArgument("provider_id", f"site {spec.site_id!r} is not this provider's")
            spec = dataclasses.replace(spec, provider_id=owner)
        else:
            caller.require_provider(spec.provider_id)
        row = await lease_store.create(self._pool, spec)
        log.info("lease created", lease_id=spec.lease_id, venue_id=spec.venue_id, site_id=row["site_id"])
        return lease(row)

    async def ListLeases(
        self, request: lease_pb2.ListLeasesRequest, context: aio.ServicerContext
    ) -> lease_pb2.ListLeasesResponse:
        venue_id = v.ident(request.venue_id, "venue_id", required=False) or None
        provider_id = v.ident(request.provider_id, "provider_id", required=False) or None
        caller = auth.caller()
        if not (caller.trusted or caller.role is auth.Role.OPERATOR):
            # A tenant sees its own leases only: what it asked for must be its own.
            if caller.role is auth.Role.PROVIDER:
                caller.require_provider(provider_id or caller.provider_id)
                provider_id = caller.provider_id
            else:
                caller.require_venue(venue_id or caller.venue_id)
                venue_id = caller.venue_id
        rows = await lease_store.list_leases(self._pool, venue_id, provider_id, request.active_only)
        return lease_pb2.ListLeasesResponse(leases=[lease(r) for r in rows])

    async def CancelLease(
        self, request: lease_pb2.CancelLeaseRequest, context: aio.ServicerContext
    ) -> lease_pb2.Lease:
        lease_id = v.ident(request.lease_id, "lease_id")
        reason = v.text(request.reason, "reason")
        _may_touch(await lease_store.get(self._pool, lease_id))
        row = await lease_store.cancel(self._pool, lease_id, reason)
        log.info("lease cancelled", lease_id=lease_id)
        return lease(row)

    async def GetLeaseUse(
        self, request: lease_pb2.GetLeaseUseRequest, context: aio.ServicerContext
    ) -> lease_pb2.LeaseUse:
        lease_id = v.ident(request.lease_id, "lease_id", required=False)
        venue_id = v.ident(request.venue_id, "venue_id", required=False)
        if bool(lease_id) == bool(venue_id):
            raise errors.InvalidArgument("lease_id", "give exactly one of lease_id and venue_id")
        if not request.HasField("start"):
            raise errors.InvalidArgument("start", "is required")
        if not request.HasField("end"):
            raise errors.InvalidArgument("end", "is required")
        start = _instant(request.start, "start")
        end = _instant(request.end, "end")
        v.period(
            start,
            end,
            max_days=leasing.MAX_REPORT.days,
            too_long=f"the period may be at most {leasing.MAX_REPORT.days} days",
        )
        time_zone = v.time_zone(request.time_zone)
        if lease_id:
            _may_touch(await lease_store.get(self._pool, lease_id))
            ids = [lease_id]
        else:
            auth.caller().require_venue(venue_id)
            ids = await lease_store.venue_lease_ids(self._pool, venue_id)
        hours = await lease_store.use_per_hour(self._pool, ids, start, end, time_zone)
        return lease_pb2.LeaseUse(
            hours=[
                lease_pb2.HourUse(
                    start=convert.timestamp(h.start),
                    end=convert.timestamp(h.end),
                    leased_slot_seconds=h.leased_slot_s,
                    used_slot_seconds=h.used_slot_s,
                )
                for h in hours
            ],
            leased_slot_seconds=sum(h.leased_slot_s for h in hours),
            used_slot_seconds=sum(h.used_slot_s for h in hours),
        )
