"""The consoles' JSON API under /api/: thin handlers (validate the path and body, authorise with the caller's
token, call the store, shape with broker.console.views).

    GET  /api/whoami                              the caller's role, the venues and providers it may see, and
                                                  whether it may see the region
    GET  /api/venues/{venue_id}/seats             the seat map: per seat state, game, site, latency, fps, time left
    GET  /api/venues/{venue_id}/events            Server-Sent Events: "seats" (all), "seat" (one changed), "stats"
                                                  (fps by session, every few seconds), "cost" (today's cost, when
                                                  ledger rows are written or a session is placed or ends, and
                                                  every few seconds while sessions run), fed by the hub
    GET  /api/venues/{venue_id}/service-level     per zone today: share of sessions and minutes within the cap
    GET  /api/venues/{venue_id}/leases            lease use
    GET  /api/venues/{venue_id}/cost              today's cost (the venue's day, its time zone), per currency
    GET  /api/venues/{venue_id}/statements        ?from=YYYY-MM-DD&to=YYYY-MM-DD (to exclusive; the venue's days)
    GET  /api/venues/{venue_id}/history           the last 24 h in 5-minute buckets, per zone: queue length, waits,
                                                  sessions, service level (broker.history)
    GET  /api/providers/{provider_id}/fleet       sites and hosts (state, sessions, utilisation, images held)
    GET  /api/providers/{provider_id}/events      Server-Sent Events: "fleet" whenever a host of it changes,
                                                  "revenue" whenever its ledger rows are written
    GET  /api/providers/{provider_id}/revenue     revenue per site and GPU class
    GET  /api/providers/{provider_id}/history     the last 24 h: utilisation and hosts online per site
    GET  /api/region                              the operator's view of the whole region: every site and venue now
    GET  /api/region/history                      the last 24 h region-wide: utilisation per site; queue, waits,
                                                  sessions and service level per venue
    POST /api/hosts/{host_id}/drain               {"reason": "...", "deadline_s": N} -> the host (N: 0, or no
                                                  key, for no deadline; broker.drain)
    POST /api/hosts/{host_id}/undrain             -> the host
    GET  /api/audit                               the audit trail: ?tenant=&from=&to=&actor=&action=&target= (from/to
                                                  ISO times), &after=SEQ&limit=N (paged, oldest first); the caller's
                                                  own tenant's rows (the operator: any)
    GET  /api/audit.jsonl                         the same rows, all of them, as JSON lines (an export)

Who may call: the same tenant tokens as the gRPC side, as `Authorization: Bearer <token>` (401 without a valid one;
403 for another tenant's venue or provider, with the field named; another tenant's host is 404, word for word as an
unknown one); a venue token sees its venue, a provider token its provider, an operator's everything, and only an
operator's sees the region (/api/region*: 403 naming "region" for any other). With
authentication off (--insecure) every caller is trusted. Errors are JSON {"error": "field: what is wrong",
"field": "..."}; `STATUS` below is the one table from the broker's errors to HTTP statuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

import asyncpg
import structlog
from aiohttp import web
from cloudseat import errors
from cloudseat import validate as v
from cloudseat import web as web_plumbing

from broker import auth, drain, history
from broker.console import business, live, views
from broker.console import queries as q
from broker.guard import Guard
from broker.store import audit
from broker.store import fleet as fleet_store
from broker.store import history as history_store
from broker.store import metering as metering_store

log = structlog.get_logger(__name__)

MAX_BODY_BYTES: Final = 4 * 1024
KEEPALIVE_S: Final = 15.0
# How often a seat map's stream sends the fps the hosts reported (heartbeats, not notifications, carry them).
STATS_INTERVAL_S: Final = 2.0
# Session states that change what a venue is billed: placed (its slots start to cost) and ended (they stop).
_MONEY_STATES: Final = frozenset({"PLACED", "ENDED"})

STATUS: Final[dict[type[errors.CloudseatError], int]] = {
    errors.InvalidArgument: 400,
    errors.Unauthenticated: 401,
    errors.PermissionDenied: 403,
    errors.NotFound: 404,
    errors.AlreadyExists: 409,
    errors.FailedPrecondition: 409,
    errors.ResourceExhausted: 429,
    errors.Unavailable: 503,
    errors.DeadlineExceeded: 504,
}


def http_status(exc: errors.CloudseatError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def _field(exc: errors.CloudseatError) -> str:
    if isinstance(exc, errors.InvalidArgument):
        return exc.field
    head, sep, _ = exc.message.partition(":")
    return head if sep and " " not in head else ""


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def middleware(guard: Guard) -> Any:
    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Under /api/: the caller from its token (or TRUSTED with authentication off), one call of its tenant's
        rate spent, and the broker's errors as JSON with their status."""
        if not request.path.startswith("/api/"):
            return await handler(request)
        try:
            principal = _authenticate(guard, request)
            guard.spend(principal)
            auth.set_caller(principal)
            audit.set_actor(audit.Actor(principal.subject, principal.tenant, f"http:{request.remote or ''}"))
            return await handler(request)
        except errors.CloudseatError as exc:
            guard.refused(exc, request.path, f"http:{request.remote or ''}:0")
            status = http_status(exc)
            if status == 500:
                log.error("console request failed", path=request.path, exc_info=exc)
            headers = {"WWW-Authenticate": 'Bearer realm="cloudseat"'} if status == 401 else None
            return web_plumbing.refusal(status, exc.message, _field(exc), headers)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return web_plumbing.routing_refusal(request, exc)

    return authenticate


def _authenticate(guard: Guard, request: web.Request) -> auth.Principal:
    if guard.verifier is None:
        return auth.TRUSTED
    header = request.headers.get("Authorization", "")
    if not header:
        raise errors.Unauthenticated(
            "authorization: this console needs a token ('Authorization: Bearer <token>')"
        )
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.Unauthenticated("authorization: expected 'Bearer <token>'")
    return guard.verifier.verify(token.strip())


def _caller(request: web.Request) -> auth.Principal:
    return auth.caller()


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=views.dumps(data), status=status, content_type="application/json")


async def _body(request: web.Request) -> dict[str, Any]:
    """A small JSON object (empty when there is no body)."""
    raw = await web_plumbing.read_limited(request, MAX_BODY_BYTES)
    if raw is None:
        raise errors.InvalidArgument("body", f"is more than {MAX_BODY_BYTES} bytes")
    if raw.strip() and request.content_type != "application/json":
        raise errors.InvalidArgument("body", "must be JSON (Content-Type: application/json)")
    try:
        return web_plumbing.json_object(raw)
    except ValueError as exc:
        raise errors.InvalidArgument("body", str(exc)) from None


def _date(request: web.Request, name: str) -> datetime.date:
    value = request.query.get(name, "")
    if not value:
        raise errors.InvalidArgument(name, "is required (YYYY-MM-DD)")
    try:
        return datetime.date.fromisoformat(value)
    except ValueError:
        raise errors.InvalidArgument(name, "must be a date, YYYY-MM-DD") from None


class Api:
    def __init__(self, pool: asyncpg.Pool, feed: live.Feed) -> None:
        self._pool = pool
        self._feed = feed

    def add_routes(self, r: web.UrlDispatcher) -> None:
        r.add_get("/api/whoami", self.whoami)
        r.add_get("/api/venues/{venue_id}/seats", self.seats)
        r.add_get("/api/venues/{venue_id}/events", self.venue_events)
        r.add_get("/api/venues/{venue_id}/service-level", self.service_level)
        r.add_get("/api/venues/{venue_id}/leases", self.leases)
        r.add_get("/api/venues/{venue_id}/cost", self.cost)
        r.add_get("/api/venues/{venue_id}/statements", self.statements)
        r.add_get("/api/venues/{venue_id}/history", self.venue_history)
        r.add_get("/api/providers/{provider_id}/fleet", self.fleet)
        r.add_get("/api/providers/{provider_id}/events", self.provider_events)
        r.add_get("/api/providers/{provider_id}/revenue", self.revenue)
        r.add_get("/api/providers/{provider_id}/history", self.provider_history)
        r.add_get("/api/region", self.region)
        r.add_get("/api/region/history", self.region_history)
        r.add_post("/api/hosts/{host_id}/drain", self.drain)
        r.add_post("/api/hosts/{host_id}/undrain", self.undrain)
        r.add_get("/api/audit", self.audit)
        r.add_get("/api/audit.jsonl", self.audit_export)

    # -- who -------------------------------------------------------------------------------------------------

    async def whoami(self, request: web.Request) -> web.Response:
        caller = _caller(request)
        everything = caller.trusted or caller.role is auth.Role.OPERATOR
        venues = (
            await q.venues(self._pool, None if everything else caller.venue_id)
            if everything or caller.role is auth.Role.VENUE
            else []
        )
        providers = (
            await q.providers(self._pool, None if everything else caller.provider_id)
            if everything or caller.role is auth.Role.PROVIDER
            else []
        )
        return _json(
            {
                "role": str(caller.role),
                "subject": caller.subject,
                "trusted": caller.trusted,
                # Whether the region view (/api/region) is this caller's to see: the operator's only.
                "region": everything,
                "venues": [dict(r) for r in venues],
                "providers": [dict(r) for r in providers],
            }
        )

    # -- venue -----------------------------------------------------------------------------------------------

    def _venue(self, request: web.Request) -> str:
        venue_id = v.ident(request.match_info["venue_id"], "venue_id")
        _caller(request).require_venue(venue_id)
        return venue_id

    async def _fps(self, session_ids: Iterable[str]) -> dict[str, float]:
        """The fps the hosts last reported for these sessions (store.metering.stream_stats)."""
        ids = [uuid.UUID(s) for s in session_ids if s]
        stats = await metering_store.stream_stats(self._pool, ids)
        return {str(sid): float(r["fps_sent"]) for sid, r in stats.items()}

    async def _seat_views(self, venue_id: str, seat_id: str | None = None) -> list[dict[str, Any]]:
        rows = await q.seats(self._pool, venue_id, seat_id)
        fps = await self._fps(str(r["session"]["session_id"]) for r in rows if r["session"] is not None)
        return [views.seat(r, fps) for r in rows]

    async def _known_venue(self, venue_id: str) -> None:
        if not await q.venues(self._pool, venue_id):
            raise errors.NotFound.of("venue_id", "venue", venue_id)

    async def seats(self, request: web.Request) -> web.Response:
        venue_id = self._venue(request)
        await self._known_venue(venue_id)
        return _json({"venue_id": venue_id, "seats": await self._seat_views(venue_id)})

    async def venue_events(self, request: web.Request) -> web.StreamResponse:
        venue_id = self._venue(request)
        await self._known_venue(venue_id)
        with self._feed.venue(venue_id) as changes:  # before the first read: no change falls between
            response = await web_plumbing.event_stream(request)
            with contextlib.suppress(ConnectionResetError):
                seats = await self._seat_views(venue_id)
                await _send(response, "seats", {"venue_id": venue_id, "seats": seats})
                await self._send_cost(response, venue_id, ledger=False)
                sessions = {s["seat_id"]: s["session_id"] for s in seats}
                while True:
                    try:
                        item = await asyncio.wait_for(changes.get(), STATS_INTERVAL_S)
                    except TimeoutError:
                        live_fps = await self._fps(sid for sid in sessions.values() if sid)
                        await _send(response, "stats", {"fps": live_fps})
                        if any(sessions.values()):  # running sessions' cost grows by the second
                            await self._send_cost(response, venue_id, ledger=False)
                        continue
                    items = [item]
                    while not changes.empty():  # a burst re-reads each seat once
                        items.append(changes.get_nowait())
                    if None in items:
                        break
                    # Money moved: ledger rows written (statements change too), a session placed (it starts to
                    # cost) or ended (it stops).
                    ledger = live.LEDGER in items or live.RESYNC in items
                    if ledger or any(isinstance(c, dict) and c.get("state") in _MONEY_STATES for c in items):
                        await self._send_cost(response, venue_id, ledger=ledger)
                    if live.RESYNC in items:
                        seats = await self._seat_views(venue_id)
                        await _send(response, "seats", {"venue_id": venue_id, "seats": seats})
                        sessions = {s["seat_id"]: s["session_id"] for s in seats}
                        continue
                    for seat_id in dict.fromkeys(str(c["seat_id"]) for c in items if isinstance(c, dict)):
                        for seat in await self._seat_views(venue_id, seat_id):
                            sessions[seat["seat_id"]] = seat["session_id"]
                            await _send(response, "seat", seat)
        return response

    async def _send_cost(self, response: web.StreamResponse, venue_id: str, *, ledger: bool) -> None:
        """Today's cost as an event; `ledger`: the ledger changed, so statements shown should be read again."""
        cost = await business.cost_today(self._pool, venue_id)
        await _send(response, "cost", {**cost, "ledger_changed": ledger})

    async def service_level(self, request: web.Request) -> web.Response:
        venue_id = self._venue(request)
        zones = [views.zone_service(r) for r in await q.zone_service(self._pool, venue_id)]
        return _json({"venue_id": venue_id, "period": "today", "zones": zones})

    async def leases(self, request: web.Request) -> web.Response:
        venue_id = self._venue(request)
        return _json(await business.lease_use(self._pool, venue_id))

    async def cost(self, request: web.Request) -> web.Response:
        venue_id = self._venue(request)
        return _json(await business.cost_today(self._pool, venue_id))

    async def statements(self, request: web.Request) -> web.Response:
        venue_id = self._venue(request)
        start, end = _date(request, "from"), _date(request, "to")
        v.period(
            start, end, max_days=366, fields=("from", "to"), too_long="a statement covers at most 366 days"
        )
        return _json(await business.venue_statement(self._pool, venue_id, start, end))

    async def _span(self) -> history.Span:
        return history.Span.last(await history_store.clock(self._pool))

    @staticmethod
    def _span_json(span: history.Span) -> dict[str, Any]:
        return {"start": span.start, "end": span.end, "bucket_s": span.bucket_s}

    async def venue_history(self, request: web.Request) -> web.Response:
        venue_id = self._venue(request)
        await self._known_venue(venue_id)
        span = await self._span()
        rows = await history_store.zones(self._pool, venue_id, span)
        return _json(
            {
                "venue_id": venue_id,
                "time_zone": await business.venue_time_zone(self._pool, venue_id),
                "span": self._span_json(span),
                **history.zone_series(span, rows),
            }
        )

    # -- provider --------------------------------------------------------------------------------------------

    def _provider(self, request: web.Request) -> str:
        provider_id = v.ident(request.match_info["provider_id"], "provider_id")
        _caller(request).require_provider(provider_id)
        return provider_id

    async def _fleet(self, provider_id: str) -> dict[str, Any]:
        sites = await q.provider_sites(self._pool, provider_id)
        hosts = await fleet_store.list_hosts(self._pool, provider_id, None)
        return {
            "provider_id": provider_id,
            "sites": [views.site(r) for r in sites],
            "hosts": [views.host(r) for r in hosts],
        }

    async def _known_provider(self, provider_id: str) -> None:
        if not await q.providers(self._pool, provider_id):
            raise errors.NotFound.of("provider_id", "provider", provider_id)

    async def fleet(self, request: web.Request) -> web.Response:
        provider_id = self._provider(request)
        await self._known_provider(provider_id)
        return _json(await self._fleet(provider_id))

    async def provider_events(self, request: web.Request) -> web.StreamResponse:
        provider_id = self._provider(request)
        await self._known_provider(provider_id)
        with self._feed.hosts() as changes:
            response = await web_plumbing.event_stream(request)
            with contextlib.suppress(ConnectionResetError):
                fleet = await self._fleet(provider_id)
                await _send(response, "fleet", fleet)
                await _send(response, "revenue", await business.revenue(self._pool, provider_id))
                while True:
                    try:
                        item = await asyncio.wait_for(changes.get(), KEEPALIVE_S)
                    except TimeoutError:
                        await response.write(b": keepalive\n\n")
                        continue
                    items = [item]
                    while not changes.empty():
                        items.append(changes.get_nowait())
                    if None in items:
                        break
                    mine = {h["host_id"] for h in fleet["hosts"]}
                    if live.RESYNC in items or any(
                        isinstance(c, dict) and c.get("host_id") in mine for c in items
                    ):
                        fleet = await self._fleet(provider_id)
                        await _send(response, "fleet", fleet)
                    # Money moved for this provider (ledger rows written): its revenue, pushed like its fleet.
                    if live.RESYNC in items or any(
                        isinstance(c, dict) and provider_id in c.get("ledger_providers", ()) for c in items
                    ):
                        await _send(response, "revenue", await business.revenue(self._pool, provider_id))
        return response

    async def revenue(self, request: web.Request) -> web.Response:
        provider_id = self._provider(request)
        return _json(await business.revenue(self._pool, provider_id))

    async def provider_history(self, request: web.Request) -> web.Response:
        provider_id = self._provider(request)
        await self._known_provider(provider_id)
        span = await self._span()
        rows = await history_store.sites(self._pool, provider_id, span)
        return _json({"provider_id": provider_id, "span": self._span_json(span), **history.site_series(span, rows)})

    # -- the region (the operator's) -------------------------------------------------------------------------

    async def region(self, request: web.Request) -> web.Response:
        _caller(request).require_operator("region")
        sites = await q.region_sites(self._pool)
        venues = await q.region_venues(self._pool)
        return _json(
            {
                "sites": [views.region_site(r) for r in sites],
                "venues": [views.region_venue(r) for r in venues],
            }
        )

    async def region_history(self, request: web.Request) -> web.Response:
        _caller(request).require_operator("region")
        span = await self._span()
        sites = await history_store.sites(self._pool, None, span)
        zones = await history_store.zones(self._pool, None, span)
        return _json(
            {
                "span": self._span_json(span),
                **history.site_series(span, sites),
                **history.zone_series(span, zones, key="venue"),
            }
        )

    async def _own_host(self, request: web.Request) -> str:
        host_id = v.ident(request.match_info["host_id"], "host_id")
        caller = _caller(request)
        if not (caller.trusted or caller.role is auth.Role.OPERATOR):
            owner = await fleet_store.host_provider(self._pool, host_id)
            caller.require_owner(owner, "host_id", "host", host_id)
        return host_id

    async def drain(self, request: web.Request) -> web.Response:
        host_id = await self._own_host(request)
        body = await _body(request)
        reason = body.get("reason", "")
        if not isinstance(reason, str):
            raise errors.InvalidArgument("reason", f"must be a string, not {type(reason).__name__}")
        reason = v.text(reason, "reason")
        deadline_s = drain.deadline_s(body.get("deadline_s", 0))
        row = await fleet_store.set_drained(self._pool, host_id, True, reason, deadline_s)
        log.info("host drained", host_id=host_id, reason=reason, deadline_s=deadline_s, via="console")
        return _json(views.host(row))

    async def undrain(self, request: web.Request) -> web.Response:
        host_id = await self._own_host(request)
        row = await fleet_store.set_drained(self._pool, host_id, False)
        log.info("host undrained", host_id=host_id, via="console")
        return _json(views.host(row))


    # -- audit -----------------------------------------------------------------------------------------------

    def _audit_filter(self, request: web.Request) -> audit.Filter:
        query = request.query
        tenant = audit.tenant(query.get("tenant", ""))
        start, end = _instant(query, "from"), _instant(query, "to")
        if start is not None and end is not None and end <= start:
            raise errors.InvalidArgument("to", "must be after from")
        return audit.Filter(
            tenant=_caller(request).audit_scope(tenant),
            start=start,
            end=end,
            actor=v.text(query.get("actor", ""), "actor") or None,
            action=v.text(query.get("action", ""), "action", max_len=64) or None,
            target=v.text(query.get("target", ""), "target") or None,
        )

    async def audit(self, request: web.Request) -> web.Response:
        f = self._audit_filter(request)
        after = _count(request, "after", 0, 2**62)
        limit = _count(request, "limit", 1, 1000, default=100)
        rows = await audit.page(self._pool, f, after, limit)
        return _json(
            {
                "entries": [audit.as_json(r) for r in rows],
                "next": rows[-1]["seq"] if len(rows) == limit else None,
            }
        )

    async def audit_export(self, request: web.Request) -> web.StreamResponse:
        f = self._audit_filter(request)
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        async for row in audit.every(self._pool, f):
            await response.write(views.dumps(audit.as_json(row)).encode() + b"\n")
        await response.write_eof()
        return response


def _instant(query: Any, name: str) -> datetime.datetime | None:
    text = query.get(name, "")
    if not text:
        return None
    try:
        at = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise errors.InvalidArgument(name, "must be an ISO 8601 time (2025-01-31T18:00:00Z)") from None
    return at if at.tzinfo else at.replace(tzinfo=datetime.UTC)


def _count(request: web.Request, name: str, lo: int, hi: int, default: int = 0) -> int:
    text = request.query.get(name, "")
    if not text:
        return default
    if not text.isdigit() or len(text) > 19:
        raise errors.InvalidArgument(name, f"must be a whole number from {lo} to {hi}")
    return v.int_range(int(text), name, lo, hi)


async def _send(response: web.StreamResponse, event: str, data: Any) -> None:
    await web_plumbing.send_event(response, event, views.dumps(data))
