"""The local development system's demo data: one provider with two sites, a game, and a cafe with two zones.

Seeding is idempotent: what exists already is left as it is, so the local system can be started again and again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import asyncpg

from broker import errors
from broker.config import BrokerConfig
from broker.store import fleet as fleet_store
from broker.store import venues as venue_store

PROVIDER = "demo-provider"
SITES = {
    "site-a": ("Edge room A", 6),
    "site-b": ("Edge room B", 14),
}  # site -> (name, rtt from the cafe in ms)
GAME = "demo"
VENUE = "demo-cafe"
ZONES = {"standard": ("720P60", 30), "esports": ("1080P120", 10)}
SEATS = {f"seat-{i:02d}": ("esports" if i > 6 else "standard") for i in range(1, 9)}


async def seed(pool: asyncpg.Pool) -> None:
    async def ignore_existing(coro: object) -> None:
        try:
            await coro  # type: ignore[misc]
        except errors.AlreadyExists:
            pass

    await ignore_existing(fleet_store.create_provider(pool, PROVIDER, "Demo edge provider"))
    for site_id, (name, _) in SITES.items():
        await ignore_existing(fleet_store.create_site(pool, site_id, PROVIDER, name, "local"))
    await fleet_store.put_game(pool, GAME, "cloudseat demo game", 0)
    await ignore_existing(venue_store.create_venue(pool, VENUE, "Demo internet cafe"))
    for zone_id, (tier, cap) in ZONES.items():
        await venue_store.put_zone(pool, VENUE, zone_id, tier, cap)
    for seat_id, zone_id in SEATS.items():
        await venue_store.put_seat(pool, VENUE, seat_id, zone_id)
    await venue_store.report_latency(pool, VENUE, [(s, rtt) for s, (_, rtt) in SITES.items()])


def write_agent_configs(port: int, data_dir: Path, count: int) -> list[Path]:
    """Host configs for the local agents (one per site, round robin), in data_dir/dev-agents/."""
    folder = data_dir / "dev-agents"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    sites = list(SITES)
    for i in range(count):
        host_id = f"dev-host-{i + 1:02d}"
        site = sites[i % len(sites)]
        path = folder / f"{host_id}.toml"
        path.write_text(
            f"""host_id = "{host_id}"
provider_id = "{PROVIDER}"
site_id = "{site}"
broker = "127.0.0.1:{port}"
slots = 2
gpu_class = "demo-gpu"
price_micros_per_slot_hour = {1_200_000 + 300_000 * (i % len(sites))}
games_cached = ["{GAME}"]
media_addresses = ["127.0.0.1"]
drain_grace_s = 2
""",
            encoding="utf-8",
        )
        paths.append(path)
    return paths


async def start_agents(paths: list[Path]) -> list[asyncio.subprocess.Process]:
    """Start one `cloudseat-agent run` process per config; their logs go to this terminal."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gpu_agent", "run", "--config", str(p), env=env
        )
        for p in paths
    ]


async def stop_agents(procs: list[asyncio.subprocess.Process]) -> None:
    """SIGTERM (the agents drain and hand sessions back), then wait; SIGKILL whatever is still there after 10 s."""
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


def print_welcome(port: int, config: BrokerConfig) -> None:
    where = (
        config.database_url and "the database at --database-url"
    ) or f"embedded PostgreSQL in {config.data_dir}"
    print(
        f"""
cloudseat broker is up on 127.0.0.1:{port} ({where}).
Demo data: provider {PROVIDER!r} with sites {", ".join(SITES)}; game {GAME!r};
           venue {VENUE!r} with seats seat-01..seat-08.
Try it (grpcurl uses server reflection):
  grpcurl -plaintext 127.0.0.1:{port} list
  grpcurl -plaintext -d '{{"venue_id":"{VENUE}"}}' 127.0.0.1:{port} cloudseat.v1.VenueService/ListSeats
GPU hosts join through cloudseat.v1.AgentService/Connect. Ctrl-C stops the broker; the data stays for next time.
""",
        flush=True,
    )
