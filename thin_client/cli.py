"""`cloudseat-client`: what a cafe seat runs.

    cloudseat-client play  --venue demo-cafe --seat seat-01 --game demo      # a window (or --headless)
    cloudseat-client kiosk --venue demo-cafe --seat seat-01                  # the page for the seat's browser

Flags fall back to environment variables (CLOUDSEAT_BROKER, CLOUDSEAT_VENUE, CLOUDSEAT_SEAT, ...), so a seat's
image can carry its identity in its environment. Mistakes end with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {message}\n")


def add_seat_arguments(parser: argparse.ArgumentParser) -> None:
    """Who the seat is: shared by `play` and `kiosk`."""

    def env(flag: str, name: str, help_text: str, default: str | None = None) -> None:
        value = os.environ.get(name, default)
        parser.add_argument(
            flag,
            default=value,
            required=value is None,
            help=f"{help_text} (env {name}" + (f"; default {default})" if default is not None else ")"),
        )

    env("--broker", "CLOUDSEAT_BROKER", "the broker's host:port", "127.0.0.1:50051")
    env("--venue", "CLOUDSEAT_VENUE", "this seat's venue id")
    env("--seat", "CLOUDSEAT_SEAT", "this seat's id")
    env("--zone", "CLOUDSEAT_ZONE", "the zone this seat should be in (the broker checks it; empty: any)", "")
    env("--patron", "CLOUDSEAT_PATRON", "the venue's id for the patron (optional)", "")
    env("--token", "CLOUDSEAT_TOKEN", "the seat's token from its venue (a seat token)", "")
    ca = os.environ.get("CLOUDSEAT_CA")
    parser.add_argument(
        "--ca",
        type=Path,
        default=Path(ca) if ca else None,
        help="the CA bundle that signed the broker's certificate: TLS to the broker (env CLOUDSEAT_CA; none: "
        "plaintext, for a broker running --insecure)",
    )
    parser.add_argument(
        "--ice-address",
        action="append",
        default=None,
        help="an address WebRTC may use for host candidates (repeat; default: every address of the seat)",
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _Parser(prog="cloudseat-client", description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    from thin_client import play

    play_parser = sub.add_parser("play", help="start a session and play it in a window, or headless")
    add_seat_arguments(play_parser)
    play.add_arguments(play_parser)

    kiosk_parser = sub.add_parser("kiosk", help="serve the seat's kiosk page and relay it to the broker")
    add_seat_arguments(kiosk_parser)
    if argv[:1] == ["kiosk"]:  # the web server (aiohttp) loads only when it runs
        from thin_client.kiosk import server as kiosk

        kiosk.add_arguments(kiosk_parser)

    args = parser.parse_args(argv)
    if args.command == "play":
        return play.main(args)
    return kiosk.main(args)


if __name__ == "__main__":
    sys.exit(main())
