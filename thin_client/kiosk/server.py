"""`cloudseat-client kiosk`: a small aiohttp server on the seat that serves the kiosk page and relays it to the broker.

The page talks only to this server; this server holds the seat's credentials (its identity, its seat token, the CA
that signed the broker's certificate) and each session's token (a capability: it never reaches the page), and speaks
gRPC to the broker through `thin_client.seat.SeatSession`, the session flow the Python client uses too. The
browser's WebRTC stack connects straight to the agent; only the offer and the answer pass through here.

    GET  /                               the page (static files under /static/)
    GET  /api/seat                       venue, seat, zone, the games (ListGames), the seat's current session
    GET  /api/protocol                   cloudseat.seat_protocol.protocol_description(): stamps and input
    GET  /api/clock                      {"monotonic_us"}: this machine's CLOCK_MONOTONIC, for capture→decoded
    POST /api/sessions                   {"game_id"} -> 201 {"session"}
    GET  /api/sessions/{id}/events       Server-Sent Events: "update" (the session as JSON, with a one-line "text"),
                                         "problem" ({"error"}), until the session ends
    POST /api/sessions/{id}/negotiate    {"sdp": offer} -> {"sdp": answer}
    POST /api/sessions/{id}/resume       a lost session's successor at the front of the queue -> 201 {"session"}
    POST /api/sessions/{id}/end          -> {"session"}
    POST /api/sessions/{id}/stats        {"samples": [{"at_ms", "fps", "rtt_ms"?}, ...]} -> {"accepted"}: the page's
                                         getStats windows, relayed to the broker (ReportStreamStats) for the SLA

Errors are JSON ``{"error": one line that says what to fix, "field": what it is about}`` with a fitting status:
400 malformed input (nothing is sent to the broker), 403 a request from another origin, 404 an unknown id, 409 a
conflict with the session's state, 413 a body too large, 415 not JSON, 502/503/504 the broker refused, cannot be
reached or did not answer. The broker's refusals are put in words by `thin_client.seat.explain`, as in the Python
client.

One seat has at most one live session, so the kiosk keeps one `SessionFeed` per session it started: a single
WatchSession stream whose latest update every page (and a reloaded page) is sent, so the kiosk always knows the
session's state. When the kiosk stops it ends the live session: without the token it holds, nobody could.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import math
import os
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import grpc
import structlog
from aiohttp import web
from cloudseat import seat_protocol, validate
from cloudseat.client import BrokerClient
from cloudseat.errors import InvalidArgument
from cloudseat.v1 import common_pb2, session_pb2, venue_pb2
from grpc import aio

from thin_client import seat as seat_flow
from thin_client.seat import SeatConfig, SeatError, SeatSession

log = structlog.get_logger(__name__)

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
DEFAULT_LISTEN: Final = "127.0.0.1:8080"
MAX_JSON_BYTES: Final = 4 * 1024  # every body but an offer
MAX_OFFER_BODY_BYTES: Final = validate.MAX_SDP_BYTES + 1024  # an offer, JSON-escaped (CRLF is 4 bytes more)
KEEPALIVE_S: Final = 15.0  # an SSE comment this often keeps proxies and the browser from giving up
BROKER_TIMEOUT_S: Final = 10.0
_KEEP_ENDED_FEEDS: Final = 16

S = common_pb2.SessionState
_LISTEN = re.compile(r"(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(?P<port>\d{1,5})")

# The broker's status -> this API's HTTP status.
_HTTP_STATUS: Final = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class KioskConfigError(ValueError):
    """A kiosk flag is wrong; the message names it."""


@dataclass(frozen=True, slots=True)
class KioskConfig:
    seat: SeatConfig
    host: str = "127.0.0.1"
    port: int = 8080  # 0: any free port (the URL printed says which)
    ice_addresses: tuple[
        str, ...
    ] = ()  # keep only these host candidates in the browser's offers (empty: all)


# -- command line -----------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The kiosk's own flags (cli.py adds the seat's: --broker, --venue, --seat, --zone, --patron, --ice-address)."""
    parser.add_argument(
        "--listen",
        default=os.environ.get("CLOUDSEAT_KIOSK_LISTEN", DEFAULT_LISTEN),
        help="HOST:PORT to serve the page on; port 0 picks a free one, printed as 'kiosk: URL' "
        f"(env CLOUDSEAT_KIOSK_LISTEN; default {DEFAULT_LISTEN}: this machine only)",
    )
    parser.add_argument(
        "--log-format",
        choices=("auto", "console", "json"),
        default=os.environ.get("CLOUDSEAT_LOG_FORMAT", "auto"),
        help="log lines on stderr (env CLOUDSEAT_LOG_FORMAT; default auto: console on a terminal, else JSON)",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("CLOUDSEAT_LOG_LEVEL", "info"),
        help="debug, info, warning or error (env CLOUDSEAT_LOG_LEVEL; default info)",
    )


def parse_listen(text: str) -> tuple[str, int]:
    match = _LISTEN.fullmatch(text.strip())
    if match is None:
        raise KioskConfigError(f"--listen: {text!r} is not HOST:PORT")
    port = int(match["port"])
    if port > 65535:
        raise KioskConfigError(f"--listen: port {port} is above 65535")
    return match["host"].strip("[]"), port


def config_from_args(args: argparse.Namespace) -> KioskConfig:
    for flag, value in (("--venue", args.venue), ("--seat", args.seat), ("--zone", args.zone)):
        if value or flag != "--zone":
            try:
                validate.ident(value, flag)
            except InvalidArgument as exc:
                raise KioskConfigError(str(exc)) from None
    broker = args.broker or ""
    if not (_LISTEN.fullmatch(broker) or (broker.startswith("unix:/") and len(broker) > len("unix:/"))):
        raise KioskConfigError(f"--broker: {broker!r} is not HOST:PORT (or unix:/PATH)")
    host, port = parse_listen(args.listen)
    addresses: list[str] = []
    for address in args.ice_address or ():
        try:
            addresses.append(str(ipaddress.ip_address(address)))
        except ValueError:
            raise KioskConfigError(f"--ice-address: {address!r} is not an IP address") from None
    ca: Path | None = args.ca
    if ca is not None and not ca.is_file():
        raise KioskConfigError(f"--ca: no file {str(ca)!r}")
    seat = SeatConfig(
        broker=broker,
        venue_id=args.venue,
        seat_id=args.seat,
        zone_id=args.zone,
        patron_id=args.patron,
        token=args.token or "",
        ca=ca,
    )
    return KioskConfig(seat=seat, host=host, port=port, ice_addresses=tuple(addresses))


def main(args: argparse.Namespace) -> int:
    try:
        cfg = config_from_args(args)
    except KioskConfigError as exc:
        print(f"cloudseat-client kiosk: error: {exc}", file=sys.stderr)
        return 2
    from cloudseat import logs

    logs.configure(args.log_format, args.log_level)
    try:
        asyncio.run(serve(cfg))
    except OSError as exc:  # the port is taken, the address is not ours
        print(
            f"cloudseat-client kiosk: error: cannot listen on {args.listen}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    return 0


async def serve(cfg: KioskConfig) -> None:
    """Serve until SIGINT or SIGTERM; prints ``kiosk: URL`` once listening."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Kiosk(cfg) as kiosk:
        print(f"kiosk: {kiosk.url}", flush=True)
        await stop.wait()


# -- sessions ---------------------------------------------------------------------------------------------------


def session_json(update: session_pb2.SessionUpdate) -> dict[str, Any]:
    """What the page is told of a session: no token, and the patron-facing line from `seat.describe`."""
    s = update.session
    ended = s.state == S.SESSION_STATE_ENDED
    return {
        "session_id": s.session_id,
        "state": seat_flow.state_name(s.state),
        "game_id": s.game_id,
        "zone_id": s.zone_id,
        "tier": common_pb2.Tier.Name(s.tier).removeprefix("TIER_"),
        "host_id": s.host_id,
        "site_id": s.site_id,
        "end_reason": seat_flow.reason_name(s.end_reason) if ended else "",
        "end_detail": s.end_detail,
        "resumable": seat_flow.resumable(s),
        "resumes_session_id": s.resumes_session_id,
        "queue_position": update.queue_position,
        "queue_length": update.queue_length,
        "warnings": list(update.warnings),
        # Patron time: seconds left when the broker sent this (null: no limit, or not streaming yet).
        "time_left_s": update.time_left_s if update.HasField("time_left_s") else None,
        "time_up": update.time_up,
        "grace_left_s": update.grace_left_s,
        "text": seat_flow.describe(update),
    }


class SessionFeed:
    """One session's updates from the broker (a single WatchSession), its latest kept for every page that asks."""

    def __init__(self, seat: SeatSession, first: session_pb2.SessionUpdate) -> None:
        self.seat = seat
        self.session_id = first.session.session_id
        self.latest = session_json(first)
        self.version = 1
        self.problem = ""  # the watch failed for good: why, in one line
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._run(), name=f"feed-{self.session_id}")

    @property
    def ended(self) -> bool:
        return bool(self.latest["state"] == "ENDED") or self._task.done()

    async def _run(self) -> None:
        try:
            async for update in self.seat.updates():
                await self._publish(session_json(update))
        except SeatError as exc:
            log.warning("session watch failed", session_id=self.session_id, error=str(exc))
            self.problem = str(exc)
        finally:
            async with self._changed:
                self.version += 1
                self._changed.notify_all()

    async def _publish(self, latest: dict[str, Any]) -> None:
        async with self._changed:
            self.latest, self.version = latest, self.version + 1
            self._changed.notify_all()

    async def wait_change(self, seen: int, timeout_s: float) -> None:
        """Return once the version is past ``seen``, the feed is over, or ``timeout_s`` has passed."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(lambda: self.version > seen or self._task.done())

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


# -- the HTTP side ----------------------------------------------------------------------------------------------


class ApiError(Exception):
    """A refusal of this API: an HTTP status, one line that says what to fix, and the field it is about."""

    def __init__(self, status: int, message: str, field: str = "") -> None:
        super().__init__(message)
        self.status, self.field = status, field


def _from_seat_error(exc: SeatError, cfg: SeatConfig) -> ApiError:
    """The HTTP side of a SeatError: its status from the broker's, when it came from one (`explain` raises it
    from the AioRpcError, which stays on ``__context__``)."""
    rpc = exc.__context__ if isinstance(exc.__context__, aio.AioRpcError) else None
    if rpc is None:
        return ApiError(409, str(exc), "session_id")
    details = (rpc.details() or "").strip()
    field = details.split(":", 1)[0] if ":" in details and " " not in details.split(":", 1)[0] else ""
    message = str(exc)
    if rpc.code() is grpc.StatusCode.NOT_FOUND and field == "game_id":
        # explain() names the Python client's --game flag; at the kiosk the patron picks from a list.
        message = f"{details}; pick one of the games shown"
    if rpc.code() is grpc.StatusCode.UNAVAILABLE:
        field = field or "broker"
    return ApiError(_HTTP_STATUS.get(rpc.code(), 502), message, field)


def _error_response(status: int, message: str, field: str = "") -> web.Response:
    return web.json_response({"error": message, "field": field}, status=status)


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> Any:
    """Every refusal under /api/ as JSON; anything unexpected as one line (the traceback goes to the log only)."""
    try:
        response = await handler(request)
    except ApiError as exc:
        return _error_response(exc.status, str(exc), exc.field)
    except web.HTTPException as exc:
        if not request.path.startswith("/api/") or exc.status < 400:
            raise
        what = {404: "no such API path", 405: f"{request.method} is not allowed here"}.get(
            exc.status, exc.reason
        )
        return _error_response(exc.status, f"{request.path}: {what}", "path")
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception as exc:
        log.exception("kiosk request failed", path=request.path)
        return _error_response(500, f"the kiosk failed: {type(exc).__name__}: {exc}".splitlines()[0])
    return response


_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)


@web.middleware
async def _headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> Any:
    """Nothing cached (a kiosk must pick up a new page at once), and nothing but our own scripts run."""
    response = await handler(request)
    if not response.prepared:
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Content-Security-Policy", _CSP)
        response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


async def _json_body(request: web.Request, max_bytes: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """The request's JSON object. Only same-origin JSON is taken: a page elsewhere cannot post here (its request
    would carry another Origin, and a form cannot send application/json without a preflight we never allow)."""
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        raise ApiError(
            403, f"requests from {origin} are not accepted; only the kiosk page may post", "origin"
        )
    if request.content_type != "application/json":
        raise ApiError(415, "the body must be JSON (Content-Type: application/json)", "body")
    if request.content_length is not None and request.content_length > max_bytes:
        raise ApiError(413, f"the body is {request.content_length} bytes, more than {max_bytes}", "body")
    raw = await request.content.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ApiError(413, f"the body is more than {max_bytes} bytes", "body")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON ({exc})", "body") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object", "body")
    return body


def _string_field(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None or value == "":
        raise ApiError(400, f"{name}: is required", name)
    if not isinstance(value, str):
        raise ApiError(400, f"{name}: must be a string, not {type(value).__name__}", name)
    return value


def filter_candidates(sdp: str, addresses: tuple[str, ...]) -> tuple[str, int, int]:
    """The offer with only UDP host candidates on ``addresses`` (all candidates when empty); also how many
    candidates there were and how many are kept. The agent's aiortc gathers UDP only, so TCP ones are noise."""
    if not addresses:
        count = sum(1 for line in sdp.splitlines() if line.startswith("a=candidate:"))
        return sdp, count, count
    wanted = {str(ipaddress.ip_address(a)) for a in addresses}
    newline = "\r\n" if "\r\n" in sdp else "\n"
    kept_lines, total, kept = [], 0, 0
    for line in sdp.split(newline):
        if line.startswith("a=candidate:"):
            total += 1
            parts = line.split()
            # a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> ...
            if len(parts) < 8 or parts[2].lower() != "udp" or parts[4] not in wanted:
                continue
            kept += 1
        kept_lines.append(line)
    return newline.join(kept_lines), total, kept


class Kiosk:
    """The server: ``async with Kiosk(cfg) as kiosk: kiosk.url``."""

    def __init__(self, cfg: KioskConfig) -> None:
        self.cfg = cfg
        self.client: BrokerClient | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""
        self._seats: dict[str, SeatSession] = {}  # every session id this kiosk started or resumed
        self._feeds: dict[str, SessionFeed] = {}
        self._current: SeatSession | None = None
        self._start_lock = asyncio.Lock()
        self.app = web.Application(middlewares=[_headers, _errors], client_max_size=MAX_OFFER_BODY_BYTES)
        r = self.app.router
        r.add_get("/", self._index)
        r.add_static("/static/", STATIC_DIR, follow_symlinks=False)
        r.add_get("/api/seat", self._seat)
        r.add_get("/api/protocol", self._protocol)
        r.add_get("/api/clock", self._clock)
        r.add_post("/api/sessions", self._start)
        r.add_get("/api/sessions/{session_id}/events", self._events)
        r.add_post("/api/sessions/{session_id}/negotiate", self._negotiate)
        r.add_post("/api/sessions/{session_id}/resume", self._resume)
        r.add_post("/api/sessions/{session_id}/end", self._end)
        r.add_post("/api/sessions/{session_id}/stats", self._stats)

    async def __aenter__(self) -> Kiosk:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> str:
        """Listen; the page's URL (with the real port when the config asked for port 0)."""
        self.client = self.cfg.seat.client()  # carries the seat's credentials (its token; TLS with --ca)
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.cfg.host, self.cfg.port)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        host = f"[{self.cfg.host}]" if ":" in self.cfg.host else self.cfg.host
        self.url = f"http://{host}:{port}/"
        log.info("kiosk listening", url=self.url, broker=self.cfg.seat.broker, venue_id=self.cfg.seat.venue_id,
                 seat_id=self.cfg.seat.seat_id)  # fmt: skip
        return self.url

    async def stop(self) -> None:
        """End the live session (its token dies with this process), close the watches, stop serving."""
        current = self._current
        if current is not None and current.session is not None:
            feed = self._feeds.get(current.session.session_id)
            if feed is not None and not feed.ended:
                with contextlib.suppress(SeatError, aio.AioRpcError):
                    async with asyncio.timeout(5):
                        await current.end("the kiosk stopped")
        for feed in self._feeds.values():
            await feed.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.client is not None:
            await self.client.close()

    # -- helpers ------------------------------------------------------------------------------------------

    @property
    def _broker(self) -> BrokerClient:
        if self.client is None:
            raise ApiError(503, "the kiosk is not started")
        return self.client

    def _known(self, request: web.Request) -> tuple[str, SeatSession]:
        """The session the path names: a well-formed id this kiosk started, and its SeatSession."""
        session_id = request.match_info["session_id"]
        try:
            validate.session_id(session_id)
        except InvalidArgument as exc:
            raise ApiError(400, str(exc), "session_id") from None
        seat = self._seats.get(session_id)
        if seat is None:
            raise ApiError(404, f"session_id: this kiosk started no session {session_id!r}", "session_id")
        return session_id, seat

    def _current_only(self, session_id: str, seat: SeatSession) -> None:
        if seat.session is not None and seat.session.session_id != session_id:
            raise ApiError(
                409,
                f"session_id: session {session_id} was resumed as {seat.session.session_id}",
                "session_id",
            )

    def _add_feed(self, seat: SeatSession, update: session_pb2.SessionUpdate) -> SessionFeed:
        feed = SessionFeed(seat, update)
        self._seats[feed.session_id] = seat
        self._feeds[feed.session_id] = feed
        ended = [sid for sid, f in self._feeds.items() if f.ended]
        for sid in ended[
            : max(0, len(ended) - _KEEP_ENDED_FEEDS)
        ]:  # oldest first: dicts keep insertion order
            del self._feeds[sid]  # its watch has returned or is returning: the session ended
        return feed

    def _live_feed(self) -> SessionFeed | None:
        if self._current is None or self._current.session is None:
            return None
        feed = self._feeds.get(self._current.session.session_id)
        return feed if feed is not None and not feed.ended else None

    # -- handlers -----------------------------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    async def _protocol(self, request: web.Request) -> web.Response:
        return web.json_response(seat_protocol.protocol_description())

    async def _clock(self, request: web.Request) -> web.Response:
        return web.json_response({"monotonic_us": time.monotonic_ns() // 1000})

    async def _seat(self, request: web.Request) -> web.Response:
        """Who this seat is, checked with the broker: an unknown venue, seat or zone, or a broker out of reach,
        is said here, before the patron picks a game."""
        cfg = self.cfg.seat
        zone_id = await self._check_seat()
        try:
            games = await SeatSession(self._broker, cfg).games()
        except SeatError as exc:
            raise _from_seat_error(exc, cfg) from None
        live = self._live_feed()
        return web.json_response(
            {
                "venue_id": cfg.venue_id,
                "seat_id": cfg.seat_id,
                "zone_id": zone_id,
                "patron_id": cfg.patron_id,
                "broker": cfg.broker,
                "games": [{"game_id": g.game_id, "name": g.name or g.game_id} for g in games],
                "session": live.latest if live is not None else None,
            }
        )

    async def _check_seat(self) -> str:
        """The seat's zone, after checking with the broker that the venue has this seat (and in the zone the
        config names, if it names one). A broker whose rules do not let this seat list its venue's seats (a seat's
        own credentials may only start and play its sessions) leaves the check to StartSession."""
        cfg = self.cfg.seat
        try:
            seats = await self._broker.venues.ListSeats(
                venue_pb2.ListSeatsRequest(venue_id=cfg.venue_id), timeout=BROKER_TIMEOUT_S
            )
        except aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.PERMISSION_DENIED:
                return cfg.zone_id
            raise _from_seat_error(_explained(exc, cfg), cfg) from None
        mine = next((s.seat for s in seats.seats if s.seat.seat_id == cfg.seat_id), None)
        if mine is None:
            raise ApiError(
                404, f"seat_id: venue {cfg.venue_id!r} has no seat {cfg.seat_id!r}; check --seat", "seat_id"
            )
        if cfg.zone_id and mine.zone_id != cfg.zone_id:
            raise ApiError(
                409,
                f"zone_id: seat {cfg.seat_id!r} is in zone {mine.zone_id!r}, not {cfg.zone_id!r}; check --zone",
                "zone_id",
            )
        return str(mine.zone_id)

    async def _start(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        game_id = _string_field(body, "game_id")
        try:
            validate.ident(game_id, "game_id")
        except InvalidArgument as exc:
            raise ApiError(400, str(exc), "game_id") from None
        async with self._start_lock:
            live = self._live_feed()
            if live is not None:
                raise ApiError(
                    409,
                    f"this seat already plays session {live.session_id} ({live.latest['state']}): end it first",
                    "session_id",
                )
            seat = SeatSession(self._broker, self.cfg.seat)
            try:
                session = await seat.start(game_id, timeout_s=BROKER_TIMEOUT_S)
            except SeatError as exc:
                raise _from_seat_error(exc, self.cfg.seat) from None
            self._current = seat
            feed = self._add_feed(seat, session_pb2.SessionUpdate(session=session))
        log.info("session started", session_id=feed.session_id, game_id=game_id)
        return web.json_response({"session": feed.latest}, status=201)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        session_id, seat = self._known(request)
        self._current_only(session_id, seat)
        feed = self._feeds.get(session_id)
        if feed is None:
            raise ApiError(
                404, f"session_id: this kiosk no longer follows session {session_id}", "session_id"
            )
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)

        async def send(event: str, data: object) -> None:
            await response.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())

        with contextlib.suppress(ConnectionResetError):
            await response.write(b"retry: 1000\n\n")  # the browser reconnects this fast if we go away
            seen = 0
            while True:
                version = feed.version
                if version > seen:
                    seen = version
                    await send("update", feed.latest)
                    if feed.latest["state"] == "ENDED":
                        break
                if feed.problem:
                    await send("problem", {"error": feed.problem, "field": "session_id"})
                    break
                if feed.ended:
                    break
                await feed.wait_change(seen, KEEPALIVE_S)
                if feed.version == seen:
                    await response.write(b": keepalive\n\n")
        return response

    async def _negotiate(self, request: web.Request) -> web.Response:
        session_id, seat = self._known(request)
        body = await _json_body(request, MAX_OFFER_BODY_BYTES)
        sdp = _string_field(body, "sdp")
        if len(sdp.encode()) > validate.MAX_SDP_BYTES:
            raise ApiError(413, f"sdp: the offer is more than {validate.MAX_SDP_BYTES} bytes", "sdp")
        if not sdp.startswith("v=0") or "\x00" in sdp:
            raise ApiError(400, "sdp: is not an SDP offer (must start with 'v=0')", "sdp")
        self._current_only(session_id, seat)
        offer, total, kept = filter_candidates(sdp, self.cfg.ice_addresses)
        if total and not kept:
            addresses = ", ".join(self.cfg.ice_addresses)
            raise ApiError(
                400,
                f"sdp: the browser offered no UDP candidate on {addresses} (--ice-address); launch Chromium with "
                "the flags in docs/kiosk.md",
                "sdp",
            )
        try:
            answer = await seat.negotiate(offer, timeout_s=BROKER_TIMEOUT_S + 5)
        except SeatError as exc:
            raise _from_seat_error(exc, self.cfg.seat) from None
        return web.json_response({"sdp": answer})

    async def _resume(self, request: web.Request) -> web.Response:
        session_id, seat = self._known(request)
        await _json_body(request)
        async with self._start_lock:
            assert seat.session is not None
            if seat.session.session_id != session_id:  # resumed already (a retry, or a second page): the same
                return web.json_response({"session": self._feeds[seat.session.session_id].latest}, status=200)
            if not seat_flow.resumable(seat.session):
                # Our watch may not have seen the end yet: ask the broker.
                with contextlib.suppress(aio.AioRpcError):
                    got = await self._broker.sessions.GetSession(
                        session_pb2.GetSessionRequest(session_id=session_id), timeout=BROKER_TIMEOUT_S
                    )
                    seat.session = got.session
            try:
                session = await seat.resume(timeout_s=BROKER_TIMEOUT_S)
            except SeatError as exc:
                raise _from_seat_error(exc, self.cfg.seat) from None
            self._current = seat
            feed = self._add_feed(seat, session_pb2.SessionUpdate(session=session))
        log.info("session resumed", session_id=feed.session_id, resumes_session_id=session_id)
        return web.json_response({"session": feed.latest}, status=201)

    async def _end(self, request: web.Request) -> web.Response:
        session_id, seat = self._known(request)
        body = await _json_body(request)
        detail = body.get("detail", "ended at the seat")
        if not isinstance(detail, str):
            raise ApiError(400, "detail: must be a string", "detail")
        try:
            detail = validate.text(detail, "detail")
        except InvalidArgument as exc:
            raise ApiError(400, str(exc), "detail") from None
        self._current_only(session_id, seat)
        try:
            session = await seat.end(detail)
        except SeatError as exc:
            raise _from_seat_error(exc, self.cfg.seat) from None
        assert session is not None
        log.info("session ended at the seat", session_id=session_id)
        return web.json_response({"session": session_json(session_pb2.SessionUpdate(session=session))})

    async def _stats(self, request: web.Request) -> web.Response:
        session_id, seat = self._known(request)
        body = await _json_body(request, MAX_STATS_BODY_BYTES)
        samples = _stats_samples(body)
        self._current_only(session_id, seat)
        try:
            accepted = await seat.report_stats(samples)
        except SeatError as exc:
            # The page carries on either way; the seat's log says why its evidence did not count.
            log.warning("stream stats not reported", session_id=session_id, error=str(exc))
            raise _from_seat_error(exc, self.cfg.seat) from None
        return web.json_response({"accepted": accepted})


MAX_STATS_BODY_BYTES: Final = 16 * 1024
_MAX_STATS_SAMPLES: Final = 60


def _number(value: Any, field: str) -> float:
    # bool is an int to Python, and json.loads takes NaN and Infinity: none of them is a measurement.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ApiError(400, f"{field}: must be a finite number", field)
    return float(value)


def _stats_samples(body: dict[str, Any]) -> list[tuple[float, float, float | None]]:
    """The page's samples as (at, Unix seconds; fps; rtt ms or None). Their shape is checked here; their ranges and
    times by the broker, which names the field the same way."""
    raw = body.get("samples")
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "samples: must be a non-empty list", "samples")
    if len(raw) > _MAX_STATS_SAMPLES:
        raise ApiError(400, f"samples: at most {_MAX_STATS_SAMPLES} per report", "samples")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ApiError(400, f"samples[{i}]: must be an object", f"samples[{i}]")
        at_ms = _number(item.get("at_ms"), f"samples[{i}].at_ms")
        fps = _number(item.get("fps"), f"samples[{i}].fps")
        rtt = item.get("rtt_ms")
        out.append((at_ms / 1000, fps, None if rtt is None else _number(rtt, f"samples[{i}].rtt_ms")))
    return out


def _explained(exc: aio.AioRpcError, cfg: SeatConfig) -> SeatError:
    """`seat.explain`, raised from the RPC error so the status travels with it (as SeatSession's methods do)."""
    explained = seat_flow.explain(exc, cfg)
    explained.__context__ = exc
    return explained
