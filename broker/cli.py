"""`cloudseat-broker`: serve the control plane, apply migrations, check or export the audit log, drain or undrain a
host, or run the local development system.

Every flag falls back to an environment variable named in its help; flags win.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

import structlog
from cloudseat import errors, logs, settings
from cloudseat.settings import at_least, setting

from broker import drain_cli, issuing
from broker.config import BrokerConfig, SecurityConfig
from broker.region import cli as region_cli
from broker.server import ALL_ROLES, Broker, Role
from broker.supervisor import Supervisor

if TYPE_CHECKING:
    from cloudseat.images.local_registry import RegistryProcesses

log = structlog.get_logger("broker")


def _roles(text: str) -> frozenset[Role]:
    """parse=: a comma list of roles, or 'all'."""
    if text.strip() == "all":
        return ALL_ROLES
    try:
        roles = frozenset(Role(part.strip()) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(
            f"{text!r}: roles are {', '.join(sorted(ALL_ROLES))} (a comma list) or all"
        ) from None
    if not roles:
        raise ValueError("name at least one role")
    return roles


@dataclasses.dataclass(frozen=True, slots=True)
class ServeOptions:
    """How `serve` lays the broker out over processes (broker.supervisor)."""

    # One tenant worker per core by default: the tenant-facing RPCs grow with the seats.
    workers: int = setting(
        # The cores this process may run on (a container's or taskset's CPU set), not the machine's.
        default_factory=lambda: len(os.sched_getaffinity(0)) or 1,
        help="tenant worker processes sharing --listen (besides one process for the agents' links and one for "
        "the leader's duties); 0 runs the whole broker in one process",
        env="CLOUDSEAT_BROKER_WORKERS",
        check=at_least(0),
        shown="the cores",
    )
    # The placement round is on every start's path, and on a machine whose cores run out it waits for a core
    # behind the tenant workers' calls; niceness puts the workers behind it instead (on Kubernetes each role has
    # its own CPU requests). docs/loadtest-fleet.md#the-notify-lock-and-quiet-pinned-cores measures it.
    tenant_nice: int = setting(
        0,
        "niceness added to the tenant worker processes (0-19): the leader's and the agents' processes come first "
        "for the CPU",
        env="CLOUDSEAT_BROKER_TENANT_NICE",
        check=at_least(0),
    )
    roles: frozenset[Role] = setting(
        default_factory=lambda: ALL_ROLES,
        help="the roles this broker runs: tenant, agents, leader (a comma list), or all; on Kubernetes each role "
        "can be a Deployment of its own",
        env="CLOUDSEAT_BROKER_ROLES",
        parse=_roles,
        shown="all",
    )


def _add_serve(p: argparse.ArgumentParser, **defaults: str) -> None:
    """The serve flags, all derived from BrokerConfig, SecurityConfig and ServeOptions (cloudseat.settings)."""
    settings.add_arguments(p, ServeOptions)
    settings.add_arguments(p, BrokerConfig, skip=("insecure", "agent_listen"), defaults=defaults)
    logs.add_arguments(p)
    sec = p.add_argument_group(
        "security", "mutual TLS for agents, tenant tokens for everyone else; required unless --insecure"
    )
    settings.add_arguments(sec, BrokerConfig, only=("insecure", "agent_listen"))
    settings.add_arguments(sec, SecurityConfig)


def _security(args: argparse.Namespace, insecure: bool) -> SecurityConfig | None:
    """The security settings the flags give; None with --insecure."""
    given = {
        "--tls-cert": args.cert,
        "--tls-key": args.key,
        "--tls-ca": args.client_ca,
        "--token-key": args.token_key,
    }
    if insecure:
        if any(given.values()):
            raise settings.SettingsError("--insecure cannot be combined with TLS or token flags")
        return None
    missing = [flag for flag, value in given.items() if value is None]
    if missing:
        raise settings.SettingsError(
            f"{', '.join(missing)} required (authentication is on by default; "
            "`cloudseat-broker certs --out DIR` makes development credentials), or --insecure"
        )
    sec = settings.build(SecurityConfig, args)
    return dataclasses.replace(sec, burst=2 * sec.rate_per_s)


def _secured(config: BrokerConfig, security: SecurityConfig | None) -> BrokerConfig:
    """`config` with its security (None: plaintext, every caller trusted; agents still have a port of their own,
    which their own process serves)."""
    return dataclasses.replace(config, security=security, insecure=security is None)


@dataclasses.dataclass(frozen=True, slots=True)
class DevOptions:
    """What the local system starts beside the broker."""

    agents: int = setting(
        2,
        "local GPU agents to start, spread over the demo sites",
        check=lambda n: None if 0 <= n <= 16 else "must be between 0 and 16",
    )
    kiosk_listen: str | None = setting(
        "127.0.0.1:8780",
        "HOST:PORT of the demo seat's kiosk page, or 'off'",
        flag="--kiosk",
        env="CLOUDSEAT_DEV_KIOSK",
        parse=settings.none_if_off,
        check=settings.host_port,
    )
    play: str | None = None  # "window" or "headless": start the Python client too
    # The development CA, certificates and token key in the data directory; None with --insecure.
    credentials: issuing.Credentials | None = None


async def _serve(
    config: BrokerConfig, options: ServeOptions, log_config: logs.LogConfig, *, dev: DevOptions | None = None
) -> int:
    """Serve until SIGTERM/SIGINT (exit 0), or until one of the broker's processes dies (exit 1). With dev (the local
    system): seed demo data, run local agents, the seat's kiosk and, when asked, the Python client."""
    broker: Broker | Supervisor = (
        Broker(config, roles=options.roles)
        if options.workers == 0
        else Supervisor(
            config,
            workers=options.workers,
            roles=options.roles,
            log_config=log_config,
            tenant_nice=options.tenant_nice,
        )
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    agents: list[asyncio.subprocess.Process] = []
    seats: list[asyncio.subprocess.Process] = []
    registry: RegistryProcesses | None = None
    code = 0
    try:
        await broker.start()
        if dev is not None:
            from broker import dev as local

            await local.seed_at(broker.database_url)
            creds = dev.credentials
            seat_creds = await local.seat_credentials(broker.database_url, config.data_dir, creds)
            registry = local.start_registry(config.data_dir)
            images = registry.registry if registry is not None else None
            agents = await local.start_agents(
                local.write_agent_configs(broker.agent_port, config.data_dir, dev.agents, creds, images)
            )
            kiosk_url = None
            if dev.kiosk_listen is not None:
                kiosk, kiosk_url = await local.start_kiosk(broker.port, dev.kiosk_listen, seat_creds)
                seats.append(kiosk)
            local.print_welcome(
                broker.port,
                broker.agent_port,
                config,
                kiosk_url,
                creds,
                console_url=broker.console_url,
                images=images,
                seats=seat_creds,
            )
            if dev.play is not None:
                seats.append(await local.start_client(broker.port, dev.play == "headless", seat_creds))
        waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(stop.wait())]
        if isinstance(broker, Supervisor):
            waits.append(asyncio.ensure_future(broker.wait_failed()))
        _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for w in pending:
            w.cancel()
        code = 0 if stop.is_set() else 1
        log.info("stopping", grace_s=config.shutdown_grace_s)
    finally:
        if agents or seats:
            from broker import dev as local

            await local.stop_processes(seats)  # seats first: they end their sessions as patrons would
            await local.stop_processes(agents)
        if registry is not None:
            registry.stop()
        await broker.stop()
    return code


async def _migrate(config: BrokerConfig) -> int:
    import asyncpg

    from broker.store import embedded, migrate

    url = config.database_url or await asyncio.to_thread(embedded.start, config.data_dir)
    conn = await asyncpg.connect(url)
    try:
        applied = await migrate.apply(conn)
    finally:
        await conn.close()
    print(f"applied migrations: {applied or 'none (up to date)'}")
    return 0


async def _audit(config: BrokerConfig, args: argparse.Namespace) -> int:
    """`audit verify`: seal what is unsealed, then walk the whole chain (exit 1 naming each break). `audit export`:
    the rows as JSON lines on stdout, oldest first, optionally of one tenant."""
    import json

    from broker.store import audit, database, embedded

    url = config.database_url
    if not url:
        url = await asyncio.to_thread(embedded.start, config.data_dir)
    pool = await database.create_pool(url, 1, 2)
    try:
        if args.audit_command == "export":
            async for row in audit.every(pool, audit.Filter(tenant=args.tenant or None)):
                print(json.dumps(audit.as_json(row), ensure_ascii=False))
            return 0
        await audit.seal_all(pool)
        verdict = await audit.verify(pool)
        for broken in verdict.breaks:
            print(f"BROKEN {broken}")
        print(
            f"audit chain: {verdict.rows} rows, head chain {verdict.head_chain_no} hash {verdict.head_hash} "
            f"({'intact' if not verdict.breaks else f'{len(verdict.breaks)} breaks'}); keep the head elsewhere "
            "to tell later that no row was removed from its end"
        )
        return 1 if verdict.breaks else 0
    finally:
        await pool.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cloudseat-broker", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    try:
        _add_serve(sub.add_parser("serve", help="serve the broker's gRPC services"))
        migrate_parser = sub.add_parser("migrate", help="apply database migrations and exit")
        settings.add_arguments(migrate_parser, BrokerConfig, only=("database_url", "data_dir"))
        logs.add_arguments(migrate_parser)
        issuing.add_parsers(sub)
        drain_cli.add_parsers(sub)
        region_cli.add_parsers(sub)
        audit_parser = sub.add_parser("audit", help="check the audit log's hash chain, or export the audit log")
        audit_sub = audit_parser.add_subparsers(dest="audit_command", required=True)
        for name, text in (
            ("verify", "walk the hash chain from its first row; exit 1 naming every edited or missing row"),
            ("export", "every audit row as JSON lines on stdout, oldest first"),
        ):
            cmd = audit_sub.add_parser(name, help=text)
            settings.add_arguments(cmd, BrokerConfig, only=("database_url", "data_dir"))
            logs.add_arguments(cmd)
            if name == "export":
                cmd.add_argument("--tenant", default="", help="only this tenant's rows (venue:ID, provider:ID)")
        dev_parser = sub.add_parser(
            "dev",
            help="the local system: serve on the embedded database with a demo venue, fleet and local agents",
        )
        _add_serve(dev_parser, http_listen="127.0.0.1:8781")
        settings.add_arguments(dev_parser, DevOptions, env_prefix="CLOUDSEAT_DEV_", skip=("play",))
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
        if args.command in ("drain", "undrain"):
            return drain_cli.run(args)
        if args.command in ("apply", "get"):
            return region_cli.run(args)
        logs.configure_from(args)
        # Every setting is read through its config: the parsed namespace holds flags as typed.
        config = settings.build(BrokerConfig, args)
        if args.command == "migrate":
            return asyncio.run(_migrate(config))
        if args.command == "audit":
            return asyncio.run(_audit(config, args))
        dev = None
        if args.command == "dev":
            from broker import dev as local

            options = settings.build(DevOptions, args, play=args.play)
            own = config.insecure or any((args.cert, args.key, args.client_ca, args.token_key))
            creds = None if own else issuing.dev_credentials(config.data_dir, local.host_ids(options.agents))
            security = _security(args, config.insecure) if own else local.security(creds)  # type: ignore[arg-type]
            dev = dataclasses.replace(options, credentials=creds)
        else:
            security = _security(args, config.insecure)
        layout = settings.build(ServeOptions, args)
        log_config = settings.build(logs.LogConfig, args)
        return asyncio.run(_serve(_secured(config, security), layout, log_config, dev=dev))
    except settings.SettingsError as exc:
        print(f"cloudseat-broker: {exc}", file=sys.stderr)
        return 2
    except errors.CloudseatError as exc:
        print(f"cloudseat-broker: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cloudseat-broker: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
