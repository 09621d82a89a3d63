"""`/metrics` for Prometheus: `cloudseat_`-prefixed, region-wide, tenant-free series (no venue, provider, seat or
host ids in any label), which is why the endpoint needs no token (README "Consoles").

    cloudseat_sessions{state}                  live sessions by state (gauge; the database at scrape time)
    cloudseat_queue_length                     sessions waiting for placement, PENDING (gauge; same)
    cloudseat_hosts{status,drained}            hosts by status (online, lost, offline) and drain (gauge; same)
    cloudseat_placements_total                 sessions this broker placed (counter)
    cloudseat_placement_latency_seconds        request to placed, by the database clock (histogram; same)
    cloudseat_placement_round_seconds{phase}   the leader's placement rounds: reading (batch, hosts, latencies,
                                               leases), solving, committing (histogram; one per attempt)
    cloudseat_grpc_messages_total{direction}   gRPC messages in and out of this broker's processes; a unary call
                                               is two (counter)
    cloudseat_calls_shed_total                 calls refused at the door because the broker was overloaded
    cloudseat_security_events_total{kind}      refusals watched for probing (refused tokens and registrations,
                                               cross-tenant reaches)
    cloudseat_security_alerts_total{kind}      one peer past the threshold of a kind within a minute (audited)
    cloudseat_metered_seconds_total            slot-seconds of usage in the metering ledger (counter; the
                                               database: the ledger is append-only, so it only grows)

The counters are this broker's (all its processes: broker.counters), whichever of its tenant workers answers the
scrape; placements are counted by the process that holds the placement lease when it commits them, so add the
brokers of a region up (sum()).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from broker.counters import PLACEMENT_BUCKETS_S, ROUND_BUCKETS_S, ROUND_PHASES, Counters
from broker.threats import KINDS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LIVE_STATES = ("PENDING", "PLACED", "STARTING", "READY", "STREAMING")
HOST_STATUSES = ("online", "lost", "offline")


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


class _Counted(Collector):
    """The broker's own counters (broker.counters), summed over its processes at each scrape."""

    def __init__(self, counters: Counters) -> None:
        self._counters = counters

    def collect(self) -> Iterable[Metric]:
        c = self._counters.totals()
        yield CounterMetricFamily("cloudseat_placements", "Sessions placed on a host.", value=c["placements"])
        cumulative, buckets = 0, []
        for i, bound in enumerate(PLACEMENT_BUCKETS_S):
            cumulative += c[f"placement_wait_le_{i}"]
            buckets.append((repr(bound), cumulative))
        buckets.append(("+Inf", c["placements"]))
        yield HistogramMetricFamily(
            "cloudseat_placement_latency_seconds",
            "From the request to its placement, by the database clock.",
            buckets=buckets,
            sum_value=c["placement_wait_ms_sum"] / 1000,
        )
        rounds = HistogramMetricFamily(
            "cloudseat_placement_round_seconds",
            "The leader's placement rounds, by phase: read, solve, commit.",
            labels=["phase"],
        )
        for phase in ROUND_PHASES:
            cumulative, buckets = 0, []
            for i, bound in enumerate(ROUND_BUCKETS_S):
                cumulative += c[f"round_{phase}_le_{i}"]
                buckets.append((repr(bound), cumulative))
            buckets.append(("+Inf", c["placement_rounds"]))
            rounds.add_metric([phase], buckets, sum_value=c[f"round_{phase}_us_sum"] / 1e6)
        yield rounds
        messages = CounterMetricFamily(
            "cloudseat_grpc_messages",
            "gRPC messages in and out of this broker's processes (a unary call is two).",
            labels=["direction"],
        )
        messages.add_metric(["in"], c["grpc_messages_in"])
        messages.add_metric(["out"], c["grpc_messages_out"])
        yield messages
        yield CounterMetricFamily(
            "cloudseat_calls_shed",
            "Calls refused at the door: the broker was overloaded.",
            value=c["calls_shed"],
        )
        for name, text in (
            ("events", "Refusals watched for probing (broker.threats), by kind."),
            ("alerts", "Security alerts raised: one peer's refusals of a kind past the threshold within a minute."),
        ):
            family = CounterMetricFamily(f"cloudseat_security_{name}", text, labels=["kind"])
            for kind in KINDS:
                family.add_metric([kind], c[f"security_{name}_{kind}"])
            yield family


class Metrics:
    """One registry per broker process (tests run several brokers in one process)."""

    def __init__(self, counters: Counters) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._snapshot = _Snapshot()
        self.registry.register(self._snapshot)
        self.registry.register(_Counted(counters))

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
