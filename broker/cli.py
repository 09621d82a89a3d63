"""`cloudseat-broker`: serve the control plane, apply migrations, or run the local development system.

Every flag falls back to an environment variable named in its help; flags win.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

import structlog

from broker import errors, logs
from broker.config import BrokerConfig, default_data_dir
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


def _add_serve(p: argparse.ArgumentParser, default_listen: str) -> None:
    _add_common(p)
    p.add_argument(
        "--listen",
        default=_env("CLOUDSEAT_BROKER_LISTEN", default_listen),
        help=f"HOST:PORT for gRPC (env CLOUDSEAT_BROKER_LISTEN; default {default_listen})",
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
        default=float(_env("CLOUDSEAT_HOST_LOST_AFTER_S", "15") or 15),
        help="seconds without heartbeats before a host is lost (env CLOUDSEAT_HOST_LOST_AFTER_S; default 15)",
    )
    p.add_argument(
        "--shutdown-grace",
        type=float,
        default=float(_env("CLOUDSEAT_SHUTDOWN_GRACE_S", "10") or 10),
        help="seconds in-flight RPCs may take after SIGTERM (env CLOUDSEAT_SHUTDOWN_GRACE_S; default 10)",
    )
    p.add_argument(
        "--solver",
        choices=("engine", "greedy"),
        default=_env("CLOUDSEAT_SOLVER", "engine"),
        help="placement solver (env CLOUDSEAT_SOLVER; default engine: min-cost flow / CP-SAT; greedy: baseline)",
    )


def _config(args: argparse.Namespace) -> BrokerConfig:
    if args.heartbeat_interval <= 0 or args.host_lost_after <= args.heartbeat_interval:
        raise SystemExit("cloudseat-broker: --host-lost-after must be longer than --heartbeat-interval (> 0)")
    return BrokerConfig(
        listen=args.listen,
        database_url=args.database_url or None,
        data_dir=args.data_dir,
        heartbeat_interval_s=args.heartbeat_interval,
        host_lost_after_s=args.host_lost_after,
        shutdown_grace_s=args.shutdown_grace,
        log_format=args.log_format,
        log_level=args.log_level,
    )


async def _serve(config: BrokerConfig, solver: str, *, dev_agents: int | None = None) -> int:
    """Serve until SIGTERM/SIGINT. With dev_agents (the local system), seed demo data and run that many agents."""
    broker = Broker(config, solver=solver)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    agents: list[asyncio.subprocess.Process] = []
    try:
        await broker.start()
        if dev_agents is not None:
            from broker import dev

            assert broker.pool is not None
            await dev.seed(broker.pool)
            agents = await dev.start_agents(dev.write_agent_configs(broker.port, config.data_dir, dev_agents))
            dev.print_welcome(broker.port, config)
        await stop.wait()
        log.info("stopping", grace_s=config.shutdown_grace_s)
    finally:
        if agents:
            from broker import dev

            await dev.stop_agents(agents)
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
    dev_parser = sub.add_parser(
        "dev",
        help="the local system: serve on the embedded database with a demo venue, fleet and local agents",
    )
    _add_serve(dev_parser, "127.0.0.1:50051")
    dev_parser.add_argument(
        "--agents",
        type=int,
        default=int(os.environ.get("CLOUDSEAT_DEV_AGENTS", "2")),
        help="local GPU agents to start, spread over the demo sites (env CLOUDSEAT_DEV_AGENTS; default 2)",
    )
    args = parser.parse_args(argv)
    logs.configure(args.log_format, args.log_level)
    try:
        if args.command == "migrate":
            return asyncio.run(_migrate(args))
        dev_agents = args.agents if args.command == "dev" else None
        if dev_agents is not None and not 0 <= dev_agents <= 16:
            raise SystemExit("cloudseat-broker: --agents must be between 0 and 16")
        return asyncio.run(_serve(_config(args), args.solver, dev_agents=dev_agents))
    except errors.CloudseatError as exc:
        print(f"cloudseat-broker: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cloudseat-broker: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
