"""AuditService.ListAudit: the audit trail, read back by the tenant it belongs to (auth.Principal.audit_scope)."""

from __future__ import annotations

import asyncpg
from cloudseat import errors
from cloudseat import validate as v
from cloudseat.v1 import audit_pb2, audit_pb2_grpc
from google.protobuf import timestamp_pb2
from grpc import aio

from broker import auth
from broker.store import audit

_DEFAULT_PAGE = 100
_MAX_PAGE = 1_000


def audit_filter(request: audit_pb2.ListAuditRequest) -> tuple[audit.Filter, int, int]:
    """The request's filter, the seq to read after, and the page size; InvalidArgument naming the field."""
    audit.tenant(request.tenant)
    start = (
        v.instant(request.start.seconds, request.start.nanos, "start") if request.HasField("start") else None
    )
    end = v.instant(request.end.seconds, request.end.nanos, "end") if request.HasField("end") else None
    if start is not None and end is not None and end <= start:
        raise errors.InvalidArgument("end", "must be after start")
    size = v.int_range(request.page_size, "page_size", 0, _MAX_PAGE) or _DEFAULT_PAGE
    after = 0
    if request.page_token:
        if not request.page_token.isdigit() or len(request.page_token) > 18:
            raise errors.InvalidArgument("page_token", "not a token this service gave")
        after = int(request.page_token)
    f = audit.Filter(
        tenant=request.tenant or None,
        start=start,
        end=end,
        actor=v.text(request.actor, "actor", max_len=200) or None,
        action=v.text(request.action, "action", max_len=64) or None,
        target=v.text(request.target, "target", max_len=200) or None,
    )
    return f, after, size


def entry(r: asyncpg.Record) -> audit_pb2.AuditEntry:
    at = timestamp_pb2.Timestamp()
    at.FromDatetime(r["at"])
    return audit_pb2.AuditEntry(
        seq=r["seq"],
        at=at,
        actor=r["actor"],
        tenant=r["tenant"],
        action=r["action"],
        target=r["target"],
        detail_json=r["detail"],
        peer=r["peer"],
        chain_no=r["chain_no"] or 0,
        prev_hash=r["prev_hash"] or "",
        hash=r["hash"] or "",
    )


class AuditService(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def ListAudit(
        self, request: audit_pb2.ListAuditRequest, context: aio.ServicerContext
    ) -> audit_pb2.ListAuditResponse:
        f, after, size = audit_filter(request)
        f = audit.Filter(
            auth.caller().audit_scope(request.tenant), f.start, f.end, f.actor, f.action, f.target
        )
        rows = await audit.page(self._pool, f, after, size)
        token = str(rows[-1]["seq"]) if len(rows) == size else ""
        return audit_pb2.ListAuditResponse(entries=[entry(r) for r in rows], next_page_token=token)
