"""`cloudseat-broker drain HOST [--deadline 30m]` and `cloudseat-broker undrain HOST`: FleetService.DrainHost and
UndrainHost from a shell, with a provider's (or the operator's) token, printing the host as the broker then holds it.

    cloudseat-broker drain host-a1 --deadline 30m --reason "fan swap" --ca creds/ca.pem --token-file prov.token

The drain's rule is broker.drain's: nothing new at once; the running sessions go on until they end, or until the
deadline, when those still there move to other hosts (their patrons warned 5 and 1 minute ahead).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from pathlib import Path

import grpc
from cloudseat import settings
from cloudseat.client import BrokerClient
from cloudseat.settings import setting
from cloudseat.v1 import fleet_pb2
from grpc import aio

from broker import drain, issuing


def _deadline(text: str) -> int:
    """parse=: '30m', '2h', '90s' or seconds; within broker.drain's bound."""
    seconds = int(issuing.parse_ttl(text))
    if seconds > drain.MAX_DEADLINE_S:
        raise ValueError(f"{text!r} is more than a week ({drain.MAX_DEADLINE_S} s)")
    return seconds


@dataclasses.dataclass(frozen=True, slots=True)
class DrainOptions:
    broker: str = setting(
        "127.0.0.1:50051", "the broker's HOST:PORT", env="CLOUDSEAT_BROKER", check=settings.host_port
    )
    # With security on: a provider token for its own hosts (or an operator's), and the CA that signed the broker.
    token_file: Path | None = setting(
        None, "a file whose first line is a provider's or the operator's token", env="CLOUDSEAT_TOKEN_FILE"
    )
    ca: Path | None = setting(
        None,
        "the CA bundle that signed the broker's certificate: TLS to the broker (none: plaintext, for a broker "
        "running --insecure)",
        env="CLOUDSEAT_CA",
    )
    deadline: int = setting(
        0,
        "drain only: when the sessions still on the host move to other hosts, from now: 30m, 2h, 90s or seconds "
        "(none: they go on until they end)",
        env="CLOUDSEAT_DRAIN_DEADLINE",
        parse=_deadline,
        shown="none",
    )
    reason: str = setting(
        "", "drain only: a note for the audit trail", env="CLOUDSEAT_DRAIN_REASON", shown="none"
    )


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, text in (
        ("drain", "stop placing on a host; its sessions go on until they end or until --deadline, then move"),
        ("undrain", "place on a host again (a deadline not yet reached is cancelled)"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("host_id", metavar="HOST", help="the host's id")
        settings.add_arguments(cmd, DrainOptions, skip=() if name == "drain" else ("deadline", "reason"))


def run(args: argparse.Namespace) -> int:
    """The subcommand `args.command` ('drain' or 'undrain'); its exit status."""
    options = settings.build(DrainOptions, args)
    try:
        host = asyncio.run(_call(args.command, args.host_id, options))
    except aio.AioRpcError as exc:
        print(f"cloudseat-broker {args.command}: {exc.details() or exc.code().name}", file=sys.stderr)
        return 1
    print(describe(host))
    return 0


async def _call(command: str, host_id: str, options: DrainOptions) -> fleet_pb2.Host:
    token = None
    if options.token_file is not None:
        token = options.token_file.read_text(encoding="utf-8").partition("\n")[0].strip()
    credentials = None
    if options.ca is not None:
        credentials = grpc.ssl_channel_credentials(root_certificates=options.ca.read_bytes())
    async with BrokerClient(options.broker, token=token or None, credentials=credentials) as client:
        if command == "drain":
            request = fleet_pb2.DrainHostRequest(host_id=host_id, reason=options.reason, deadline_s=options.deadline)
            host: fleet_pb2.Host = await client.fleet.DrainHost(request, timeout=30)
        else:
            host = await client.fleet.UndrainHost(fleet_pb2.UndrainHostRequest(host_id=host_id), timeout=30)
    return host


def describe(host: fleet_pb2.Host) -> str:
    """One line: the host, whether it is drained, its sessions left and when they move."""
    left = f"{host.live_sessions} session{'s' if host.live_sessions != 1 else ''}"
    if not host.drained:
        return f"{host.host_id}: taking sessions ({left} running)"
    if host.HasField("drain_deadline"):
        when = host.drain_deadline.ToDatetime().replace(microsecond=0).isoformat() + "Z"
        return f"{host.host_id}: drained, {left} left, moving at {when}"
    return f"{host.host_id}: drained, {left} left, no deadline (they go on until they end)"
