"""cloudseat-images: publish a game version to the image registry and register it with the broker.

    cloudseat-images push --game arena --version 2 ./arena-build

chunks the directory, uploads the blobs the registry lacks (a progress line while it runs; a re-run after a failure
uploads only what is missing), pushes the manifest, then tells the broker (FleetService.PutGame) the version, its
size, image reference and digest. Any failure is one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from grpc import aio

from cloudseat import settings, tls
from cloudseat.client import BrokerClient
from cloudseat.images import oci, publish
from cloudseat.images.errors import ImageError
from cloudseat.v1 import fleet_pb2


@dataclasses.dataclass(frozen=True, slots=True)
class PushOptions:
    game: str = settings.setting(help="the game's id", required=True, env="CLOUDSEAT_IMAGES_GAME")
    version: str = settings.setting(help="the version being published (an id slug)", required=True,
                                    env="CLOUDSEAT_IMAGES_VERSION")  # fmt: skip
    name: str = settings.setting("", help="the game's display name (default: the current one, else the id)")
    registry: str = settings.setting("http://127.0.0.1:5000", help="the image registry's URL (write access)")
    registry_user: str = settings.setting("publisher", help="registry user with push rights")
    registry_password: str = settings.setting("", help="its password (prefer the environment variable)")
    registry_ca: Path | None = settings.setting(
        None, help="CA bundle for an https registry (default: the system's)"
    )
    broker: str = settings.setting("127.0.0.1:50051", help="the broker's gRPC address")
    token: str = settings.setting("", help="an operator's tenant token for the broker")
    broker_ca: Path | None = settings.setting(
        None, help="CA bundle that signed the broker (TLS); none: plaintext"
    )
    workers: int = settings.setting(
        4, help="concurrent uploads", check=lambda n: None if 1 <= n <= 64 else "1-64"
    )


def _bar(progress: publish.Progress, started: float) -> None:
    if not sys.stderr.isatty():
        return
    with progress.lock:
        read, sent, blobs, kept = (
            progress.read_bytes, progress.uploaded_bytes, progress.uploaded_blobs, progress.present_blobs
        )  # fmt: skip
    rate = read / max(time.monotonic() - started, 1e-3) / 1e6
    sys.stderr.write(
        f"\r  read {read / 1e6:9.1f} MB ({rate:6.1f} MB/s)  uploaded {blobs} blobs, {sent / 1e6:.1f} MB"
        f"  already there {kept}   "
    )


async def _push(opts: PushOptions, root: Path) -> int:
    registry = oci.Registry(
        opts.registry,
        oci.Credentials(opts.registry_user, opts.registry_password),
        ca_file=str(opts.registry_ca) if opts.registry_ca else None,
    )
    credentials = tls.client_credentials(opts.broker_ca) if opts.broker_ca else None
    async with BrokerClient(opts.broker, token=opts.token or None, credentials=credentials) as broker:
        games = {g.game_id: g for g in await broker.list_games()}
        current = games.get(opts.game)
        previous = None
        if current is not None and current.image_ref and current.version != opts.version:
            previous = await asyncio.to_thread(publish.read, registry, current.image_ref)
        # Every earlier version in the registry: the broker prices a cold start on a host holding one by what it
        # lacks of this one.
        earlier = await asyncio.to_thread(publish.earlier_versions, registry, opts.game, opts.version)
        started = time.monotonic()
        progress = publish.Progress()
        done = await asyncio.to_thread(
            publish.push,
            registry,
            opts.game,
            opts.version,
            root,
            previous=previous,
            earlier=earlier,
            workers=opts.workers,
            progress=progress,
            on_progress=lambda p: _bar(p, started),
        )
        if sys.stderr.isatty():
            sys.stderr.write("\n")
        game = await broker.fleet.PutGame(
            fleet_pb2.PutGameRequest(
                game_id=opts.game,
                name=opts.name or (current.name if current is not None else opts.game),
                version=opts.version,
                image_size_bytes=done.stored_size,
                image_ref=done.image_ref,
                image_digest=done.digest,
                update_bytes=done.update_bytes,
                lacking_from=done.lacking_from,
            )
        )
    print(
        f"published {opts.game}@{game.version}: {done.size} bytes in {len(done.manifest.chunks)} chunks "
        f"({done.stored_size} stored); uploaded {done.uploaded_blobs} blobs ({done.uploaded_bytes} bytes), "
        f"{done.present_blobs} already there; {done.update_bytes} bytes new since the previous version; "
        f"{done.image_ref}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cloudseat-images", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    push_parser = sub.add_parser("push", help="publish a directory as a game version")
    settings.add_arguments(push_parser, PushOptions, env_prefix="CLOUDSEAT_IMAGES_")
    push_parser.add_argument("dir", type=Path, help="the game's directory")
    args = parser.parse_args(argv)
    try:
        opts = settings.build(PushOptions, args, env_prefix="CLOUDSEAT_IMAGES_")
        return asyncio.run(_push(opts, args.dir))
    except settings.SettingsError as exc:
        print(f"cloudseat-images: {exc}", file=sys.stderr)
        return 2
    except ImageError as exc:
        print(f"cloudseat-images: {exc.message}", file=sys.stderr)
        return 1
    except aio.AioRpcError as exc:
        print(f"cloudseat-images: the broker refused: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
