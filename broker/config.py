"""The broker's configuration: one frozen dataclass, built once by the command line from flags and CLOUDSEAT_* env."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from broker.lifecycle import Timeouts
from broker.metering import Policy as MeteringPolicy
from broker.patron_time import PatronTimeConfig


def default_data_dir() -> Path:
    """Where the embedded PostgreSQL keeps its data when no --data-dir is given (the user's data directory)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "cloudseat" / "broker"


@dataclasses.dataclass(frozen=True, slots=True)
class SecurityConfig:
    """Mutual TLS and tenant tokens (cloudseat.tls, broker.auth, broker.guard)."""

    # The broker's certificate and key, and the CA bundle its clients' certificates (agents') must chain to.
    cert: Path
    key: Path
    client_ca: Path
    # Ed25519 private key that signs patron tokens (StartSession's session_token); its public half verifies.
    token_key: Path
    # More public keys accepted while a signing key is rotated.
    extra_verify_keys: tuple[Path, ...] = ()
    # Per tenant: calls per second, burst, concurrent streams.
    rate_per_s: float = 1000.0
    burst: float = 2000.0
    streams: int = 10_000


@dataclasses.dataclass(frozen=True, slots=True)
class BrokerConfig:
    listen: str = "127.0.0.1:50051"
    # None: start the embedded PostgreSQL server in data_dir.
    database_url: str | None = None
    data_dir: Path = dataclasses.field(default_factory=default_data_dir)
    # Agents heartbeat this often; a host silent for host_lost_after_s (database clock) is lost. 13 s tolerates two
    # lost heartbeats, and with the once-a-second check and the 0.25 s heartbeat flush keeps detection within 15 s
    # of the agent's death even when it died right after a heartbeat (docs/architecture.md: host loss detected ≤ 15 s).
    heartbeat_interval_s: float = 5.0
    host_lost_after_s: float = 13.0
    # How long in-flight RPCs may run after SIGTERM before they are cancelled.
    shutdown_grace_s: float = 10.0
    # Overload protection: unary calls in progress on this replica beyond this are shed with RESOURCE_EXHAUSTED
    # (0: never shed). broker.guard.Guard.enter explains why.
    max_inflight: int = 256
    # The scheduler gathers requests for this long before solving (unless a batch fills first).
    batch_window_s: float = 0.005
    batch_max: int = 1000
    # How long a relayed WebRTC negotiation may wait for the agent's answer.
    negotiate_timeout_s: float = 10.0
    timeouts: Timeouts = dataclasses.field(default_factory=Timeouts)
    # The metering duty's period and the SLA's terms (broker.metering.Policy).
    metering: MeteringPolicy = dataclasses.field(default_factory=MeteringPolicy)
    # Patron time: when WatchSession warns, and the grace after the paid time runs out before the end (TIME_UP).
    patron_time: PatronTimeConfig = dataclasses.field(default_factory=PatronTimeConfig)
    # "json", "console", or "auto" (console on a terminal, JSON otherwise).
    log_format: str = "auto"
    log_level: str = "info"
    db_pool_min: int = 2
    db_pool_max: int = 10
    # Authentication is on unless a config says otherwise: a broker needs `security`, or `insecure` (plaintext,
    # every caller trusted) set on purpose — tests, and `--insecure` on a laptop.
    security: SecurityConfig | None = None
    insecure: bool = False
    # With security on, agents connect to their own port, where a client certificate is required (mutual TLS);
    # everyone else uses `listen` with TLS and a token. Without security, agents use `listen` too.
    agent_listen: str | None = None
    # HOST:PORT where the other replicas of the region reach this one's `listen` port: recorded on the hosts whose
    # agents link here, so a call that needs the agent (Negotiate) reaching another replica is forwarded here. With
    # security on, a forwarding replica checks the certificate met there against the first DNS name of its own
    # (replicas share one), not against HOST. None: `listen` with the port bound (the machine's host name when
    # `listen` is a wildcard such as 0.0.0.0); on Kubernetes, the pod's IP.
    advertise: str | None = None
    # HOST:PORT of the web consoles (venue and provider pages, their JSON API, /metrics; broker.console); None: off.
    http_listen: str | None = None
