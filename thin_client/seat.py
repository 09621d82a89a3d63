"""A patron's session at a seat, as both seat clients run it: start, follow the queue, negotiate, resume, end.

`SeatSession` holds the seat's side of one session: the broker address, the venue and seat it plays for, and the
session token the broker gave (a capability: Negotiate, EndSession and a resume need it). The Python client
(`thin_client.play`) and the kiosk server (`thin_client.kiosk`) both drive it; the patron-facing text comes from the
pure functions at the top (`describe`, `explain`), so both clients say the same thing in the same words.

The seat's token comes from a file (`--token-file`, read by `with_token_file`: a command line is visible to every
user of the machine through `ps`), or from `--token` for scripts. Its claims (which venue and seat it is for) are
read, unverified, only to say so when the seat's flags name another seat (`token_mismatch`): the broker would refuse
it without saying why, as it must not tell a seat whether another venue exists.

A broker that cannot be reached is put in words by `thin_client.reach` (a name that does not resolve, TLS on one
side only, a certificate the seat does not trust); a broker lost while the seat waits in the queue or plays is said
so (`lost_contact`) while the seat keeps watching its session, whose place in the queue the broker keeps.

A session lost through no fault of the seat (its host lost, drained, refused or failed it: `resumable`) is resumed
with `SeatSession.resume`: a new session for the same game, at the front of the queue.

A start takes one round trip in the common case: the broker holds its answer until the session is placed (up to
PLACEMENT_WAIT_MS), and the answer is the flow's first update (placed already, or its place in the queue), with no
wait for WatchSession to say the same. A broker past its capacity refuses the start for a moment: the seat asks
again with the same request, after the wait the broker asked for (`cloudseat.retry`), saying so in `waiting`'s
words, for up to BUSY_TIMEOUT_S.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import ipaddress
import json
import os
import stat
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import grpc
from cloudseat import resume, retry
from cloudseat.client import BrokerClient, OnWait
from cloudseat.settings import SettingsError, setting
from cloudseat.v1 import common_pb2, fleet_pb2, session_pb2
from grpc import aio

from thin_client import reach

S = common_pb2.SessionState

# StartSession holds its answer this long for the placement: a free host places a session within a round or two of
# the scheduler (well under a second), so the common start is one round trip, and it leaves most of a start's 10 s
# budget for the retries an unreachable broker needs.
PLACEMENT_WAIT_MS: Final = 2000
# How long a start keeps asking a broker that answers "busy" (past the usual 10 s: a broker that answers will take
# the seat soon). A bound, so a patron is told to try again rather than wait forever at an overloaded broker.
BUSY_TIMEOUT_S: Final = 60.0

# End reasons after which the seat may carry on in a new session ahead of the queue (cloudseat.resume).
_RESUMABLE = frozenset(common_pb2.EndReason.Value(f"END_REASON_{r}") for r in resume.RESUMABLE_REASONS)


def _ip_address(text: str) -> str:
    """parse=: an IP address, written the canonical way."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class SeatConfig:
    """Who this seat is to the broker, and where it may take WebRTC connections (both seat clients' flags: a
    seat's image can carry them in its environment)."""

    # host:port of a broker replica
    broker: str = setting("127.0.0.1:50051", "the broker's HOST:PORT", env="CLOUDSEAT_BROKER")
    venue_id: str = setting(help="this seat's venue id", flag="--venue", env="CLOUDSEAT_VENUE", required=True)
    seat_id: str = setting(help="this seat's id", flag="--seat", env="CLOUDSEAT_SEAT", required=True)
    zone_id: str = setting(
        "",
        "the zone this seat should be in (the broker checks it; empty: any)",
        flag="--zone",
        env="CLOUDSEAT_ZONE",
    )
    patron_id: str = setting(
        "", "the venue's id for the patron (optional)", flag="--patron", env="CLOUDSEAT_PATRON"
    )
    # The seat's credentials: its tenant token (a seat token from the venue), and the CA bundle that signed the
    # broker's certificate (TLS). Neither: plaintext to a broker that runs with authentication off.
    token: str = setting(
        "",
        "the seat's token from its venue (a seat token); on the command line every user of the machine can read it "
        "with ps: give --token-file instead",
        env="CLOUDSEAT_TOKEN",
    )
    token_file: Path | None = setting(
        None,
        "a file holding the seat's token (its first line; mode 0600): `cloudseat-broker token --all-seats` writes "
        "one per seat",
        env="CLOUDSEAT_TOKEN_FILE",
    )
    ca: Path | None = setting(
        None,
        "the CA bundle that signed the broker's certificate: TLS to the broker (none: plaintext, for a broker "
        "running --insecure)",
        env="CLOUDSEAT_CA",
    )
    # Host candidates WebRTC may use (the kiosk keeps only these in the browser's offers); empty: all of them.
    ice_addresses: tuple[str, ...] = setting(
        (),
        "an address WebRTC may use for host candidates (repeat; default: every address of the seat)",
        flag="--ice-address",
        env="CLOUDSEAT_ICE_ADDRESSES",
        parse=_ip_address,
    )

    def client(self) -> BrokerClient:
        """A channel to the broker carrying this seat's credentials."""
        from cloudseat import tls

        credentials = tls.client_credentials(self.ca) if self.ca is not None else None
        return BrokerClient(self.broker, token=self.token or None, credentials=credentials)


class SeatError(Exception):
    """A one-line message for the patron or the venue's staff: what went wrong and what to fix."""


# -- the seat's token ---------------------------------------------------------------------------------------------

MAX_TOKEN_FILE_BYTES: Final = 64 * 1024


def token_file_warning(path: Path, mode: int) -> str | None:
    """A warning when a token file's permission bits let users other than its owner read it."""
    readers = [who for who, bit in (("its group", stat.S_IRGRP), ("every user", stat.S_IROTH)) if mode & bit]
    if not readers:
        return None
    return (
        f"--token-file {str(path)!r} can be read by {' and '.join(readers)} (mode {stat.S_IMODE(mode):04o}); a seat "
        f"token is a secret: chmod 600 {path}"
    )


def read_token_file(path: Path) -> tuple[str, str | None]:
    """The token in `path` (its first line, stripped) and a warning if others may read the file; SettingsError,
    naming the file, when it is missing, unreadable or empty."""
    where = f"--token-file {str(path)!r}"
    try:
        with path.open("rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            raw = f.read(MAX_TOKEN_FILE_BYTES + 1)
    except FileNotFoundError:
        raise SettingsError(f"{where}: no such file (`cloudseat-broker token ... --out FILE` writes one)") from None
    except IsADirectoryError:
        raise SettingsError(f"{where}: is a folder, not a token file") from None
    except PermissionError:
        raise SettingsError(f"{where}: cannot be read by this user (permission denied)") from None
    except OSError as exc:
        raise SettingsError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    if len(raw) > MAX_TOKEN_FILE_BYTES:
        raise SettingsError(f"{where}: is more than {MAX_TOKEN_FILE_BYTES // 1024} KiB: not a token file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SettingsError(f"{where}: is not text: not a token file") from None
    token = text.splitlines()[0].strip() if text.strip() else ""
    if not token:
        raise SettingsError(f"{where}: is empty (its first line should be the seat's token)")
    return token, token_file_warning(path, mode)


def with_token_file(cfg: SeatConfig, warn: Callable[[str], None]) -> SeatConfig:
    """`cfg` with the token from --token-file read into it (`warn` is told if the file is readable by others)."""
    if cfg.token_file is None:
        return cfg
    if cfg.token:
        raise SettingsError(
            "--token (CLOUDSEAT_TOKEN) and --token-file (CLOUDSEAT_TOKEN_FILE) are both set: give one"
        )
    token, warning = read_token_file(cfg.token_file)
    if warning is not None:
        warn(warning)
    return dataclasses.replace(cfg, token=token)


def token_claims(token: str) -> dict[str, Any] | None:
    """The claims of a JWT, read without checking its signature (the broker checks it); None if it is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    return claims if isinstance(claims, dict) else None


def token_source(cfg: SeatConfig) -> str:
    """How the seat's token was given, for a message: the file, or the flag."""
    return f"--token-file {cfg.token_file}" if cfg.token_file is not None else "--token"


def token_mismatch(cfg: SeatConfig) -> str | None:
    """What is wrong when the seat's --venue or --seat is not the one its token is for (a seat token names its
    venue and seat, a venue token its venue); None when they agree or the token says nothing readable."""
    claims = token_claims(cfg.token) if cfg.token else None
    if claims is None or claims.get("role") not in ("seat", "venue"):
        return None
    venue, seat = str(claims.get("venue", "")), str(claims.get("seat", ""))
    held = f"seat {seat!r} of venue {venue!r}" if claims["role"] == "seat" else f"venue {venue!r}"
    source = token_source(cfg)
    if venue != cfg.venue_id:
        return (
            f"--venue {cfg.venue_id!r} is not the venue of this seat's token ({source} is for {held}): check "
            "--venue, or give the token of this seat"
        )
    if claims["role"] == "seat" and seat != cfg.seat_id:
        return (
            f"--seat {cfg.seat_id!r} is not the seat of this seat's token ({source} is for {held}): check --seat, "
            "or give the token of this seat"
        )
    return None


def load_credentials(cfg: SeatConfig, warn: Callable[[str], None]) -> SeatConfig:
    """The seat's token read from --token-file and checked against --venue and --seat (SettingsError naming the
    flag): a mistake in the seat's setup is said when it starts, not when a patron picks a game."""
    cfg = with_token_file(cfg, warn)
    problem = token_mismatch(cfg)
    if problem is not None:
        raise SettingsError(problem)
    return cfg


# -- patron-facing text (pure) ----------------------------------------------------------------------------------


def state_name(state: int) -> str:
    return str(common_pb2.SessionState.Name(state)).removeprefix("SESSION_STATE_")


def reason_name(reason: int) -> str:
    return str(common_pb2.EndReason.Name(reason)).removeprefix("END_REASON_")


def resumable(session: common_pb2.Session) -> bool:
    return session.state == S.SESSION_STATE_ENDED and session.end_reason in _RESUMABLE


_PENDING_TEXT = {
    common_pb2.PENDING_REASON_QUEUED: "waiting for the next placement round",
    common_pb2.PENDING_REASON_NO_CAPACITY_WITHIN_CAP: "every host close enough for this zone is busy",
    common_pb2.PENDING_REASON_NO_SITE_WITHIN_CAP: "no site is close enough for this zone",
    common_pb2.PENDING_REASON_WAITING_FOR_LOOSER_CAP: "looking for the nearest host",
    common_pb2.PENDING_REASON_CANDIDATES_DRAINED: "the hosts within reach are being serviced",
}

_END_TEXT = {
    "ENDED_BY_PATRON": "you ended the session",
    "ENDED_BY_VENUE": "the venue ended the session",
    "PENDING_TIMEOUT": "no host became free in time; try again",
    "START_TIMEOUT": "the game did not start in time",
    "HOST_LOST": "the game host was lost",
    "FAILED": "the game failed on its host",
    "UNKNOWN_GAME": "the host does not have this game",
    "TIME_UP": "your time is up",
    "HOST_DRAINED": "the game host was taken out of service",
    "REFUSED_BY_HOST": "the game host refused the session",
}


def describe(update: session_pb2.SessionUpdate) -> str:
    """One line for the patron: where the session is now."""
    s = update.session
    if s.state == S.SESSION_STATE_PENDING:
        where = (
            f"in the queue: {update.queue_position} of {update.queue_length}"
            if update.queue_position
            else "in the queue"
        )
        why = _PENDING_TEXT.get(s.pending_reason)
        return f"{where} ({why})" if why else where
    if s.state == S.SESSION_STATE_PLACED:
        return f"placed on {s.host_id} at {s.site_id} ({s.latency_ms} ms away)"
    if s.state == S.SESSION_STATE_STARTING:
        return f"starting {s.game_id} on {s.host_id}"
    if s.state == S.SESSION_STATE_READY:
        return f"{s.game_id} is ready on {s.host_id}; connecting"
    if s.state == S.SESSION_STATE_STREAMING:
        return f"playing {s.game_id} on {s.host_id} at {s.site_id}"
    reason = reason_name(s.end_reason)
    text = _END_TEXT.get(reason, reason.lower().replace("_", " "))
    return f"ended: {text}" + (f" ({s.end_detail})" if s.end_detail else "")


def waiting(reason: str, delay_s: float, cfg: SeatConfig) -> str:
    """One line for the patron while the seat waits to ask the broker for the session again (StartSession's
    on_wait): the same request goes again, so nothing the patron asked for is lost."""
    again = f"trying again in {max(delay_s, 0.1):.1f} s"
    if reason == retry.BUSY:
        return f"the broker is busy; your request is kept; {again}"
    return f"cannot reach the broker at {cfg.broker}; your request is kept; {again}"


def lost_contact(session: common_pb2.Session | None, cfg: SeatConfig) -> str:
    """One line for the patron while the seat cannot reach the broker to follow its session (the broker is down,
    restarting, or out of reach): the seat keeps asking, and the broker keeps the session where it was."""
    lost = f"cannot reach the broker at {cfg.broker}; retrying"
    if session is None or session.state == S.SESSION_STATE_PENDING:
        return f"{lost}; your place in the queue is kept"
    if session.state == S.SESSION_STATE_STREAMING:
        return f"{lost}; the game goes on"
    return f"{lost}; your session is kept"


def explain(exc: aio.AioRpcError, cfg: SeatConfig) -> SeatError:
    """The broker's refusal as one line that says what to fix (never a traceback)."""
    code, details = exc.code(), (exc.details() or "").strip()
    field = details.split(":", 1)[0] if ":" in details else ""
    if code is grpc.StatusCode.UNAVAILABLE:
        cause = reach.cause_of(details, tls=cfg.ca is not None)
        if cause is not reach.Cause.OTHER or not details or "connect" in details.lower():
            return SeatError(reach.sentence(cause, cfg))
        # The broker's own words (its database is out of reach, say): it is there, and cannot serve now.
        return SeatError(f"the broker at {cfg.broker} cannot serve this seat now ({details}); try again shortly")
    if code is grpc.StatusCode.NOT_FOUND:
        flag = {"venue_id": "--venue", "seat_id": "--seat", "game_id": "--game", "zone_id": "--zone"}.get(
            field
        )
        return SeatError(f"{details}" + (f"; check {flag}" if flag else ""))
    if code is grpc.StatusCode.PERMISSION_DENIED:
        mismatch = token_mismatch(cfg) if field in ("venue_id", "seat_id") else None
        if mismatch is not None:
            return SeatError(mismatch)
        if field in ("venue_id", "seat_id"):
            return SeatError(
                f"the broker refused this seat's credentials ({details}): check that {token_source(cfg)} holds the "
                f"token of seat {cfg.seat_id!r} of venue {cfg.venue_id!r}"
            )
        return SeatError(
            f"the broker refused this seat's credentials ({details}); check the seat's configuration"
        )
    if code is grpc.StatusCode.UNAUTHENTICATED:
        if not cfg.token:
            return SeatError(
                f"the broker did not accept this seat's credentials ({details}); this seat has no token: give "
                "--token-file FILE (CLOUDSEAT_TOKEN_FILE)"
            )
        return SeatError(
            f"the broker did not accept this seat's credentials ({details}); check {token_source(cfg)}"
        )
    if code is grpc.StatusCode.FAILED_PRECONDITION and field == "seat_id":
        return SeatError(
            f"seat {cfg.seat_id!r} already has a live session: end it from the venue console, or wait for it to end"
        )
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return SeatError(
            f"the broker at {cfg.broker} did not answer in time ({details or 'deadline exceeded'})"
        )
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return SeatError(f"the seat's request was refused: {details}")
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        # What is left after the retries (SeatSession.start asked again for as long as it may): no place is held.
        return SeatError("the broker is too busy to take this seat now; try again in a minute")
    if code is grpc.StatusCode.FAILED_PRECONDITION:
        return SeatError(details)
    if code is grpc.StatusCode.CANCELLED:
        return SeatError(f"the broker at {cfg.broker} is too busy to take this now; try again shortly")
    if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
        return SeatError(
            f"the broker at {cfg.broker} failed ({details or code.name}); try again, and tell the region's operator "
            "if it goes on"
        )
    return SeatError(f"the broker refused ({code.name}): {details}")


async def explained(exc: aio.AioRpcError, cfg: SeatConfig) -> SeatError:
    """`explain`, looking closer at the broker's address when gRPC's text cannot tell a TLS mismatch from a closed
    door (`reach.diagnose`). The RPC error stays on ``__context__``: the kiosk takes its HTTP status from it."""
    error = explain(exc, cfg)
    details = (exc.details() or "").strip()
    if exc.code() is grpc.StatusCode.UNAVAILABLE and reach.needs_probe(details, tls=cfg.ca is not None):
        error = SeatError(reach.sentence(await reach.diagnose(details, cfg), cfg))
    error.__context__ = exc
    return error


# -- the session ----------------------------------------------------------------------------------------------


class SeatSession:
    """One patron's session at the seat (and its resumes). Call `start` first."""

    def __init__(self, client: BrokerClient, cfg: SeatConfig) -> None:
        self.client = client
        self.cfg = cfg
        self.session: common_pb2.Session | None = None
        self.token = ""
        self.game_id = ""
        self.resumes = 0

    @property
    def session_id(self) -> str:
        if self.session is None:
            raise SeatError("no session started")
        return str(self.session.session_id)

    async def check_broker(self, *, timeout_s: float = 10.0) -> None:
        """Ask the broker once (ListGames) before starting: a setup no retry can mend (a name that does not resolve,
        TLS on one side only, an untrusted certificate, a token refused) is said at once, not after a start's
        retries. A broker that does not answer yet, or is busy, is left to the start, which asks again."""
        try:
            await self.client.list_games(timeout_s=timeout_s)
        except aio.AioRpcError as exc:
            code = exc.code()
            if code is grpc.StatusCode.UNAVAILABLE:
                cause = await reach.diagnose((exc.details() or "").strip(), self.cfg)
                if cause in reach.SETUP_MISTAKES:
                    raise await explained(exc, self.cfg) from None
            elif code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                raise await explained(exc, self.cfg) from None

    async def games(self) -> list[fleet_pb2.Game]:
        try:
            games: list[fleet_pb2.Game] = await self.client.list_games()
            return games
        except aio.AioRpcError as exc:
            raise await explained(exc, self.cfg) from None

    async def start(
        self,
        game_id: str,
        *,
        timeout_s: float = 10.0,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
        on_wait: OnWait | None = None,
    ) -> session_pb2.SessionUpdate:
        """Ask for a session, held for its placement; the answer as the session's first update (placed, or its
        place in the queue). Asked again with one request id, so never two sessions: while the broker cannot be
        reached (within `timeout_s`) or is busy (within `busy_timeout_s`); `on_wait(attempt, delay_s, reason)`
        before each wait (`waiting` puts it in words)."""
        self.game_id = game_id
        return await self._start(None, timeout_s, busy_timeout_s, on_wait)

    async def resume(
        self,
        *,
        timeout_s: float = 10.0,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
        on_wait: OnWait | None = None,
    ) -> session_pb2.SessionUpdate:
        """A new session for the same game, ahead of the queue, after this one was lost (see `resumable`); as
        `start`."""
        if self.session is None or not resumable(self.session):
            raise SeatError("only a session its host lost, drained or failed can be resumed")
        started = await self._start((self.session.session_id, self.token), timeout_s, busy_timeout_s, on_wait)
        self.resumes += 1
        return started

    async def _start(
        self, resume: tuple[str, str] | None, timeout_s: float, busy_timeout_s: float, on_wait: OnWait | None
    ) -> session_pb2.SessionUpdate:
        try:
            response = await self.client.start_session(
                self.cfg.venue_id,
                self.cfg.seat_id,
                self.game_id,
                request_id=uuid.uuid4().hex,
                patron_id=self.cfg.patron_id,
                zone_id=self.cfg.zone_id,
                resume=resume,
                wait_for_placement_ms=PLACEMENT_WAIT_MS,
                timeout_s=timeout_s,
                busy_timeout_s=busy_timeout_s,
                on_wait=on_wait,
            )
        except aio.AioRpcError as exc:
            raise await explained(exc, self.cfg) from None
        self.session, self.token = response.session, response.session_token
        return session_pb2.SessionUpdate(
            session=response.session,
            queue_position=response.queue_position,
            queue_length=response.queue_length,
        )

    async def updates(
        self,
        after: session_pb2.SessionUpdate | None = None,
        *,
        on_lost: Callable[[str], Awaitable[None]] | None = None,
    ) -> AsyncIterator[session_pb2.SessionUpdate]:
        """The session's updates (current state first) until it ends; a broken watch is resumed, so a broker
        restart or a replica going away shows as a pause, not an end. `after`: the update the caller has already
        (the start's answer); the watch's first update is skipped when it only repeats that. `on_lost(text)`: once
        per loss of the broker (no answer), `lost_contact`'s line for the patron; the next update says the seat
        is back."""
        delay = 0.1
        lost = False
        while True:
            try:
                async for update in self.client.watch(self.session_id):
                    delay = 0.1
                    lost = False
                    self.session = update.session
                    if after is not None and _repeats(update, after):
                        after = None
                        continue
                    after = None
                    yield update
                    if update.session.state == S.SESSION_STATE_ENDED:
                        return
                return
            except aio.AioRpcError as exc:
                # UNAVAILABLE: no broker answered; CANCELLED: a busy broker refused the watch before taking it up
                # (its --accept-wait). Either way the session goes on: watch again.
                if exc.code().name not in retry.WATCH_AGAIN_CODES:
                    raise await explained(exc, self.cfg) from None
                if exc.code() is grpc.StatusCode.UNAVAILABLE and not lost:
                    lost = True
                    after = None  # whatever the watch says when the broker is back is news to the patron
                    if on_lost is not None:
                        await on_lost(lost_contact(self.session, self.cfg))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def wait_playable(self, *, timeout_s: float = 60.0) -> session_pb2.SessionUpdate:
        """Follow the session until it can be negotiated (READY or STREAMING) or ends; the last update."""
        async with asyncio.timeout(timeout_s):
            async for update in self.updates():
                if update.session.state in (
                    S.SESSION_STATE_READY,
                    S.SESSION_STATE_STREAMING,
                    S.SESSION_STATE_ENDED,
                ):
                    return update
        raise SeatError("the session's updates stopped before it was ready")

    async def negotiate(self, offer_sdp: str, *, timeout_s: float = 15.0) -> str:
        """Relay the seat's offer to the session's host; its answer."""
        request = session_pb2.NegotiateRequest(session_id=self.session_id, session_token=self.token)
        request.offer.type, request.offer.sdp = "offer", offer_sdp
        try:
            response = await self.client.sessions.Negotiate(request, timeout=timeout_s)
        except aio.AioRpcError as exc:
            raise await explained(exc, self.cfg) from None
        return str(response.answer.sdp)

    async def stream_stats(self) -> common_pb2.StreamStats | None:
        """What the host last reported of the stream (bitrate, RTT, loss); None before its first report."""
        try:
            response = await self.client.sessions.GetSession(
                session_pb2.GetSessionRequest(session_id=self.session_id), timeout=5.0
            )
        except aio.AioRpcError:
            return None
        return response.session.stream_stats if response.session.HasField("stream_stats") else None

    async def report_stats(self, samples: Sequence[tuple[float, float, float | None]]) -> int:
        """Send the seat's own view of the stream, (at as Unix seconds, fps, rtt ms or None) per window, so it
        counts for the SLA; how many the broker recorded. SeatError when it refused or could not be reached."""
        try:
            return await self.client.report_stream_stats(self.session_id, self.token, samples)
        except aio.AioRpcError as exc:
            raise await explained(exc, self.cfg) from None

    async def end(self, detail: str = "") -> common_pb2.Session | None:
        """End the session (a no-op when it has ended); None when there was none."""
        if self.session is None:
            return None
        try:
            self.session = await self.client.end_session(self.session.session_id, self.token, detail)
        except aio.AioRpcError as exc:
            raise await explained(exc, self.cfg) from None
        return self.session


def _repeats(update: session_pb2.SessionUpdate, known: session_pb2.SessionUpdate) -> bool:
    """The watch's current state says nothing `known` did not: the same step, and no news with it. (The watch
    opens without the queue position, which follows on its own; the answer had it already.)"""
    a, b = update.session, known.session
    return (
        (a.session_id, a.state, a.pending_reason, a.host_id)
        == (b.session_id, b.state, b.pending_reason, b.host_id)
        and not update.queue_position
        and not update.warnings
        and not update.HasField("time_left_s")
        and not update.time_up
    )
