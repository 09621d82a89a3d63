"""`/metrics` for Prometheus: `cloudseat_`-prefixed, region-wide, tenant-free series (no venue, provider, seat or
host ids in any label), which is why the endpoint needs no token (README "Consoles").

    cloudseat_sessions{state}                  live sessions by state (gauge; the database at scrape time)
    cloudseat_queue_length                     sessions waiting for placement, PENDING (gauge; same)
    cloudseat_hosts{status,drained}            hosts by status (online, lost, offline) and drain (gauge; same)
    cloudseat_placements_total                 sessions placed, as this replica heard of them (counter)
    cloudseat_placement_latency_seconds        request to placed, by the database clock (histogram; same)
    cloudseat_metered_seconds_total            slot-seconds of usage in the metering ledger (counter; the
                                               database: the ledger is append-only, so it only grows)

The counter and the histogram are fed by the hub's session notifications, which every replica receives, so each
replica counts every placement in the region since it started: scrape one replica, or aggregate with max().
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LIVE_STATES = ("PENDING", "PLACED", "STARTING", "READY", "STREAMING")
HOST_STATUSES = ("online", "lost", "offline")
# Placement is tens of milliseconds when hosts are free, seconds to minutes when requests queue at the peak.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class _Snapshot(Collector):
    """The gauges read from the database at each scrape (set by `Metrics.update` just before rendering)."""

    def __init__(self) -> None:
        self.sessions: dict[str, int] = {}
        self.hosts: dict[tuple[str, bool], int] = {}
        self.metered_seconds: float | None = None

    def collect(self) -> Iterable[Metric]:
        sessions = GaugeMetricFamily("cloudseat_sessions", "Live sessions by state.", labels=["state"])
        for state in LIVE_STATES:
            sessions.add_metric([state], self.sessions.get(state, 0))
        yield sessions
        yield GaugeMetricFamily(
            "cloudseat_queue_length", "Sessions waiting for placement.", value=self.sessions.get("PENDING", 0)
        )
        hosts = GaugeMetricFamily(
            "cloudseat_hosts", "Hosts by status and provider drain.", labels=["status", "drained"]
        )
        for status in HOST_STATUSES:
            for drained in (False, True):
                hosts.add_metric([status, str(drained).lower()], self.hosts.get((status, drained), 0))
        yield hosts
        if self.metered_seconds is not None:
            yield CounterMetricFamily(
                "cloudseat_metered_seconds",
                "Slot-seconds metered into the ledger.",
                value=self.metered_seconds,
            )


class Metrics:
    """One registry per broker (tests run several brokers in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._snapshot = _Snapshot()
        self.registry.register(self._snapshot)
        self.placements = Counter(
            "cloudseat_placements", "Sessions placed on a host.", registry=self.registry
        )
        self.placement_latency = Histogram(
            "cloudseat_placement_latency_seconds",
            "From the request to its placement, by the database clock.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def on_session(self, change: Mapping[str, Any]) -> None:
        """The hub's listener: a session's first move to PLACED counts a placement and its wait."""
        if change.get("state") != "PLACED":
            return
        self.placements.inc()
        created, placed = change.get("created_at"), change.get("placed_at")
        if created and placed:
            waited = datetime.datetime.fromisoformat(placed) - datetime.datetime.fromisoformat(created)
            self.placement_latency.observe(max(waited.total_seconds(), 0.0))

    def update(
        self,
        sessions: Sequence[Mapping[str, Any]],
        hosts: Sequence[Mapping[str, Any]],
        metered_seconds: float | None,
    ) -> None:
        self._snapshot.sessions = {r["state"]: int(r["n"]) for r in sessions}
        self._snapshot.hosts = {(r["status"], bool(r["drained"])): int(r["n"]) for r in hosts}
        self._snapshot.metered_seconds = metered_seconds

    def render(self) -> bytes:
        return generate_latest(self.registry)
