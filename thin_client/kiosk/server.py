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
    GET  /api/starting                   {"waiting"}: why the start (or resume) in progress waits to ask the broker
                                         again (busy, or out of reach), in `seat.waiting`'s words; null when not
    GET  /api/sessions/{id}/events       Server-Sent Events: "update" (the session as JSON, with a one-line "text"),
                                         "problem" ({"error"}), until the session ends
    POST /api/sessions/{id}/negotiate    {"sdp": offer} -> {"sdp": answer}
    POST /api/sessions/{id}/resume       a lost session's successor at the front of the queue -> 201 {"session"}
    POST /api/sessions/{id}/end          -> {"session"}
    POST /api/sessions/{id}/stats        {"samples": [{"at_ms", "fps", "rtt_ms"?}, ...]} -> {"accepted"}: the page's
                                         getStats windows, relayed to the broker (ReportStreamStats) for the SLA

Errors are JSON ``{"error": one line that says what to fix, "field": what it is about}`` with a fitting status:
400 malformed input (nothing is sent to the broker), 403 a request from another origin, 404 an unknown id, 409 a
conflict with the session's state, 413 a body too large, 415 not JSON, 429 the broker stayed too busy to take the
start, 502/503/504 the broker refused, cannot be reached or did not answer. The broker's refusals are put in words
by `thin_client.seat.explain`, as in the Python client.

A start (or resume) keeps asking a busy broker with the same request for up to `seat.BUSY_TIMEOUT_S`, within the one
POST; meanwhile GET /api/starting says why it waits, and the page polls it to show the patron.

One seat has at most one live session, so the kiosk keeps one `SessionFeed` per session it started: a single
WatchSession stream whose latest update every page (and a reloaded page) is sent, so the kiosk always knows the
session's state. When the kiosk stops it ends the live session: without the token it holds, nobody could.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import signal
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Final

import grpc
import structlog
from aiohttp import web
from cloudseat import logs, seat_protocol, settings, validate
from cloudseat import web as web_plumbing
from cloudseat.client import BrokerClient
from cloudseat.errors import InvalidArgument
from cloudseat.settings import setting
from cloudseat.v1 import session_pb2, venue_pb2
from grpc import aio

from thin_client import seat as seat_flow
from thin_client.kiosk import api
from thin_client.kiosk.api import ApiError
from thin_client.kiosk.feed import SessionFeed, session_json
from thin_client.seat import SeatConfig, SeatError, SeatSession

log = structlog.get_logger(__name__)

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
KEEPALIVE_S: Final = 15.0  # an SSE comment this often keeps proxies and the browser from giving up
BROKER_TIMEOUT_S: Final = 10.0
_KEEP_ENDED_FEEDS: Final = 16


@dataclasses.dataclass(frozen=True, slots=True)
class KioskConfig:
    seat: SeatConfig
    listen: str = setting(
        "127.0.0.1:8080",
        "HOST:PORT to serve the page on; port 0 picks a free one, printed as 'kiosk: URL' (the default: this "
        "machine only)",
        env="CLOUDSEAT_KIOSK_LISTEN",
        check=settings.host_port,
    )

    @property
    def address(self) -> tuple[str, int]:
        return validate.host_port(self.listen, "--listen")


# -- command line -----------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The kiosk's own flags (cli.py adds the seat's: --broker, --venue, --seat, --zone, --patron, --ice-address)."""
    settings.add_arguments(parser, KioskConfig)
    logs.add_arguments(parser)


def config(seat: SeatConfig, args: argparse.Namespace) -> KioskConfig:
    """The kiosk's config, its seat checked first: a kiosk left running with a typo would only fail when a patron
    picks a game."""
    for flag, value in (("--venue", seat.venue_id), ("--seat", seat.seat_id), ("--zone", seat.zone_id)):
        try:
            validate.ident(value, flag, required=flag != "--zone")
        except InvalidArgument as exc:
            raise settings.SettingsError(exc.message) from None
    broker = seat.broker
    if not (broker.startswith("unix:/") and len(broker) > len("unix:/")) and settings.host_port(broker):
        raise settings.SettingsError(f"--broker: {broker!r} is not HOST:PORT (or unix:/PATH)")
    if seat.ca is not None and not seat.ca.is_file():
        raise settings.SettingsError(f"--ca: no file {str(seat.ca)!r}")
    return settings.build(KioskConfig, args, seat=seat)


def main(cfg: KioskConfig, args: argparse.Namespace) -> int:
    logs.configure_from(args)
    try:
        asyncio.run(serve(cfg))
    except OSError as exc:  # the port is taken, the address is not ours
        print(
            f"cloudseat-client kiosk: error: cannot listen on {cfg.listen}: {exc.strerror or exc}",
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
        # A start keeps asking a busy broker this long (seat.BUSY_TIMEOUT_S; tests shorten it), while the page,
        # which polls /api/starting, shows why it waits: `_waiting`, set by the start's on_wait.
        self.busy_timeout_s = seat_flow.BUSY_TIMEOUT_S
        self._waiting: dict[str, object] | None = None
        self.app = web.Application(
            middlewares=[web_plumbing.security_headers(api.CSP), api.refusals],
            client_max_size=api.MAX_OFFER_BODY_BYTES,
        )
        r = self.app.router
        r.add_get("/", self._index)
        r.add_static("/static/", STATIC_DIR, follow_symlinks=False)
        r.add_get("/api/seat", self._seat)
        r.add_get("/api/protocol", self._protocol)
        r.add_get("/api/clock", self._clock)
        r.add_post("/api/sessions", self._start)
        r.add_get("/api/starting", self._starting)
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
        self._runner, self.url = await web_plumbing.serve(self.app, *self.cfg.address)
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

    def _on_wait(self, attempt: int, delay_s: float, reason: str) -> None:
        """StartSession was refused for now: what the page shows until the start ends (GET /api/starting)."""
        self._waiting = {
            "reason": reason,
            "attempt": attempt,
            "retry_in_ms": round(delay_s * 1000),
            "text": seat_flow.waiting(reason, delay_s, self.cfg.seat),
        }

    async def _started(self, seat: SeatSession, start: Awaitable[session_pb2.SessionUpdate]) -> SessionFeed:
        """Run a start or a resume (under the start lock), reporting its waits; the new session's feed."""
        try:
            answer = await start
        except SeatError as exc:
            raise api.from_seat_error(exc, self.cfg.seat) from None
        finally:
            self._waiting = None
        self._current = seat
        return self._add_feed(seat, answer)

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
            raise api.from_seat_error(exc, cfg) from None
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
            raise api.from_seat_error(await seat_flow.explained(exc, cfg), cfg) from None
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
        body = await api.json_body(request)
        game_id = api.string_field(body, "game_id")
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
            feed = await self._started(
                seat,
                seat.start(
                    game_id,
                    timeout_s=BROKER_TIMEOUT_S,
                    busy_timeout_s=self.busy_timeout_s,
                    on_wait=self._on_wait,
                ),
            )
        log.info("session started", session_id=feed.session_id, game_id=game_id)
        return web.json_response({"session": feed.latest}, status=201)

    async def _starting(self, request: web.Request) -> web.Response:
        """What the start in progress waits for; the page polls this while its POST is in flight. It asks the
        broker nothing: a busy broker is not asked more because a page wants to know."""
        return web.json_response({"waiting": self._waiting})

    async def _events(self, request: web.Request) -> web.StreamResponse:
        session_id, seat = self._known(request)
        self._current_only(session_id, seat)
        feed = self._feeds.get(session_id)
        if feed is None:
            raise ApiError(
                404, f"session_id: this kiosk no longer follows session {session_id}", "session_id"
            )
        response = await web_plumbing.event_stream(request)

        async def send(event: str, data: object) -> None:
            await web_plumbing.send_event(response, event, json.dumps(data))

        with contextlib.suppress(ConnectionResetError):
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
        body = await api.json_body(request, api.MAX_OFFER_BODY_BYTES)
        sdp = api.string_field(body, "sdp")
        if len(sdp.encode()) > validate.MAX_SDP_BYTES:
            raise ApiError(413, f"sdp: the offer is more than {validate.MAX_SDP_BYTES} bytes", "sdp")
        if not sdp.startswith("v=0") or "\x00" in sdp:
            raise ApiError(400, "sdp: is not an SDP offer (must start with 'v=0')", "sdp")
        self._current_only(session_id, seat)
        offer, total, kept = api.filter_candidates(sdp, self.cfg.seat.ice_addresses)
        if total and not kept:
            addresses = ", ".join(self.cfg.seat.ice_addresses)
            raise ApiError(
                400,
                f"sdp: the browser offered no UDP candidate on {addresses} (--ice-address); launch Chromium with "
                "the flags in docs/kiosk.md",
                "sdp",
            )
        try:
            answer = await seat.negotiate(offer, timeout_s=BROKER_TIMEOUT_S + 5)
        except SeatError as exc:
            raise api.from_seat_error(exc, self.cfg.seat) from None
        return web.json_response({"sdp": answer})

    async def _resume(self, request: web.Request) -> web.Response:
        session_id, seat = self._known(request)
        await api.json_body(request)
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
            feed = await self._started(
                seat,
                seat.resume(
                    timeout_s=BROKER_TIMEOUT_S, busy_timeout_s=self.busy_timeout_s, on_wait=self._on_wait
                ),
            )
        log.info("session resumed", session_id=feed.session_id, resumes_session_id=session_id)
        return web.json_response({"session": feed.latest}, status=201)

    async def _end(self, request: web.Request) -> web.Response:
        session_id, seat = self._known(request)
        body = await api.json_body(request)
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
            raise api.from_seat_error(exc, self.cfg.seat) from None
        assert session is not None
        update = session_pb2.SessionUpdate(session=session)
        feed = self._feeds.get(session_id)
        if feed is not None:
            await feed.settle(update)
        log.info("session ended at the seat", session_id=session_id)
        return web.json_response({"session": session_json(update)})

    async def _stats(self, request: web.Request) -> web.Response:
        session_id, seat = self._known(request)
        body = await api.json_body(request, api.MAX_STATS_BODY_BYTES)
        samples = api.stats_samples(body)
        self._current_only(session_id, seat)
        try:
            accepted = await seat.report_stats(samples)
        except SeatError as exc:
            # The page carries on either way; the seat's log says why its evidence did not count.
            log.warning("stream stats not reported", session_id=session_id, error=str(exc))
            raise api.from_seat_error(exc, self.cfg.seat) from None
        return web.json_response({"accepted": accepted})
