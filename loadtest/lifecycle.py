"""The lifecycle benchmark: PostgreSQL's CPU for a session's whole life through the broker's store.

Each round, `size` seats start a session (grouped, as a tenant worker does: broker.store.session_batches), the
placement leader places them in one commit (broker.store.placement.commit), their agents report them streaming in
one batch (broker.store.hosts.advance_reported: the report an agent sends when the workload came up within its
window, which the broker records as three moves), and the seats end them (grouped). Rounds of a few sessions are the
broker below capacity (its group commit then writes two to five at a time); rounds of a hundred are a busy evening.

What is measured is the CPU of this PostgreSQL's processes (the postmaster's children, from /proc), per session:
the database's share of what a session costs, which the fleet benchmark can only see beside everything else. The
baseline, in the same run on the same server: the same number of statements and commits per session on a table
with only a primary key: no other index, constraint or trigger (`bare`), so the ratio says what the schema's
invariants, history, audit and notifications cost over PostgreSQL's floor on this machine. Sizes alternate over
the rounds so the noise of a shared machine falls on all alike.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudseat.settings import above, at_least, setting

from broker.lifecycle import EndReason, State
from broker.store import database, fleet, games, hosts, migrate, placement, session_batches, venues
from broker.store import sessions as session_store

_SLOTS_PER_HOST = 4


def _sizes(value: tuple[int, ...]) -> str | None:
    return None if value and all(1 <= s <= 1000 for s in value) else "each size must be 1..1000"


@dataclass(frozen=True, slots=True)
class LifecycleConfig:
    """Everything one `lifecycle` run was asked to do; its settings are the subcommand's flags."""

    sizes: tuple[int, ...] = setting((4, 100), "sessions per round, one figure each", check=_sizes)
    seconds: float = setting(6.0, "seconds of rounds per size and phase", check=above(0))
    phases: int = setting(3, "phases of each size (and of the baseline), alternating", check=at_least(1))
    json: Path | None = setting(None, "write the results as one JSON object to this file")


def _cpu_s(postmaster: int) -> float:
    """CPU seconds (user + system) of the postmaster and its children so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(entry) == postmaster or int(fields[1]) == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / tick


async def _seed(pool: Any, seats: int) -> None:
    await games.put_game(pool, "demo", "Demo", 0)
    await venues.create_venue(pool, "bench", "Bench")
    await venues.put_zone(pool, "bench", "std", "720P60", 30)
    for i in range(seats):
        await venues.put_seat(pool, "bench", f"s{i:04d}", "std")
    await fleet.create_provider(pool, "prov", "Bench provider")
    await fleet.create_site(pool, "site-a", "prov", "A", "")
    for i in range(-(-seats // _SLOTS_PER_HOST)):
        reg = hosts.Registration(f"h{i:04d}", "prov", "site-a", 1, "bench", "rtx4080", _SLOTS_PER_HOST, 1_000_000,
                                 ("demo",))
        await hosts.register(pool, reg, hosts.Link(uuid.uuid4(), "bench", None))
    await pool.execute(
        "CREATE TABLE bench_bare (id uuid PRIMARY KEY, state text NOT NULL, payload text NOT NULL)"
    )


async def _life_round(pool: Any, batches: session_batches.SessionBatches, tag: str, size: int) -> None:
    started = await asyncio.gather(*(
        session_store.start(pool, session_store.StartRequest(f"{tag}-{i}", "bench", f"s{i:04d}", "demo"),
                            batches=batches)
        for i in range(size)
    ))
    ids = [row["session_id"] for row, _ in started]
    host = [f"h{i // _SLOTS_PER_HOST:04d}" for i in range(size)]
    placed = await placement.commit(pool, [(sid, host[i], "site-a", 5, 1_000) for i, sid in enumerate(ids)])
    if len(placed) != size:
        raise RuntimeError(f"placed {len(placed)} of {size}")
    outcomes = await hosts.advance_reported(pool, [(sid, host[i], State.STREAMING) for i, sid in enumerate(ids)])
    if any(o is not None for o in outcomes):
        raise RuntimeError(f"a report was refused: {next(o for o in outcomes if o is not None)}")
    await asyncio.gather(*(
        session_store.end(pool, sid, EndReason.ENDED_BY_PATRON, "", batches=batches) for sid in ids
    ))


async def _bare_round(pool: Any, size: int) -> None:
    """The same statements and commits as a life of `size` sessions, on a table with nothing on it."""
    ids = [uuid.uuid4() for _ in range(size)]
    payload = "x" * 200
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO bench_bare SELECT unnest($1::uuid[]), 'PENDING', $2", ids, payload)
        await conn.execute("UPDATE bench_bare SET state = 'PLACED' WHERE id = ANY($1::uuid[])", ids)
        async with conn.transaction():
            await conn.fetch("SELECT id FROM bench_bare WHERE id = ANY($1::uuid[]) FOR UPDATE", ids)
            for state in ("STARTING", "READY", "STREAMING"):
                await conn.execute("UPDATE bench_bare SET state = $2 WHERE id = ANY($1::uuid[])", ids, state)
        await conn.execute("UPDATE bench_bare SET state = 'ENDED' WHERE id = ANY($1::uuid[])", ids)


async def _phase(pool: Any, postmaster: int, way: str, size: int, seconds: float, tag: str) -> dict[str, Any]:
    batches = session_batches.SessionBatches(pool)
    done = rounds = 0
    cpu0, began = _cpu_s(postmaster), time.monotonic()
    while time.monotonic() - began < seconds:
        if way == "life":
            await _life_round(pool, batches, f"{tag}-{rounds}", size)
        else:
            await _bare_round(pool, size)
        rounds += 1
        done += size
    took, cpu = time.monotonic() - began, _cpu_s(postmaster) - cpu0
    return {"way": way, "size": size, "sessions": done, "sessions_per_s": done / took,
            "pg_cpu_ms_per_session": 1000 * cpu / done}


async def run(cfg: LifecycleConfig) -> dict[str, Any]:
    import pgserver

    pg = await asyncio.to_thread(
        pgserver.get_server, Path(tempfile.mkdtemp(prefix="cloudseat-lifecycle-")) / "pgdata", cleanup_mode="delete"
    )
    try:
        url = str(pg.get_uri())
        pid_file = Path(pg.pgdata) / "postmaster.pid"
        postmaster = int((await asyncio.to_thread(pid_file.read_text)).split()[0])
        setup = await database.create_pool(url, 1, 1)
        try:
            async with setup.acquire() as conn:
                await migrate.apply(conn)
            await _seed(setup, max(cfg.sizes))
        finally:
            await setup.close()
        pool = await database.create_pool(url, 10, 10)
        phases: list[dict[str, Any]] = []
        try:
            for p in range(cfg.phases):
                for size in cfg.sizes:
                    for way in ("bare", "life"):
                        phases.append(await _phase(pool, postmaster, way, size, cfg.seconds, f"p{p}-{size}"))
        finally:
            await pool.close()
    finally:
        await asyncio.to_thread(pg.cleanup)
    return summarise(phases, cfg)


def summarise(phases: list[dict[str, Any]], cfg: LifecycleConfig) -> dict[str, Any]:
    """Per size: the median of each way's phases, and life ÷ bare."""
    out: dict[str, Any] = {"seconds": cfg.seconds, "phases": cfg.phases, "sizes": {}}
    for size in cfg.sizes:
        med = {
            way: {
                k: statistics.median(p[k] for p in phases if p["way"] == way and p["size"] == size)
                for k in ("pg_cpu_ms_per_session", "sessions_per_s")
            }
            for way in ("bare", "life")
        }
        bare, life = med["bare"]["pg_cpu_ms_per_session"], med["life"]["pg_cpu_ms_per_session"]
        out["sizes"][str(size)] = {
            "pg_cpu_ms_per_session": round(life, 3),
            "bare_pg_cpu_ms_per_session": round(bare, 3),
            "life_vs_bare": round(life / bare, 2) if bare else None,
            "sessions_per_s": round(med["life"]["sessions_per_s"], 1),
        }
    out["runs"] = [{k: round(v, 3) if isinstance(v, float) else v for k, v in p.items()} for p in phases]
    return out


def main(cfg: LifecycleConfig) -> int:
    result = asyncio.run(run(cfg))
    for size, fig in result["sizes"].items():
        print(
            f"rounds of {size}: PostgreSQL {fig['pg_cpu_ms_per_session']} ms CPU per session "
            f"(bare {fig['bare_pg_cpu_ms_per_session']} ms, ×{fig['life_vs_bare']}), "
            f"{fig['sessions_per_s']:,} sessions/s"
        )
    if cfg.json is not None:
        cfg.json.write_text(json.dumps(result, indent=2))
    return 0
