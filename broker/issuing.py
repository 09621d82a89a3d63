"""`cloudseat-broker certs` and `cloudseat-broker token`: the credentials a region runs on.

    cloudseat-broker certs --out creds --host host-a1 --host host-a2     # a development CA, the broker's certificate,
                                                                         # one per agent, and the token signing key
    cloudseat-broker token --key creds/token-key.pem --role venue --venue demo-cafe --ttl 30d
    cloudseat-broker token --key creds/token-key.pem --role seat --venue demo-cafe --all-seats --out-dir seats/
                                                                         # seats/<seat>.token for every seat the
                                                                         # database holds for the venue

A token is a secret: written to a file, it is written whole or not at all (a temporary file beside it, mode 0600,
renamed over it), so a kiosk never reads half a token and no other user ever could. A seat's file is named after
its seat id, which must then be a safe file name (`seat_file_name`); every name is checked before any file is
written.

Production brings its own CA (any: the broker only needs PEM files) and keeps the token signing key in a secret
store; these commands make the same files for a local system or a test. The local system (`cloudseat-broker dev`)
calls `dev_credentials` to make them once in its data directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cloudseat import errors, settings, tls
from cloudseat.errors import InvalidArgument

from broker import auth
from broker.config import BrokerConfig

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


# A seat id as a file name: the ids the broker takes (cloudseat.validate.ident) less ':' (not a file name on every
# system a seat's files may be copied to). Starting with a letter or digit, it is never '.', '..' or hidden.
_SAFE_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Which flag gives each claim a token carries.
_CLAIM_FLAGS = {"provider_id": "--provider", "venue_id": "--venue", "seat_id": "--seat"}


def check_claim_flags(role: str, given: dict[str, str]) -> None:
    """InvalidArgument naming the flags `--role role` needs but lacks, or takes but was given (`given`: flag ->
    value, for --provider, --venue, --seat)."""
    needed = [_CLAIM_FLAGS[claim] for claim in auth.needed_claims(auth.Role(role))]
    missing = [flag for flag in needed if not given.get(flag)]
    if missing:
        raise InvalidArgument("--role", f"a {role} token needs {' and '.join(missing)}")
    extra = [flag for flag, value in given.items() if value and flag not in needed]
    if extra:
        raise InvalidArgument(extra[0], f"a {role} token carries no {extra[0].removeprefix('--')}; leave it out")


def seat_file_name(venue_id: str, seat_id: str) -> str:
    """`seat_id`.token; InvalidArgument when the seat id is not a safe file name."""
    if not _SAFE_FILE_NAME.fullmatch(seat_id):
        raise InvalidArgument(
            "--all-seats",
            f"seat {seat_id!r} of venue {venue_id!r} is not a safe file name (letters, digits, '.', '_', '-', "
            "starting with a letter or digit, at most 64): rename the seat, or issue its token alone with "
            "--seat and --out FILE; no file was written",
        )
    return f"{seat_id}.token"


def write_secret(path: Path, text: str) -> None:
    """`text` into `path`, mode 0600, atomically: a reader sees the old file or the whole new one, never a part,
    and the file is never readable by anyone but its owner, not even for a moment. The folder is made (0700)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


@dataclasses.dataclass(frozen=True, slots=True)
class SeatToken:
    """A seat's token, written to its file."""

    seat_id: str
    path: Path


def write_seat_tokens(
    key: Path, venue_id: str, seat_ids: Sequence[str], out_dir: Path, *, ttl_s: float
) -> list[SeatToken]:
    """One seat token per seat in `out_dir`/<seat_id>.token (the token and a newline, mode 0600). Every seat id
    is checked before the first file is written."""
    if not seat_ids:
        raise InvalidArgument("--venue", f"venue {venue_id!r} has no seats yet: add them first, then issue tokens")
    names = {seat_id: seat_file_name(venue_id, seat_id) for seat_id in seat_ids}
    issuer = auth.TokenIssuer(auth.load_signing_key(key))
    written = []
    for seat_id, name in names.items():
        token = issuer.issue(auth.Role.SEAT, ttl_s=ttl_s, venue_id=venue_id, seat_id=seat_id)
        write_secret(out_dir / name, token + "\n")
        written.append(SeatToken(seat_id, out_dir / name))
    return written


async def venue_seat_ids(url: str, venue_id: str) -> list[str]:
    """The ids of the venue's seats as the database holds them, in order; NotFound naming --venue."""
    from broker.store import database
    from broker.store import venues as venue_store

    pool = await database.create_pool(url, 1, 1)
    try:
        rows = await venue_store.list_seats(pool, venue_id)
    except errors.NotFound:
        raise errors.NotFound(f"--venue: no venue {venue_id!r} in the database") from None
    finally:
        await pool.close()
    return sorted(str(row["seat_id"]) for row in rows)


def _database_url(config: BrokerConfig) -> str:
    """--database-url, or the embedded database of --data-dir (which must have been made by a broker)."""
    if config.database_url:
        return config.database_url
    if not (config.data_dir / "pgdata").is_dir():
        raise InvalidArgument(
            "--database-url",
            f"not given, and there is no embedded database in {config.data_dir} (--data-dir): name the broker's "
            "database, or the data directory of the broker that made it",
        )
    from broker.store import embedded

    return embedded.start(config.data_dir)


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
    token = sub.add_parser(
        "token", help="issue a tenant token (printed on stdout, or written to --out), or every seat's (--all-seats)"
    )
    token.add_argument("--key", type=Path, required=True, help="the token signing key (token-key.pem)")
    token.add_argument(
        "--role", required=True, choices=[r.value for r in auth.Role if r is not auth.Role.AGENT]
    )
    token.add_argument("--venue", default="", help="venue id (venue, seat roles)")
    token.add_argument("--seat", default="", help="seat id (seat role)")
    token.add_argument("--provider", default="", help="provider id (provider role)")
    token.add_argument("--subject", default="", help="who the token is for, as the audit log shows it")
    token.add_argument("--ttl", default="30d", help="lifetime: seconds, or 15m, 12h, 30d (default 30d)")
    token.add_argument(
        "--out", type=Path, default=None, help="write the token to this file (mode 0600) instead of stdout"
    )
    token.add_argument(
        "--all-seats",
        action="store_true",
        help="a seat token for every seat of --venue as the database holds them, one file each in --out-dir",
    )
    token.add_argument(
        "--out-dir", type=Path, default=None, help="with --all-seats: the folder for the files, DIR/<seat>.token"
    )
    settings.add_arguments(token, BrokerConfig, only=("database_url", "data_dir"))


def _check_key(key: Path) -> None:
    """InvalidArgument naming --key unless `key` is a token signing key."""
    if not key.is_file():
        raise InvalidArgument(
            "--key",
            f"no file {str(key)!r} (the token signing key: `cloudseat-broker certs --out DIR` makes DIR/token-key.pem)",
        )
    try:
        auth.load_signing_key(key)
    except ValueError as exc:
        raise InvalidArgument("--key", str(exc)) from None


def _all_seats(args: argparse.Namespace, ttl_s: float) -> int:
    if args.role != auth.Role.SEAT:
        raise InvalidArgument("--all-seats", f"issues seat tokens: use it with --role seat, not {args.role}")
    for flag, value in (("--seat", args.seat), ("--out", args.out), ("--subject", args.subject)):
        if value:
            raise InvalidArgument(flag, "not with --all-seats (each seat's token is its own, in --out-dir)")
    if args.out_dir is None:
        raise InvalidArgument("--out-dir", "--all-seats writes one file per seat: name the folder with --out-dir")
    if not args.venue:
        raise InvalidArgument("--venue", "--all-seats needs the venue whose seats to issue tokens for")
    url = _database_url(settings.build(BrokerConfig, args))
    seat_ids = asyncio.run(venue_seat_ids(url, args.venue))
    for written in write_seat_tokens(args.key, args.venue, seat_ids, args.out_dir, ttl_s=ttl_s):
        print(f"{written.seat_id}\t{written.path}")
    return 0


def run(args: argparse.Namespace) -> int:
    from cloudseat import validate

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
        given = {"--venue": args.venue, "--seat": args.seat, "--provider": args.provider}
        for flag, value in given.items():
            if value:
                validate.ident(value, flag)
        try:
            ttl_s = parse_ttl(args.ttl)
        except ValueError as exc:
            raise InvalidArgument("--ttl", str(exc)) from None
        _check_key(args.key)  # a bad key is said before anything else is asked or written
        if args.all_seats:
            return _all_seats(args, ttl_s)
        if args.out_dir is not None:
            raise InvalidArgument("--out-dir", "only with --all-seats; one token goes to --out FILE")
        check_claim_flags(args.role, given)
        token = issue_token(
            args.key,
            args.role,
            ttl_s=ttl_s,
            subject=args.subject,
            venue_id=args.venue,
            seat_id=args.seat,
            provider_id=args.provider,
        )
        if args.out is None:
            print(token)
        else:
            write_secret(args.out, token + "\n")
            print(f"wrote {args.out}")
        return 0
    except ValueError as exc:  # a key file that is not one (the message names the file)
        print(f"cloudseat-broker {args.command}: {exc}", file=sys.stderr)
        return 2
    except errors.CloudseatError as exc:
        print(f"cloudseat-broker {args.command}: {exc.message}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"cloudseat-broker {args.command}: {exc}", file=sys.stderr)
        return 2
