"""`cloudseat-client`: what a cafe seat runs.

    cloudseat-client play  --venue demo-cafe --seat seat-01 --game demo      # a window (or --headless)
    cloudseat-client kiosk --venue demo-cafe --seat seat-01                  # the page for the seat's browser

With authentication on (the broker's default), a seat also gives its token file and the CA that signed the broker's
certificate: --token-file /etc/cloudseat/seat-01.token --ca /etc/cloudseat/ca.pem (`cloudseat-broker token
--all-seats` writes a venue's token files).

Flags fall back to environment variables (CLOUDSEAT_BROKER, CLOUDSEAT_VENUE, CLOUDSEAT_SEAT, ...), so a seat's
image can carry its identity in its environment. Mistakes end with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from cloudseat import settings


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # gRPC's C core logs lines of its own on stderr (a failed TLS handshake, in OpenSSL's words) before the seat
    # says what failed and what to fix: only its errors, then. It reads this once, when grpc is first imported.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    from thin_client.seat import SeatConfig, load_credentials
    parser = _Parser(prog="cloudseat-client", description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    command = argv[0] if argv else ""
    try:
        from thin_client import play

        play_parser = sub.add_parser("play", help="start a session and play it in a window, or headless")
        settings.add_arguments(play_parser, SeatConfig)
        play.add_arguments(play_parser)

        kiosk_parser = sub.add_parser("kiosk", help="serve the seat's kiosk page and relay it to the broker")
        settings.add_arguments(kiosk_parser, SeatConfig)
        if command == "kiosk":  # the web server (aiohttp) loads only when it runs
            from thin_client.kiosk import server as kiosk

            kiosk.add_arguments(kiosk_parser)

        args = parser.parse_args(argv)
        seat: SeatConfig = settings.build(SeatConfig, args)
        seat = load_credentials(
            seat, warn=lambda text: print(f"cloudseat-client {command}: warning: {text}", file=sys.stderr)
        )
        if args.command == "play":
            return play.main(seat, play.options(args))
        return kiosk.main(kiosk.config(seat, args), args)
    except settings.SettingsError as exc:
        print(f"cloudseat-client {command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
