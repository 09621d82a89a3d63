"""The commits benchmark: session starts and ends against PostgreSQL, one statement each vs grouped per process.

Every start and end commits with a notification, and PostgreSQL serialises notifying commits (one lock from the
commit's start through its WAL flush). `--callers` seats each start a session and end it, over and over, through
broker.store.sessions on a real PostgreSQL, in phases that alternate between the two ways of writing:

  single    each start and each end its own statement and commit (the baseline: the broker before grouping)
  grouped   the broker's way: what arrives while a batch is in the database goes in the next
            (broker.store.session_batches)

The phases alternate (single, grouped, single, …) so that a noisy machine hurts both alike; each way's figure is the
median of its phases, and the target is a ratio: grouped ÷ single, both from this run. Only the database path is
measured: no gRPC, no placement (docs/loadtest-fleet.md#what-limits-it says where this sits in the whole).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudseat.settings import above, at_least, setting

from broker.lifecycle import EndReason
from broker.store import database, games, migrate, session_batches, venues
from broker.store import sessions as session_store

WAYS = ("single", "grouped")


@dataclass(frozen=True, slots=True)
class CommitsConfig:
    """Everything one `commits` run was asked to do; its settings are the subcommand's flags."""

    callers: int = setting(400, "seats starting and ending sessions at once", check=at_least(1))
    phase_s: float = setting(8.0, "seconds each phase lasts", check=above(0))
    rounds: int = setting(3, "phases of each way, alternating", check=at_least(1))
    connections: int = setting(10, "database connections (the broker's pool size)", check=at_least(1))
    database_url: str | None = setting(None, "PostgreSQL to use; none: an embedded, temporary one")
    json: Path | None = setting(None, "write the results as one JSON object to this file")


async def _seed(pool: Any, seats: int) -> list[str]:
    await games.put_game(pool, "demo", "Demo", 0)
    await venues.create_venue(pool, "bench", "Bench")
    await venues.put_zone(pool, "bench", "std", "720P60", 30)
    ids = [f"b{i:05d}" for i in range(seats)]
    for seat in ids:
        await venues.put_seat(pool, "bench", seat, "std")
    return ids


async def _phase(pool: Any, seats: list[str], way: str, tag: str, seconds: float) -> dict[str, float]:
    """Start and end sessions from every seat for `seconds`; sessions (start + end) per second."""
    batches = session_batches.SessionBatches(pool) if way == "grouped" else None
    done = 0
    stop = time.monotonic() + seconds

    async def seat_loop(seat: str) -> None:
        nonlocal done
        n = 0
        while time.monotonic() < stop:
            n += 1
            req = session_store.StartRequest(f"{tag}-{seat}-{n}", "bench", seat, "demo")
            row, _ = await session_store.start(pool, req, batches=batches)
            await session_store.end(
                pool, row["session_id"], EndReason.ENDED_BY_PATRON, "", current=row, batches=batches
            )
            done += 1

    began = time.monotonic()
    await asyncio.gather(*(seat_loop(s) for s in seats))
    took = time.monotonic() - began
    out = {"sessions_per_s": done / took}
    if batches is not None:
        out["starts_per_batch"] = batches.starts.writes / max(1, batches.starts.batches)
        out["ends_per_batch"] = batches.ends.writes / max(1, batches.ends.batches)
    return out


async def run(cfg: CommitsConfig) -> dict[str, Any]:
    pg: Any = None
    url = cfg.database_url
    if url is None:
        import pgserver

        pg = await asyncio.to_thread(
            pgserver.get_server, Path(tempfile.mkdtemp(prefix="cloudseat-commits-")) / "pgdata", cleanup_mode="delete"
        )
        url = str(pg.get_uri())
    try:
        setup = await database.create_pool(url, 1, 1)
        try:
            async with setup.acquire() as conn:
                await migrate.apply(conn)
            seats = await _seed(setup, cfg.callers)
        finally:
            await setup.close()
        pool = await database.create_pool(url, cfg.connections, cfg.connections)
        phases: list[dict[str, Any]] = []
        try:
            for r in range(cfg.rounds):
                for way in WAYS:
                    figures = await _phase(pool, seats, way, f"{way}{r}", cfg.phase_s)
                    phases.append({"way": way, **figures})
        finally:
            await pool.close()
    finally:
        if pg is not None:
            await asyncio.to_thread(pg.cleanup)
    return summarise(phases, cfg)


def summarise(phases: list[dict[str, Any]], cfg: CommitsConfig) -> dict[str, Any]:
    """The median of each way's phases, and grouped ÷ single."""
    med = {w: statistics.median(p["sessions_per_s"] for p in phases if p["way"] == w) for w in WAYS}
    grouped = [p for p in phases if p["way"] == "grouped"]
    return {
        "callers": cfg.callers,
        "connections": cfg.connections,
        "phase_s": cfg.phase_s,
        "single_sessions_per_s": round(med["single"], 1),
        "grouped_sessions_per_s": round(med["grouped"], 1),
        "grouped_vs_single": round(med["grouped"] / med["single"], 2) if med["single"] else None,
        "starts_per_batch": round(statistics.median(p["starts_per_batch"] for p in grouped), 1),
        "ends_per_batch": round(statistics.median(p["ends_per_batch"] for p in grouped), 1),
        "phases": [{k: round(v, 1) if isinstance(v, float) else v for k, v in p.items()} for p in phases],
    }


def main(cfg: CommitsConfig) -> int:
    result = asyncio.run(run(cfg))
    print(
        f"{cfg.callers} seats, {cfg.connections} connections: single {result['single_sessions_per_s']:,} "
        f"sessions/s, grouped {result['grouped_sessions_per_s']:,} sessions/s "
        f"(×{result['grouped_vs_single']}; {result['starts_per_batch']} starts and {result['ends_per_batch']} "
        "ends per statement)"
    )
    if cfg.json is not None:
        cfg.json.write_text(json.dumps(result, indent=2))
    return 0
