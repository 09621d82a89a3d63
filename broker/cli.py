"""`cloudseat-broker`: serve the control plane, apply migrations, or run the local development system.

Every flag falls back to an environment variable named in its help; flags win.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
import sys
from pathlib import Path

import structlog
from cloudseat import errors, logs

from broker import issuing
from broker.config import BrokerConfig, SecurityConfig, default_data_dir
from broker.server import Broker

log = structlog.get_logger("broker")


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--database-url",
        default=_env("CLOUDSEAT_DATABASE_URL", _env("DATABASE_URL")),
        help="PostgreSQL URL (env CLOUDSEAT_DATABASE_URL or DATABASE_URL); none: start the embedded server",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(_env("CLOUDSEAT_BROKER_DATA_DIR") or default_data_dir()),
        help="where the embedded PostgreSQL keeps its data (env CLOUDSEAT_BROKER_DATA_DIR; "
        f"default {default_data_dir()})",
    )
    p.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        default=_env("CLOUDSEAT_LOG_FORMAT", "auto"),
        help="log format (env CLOUDSEAT_LOG_FORMAT; auto: console on a terminal, else JSON)",
    )
    p.add_argument("--log-level", default=_env("CLOUDSEAT_LOG_LEVEL", "info"), help="env CLOUDSEAT_LOG_LEVEL")


def _add_serve(p: argparse.ArgumentParser, default_listen: str, default_http: str | None = None) -> None:
    _add_common(p)
    p.add_argument(
        "--listen",
        default=_env("CLOUDSEAT_BROKER_LISTEN", default_listen),
        help=f"HOST:PORT for gRPC (env CLOUDSEAT_BROKER_LISTEN; default {default_listen})",
    )
    p.add_argument(
        "--http-listen",
        default=_env("CLOUDSEAT_HTTP_LISTEN", default_http),
        help="HOST:PORT of the web consoles (venue and provider pages, their JSON API under /api/ with the same "
        f"tenant tokens, and /metrics), or 'off' (env CLOUDSEAT_HTTP_LISTEN; default {default_http or 'off'})",
    )
    p.add_argument(
        "--advertise",
        default=_env("CLOUDSEAT_BROKER_ADVERTISE"),
        help="HOST:PORT where the other broker replicas reach this one's --listen port, to forward calls that need "
        "an agent linked here (env CLOUDSEAT_BROKER_ADVERTISE; default: --listen with the bound port)",
    )
    p.add_argument(
        "--heartbeat-interval",
        type=float,
        default=float(_env("CLOUDSEAT_HEARTBEAT_INTERVAL_S", "5") or 5),
        help="seconds between agent heartbeats (env CLOUDSEAT_HEARTBEAT_INTERVAL_S; default 5)",
    )
    p.add_argument(
        "--host-lost-after",
        type=float,
        default=float(_env("CLOUDSEAT_HOST_LOST_AFTER_S", "13") or 13),
        help="seconds without heartbeats before a host is lost (env CLOUDSEAT_HOST_LOST_AFTER_S; default 13)",
    )
    p.add_argument(
        "--shutdown-grace",
        type=float,
        default=float(_env("CLOUDSEAT_SHUTDOWN_GRACE_S", "10") or 10),
        help="seconds in-flight RPCs may take after SIGTERM (env CLOUDSEAT_SHUTDOWN_GRACE_S; default 10)",
    )
    p.add_argument(
        "--max-inflight",
        type=int,
        default=int(_env("CLOUDSEAT_MAX_INFLIGHT", "256") or 256),
        help="unary calls in progress beyond which new ones are shed with RESOURCE_EXHAUSTED; 0: never "
        "(env CLOUDSEAT_MAX_INFLIGHT; default 256)",
    )
    sec = p.add_argument_group(
        "security", "mutual TLS for agents, tenant tokens for everyone else; required unless --insecure"
    )
    sec.add_argument(
        "--agent-listen",
        default=_env("CLOUDSEAT_BROKER_AGENT_LISTEN", "127.0.0.1:50052"),
        help="HOST:PORT where agents connect with mutual TLS (env CLOUDSEAT_BROKER_AGENT_LISTEN; default "
        "127.0.0.1:50052; with --insecure agents use --listen)",
    )
    sec.add_argument(
        "--tls-cert", type=Path, default=_path_env("CLOUDSEAT_TLS_CERT"), help="env CLOUDSEAT_TLS_CERT"
    )
    sec.add_argument(
        "--tls-key", type=Path, default=_path_env("CLOUDSEAT_TLS_KEY"), help="env CLOUDSEAT_TLS_KEY"
    )
    sec.add_argument(
        "--tls-ca",
        type=Path,
        default=_path_env("CLOUDSEAT_TLS_CA"),
        help="CA bundle agents' client certificates must chain to (env CLOUDSEAT_TLS_CA)",
    )
    sec.add_argument(
        "--token-key",
        type=Path,
        default=_path_env("CLOUDSEAT_TOKEN_KEY"),
        help="Ed25519 key that signs patron tokens; its public half verifies all tokens (env CLOUDSEAT_TOKEN_KEY)",
    )
    sec.add_argument(
        "--token-verify-key",
        type=Path,
        action="append",
        default=[],
        help="another public key whose tokens are accepted, while keys rotate (repeat)",
    )
    sec.add_argument(
        "--rate-limit",
        type=float,
        default=float(_env("CLOUDSEAT_RATE_LIMIT", "1000") or 1000),
        help="calls per second per tenant, with twice that as burst (env CLOUDSEAT_RATE_LIMIT; default 1000)",
    )
    sec.add_argument(
        "--insecure",
        action="store_true",
        default=_env("CLOUDSEAT_INSECURE", "") in ("1", "true", "yes"),
        help="no TLS, no tokens: every caller is trusted (tests and laptops only; env CLOUDSEAT_INSECURE=1)",
    )
    p.add_argument(
        "--solver",
        choices=("engine", "greedy"),
        default=_env("CLOUDSEAT_SOLVER", "engine"),
        help="placement solver (env CLOUDSEAT_SOLVER; default engine: min-cost flow / CP-SAT; greedy: baseline)",
    )


def _path_env(name: str) -> Path | None:
    value = _env(name)
    return Path(value) if value else None


def _security(args: argparse.Namespace) -> SecurityConfig | None:
    """The security settings the flags give; None with --insecure. Dev mode fills them in itself."""
    given = {
        "--tls-cert": args.tls_cert,
        "--tls-key": args.tls_key,
        "--tls-ca": args.tls_ca,
        "--token-key": args.token_key,
    }
    if args.insecure:
        if any(given.values()):
            raise SystemExit("cloudseat-broker: --insecure cannot be combined with TLS or token flags")
        return None
    missing = [flag for flag, value in given.items() if value is None]
    if missing:
        raise SystemExit(
            f"cloudseat-broker: {', '.join(missing)} required (authentication is on by default; "
            "`cloudseat-broker certs --out DIR` makes development credentials), or --insecure"
        )
    if not args.rate_limit > 0:
        raise SystemExit("cloudseat-broker: --rate-limit must be > 0")
    return SecurityConfig(
        cert=args.tls_cert,
        key=args.tls_key,
        client_ca=args.tls_ca,
        token_key=args.token_key,
        extra_verify_keys=tuple(args.token_verify_key),
        rate_per_s=args.rate_limit,
        burst=2 * args.rate_limit,
    )


def _config(args: argparse.Namespace, security: SecurityConfig | None) -> BrokerConfig:
    if args.heartbeat_interval <= 0 or args.host_lost_after <= args.heartbeat_interval:
        raise SystemExit("cloudseat-broker: --host-lost-after must be longer than --heartbeat-interval (> 0)")
    if args.max_inflight < 0:
        raise SystemExit("cloudseat-broker: --max-inflight must be 0 (no limit) or more")
    http_listen = None if args.http_listen in (None, "", "off") else args.http_listen
    if http_listen is not None:
        from broker.console.server import parse_listen

        try:
            parse_listen(http_listen)
        except errors.InvalidArgument:
            raise SystemExit(
                f"cloudseat-broker: --http-listen: {http_listen!r} is not HOST:PORT (e.g. 127.0.0.1:8781) or 'off'"
            ) from None
    return BrokerConfig(
        security=security,
        insecure=security is None,
        agent_listen=args.agent_listen if security is not None else None,
        listen=args.listen,
        advertise=args.advertise or None,
        database_url=args.database_url or None,
        data_dir=args.data_dir,
        heartbeat_interval_s=args.heartbeat_interval,
        host_lost_after_s=args.host_lost_after,
        shutdown_grace_s=args.shutdown_grace,
        max_inflight=args.max_inflight,
        log_format=args.log_format,
        log_level=args.log_level,
        http_listen=http_listen,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class DevOptions:
    """What the local system starts beside the broker."""

    agents: int = 2
    kiosk_listen: str | None = "127.0.0.1:8780"  # None: no kiosk
    play: str | None = None  # "window" or "headless": start the Python client too
    # The development CA, certificates and token key in the data directory; None with --insecure.
    credentials: issuing.Credentials | None = None


async def _serve(config: BrokerConfig, solver: str, *, dev: DevOptions | None = None) -> int:
    """Serve until SIGTERM/SIGINT. With dev (the local system): seed demo data, run local agents, the seat's kiosk
    and, when asked, the Python client."""
    broker = Broker(config, solver=solver)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    agents: list[asyncio.subprocess.Process] = []
    seats: list[asyncio.subprocess.Process] = []
    try:
        await broker.start()
        if dev is not None:
            from broker import dev as local

            assert broker.pool is not None
            await local.seed(broker.pool)
            creds = dev.credentials
            agents = await local.start_agents(
                local.write_agent_configs(broker.agent_port, config.data_dir, dev.agents, creds)
            )
            kiosk_url = None
            if dev.kiosk_listen is not None:
                kiosk, kiosk_url = await local.start_kiosk(broker.port, dev.kiosk_listen, creds)
                seats.append(kiosk)
            local.print_welcome(
                broker.port, broker.agent_port, config, kiosk_url, creds, console_url=broker.console_url
            )
            if dev.play is not None:
                seats.append(await local.start_client(broker.port, dev.play == "headless", creds))
        await stop.wait()
        log.info("stopping", grace_s=config.shutdown_grace_s)
    finally:
        if agents or seats:
            from broker import dev as local

            await local.stop_processes(seats)  # seats first: they end their sessions as patrons would
            await local.stop_processes(agents)
        await broker.stop()
    return 0


async def _migrate(args: argparse.Namespace) -> int:
    import asyncpg

    from broker.store import embedded, migrate

    url = args.database_url or await asyncio.to_thread(embedded.start, args.data_dir)
    conn = await asyncpg.connect(url)
    try:
        applied = await migrate.apply(conn)
    finally:
        await conn.close()
    print(f"applied migrations: {applied or 'none (up to date)'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cloudseat-broker", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub.add_parser("serve", help="serve the broker's gRPC services"), "127.0.0.1:50051")
    _add_common(sub.add_parser("migrate", help="apply database migrations and exit"))
    issuing.add_parsers(sub)
    dev_parser = sub.add_parser(
        "dev",
        help="the local system: serve on the embedded database with a demo venue, fleet and local agents",
    )
    _add_serve(dev_parser, "127.0.0.1:50051", "127.0.0.1:8781")
    dev_parser.add_argument(
        "--agents",
        type=int,
        default=int(os.environ.get("CLOUDSEAT_DEV_AGENTS", "2")),
        help="local GPU agents to start, spread over the demo sites (env CLOUDSEAT_DEV_AGENTS; default 2)",
    )
    dev_parser.add_argument(
        "--kiosk",
        default=os.environ.get("CLOUDSEAT_DEV_KIOSK", "127.0.0.1:8780"),
        help="HOST:PORT of the demo seat's kiosk page, or 'off' (env CLOUDSEAT_DEV_KIOSK; default 127.0.0.1:8780)",
    )
    dev_parser.add_argument(
        "--play",
        nargs="?",
        const="window",
        choices=("window", "headless"),
        default=None,
        help="also start the Python client on seat-02: in a window (default) or headless",
    )
    args = parser.parse_args(argv)
    if args.command in ("certs", "token"):
        return issuing.run(args)
    logs.configure(args.log_format, args.log_level)
    try:
        if args.command == "migrate":
            return asyncio.run(_migrate(args))
        dev = None
        security = None
        if args.command == "dev":
            if not 0 <= args.agents <= 16:
                raise SystemExit("cloudseat-broker: --agents must be between 0 and 16")
            from broker import dev as local

            own = args.insecure or any((args.tls_cert, args.tls_key, args.tls_ca, args.token_key))
            creds = None if own else issuing.dev_credentials(args.data_dir, local.host_ids(args.agents))
            security = _security(args) if own else local.security(creds)  # type: ignore[arg-type]
            dev = DevOptions(
                agents=args.agents,
                kiosk_listen=None if args.kiosk == "off" else args.kiosk,
                play=args.play,
                credentials=creds,
            )
        else:
            security = _security(args)
        return asyncio.run(_serve(_config(args, security), args.solver, dev=dev))
    except errors.CloudseatError as exc:
        print(f"cloudseat-broker: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cloudseat-broker: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
