"""The web consoles' server (aiohttp): the page, its JSON API under /api/ (broker.console.api) and /metrics.

    GET /                  the console page: venue and provider views (static files under /static/, no build step,
                           nothing from a CDN)
    GET /api/...           the JSON API, with the same tenant tokens as the gRPC side
    GET /metrics           Prometheus text exposition, tenant-free aggregates, no token (broker.console.metrics)

It runs inside the broker process, beside the gRPC server, on `--http-listen`, over HTTPS with the broker's own
certificate (followed when it is rotated, HSTS on every answer) whenever security is on; plaintext only with --insecure.
It shares the broker's pool, its hub (live changes come from PostgreSQL NOTIFY, never from polling), its guard
(token verification and per-tenant rate limits) and its agent registry (the fps the hosts linked here report).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import asyncpg
import structlog
from aiohttp import web
from cloudseat import errors, tls
from cloudseat import web as web_plumbing

from broker.console import api, business, live
from broker.console import metrics as m
from broker.console import queries as q
from broker.counters import Counters
from broker.guard import Guard
from broker.hub import SessionHub

log = structlog.get_logger(__name__)

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
_CSP: Final = web_plumbing.content_security_policy()


class Console:
    """`await start()` (the URL), then `await stop()`."""

    def __init__(
        self,
        listen: str,
        pool: asyncpg.Pool,
        hub: SessionHub,
        guard: Guard,
        counters: Counters,
        tls_files: tls.CertFiles | None = None,
    ) -> None:
        self.host, self.port = web_plumbing.listen_address(listen, "http_listen")
        # HTTPS with the broker's own certificate whenever security is on: the API carries bearer tokens. Plaintext
        # only with authentication off (--insecure).
        self._ssl = tls.server_ssl_context(tls_files) if tls_files is not None else None
        self._pool = pool
        self.feed = live.Feed()
        self.metrics = m.Metrics(counters)
        hub.add_listener(self.feed.on_session, on_resync=self.feed.on_resync)
        hub.add_host_listener(self.feed.on_host)
        hub.add_ledger_listener(self.feed.on_ledger)
        self.app = web.Application(
            middlewares=[web_plumbing.security_headers(_CSP, hsts=self._ssl is not None), api.middleware(guard)],
            client_max_size=api.MAX_BODY_BYTES,
        )
        r = self.app.router
        r.add_get("/", self._index)
        r.add_static("/static/", STATIC_DIR, follow_symlinks=False)
        r.add_get("/metrics", self._metrics)
        api.Api(pool, self.feed).add_routes(r)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        # Every tenant worker of a broker serves the consoles on the same port.
        self._runner, self.url = await web_plumbing.serve(
            self.app, self.host, self.port, shared=True, ssl_context=self._ssl
        )
        log.info("console serving", url=self.url)
        return self.url

    async def stop(self) -> None:
        """End the event streams (their pages reconnect to another replica or when this one is back), stop."""
        self.feed.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    async def _metrics(self, request: web.Request) -> web.Response:
        try:
            sessions, hosts = await q.metrics_snapshot(self._pool)
            metered = await business.metered_seconds(self._pool)
        except errors.CloudseatError as exc:
            # Prometheus records the scrape as failed; the gauges never show stale figures as current.
            return web.Response(status=503, text=f"{exc.message}\n")
        self.metrics.update(sessions, hosts, metered)
        return web.Response(body=self.metrics.render(), headers={"Content-Type": m.CONTENT_TYPE})
