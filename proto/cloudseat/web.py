"""The HTTP plumbing the broker's consoles and the seat's kiosk share (aiohttp): where to listen, the headers every
page gets, the JSON shape of a refusal, reading a small JSON body, Server-Sent Events, and serving an app.

Both serve a static page and a JSON API under /api/ to a browser on a machine they do not control, so both want
the same guard rails: nothing cached (figures and sessions are live), only our own scripts (a Content-Security-
Policy without inline code or other origins), and refusals that say what to fix in one line and name the field
(``{"error": "...", "field": "..."}``), including for a path or method the API does not have.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from cloudseat import validate

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CSP_DEFAULTS = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "connect-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'none'",
    "frame-ancestors": "'none'",
}


def content_security_policy(**directives: str) -> str:
    """Our pages' policy: only this origin's scripts, styles and connections, no plugins, no framing. Keyword
    arguments add or replace directives (`media_src="'self' blob:"` for media-src)."""
    policy = {**_CSP_DEFAULTS, **{k.replace("_", "-"): v for k, v in directives.items()}}
    return "; ".join(f"{name} {value}" for name, value in policy.items())


def listen_address(text: str, field: str) -> tuple[str, int]:
    """HOST:PORT to serve on -> (host, port); InvalidArgument naming `field` otherwise."""
    return validate.host_port(text, field)


# HSTS: a browser that has seen the console over TLS refuses plaintext to it for a year.
HSTS = "max-age=31536000"


def security_headers(csp: str, *, hsts: bool = False) -> Any:
    """Middleware: nothing cached, no content sniffing, the given policy, no referrer; with `hsts` (served over
    TLS), Strict-Transport-Security."""

    @web.middleware
    async def headers(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if not response.prepared:
            response.headers.setdefault("Cache-Control", "no-store")
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
            response.headers.setdefault("Content-Security-Policy", csp)
            response.headers.setdefault("Referrer-Policy", "no-referrer")
            if hsts:
                response.headers.setdefault("Strict-Transport-Security", HSTS)
        return response

    return headers


def refusal(status: int, message: str, field: str = "", headers: dict[str, str] | None = None) -> web.Response:
    """A refusal as the page reads it: one line that says what to fix, and the field it is about."""
    return web.json_response({"error": message, "field": field}, status=status, headers=headers)


def routing_refusal(request: web.Request, exc: web.HTTPException) -> web.Response:
    """aiohttp's own 404 and 405 under /api/, in the API's shape rather than as an HTML page."""
    what = {404: "no such API path", 405: f"{request.method} is not allowed here"}.get(exc.status, exc.reason)
    return refusal(exc.status, f"{request.path}: {what}", "path")


def json_object(raw: bytes) -> dict[str, Any]:
    """The JSON object in `raw` ({} for an empty body); ValueError saying what is wrong otherwise."""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"is not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise ValueError("must be a JSON object")
    return body


async def read_limited(request: web.Request, max_bytes: int) -> bytes | None:
    """The body, or None when it is larger than `max_bytes` (by its Content-Length or by what arrived)."""
    if request.content_length is not None and request.content_length > max_bytes:
        return None
    raw = await request.content.read(max_bytes + 1)
    return None if len(raw) > max_bytes else raw


async def event_stream(request: web.Request) -> web.StreamResponse:
    """A prepared Server-Sent Events response; the browser reconnects within a second if it drops."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    await response.write(b"retry: 1000\n\n")
    return response


async def send_event(response: web.StreamResponse, event: str, data: str) -> None:
    """One event, its data already JSON."""
    await response.write(f"event: {event}\ndata: {data}\n\n".encode())


async def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    shared: bool = False,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[web.AppRunner, str]:
    """Serve `app` on host:port (0: any free port); the runner (cleanup() stops it) and the URL it answers on.
    `shared`: several processes serve the same port (SO_REUSEPORT), the kernel dealing connections among them.
    `ssl_context`: serve HTTPS (cloudseat.tls.server_ssl_context)."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=shared or None, ssl_context=ssl_context)
    await site.start()
    server: Any = site._server
    bound = server.sockets[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return runner, f"{'https' if ssl_context else 'http'}://{shown}:{bound}/"
