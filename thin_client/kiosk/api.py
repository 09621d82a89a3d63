"""The kiosk API's edges: refusals as JSON with a fitting status, the broker's refusals put in the seat's words,
bodies read and checked before anything reaches the broker, and the browser's offer trimmed to the seat's
addresses. The handlers themselves are `thin_client.kiosk.server.Kiosk`'s."""

from __future__ import annotations

import asyncio
import ipaddress
import math
from typing import Any, Final

import grpc
import structlog
from aiohttp import web
from cloudseat import validate
from cloudseat import web as web_plumbing
from grpc import aio

from thin_client.seat import SeatConfig, SeatError

log = structlog.get_logger(__name__)

MAX_JSON_BYTES: Final = 4 * 1024  # every body but an offer and a stats report
MAX_OFFER_BODY_BYTES: Final = validate.MAX_SDP_BYTES + 1024  # an offer, JSON-escaped (CRLF is 4 bytes more)
MAX_STATS_BODY_BYTES: Final = 16 * 1024
_MAX_STATS_SAMPLES: Final = 60

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


class ApiError(Exception):
    """A refusal of this API: an HTTP status, one line that says what to fix, and the field it is about."""

    def __init__(self, status: int, message: str, field: str = "") -> None:
        super().__init__(message)
        self.status, self.field = status, field


def from_seat_error(exc: SeatError, cfg: SeatConfig) -> ApiError:
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
    if rpc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
        field = "broker"  # its load, not a field of the request ("overloaded: retry in ..." names none)
    return ApiError(_HTTP_STATUS.get(rpc.code(), 502), message, field)


@web.middleware
async def refusals(request: web.Request, handler: web_plumbing.Handler) -> Any:
    """Every refusal under /api/ as JSON; anything unexpected as one line (the traceback goes to the log only)."""
    try:
        response = await handler(request)
    except ApiError as exc:
        return web_plumbing.refusal(exc.status, str(exc), exc.field)
    except web.HTTPException as exc:
        if not request.path.startswith("/api/") or exc.status < 400:
            raise
        return web_plumbing.routing_refusal(request, exc)
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception as exc:
        log.exception("kiosk request failed", path=request.path)
        return web_plumbing.refusal(500, f"the kiosk failed: {type(exc).__name__}: {exc}".splitlines()[0])
    return response


# Nothing cached (a kiosk must pick up a new page at once), and nothing but our own scripts run; the video
# element plays a MediaStream (blob: and mediastream: sources).
CSP: Final = web_plumbing.content_security_policy(
    img_src="'self' data: blob:", media_src="'self' blob: mediastream:"
)


async def json_body(request: web.Request, max_bytes: int = MAX_JSON_BYTES) -> dict[str, Any]:
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
    raw = await web_plumbing.read_limited(request, max_bytes)
    if raw is None:
        raise ApiError(413, f"the body is more than {max_bytes} bytes", "body")
    try:
        return web_plumbing.json_object(raw)
    except ValueError as exc:
        raise ApiError(400, f"the body {exc}", "body") from None


def string_field(body: dict[str, Any], name: str) -> str:
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


def _number(value: Any, field: str) -> float:
    # bool is an int to Python, and json.loads takes NaN and Infinity: none of them is a measurement.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ApiError(400, f"{field}: must be a finite number", field)
    return float(value)


def stats_samples(body: dict[str, Any]) -> list[tuple[float, float, float | None]]:
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
