"""BillingService: statements and the metering ledger (broker.store.metering), for the venue that pays, the provider
that earns, and operators."""

from __future__ import annotations

import datetime as dt

import asyncpg
from cloudseat import validate as v
from cloudseat.errors import InvalidArgument
from cloudseat.v1 import billing_pb2, billing_pb2_grpc
from google.protobuf import timestamp_pb2
from grpc import aio

from broker import auth, metering
from broker.rpc import convert
from broker.store import metering as metering_store

_BASIS = {metering.ON_DEMAND: billing_pb2.BASIS_ON_DEMAND, metering.LEASE: billing_pb2.BASIS_LEASE}
_KIND = {metering.USAGE: billing_pb2.ENTRY_KIND_USAGE, metering.CREDIT: billing_pb2.ENTRY_KIND_SLA_CREDIT}


def _tenant(venue_id: str, provider_id: str) -> tuple[str | None, str | None]:
    """Exactly one of a venue and a provider, checked, and the caller allowed to see its books."""
    venue = v.ident(venue_id, "venue_id", required=False) or None
    provider = v.ident(provider_id, "provider_id", required=False) or None
    if venue is None and provider is None:
        raise InvalidArgument("venue_id", "is required (or provider_id: whose statement)")
    if venue is not None and provider is not None:
        raise InvalidArgument("provider_id", "must be empty when venue_id is set (one statement at a time)")
    return venue, provider


def _period(
    start: timestamp_pb2.Timestamp, end: timestamp_pb2.Timestamp, has_start: bool, has_end: bool
) -> tuple[dt.datetime, dt.datetime]:
    if not has_start:
        raise InvalidArgument("start", "is required")
    if not has_end:
        raise InvalidArgument("end", "is required")
    return v.period(v.instant(start.seconds, start.nanos, "start"), v.instant(end.seconds, end.nanos, "end"))


def _authorise(venue: str | None, provider: str | None) -> None:
    caller = auth.caller()
    if venue is not None:
        caller.require_venue(venue)
    if provider is not None:
        caller.require_provider(provider)


def _line(line: metering.Line) -> billing_pb2.StatementLine:
    return billing_pb2.StatementLine(
        site_id=line.site_id,
        gpu_class=line.gpu_class,
        basis=_BASIS[line.basis],
        price_micros_per_slot_hour=line.price_micros,
        entries=line.entries,
        seconds=line.seconds,
        slot_seconds=line.slot_seconds,
        usage_micros=line.usage_micros,
        credited_seconds=line.credited_seconds,
        credit_micros=line.credit_micros,
        total_micros=line.total_micros,
        currency=line.currency,
    )


def statement(s: metering.Statement) -> billing_pb2.Statement:
    # The single sums only where there is a single currency: amounts in different ones are never added.
    one = len(s.currencies) == 1
    return billing_pb2.Statement(
        venue_id=s.venue_id or "",
        provider_id=s.provider_id or "",
        start=convert.timestamp(s.start),
        end=convert.timestamp(s.end),
        lines=[_line(line) for line in s.lines],
        usage_micros=s.usage_micros if one else 0,
        credit_micros=s.credit_micros if one else 0,
        total_micros=s.total_micros if one else 0,
        seconds=s.seconds,
        credited_seconds=s.credited_seconds,
        entries=s.entries,
        totals=[
            billing_pb2.CurrencyTotal(
                currency=t.currency,
                usage_micros=t.usage_micros,
                credit_micros=t.credit_micros,
                total_micros=t.total_micros,
            )
            for t in s.totals
        ],
        currency=s.currencies[0] if one else "",
    )


def entry(row: asyncpg.Record) -> billing_pb2.LedgerEntry:
    return billing_pb2.LedgerEntry(
        entry_id=row["entry_id"],
        session_id=row["session_id"],
        venue_id=row["venue_id"],
        provider_id=row["provider_id"],
        host_id=row["host_id"],
        site_id=row["site_id"],
        gpu_class=row["gpu_class"],
        slots=row["slots"],
        kind=_KIND[row["kind"]],
        basis=_BASIS[row["basis"]],
        lease_id=row["lease_id"] or "",
        price_micros_per_slot_hour=row["price_micros"],
        start=convert.timestamp(row["start_at"]),
        end=convert.timestamp(row["end_at"]),
        seconds=row["seconds"],
        amount_micros=row["amount_micros"],
        written_at=convert.timestamp(row["written_at"]),
        currency=row["currency"],
    )


class BillingService(billing_pb2_grpc.BillingServiceServicer):
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def GetStatement(
        self, request: billing_pb2.GetStatementRequest, context: aio.ServicerContext
    ) -> billing_pb2.Statement:
        venue, provider = _tenant(request.venue_id, request.provider_id)
        start, end = _period(request.start, request.end, request.HasField("start"), request.HasField("end"))
        _authorise(venue, provider)
        s = await metering_store.statement(
            self._pool, venue_id=venue, provider_id=provider, start=start, end=end
        )
        return statement(s)

    async def ListLedger(
        self, request: billing_pb2.ListLedgerRequest, context: aio.ServicerContext
    ) -> billing_pb2.ListLedgerResponse:
        venue, provider = _tenant(request.venue_id, request.provider_id)
        start, end = _period(request.start, request.end, request.HasField("start"), request.HasField("end"))
        size = v.int_range(request.page_size or 100, "page_size", 1, 1000)
        after = 0
        if request.page_token:
            if not (
                request.page_token.isascii()
                and request.page_token.isdigit()
                and len(request.page_token) <= 18
            ):
                raise InvalidArgument("page_token", "is not a token from a previous page")
            after = int(request.page_token)
        _authorise(venue, provider)
        rows = await metering_store.ledger(
            self._pool,
            venue_id=venue,
            provider_id=provider,
            start=start,
            end=end,
            after_entry=after,
            limit=size,
        )
        token = str(rows[-1]["entry_id"]) if len(rows) == size else ""
        return billing_pb2.ListLedgerResponse(entries=[entry(r) for r in rows], next_page_token=token)
