"""What the audit log's hash chain costs its writers: audit rows written per second with and without it, same run.

    python -m loadtest.audit_cost [--writers 8] [--rows 1500]

An embedded PostgreSQL (broker.store.embedded) in a temporary folder; databases migrated to the current schema, and
for the baseline the chain's columns and indexes dropped again (the schema before migration 0015). `--writers`
concurrent writers each write `--rows` audit rows, one transaction each, as a session start's audit row is; with
the chain, the sealing pass (broker.store.audit.seal) runs every second beside them, as the leader's duty does.
Each variant runs twice, alternating, so drift on a shared machine shows. Report the comparison, not the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from broker.store import audit, database, embedded, migrate

_UNCHAIN = """
DROP INDEX audit_log_unsealed; DROP INDEX audit_log_chain_no; DROP INDEX audit_log_at;
ALTER TABLE audit_log DROP CONSTRAINT audit_log_sealed_whole, DROP COLUMN chain_no, DROP COLUMN prev_hash,
    DROP COLUMN hash;
"""


def _database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def _write(pool: asyncpg.Pool, writers: int, rows: int) -> float:
    async def writer(w: int) -> None:
        for i in range(rows):
            async with database.transaction(pool) as conn:
                await audit.write(conn, "session.start", f"session:{w}-{i}", tenant="venue:cafe", seat_id="s1")

    t0 = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    return writers * rows / (time.perf_counter() - t0)


async def _variant(url: str, chained: bool, writers: int, rows: int) -> dict[str, object]:
    conn = await asyncpg.connect(url)
    try:
        await migrate.apply(conn)
        if not chained:
            await conn.execute(_UNCHAIN)
    finally:
        await conn.close()
    pool = await database.create_pool(url, 1, writers + 2)
    passes: list[float] = []
    done = asyncio.Event()

    async def sealer() -> None:
        while not done.is_set():
            await asyncio.sleep(1.0)
            t0 = time.perf_counter()
            await audit.seal(pool)
            passes.append(round((time.perf_counter() - t0) * 1000, 1))

    task = asyncio.create_task(sealer()) if chained else None
    try:
        rate = await _write(pool, writers, rows)
    finally:
        done.set()
        if task is not None:
            await task
        await pool.close()
    return {"chained": chained, "rows_per_s": round(rate), "seal_pass_ms": passes}


async def _run(writers: int, rows: int) -> list[dict[str, object]]:
    with tempfile.TemporaryDirectory(prefix="audit-cost-") as tmp:
        url = await asyncio.to_thread(embedded.start, Path(tmp))
        admin = await asyncpg.connect(url)
        results = []
        try:
            for i, chained in enumerate((False, True, False, True)):
                name = f"audit_cost_{i}"
                await admin.execute(f"CREATE DATABASE {name}")
                results.append(await _variant(_database(url, name), chained, writers, rows))
        finally:
            await admin.close()
        return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.audit_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--rows", type=int, default=1500, help="audit rows per writer")
    args = parser.parse_args(argv)
    for r in asyncio.run(_run(args.writers, args.rows)):
        label = "with the chain   " if r["chained"] else "without the chain"
        sealing = f", seal passes {r['seal_pass_ms']} ms" if r["chained"] else ""
        print(f"{label}: {r['rows_per_s']} audit rows/s{sealing}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
