"""The local development system's demo data: one provider with two sites, a game, and a cafe with two zones.

Seeding is idempotent: what exists already is left as it is, so the local system can be started again and again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import sys
from pathlib import Path

import asyncpg
import structlog
from cloudseat import errors
from cloudseat.images.errors import ImageError
from cloudseat.images.local_registry import LocalRegistry, RegistryProcesses

from broker import issuing
from broker.config import BrokerConfig, SecurityConfig
from broker.store import fleet as fleet_store
from broker.store import games as game_store
from broker.store import venues as venue_store

log = structlog.get_logger(__name__)

PROVIDER = "demo-provider"
SITES = {
    "site-a": ("Edge room A", 6),
    "site-b": ("Edge room B", 14),
}  # site -> (name, rtt from the cafe in ms)
GAME = "demo"
VENUE = "demo-cafe"
ZONES = {"standard": ("720P60", 30), "esports": ("1080P120", 10)}
SEATS = {f"seat-{i:02d}": ("esports" if i > 6 else "standard") for i in range(1, 9)}


async def seed_at(url: str) -> None:
    """`seed` on the database at `url` (the broker's processes have their own pools)."""
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        await seed(pool)
    finally:
        await pool.close()


async def seed(pool: asyncpg.Pool) -> None:
    async def ignore_existing(coro: object) -> None:
        try:
            await coro  # type: ignore[misc]
        except errors.AlreadyExists:
            pass

    await ignore_existing(fleet_store.create_provider(pool, PROVIDER, "Demo edge provider"))
    for site_id, (name, _) in SITES.items():
        await ignore_existing(fleet_store.create_site(pool, site_id, PROVIDER, name, "local"))
    await game_store.put_game(pool, GAME, "cloudseat demo game", 0)
    await ignore_existing(venue_store.create_venue(pool, VENUE, "Demo internet cafe"))
    for zone_id, (tier, cap) in ZONES.items():
        await venue_store.put_zone(pool, VENUE, zone_id, tier, cap)
    for seat_id, zone_id in SEATS.items():
        await venue_store.put_seat(pool, VENUE, seat_id, zone_id)
    await venue_store.report_latency(pool, VENUE, [(s, rtt) for s, (_, rtt) in SITES.items()])
    # The local agents' hosts, enrolled where write_agent_configs puts them (their certificates prove the ids).
    by_site: dict[str, list[str]] = {}
    for host_id in host_ids(DEV_HOSTS):
        by_site.setdefault(site_of(host_id), []).append(host_id)
    for site_id, hosts in by_site.items():
        await fleet_store.enrol_hosts(pool, PROVIDER, site_id, "", hosts, "")


# The demo enrols this many hosts (dev-host-01..): as many as `--agents` may start.
DEV_HOSTS = 16


def site_of(host_id: str) -> str:
    """The site a local agent's host is in: round robin over SITES by its number."""
    sites = list(SITES)
    return sites[(int(host_id.rsplit("-", 1)[1]) - 1) % len(sites)]


def host_ids(count: int) -> list[str]:
    return [f"dev-host-{i + 1:02d}" for i in range(count)]


def security(creds: issuing.Credentials) -> SecurityConfig:
    """The broker's side of the development credentials."""
    return SecurityConfig(
        cert=creds.broker.cert, key=creds.broker.key, client_ca=creds.ca, token_key=creds.token_key
    )


@dataclasses.dataclass(frozen=True, slots=True)
class SeatCredentials:
    """What the demo venue's seats are let in with: a day-long token file per seat, and the CA that signed the
    broker's certificate."""

    ca: Path
    folder: Path  # <data-dir>/tokens/<venue>/, one <seat>.token per seat
    files: dict[str, Path]

    def flags(self, seat_id: str) -> list[str]:
        """A seat program's flags: its token file (never the token itself: `ps` shows a command line)."""
        return ["--token-file", str(self.files[seat_id]), "--ca", str(self.ca)]


async def seat_credentials(
    url: str, data_dir: Path, creds: issuing.Credentials | None
) -> SeatCredentials | None:
    """A token file for every seat of the demo venue as the database holds them (`cloudseat-broker token
    --all-seats` does the same), rewritten at each start; None when the broker runs --insecure."""
    if creds is None:
        return None
    folder = data_dir / "tokens" / VENUE
    seat_ids = await issuing.venue_seat_ids(url, VENUE)
    written = issuing.write_seat_tokens(creds.token_key, VENUE, seat_ids, folder, ttl_s=86400)
    return SeatCredentials(creds.ca, folder, {w.seat_id: w.path for w in written})


def seat_flags(seats: SeatCredentials | None, seat_id: str) -> list[str]:
    return [] if seats is None else seats.flags(seat_id)


def start_registry(data_dir: Path) -> RegistryProcesses | None:
    """The embedded image registry (data in data_dir/registry), or None with a note when Distribution is not
    installed (scripts/system-deps installs it): the rest of the local system runs without images."""
    processes = RegistryProcesses(data_dir / "registry")
    try:
        processes.start()
    except ImageError as exc:
        processes.stop()
        log.warning("no image registry: game images cannot be published", error=exc.message)
        return None
    return processes


def write_agent_configs(
    port: int,
    data_dir: Path,
    count: int,
    creds: issuing.Credentials | None = None,
    registry: LocalRegistry | None = None,
) -> list[Path]:
    """Host configs for the local agents (one per site, round robin), in data_dir/dev-agents/: mutual TLS with
    the development certificates, or plaintext when the broker runs --insecure; the image registry's reader
    credentials when one runs."""
    folder = data_dir / "dev-agents"
    folder.mkdir(parents=True, exist_ok=True)
    registry_lines = ""
    if registry is not None:
        registry_lines = (
            f'[registry]\nurl = "{registry.reader_url}"\nusername = "{registry.reader.username}"\n'
            f'password_file = "{registry.root / (registry.reader.username + ".password")}"\n'
        )
    paths = []
    for i, host_id in enumerate(host_ids(count)):
        site = site_of(host_id)
        if creds is None:
            security_lines = "insecure = true\n"
        else:
            files = creds.agent(host_id)
            security_lines = f'[tls]\ncert = "{files.cert}"\nkey = "{files.key}"\nca = "{files.ca}"\n'

        path = folder / f"{host_id}.toml"
        path.write_text(
            f"""host_id = "{host_id}"
provider_id = "{PROVIDER}"
site_id = "{site}"
broker = "127.0.0.1:{port}"
slots = 2
gpu_class = "demo-gpu"
price_micros_per_slot_hour = {1_200_000 + 300_000 * (i % len(SITES))}
games_cached = ["{GAME}"]
media_addresses = {json.dumps(media_addresses())}
drain_grace_s = 2
image_store = "{data_dir / "dev-images" / host_id}"
{security_lines}{registry_lines}""",
            encoding="utf-8",
        )
        paths.append(path)
    return paths


def media_addresses() -> list[str]:
    """Where the local agents offer WebRTC: loopback, and this machine's own address, so a browser on this machine
    (which leaves loopback out of its ICE candidates) or on the LAN reaches them."""
    found = ["127.0.0.1"]
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # sends nothing: asks the routing table which address goes out
        address = probe.getsockname()[0]
        if address not in found and not address.startswith("127."):
            found.append(address)
    return found


# The local system's kiosk plays seat-01 (a standard seat); the Python client started by --play takes seat-02.
KIOSK_SEAT = "seat-01"
PLAY_SEAT = "seat-02"


async def start_kiosk(
    port: int, listen: str, seats: SeatCredentials | None = None
) -> tuple[asyncio.subprocess.Process, str]:
    """`cloudseat-client kiosk` for KIOSK_SEAT: the process and the URL it serves the page on."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "thin_client",
        "kiosk",
        *("--broker", f"127.0.0.1:{port}", "--venue", VENUE, "--seat", KIOSK_SEAT, "--listen", listen),
        *seat_flags(seats, KIOSK_SEAT),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
    except TimeoutError:
        line = ""
    if not line.startswith("kiosk: "):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise errors.Unavailable(f"the kiosk did not start on {listen} (see its message above)")
    return proc, line.removeprefix("kiosk: ")


async def start_client(
    port: int, headless: bool, seats: SeatCredentials | None = None
) -> asyncio.subprocess.Process:
    """`cloudseat-client play` on PLAY_SEAT: a window, or headless; its lines go to this terminal."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "thin_client",
        "play",
        *("--broker", f"127.0.0.1:{port}", "--venue", VENUE, "--seat", PLAY_SEAT, "--game", GAME),
        *(("--headless",) if headless else ()),
        *seat_flags(seats, PLAY_SEAT),
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def start_agents(paths: list[Path]) -> list[asyncio.subprocess.Process]:
    """Start one `cloudseat-agent run` process per config; their logs go to this terminal."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gpu_agent", "run", "--config", str(p), env=env
        )
        for p in paths
    ]


async def stop_processes(procs: list[asyncio.subprocess.Process]) -> None:
    """SIGTERM (agents drain and hand sessions back, seats end theirs), then wait; SIGKILL what is left after 10 s."""
    for proc in procs:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def write_tokens(creds: issuing.Credentials) -> dict[str, Path]:
    """Day-long development tokens in credentials/tokens/: the operator, the demo venue and provider (the seats'
    are in <data-dir>/tokens/<venue>/: `seat_credentials`)."""
    folder = creds.folder / "tokens"
    folder.mkdir(exist_ok=True)
    wanted = {
        "operator": {},
        VENUE: {"venue_id": VENUE},
        PROVIDER: {"provider_id": PROVIDER},
    }
    roles = {"operator": "operator", VENUE: "venue", PROVIDER: "provider"}
    paths = {}
    for name, claims in wanted.items():
        path = folder / f"{name}.token"
        issuing.write_secret(path, issuing.issue_token(creds.token_key, roles[name], ttl_s=86400, **claims) + "\n")
        paths[name] = path
    return paths


def print_welcome(
    port: int,
    agent_port: int,
    config: BrokerConfig,
    kiosk_url: str | None = None,
    creds: issuing.Credentials | None = None,
    *,
    console_url: str | None = None,
    images: LocalRegistry | None = None,
    seats: SeatCredentials | None = None,
) -> None:
    where = (
        config.database_url and "the database at --database-url"
    ) or f"embedded PostgreSQL in {config.data_dir}"
    kiosk = (
        f"Play in a browser: {kiosk_url}  (the kiosk page of {KIOSK_SEAT})"
        if kiosk_url
        else "The kiosk is off (--kiosk off)."
    )
    console = "The consoles are off (--http-listen off)."
    if creds is None:
        seat_auth, grpc_auth, push_auth = "", "-plaintext ", ""
        security = "Authentication is OFF (--insecure): plaintext, every caller trusted."
        if console_url:
            console = f"Consoles on {console_url} (venue and provider pages, /metrics too)"
    else:
        tokens = write_tokens(creds)
        if console_url:
            console = (
                f"Consoles on {console_url} (/metrics too; HTTPS with the broker's certificate: trust {creds.ca} "
                "in the browser, or accept its warning once): open one with the venue's or the provider's token:\n"
                f'  xdg-open "{console_url}?token=$(cat {tokens[VENUE]})"\n'
                f'  xdg-open "{console_url}?token=$(cat {tokens[PROVIDER]})"'
            )
        seat_auth = (
            f" \\\n      --ca {creds.ca} --token-file {seats.files[PLAY_SEAT]}" if seats is not None else ""
        )
        grpc_auth = f'-cacert {creds.ca} -H "authorization: Bearer $(cat {tokens["operator"]})" '
        push_auth = f' --broker-ca {creds.ca} --token "$(cat {tokens["operator"]})"'
        security = (
            f"Mutual TLS and tenant tokens are on: development CA and keys in {creds.folder}; day-long tokens in "
            f"{creds.folder / 'tokens'}\n(operator, venue {VENUE}, provider {PROVIDER}); more with "
            f"`cloudseat-broker token --key {creds.token_key} --role ...`."
            + (_seat_tokens_line(seats, creds) if seats is not None else "")
        )
    print(
        f"""
cloudseat broker is up on 127.0.0.1:{port} ({where}); agents connect on 127.0.0.1:{agent_port}.
Demo data: provider {PROVIDER!r} with sites {", ".join(SITES)}; game {GAME!r};
           venue {VENUE!r} with seats seat-01..seat-08.
{kiosk}
{console}
Play in a window:  ./scripts/up --play starts it with the system, or by hand:
  .venv/bin/cloudseat-client play --broker 127.0.0.1:{port} --venue {VENUE} --seat {PLAY_SEAT} --game {GAME}{seat_auth}
Try it (grpcurl uses server reflection):
  grpcurl {grpc_auth}127.0.0.1:{port} list
  grpcurl {grpc_auth}-d '{{"venue_id":"{VENUE}"}}' 127.0.0.1:{port} cloudseat.v1.VenueService/ListSeats
{security}
GPU hosts join through cloudseat.v1.AgentService/Connect. Ctrl-C stops the broker; the data stays for next time.
{_images_line(images, port, push_auth)}""",
        flush=True,
    )


def _seat_tokens_line(seats: SeatCredentials, creds: issuing.Credentials) -> str:
    names = sorted(seats.files)
    return (
        f"\nSeat tokens, one file per seat of {VENUE} ({names[0]}.token .. {names[-1]}.token, mode 0600): "
        f"{seats.folder}\n"
        f"  a seat's kiosk or client takes its own: --token-file {seats.folder / (KIOSK_SEAT + '.token')} "
        f"--ca {seats.ca}\n"
        f"  every seat of a venue at once: cloudseat-broker token --key {creds.token_key} --role seat "
        "--venue VENUE --all-seats --out-dir DIR"
    )


def _images_line(images: LocalRegistry | None, port: int, auth: str) -> str:
    if images is None:
        return "No image registry (install docker-registry: scripts/system-deps); game images cannot be published.\n"
    password = images.root / f"{images.writer.username}.password"
    return (
        f"Image registry: {images.writer_url} (publish), {images.reader_url} (hosts, read-only). Publish a game:\n"
        f'  CLOUDSEAT_IMAGES_REGISTRY_PASSWORD="$(cat {password})" .venv/bin/cloudseat-images push \\\n'
        f"      --registry {images.writer_url} --broker 127.0.0.1:{port}{auth} --game mygame --version 1 ./mygame-dir\n"
    )
