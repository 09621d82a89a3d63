"""The broker's configuration: one frozen dataclass, built once by the command line (broker.cli).

The fields marked `setting(...)` are also the broker's flags and CLOUDSEAT_* environment variables, with their
defaults written once, here (cloudseat.settings derives the rest); the others are set by code and tests.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from cloudseat import settings
from cloudseat.settings import above, at_least, setting

from broker.drain import DrainConfig
from broker.lifecycle import Timeouts
from broker.metering import Policy as MeteringPolicy
from broker.patron_time import PatronTimeConfig

SOLVERS = ("engine", "greedy")


def default_data_dir() -> Path:
    """Where the embedded PostgreSQL keeps its data when no --data-dir is given (the user's data directory)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "cloudseat" / "broker"


@dataclasses.dataclass(frozen=True, slots=True)
class SecurityConfig:
    """Mutual TLS and tenant tokens (cloudseat.tls, broker.auth, broker.guard)."""

    # The broker's certificate and key, and the CA bundle its clients' certificates (agents') must chain to.
    cert: Path = setting(help="the broker's certificate (PEM)", flag="--tls-cert", env="CLOUDSEAT_TLS_CERT")
    key: Path = setting(help="the broker's private key (PEM)", flag="--tls-key", env="CLOUDSEAT_TLS_KEY")
    client_ca: Path = setting(
        help="CA bundle agents' client certificates must chain to", flag="--tls-ca", env="CLOUDSEAT_TLS_CA"
    )
    # Ed25519 private key that signs patron tokens (StartSession's session_token); its public half verifies.
    token_key: Path = setting(
        help="Ed25519 key that signs patron tokens; its public half verifies all tokens",
        env="CLOUDSEAT_TOKEN_KEY",
    )
    # More public keys accepted while a signing key is rotated.
    extra_verify_keys: tuple[Path, ...] = setting(
        (),
        "another public key whose tokens are accepted while keys rotate (repeat; the variable takes a comma list)",
        flag="--token-verify-key",
        env="CLOUDSEAT_TOKEN_VERIFY_KEYS",
    )
    # Per tenant: calls per second, burst, concurrent streams.
    rate_per_s: float = setting(
        1000.0,
        "calls per second per tenant, with twice that as burst",
        flag="--rate-limit",
        env="CLOUDSEAT_RATE_LIMIT",
        check=above(0),
    )
    burst: float = 2000.0
    streams: int = 10_000


@dataclasses.dataclass(frozen=True, slots=True)
class BrokerConfig:
    listen: str = setting(
        "127.0.0.1:50051", "HOST:PORT for gRPC", env="CLOUDSEAT_BROKER_LISTEN", check=settings.host_port
    )
    # None: start the embedded PostgreSQL server in data_dir.
    database_url: str | None = setting(
        None,
        "PostgreSQL URL; none: start the embedded server in --data-dir",
        env=("CLOUDSEAT_DATABASE_URL", "DATABASE_URL"),
        parse=lambda text: text or None,
    )
    data_dir: Path = setting(
        default_factory=default_data_dir,
        help="where the embedded PostgreSQL keeps its data",
        env="CLOUDSEAT_BROKER_DATA_DIR",
        shown="$XDG_DATA_HOME/cloudseat/broker, else ~/.local/share/cloudseat/broker",
    )
    # A host's liveness is its agent's link (broker.links): the agents' server pings every quiet link every
    # link_ping_s, below Python, and drops one that does not answer within link_ping_timeout_s, so a killed agent is
    # seen at once and a frozen or cut-off one within their sum. A host is lost host_lost_after_s after its last
    # sign of life at most: its link gets the rest (link_grace_s) to come back, and a broker process that holds
    # links and falls silent loses them after host_lost_after_s. 13 s keeps detection within 15 s of an agent's
    # death with the once-a-second check (docs/architecture.md: host loss detected ≤ 15 s). The pings are what an
    # idle fleet costs (docs/loadtest-fleet.md: 10,000 links pinged every 3 s took a fifth of a core, every 8 s a
    # tenth), and an answer takes gRPC's core, not the agent's Python, so 2 s is a generous wait for it.
    link_ping_s: float = setting(
        8.0,
        "seconds between the broker's keepalive pings on a quiet agent link",
        flag="--link-ping",
        check=above(0),
    )
    link_ping_timeout_s: float = setting(
        2.0,
        "seconds a keepalive ping may go unanswered before the agent's link is dropped",
        flag="--link-ping-timeout",
        check=above(0),
    )
    host_lost_after_s: float = setting(
        13.0,
        "seconds from a host's last sign of life to its loss (more than --link-ping plus --link-ping-timeout)",
        flag="--host-lost-after",
    )
    # How often an agent reports its load and its sessions' stream stats while it runs sessions (nothing keeps a
    # host alive but its link). The SLA judges each minute's reports, which arrive in the minute they count for.
    heartbeat_interval_s: float = setting(
        30.0,
        "seconds between an agent's load and stream stats reports while it runs sessions",
        flag="--heartbeat-interval",
        check=above(0),
    )
    # A broker process holding agents' links says it is alive this often (broker.replica).
    presence_refresh_s: float = 1.0
    # How long in-flight RPCs may run after SIGTERM before they are cancelled.
    shutdown_grace_s: float = setting(
        10.0, "seconds in-flight RPCs may take after SIGTERM", flag="--shutdown-grace", check=at_least(0)
    )
    # Overload protection: unary calls in progress on this replica beyond this are shed with RESOURCE_EXHAUSTED
    # (0: never shed). broker.guard.Guard.enter explains why.
    max_inflight: int = setting(
        256,
        "unary calls in progress beyond which new ones are shed with RESOURCE_EXHAUSTED; 0: never",
        check=at_least(0),
    )
    # Past capacity a tenant worker refuses new calls at once (RESOURCE_EXHAUSTED with a retry hint) rather than queue
    # them: when its event loop runs this many ms late on average, more so the later (broker.overload).
    shed_lag_ms: float = setting(
        20.0,
        "event-loop lateness (ms) past which a tenant worker refuses new calls with a retry hint; 0: never",
        check=at_least(0),
    )
    # The fair share (broker.overload): while several tenants are active, the calls in progress they share (each
    # its part; a tenant alone may still hold max_inflight). About what a worker does at once without queueing:
    # 0 is twice db_pool_max (20). Larger lets each tenant's bursts in, at the cost of the queue one tenant's calls
    # put ahead of the others' (measured: a flood's 128 GetVenue in progress put 350 ms ahead of a quiet venue's).
    fair_inflight: int = setting(
        0,
        "calls in progress shared among the tenants active at once, each its part; 0: twice --db-pool-max",
        check=at_least(0),
    )
    # The share of its time a tenant worker's event loop may be busy before the tenants over their share of the
    # recent calls are shed (not the others): a loop that never rests takes new calls out of gRPC no faster than
    # its turns come, while still running on time. 1: never for busyness.
    shed_busy: float = setting(
        0.8,
        "share of the time a tenant worker's loop may be busy before tenants over their share are shed; 1: never",
        check=at_least(0),
    )
    # Past capacity the calls a tenant worker let in queue for a database connection; a new StartSession that has
    # waited this long is refused (RESOURCE_EXHAUSTED, retry in 500 ms) before it writes anything, rather than finish
    # after its seat gave up (broker.store.sessions.start). At capacity such waits reach a few hundred ms (250 ms
    # refused enough there to start a retry storm at 300 starts/s, measured); past it they reached 5-9 s.
    # 0: it waits as long as it takes.
    start_db_wait_ms: float = setting(
        1000.0,
        "ms a new StartSession may wait for a database connection before it is refused with a retry hint; 0: never",
        check=at_least(0),
    )
    # Past capacity the placement queue grows: a new StartSession is refused before it writes anything while the
    # oldest request no placement round has looked at yet has waited longer than this and the leader is placing
    # (broker.backlog; measured at --rate 3000: 6,067 admitted starts never placed within their patrons' 30 s).
    # Below capacity that wait is one or two rounds (p99 0.3-0.6 s at 80% on the 2-core machine), at capacity a few
    # seconds at times (3.2-3.5 s p99 at 500/s): 2 s refused starts there and made request→placed worse. 0: never.
    start_backlog_ms: float = setting(
        5000.0,
        "ms the oldest request no placement round has looked at may wait before new starts are refused with a "
        "retry hint; 0: never",
        check=at_least(0),
    )
    # A new call waits inside gRPC's core until the process's event loop takes it up, one per turn of the loop; past
    # capacity that queue, not Python's, is where calls would spend their deadlines (30 s by default). A call not
    # taken up within this many seconds is refused there, below Python, with CANCELLED, which the clients treat as
    # "busy" (broker.overload explains; docs/loadtest-fleet.md#admission measures it). Whole seconds: gRPC's unit.
    # 0 refuses every call that finds the loop busy, which refuses some of a burst even below capacity.
    accept_wait_s: int = setting(
        1,
        "seconds a new call may wait inside gRPC for a tenant worker to take it up; past it the call is refused "
        "(CANCELLED)",
        flag="--accept-wait",
        check=at_least(0),
    )
    # Calls at once per connection on the tenant port (HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS, enforced by gRPC's
    # core): a client's calls past it wait in the client, on its own connection, instead of in the one queue of new
    # calls inside the broker's gRPC that every tenant's call passes through in arrival order (broker.overload: a
    # flood of 300 calls in flight on one connection put 300 ahead of every other tenant's call). Watches count
    # too: a seat holds one or two; a program that watches many sessions opens more connections. 0: gRPC's default
    # (no bound).
    max_streams_per_connection: int = setting(
        100,
        "calls (and watches) at once per tenant connection; a client's further calls wait in the client; 0: no bound",
        flag="--max-streams-per-connection",
        check=at_least(0),
    )
    # New calls the tenant port asks gRPC's core for at once, beside grpc.aio's own one (broker.intake): grpc.aio
    # alone takes one new call per two turns of the event loop, so past capacity they wait in the core, in arrival
    # order, behind a flood's, before any tenant is known. 0 (the default): as grpc.aio alone. Off by default: on
    # the shared 2-core machine it did not improve the quiet venue's p99 beside a flood, and the flood alone was
    # answered less in 4 of 5 runs (docs/security.md#fair-share-under-load); 64 is what was measured.
    accept_ahead: int = setting(
        0,
        "new calls the tenant port takes from gRPC at once (beside grpc.aio's one), so a flood's queue of new calls "
        "reaches the per-tenant admission; 0: one at a time",
        check=at_least(0),
    )
    # Which placement solver the leader runs: the engine (min-cost flow, CP-SAT for multi-slot sessions) or the
    # greedy baseline the benchmarks compare against.
    solver: str = setting(
        "engine",
        "placement solver: engine (min-cost flow / CP-SAT) or greedy (the baseline)",
        choices=SOLVERS,
    )
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
    # A provider's drain with a deadline: when WatchSession warns a drained host's patrons of the move (5, 1 min).
    drain: DrainConfig = dataclasses.field(default_factory=DrainConfig)
    db_pool_min: int = 2
    # Each process of a broker holds a pool of this many connections at most (and one more for notifications).
    db_pool_max: int = setting(10, "database connections each broker process may hold", check=at_least(1))
    # Authentication is on unless a config says otherwise: a broker needs `security`, or `insecure` (plaintext,
    # every caller trusted) set on purpose — tests, and `--insecure` on a laptop.
    security: SecurityConfig | None = None
    insecure: bool = setting(False, "no TLS, no tokens: every caller is trusted (tests and laptops only)")
    # With security on, agents connect to their own port, where a client certificate is required (mutual TLS);
    # everyone else uses `listen` with TLS and a token. Without security, agents use `listen` too.
    agent_listen: str | None = setting(
        "127.0.0.1:50052",
        "HOST:PORT where agents connect with mutual TLS (with --insecure agents use --listen)",
        env="CLOUDSEAT_BROKER_AGENT_LISTEN",
        check=settings.host_port,
    )
    # HOST:PORT where the other replicas of the region reach this one's `listen` port: recorded on the hosts whose
    # agents link here, so a call that needs the agent (Negotiate) reaching another replica is forwarded here. With
    # security on, a forwarding replica checks the certificate met there against the first DNS name of its own
    # (replicas share one), not against HOST. None: `listen` with the port bound (the machine's host name when
    # `listen` is a wildcard such as 0.0.0.0); on Kubernetes, the pod's IP.
    advertise: str | None = setting(
        None,
        "HOST:PORT where other broker processes reach this one, to forward calls that need an agent linked here "
        "(for an agents-only process its host with the --relay-listen port); none: --listen with the bound port",
        env="CLOUDSEAT_BROKER_ADVERTISE",
        parse=lambda text: text or None,
        check=settings.host_port,
    )
    # HOST:PORT where a process with the agents role but not the tenant role takes forwarded calls for its agents
    # (Negotiate from a seat that reached another process); port 0: any free port.
    relay_listen: str = setting(
        "127.0.0.1:0",
        "HOST:PORT where an agents-only broker process takes calls forwarded to its agents",
        env="CLOUDSEAT_BROKER_RELAY_LISTEN",
        check=settings.host_port,
    )
    # HOST:PORT of the web consoles (venue and provider pages, their JSON API, /metrics; broker.console); None: off.
    http_listen: str | None = setting(
        None,
        "HOST:PORT of the web consoles (venue and provider pages, their JSON API under /api/ with the same tenant "
        "tokens, and /metrics), or 'off'",
        parse=settings.none_if_off,
        check=settings.host_port,
        shown="off",
    )

    def __post_init__(self) -> None:
        if self.host_lost_after_s <= self.link_ping_s + self.link_ping_timeout_s:
            raise ValueError("--host-lost-after: must be longer than --link-ping plus --link-ping-timeout")

    @property
    def link_grace_s(self) -> float:
        """How long a link seen dead may take to come back before its host is lost: what host_lost_after_s leaves
        after the ping interval and the ping's timeout it may have taken to see it dead."""
        return self.host_lost_after_s - self.link_ping_s - self.link_ping_timeout_s
