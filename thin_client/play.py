"""`cloudseat-client play`: a patron's session at a seat, from the queue to the end.

    cloudseat-client play --venue demo-cafe --seat seat-01 --game demo             # in a window
    cloudseat-client play --venue demo-cafe --seat seat-01 --game demo --headless --duration 30 --json out.json

What it does, in order:

0. Ask the broker once (ListGames): a setup no retry can mend (a host name that does not resolve, TLS on one side
   only, a certificate --ca does not trust, a token refused) ends the client at once with what to fix.
1. StartSession for the seat (its venue, seat, zone and patron), held by the broker until the session is placed, then
   follow WatchSession, printing each step the patron waits through: queue position, placed (host, site, distance),
   starting, ready. A busy broker is asked again with the same request, printing why the seat waits; a broker that
   cannot be reached while the seat waits in the queue (or plays) is said so, and the seat keeps asking, its place
   in the queue kept by the broker.
2. Negotiate WebRTC through SessionService.Negotiate (`thin_client.receiver.Receiver`), play the stream in an SDL
   window (`thin_client.window`) or headless, and send input: the window's keyboard, mouse and game controllers, or
   the scripted pattern of `thin_client.scripted` (headless, or windowed with --scripted-input).
3. Print live stats: fps, bitrate, capture→decoded and input→photon latency from the frame stamps, RTT as the host
   measures it, freezes. On a terminal the stats line rewrites itself.
4. Recover: no video for --reconnect-after seconds (a network loss) → a fresh Negotiate on the same session, retried
   with backoff; the session ended by its host (lost, drained, failed) → resumed at once as a new session at the
   front of the queue (`SeatSession.resume`).
5. End the session on exit (--duration reached, Ctrl-C, SIGTERM, the window closed) and write --json.

Exit codes: 0 when the patron (or --duration) ended the session; 1 when it ended otherwise (printed); 2 for a
mistake in the seat's setup (unknown venue, seat or game, a broker that cannot be reached: one line each), or a
broker still too busy after a minute of asking.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import signal
import sys
from typing import Any, TextIO

from cloudseat import settings

from thin_client.player import Player, PlayOptions, save_picture
from thin_client.seat import SeatConfig, SeatError, SeatSession


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The player's own flags (cli.py adds the seat's: --broker, --venue, --seat, ...)."""
    settings.add_arguments(parser, PlayOptions, env_prefix="CLOUDSEAT_PLAY_")


def options(args: argparse.Namespace) -> PlayOptions:
    opts: PlayOptions = settings.build(PlayOptions, args, env_prefix="CLOUDSEAT_PLAY_")
    # Headless, nobody types: the scripted pattern is the input.
    return opts if not opts.headless else dataclasses.replace(opts, scripted_input=True)


async def play(cfg: SeatConfig, opts: PlayOptions, out: TextIO = sys.stdout) -> tuple[int, dict[str, Any]]:
    """Play one seat's session to its end; (exit code, results)."""
    window = None
    if not opts.headless:
        from thin_client.window import Window, WindowError

        try:
            window = Window(title=f"cloudseat — {cfg.venue_id}/{cfg.seat_id}")
        except WindowError as exc:
            raise SeatError(f"{exc}; use --headless on a seat without a display") from None
    if cfg.ca is not None and not cfg.ca.is_file():
        raise SeatError(f"--ca: {str(cfg.ca)!r} does not exist")
    async with cfg.client() as client:
        seat = SeatSession(client, cfg)
        await seat.check_broker()  # a setup no retry mends (TLS, a name, the token) is said now
        player = Player(seat, opts, out=out, window=window)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, player.stop.set)
        try:
            outcome = await player.run()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            if opts.screenshot is not None:
                save_picture(opts.screenshot, window, player.last_frame)
            if window is not None:
                window.close()
        results = player.results()
    code = 0 if outcome.stopped_by_patron else 1
    return code, results


def main(cfg: SeatConfig, opts: PlayOptions) -> int:
    try:
        code, results = asyncio.run(play(cfg, opts))
    except SeatError as exc:
        print(f"cloudseat-client: {exc}", file=sys.stderr)
        return 2
    if opts.json_path is not None:
        opts.json_path.write_text(json.dumps(results, indent=2) + "\n")
    return code
