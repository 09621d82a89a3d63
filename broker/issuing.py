"""`cloudseat-broker certs` and `cloudseat-broker token`: the credentials a region runs on.

    cloudseat-broker certs --out creds --host host-a1 --host host-a2     # a development CA, the broker's certificate,
                                                                         # one per agent, and the token signing key
    cloudseat-broker token --key creds/token-key.pem --role venue --venue demo-cafe --ttl 30d

Production brings its own CA (any: the broker only needs PEM files) and keeps the token signing key in a secret
store; these commands make the same files for a local system or a test. The local system (`cloudseat-broker dev`)
calls `dev_credentials` to make them once in its data directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path

from cloudseat import tls

from broker import auth

_TTL = re.compile(r"(?P<n>\d+)(?P<unit>[smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> float:
    """'90s', '15m', '12h', '30d' or plain seconds."""
    m = _TTL.fullmatch(text.strip())
    if m is None or int(m["n"]) == 0:
        raise ValueError(f"{text!r} is not a lifetime like 3600, 15m, 12h or 30d")
    return float(int(m["n"]) * _UNITS[m["unit"]])


@dataclasses.dataclass(frozen=True, slots=True)
class Credentials:
    """A folder of credentials as `certs` lays it out."""

    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.folder / "ca.key"

    @property
    def broker(self) -> tls.CertFiles:
        return tls.CertFiles(self.folder / "broker.pem", self.folder / "broker.key", self.ca)

    def agent(self, host_id: str) -> tls.CertFiles:
        return tls.CertFiles(
            self.folder / "agents" / f"{host_id}.pem", self.folder / "agents" / f"{host_id}.key", self.ca
        )

    @property
    def token_key(self) -> Path:
        return self.folder / "token-key.pem"


def make(
    folder: Path, hosts: list[str], broker_names: tuple[str, ...] = ("127.0.0.1", "localhost")
) -> Credentials:
    """Make what is missing in `folder`: the CA, the broker's certificate, one per host, the token key."""
    creds = Credentials(folder)
    if not creds.ca.exists():
        tls.make_ca(folder)
    if not creds.broker.cert.exists():
        tls.issue(creds.ca, creds.ca_key, folder, role="broker", name="broker", hosts=broker_names)
    for host in hosts:
        if not creds.agent(host).cert.exists():
            tls.issue(creds.ca, creds.ca_key, folder / "agents", role="agent", name=host)
    if not creds.token_key.exists():
        auth.write_signing_key(auth.new_signing_key(), creds.token_key)
    return creds


def dev_credentials(data_dir: Path, hosts: list[str]) -> Credentials:
    """The local system's credentials, made once in its data directory and reused."""
    return make(data_dir / "credentials", hosts)


def issue_token(
    key: Path,
    role: str,
    *,
    ttl_s: float,
    subject: str = "",
    venue_id: str = "",
    seat_id: str = "",
    provider_id: str = "",
) -> str:
    issuer = auth.TokenIssuer(auth.load_signing_key(key))
    return issuer.issue(
        auth.Role(role),
        ttl_s=ttl_s,
        subject=subject,
        venue_id=venue_id,
        seat_id=seat_id,
        provider_id=provider_id,
    )


# -- command line ----------------------------------------------------------------------------------------------


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    certs = sub.add_parser("certs", help="make a development CA, broker and agent certificates, a token key")
    certs.add_argument(
        "--out", type=Path, required=True, help="the folder to write them to (kept if present)"
    )
    certs.add_argument("--host", action="append", default=[], help="an agent's host id (repeat)")
    certs.add_argument(
        "--broker-name",
        action="append",
        default=None,
        help="an address or DNS name agents reach the broker by (repeat; default 127.0.0.1 and localhost)",
    )
    token = sub.add_parser("token", help="issue a tenant token (printed on stdout)")
    token.add_argument("--key", type=Path, required=True, help="the token signing key (token-key.pem)")
    token.add_argument(
        "--role", required=True, choices=[r.value for r in auth.Role if r is not auth.Role.AGENT]
    )
    token.add_argument("--venue", default="", help="venue id (venue, seat roles)")
    token.add_argument("--seat", default="", help="seat id (seat role)")
    token.add_argument("--provider", default="", help="provider id (provider role)")
    token.add_argument("--subject", default="", help="who the token is for, as the audit log shows it")
    token.add_argument("--ttl", default="30d", help="lifetime: seconds, or 15m, 12h, 30d (default 30d)")


def run(args: argparse.Namespace) -> int:
    from cloudseat import validate
    from cloudseat.errors import InvalidArgument

    try:
        if args.command == "certs":
            for host in args.host:
                validate.ident(host, "--host")
            creds = make(args.out, args.host, tuple(args.broker_name or ("127.0.0.1", "localhost")))
            print(f"CA           {creds.ca}")
            print(f"broker       {creds.broker.cert} {creds.broker.key}")
            for host in args.host:
                print(f"agent {host:<6} {creds.agent(host).cert} {creds.agent(host).key}")
            print(f"token key    {creds.token_key} (public half: {auth.public_path(creds.token_key)})")
            return 0
        for flag, value in (("--venue", args.venue), ("--seat", args.seat), ("--provider", args.provider)):
            if value:
                validate.ident(value, flag)
        print(
            issue_token(
                args.key,
                args.role,
                ttl_s=parse_ttl(args.ttl),
                subject=args.subject,
                venue_id=args.venue,
                seat_id=args.seat,
                provider_id=args.provider,
            )
        )
        return 0
    except (ValueError, InvalidArgument, OSError) as exc:
        print(f"cloudseat-broker {args.command}: {exc}", file=sys.stderr)
        return 2
