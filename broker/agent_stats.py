"""Agents' load and stream stats reports (Heartbeat), written in batches.

An agent reports its load and its sessions' stream stats while it runs sessions, every `heartbeat_interval_s`, and
otherwise only when something changed; nothing is needed to keep a host alive (broker.links). What arrives is kept
here and written every flush: one statement for the hosts' loads (which also tells which links the broker retired:
their reports count for nothing, and the link is closed), one transaction for the sessions' latest stats and the
SLA's per-minute samples (store.metering.record_stream_reports).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid

import asyncpg
import structlog
from cloudseat import errors
from cloudseat.v1 import agent_pb2

from broker.links import RETIRED, AgentLink, LinkRegistry
from broker.store import hosts as host_store
from broker.store import metering as metering_store

log = structlog.get_logger(__name__)

# How often what arrived is written; a report is shown this much later at most.
_FLUSH_INTERVAL_S = 0.25
# A report's sessions beyond this many are ignored (a host has at most 256 slots).
_MAX_SESSIONS = 256


def unit(x: float) -> float:
    """Clamp a load figure to 0..1 (NaN counts as 0)."""
    return min(max(x, 0.0), 1.0) if math.isfinite(x) else 0.0


class StatsBatcher:
    def __init__(self, pool: asyncpg.Pool, links: LinkRegistry) -> None:
        self._pool = pool
        self._links = links
        self._loads: dict[uuid.UUID, tuple[AgentLink, float, float, bool]] = {}
        self._streams: list[metering_store.StreamReport] = []
        self._task: asyncio.Task[None] | None = None
        self.reports = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_forever(), name="agent-stats")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(errors.CloudseatError):
            await self._flush()

    def record(self, link: AgentLink, hb: agent_pb2.Heartbeat) -> None:
        self.reports += 1
        self._loads[link.link_id] = (link, unit(hb.cpu_load), unit(hb.gpu_load), hb.draining)
        for s in hb.sessions[:_MAX_SESSIONS]:
            self._streams.append(
                metering_store.StreamReport(
                    session_id=s.session_id[:64],
                    host_id=link.host_id,
                    fps_sent=s.fps_sent,
                    bitrate_kbps=s.bitrate_kbps,
                    rtt_ms=s.rtt_ms,
                    loss_pct=s.loss_pct,
                    encode_ms=s.encode_ms,
                )
            )

    async def _flush(self) -> None:
        loads, self._loads = self._loads, {}
        streams, self._streams = self._streams, []
        if loads:
            counted = await host_store.host_reports(
                self._pool,
                [
                    (link.host_id, link_id, cpu, gpu, draining)
                    for link_id, (link, cpu, gpu, draining) in loads.items()
                ],
            )
            # A link whose report counted for nothing no longer holds its host (declared lost meanwhile, or taken
            # over by a newer connection elsewhere): its agent reports into the void; end the link.
            self._links.retire(
                [link for link_id, (link, *_) in loads.items() if link_id not in counted], RETIRED
            )
        await metering_store.record_stream_reports(self._pool, streams)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(_FLUSH_INTERVAL_S)
            try:
                await self._flush()
            except errors.CloudseatError as exc:
                # Reports are figures, not liveness: the next ones replace what was lost.
                log.warning("agent stats flush failed", error=str(exc))
