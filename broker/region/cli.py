"""`cloudseat-broker apply -f FILE.yaml [--dry-run]` and `cloudseat-broker get KIND [-o json]`.

Both talk to the region's database directly (like `migrate` and `audit`), so they are the operator's tools: whoever
can reach the database may run them. Every write is audited as `operator:cli:<login user>`.

    cloudseat-broker apply -f docs/examples/region.yaml --dry-run    # what would be created, changed, left
    cloudseat-broker apply -f docs/examples/region.yaml
    cloudseat-broker get seats
    cloudseat-broker get hosts -o json
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import json
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cloudseat import errors, logs, settings

from broker.config import BrokerConfig
from broker.region import model, store
from broker.region.plan import Verdict

# A region file is written by hand; anything this large is a mistake (or not a region file).
MAX_FILE_BYTES = 16 * 1024 * 1024


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    apply = sub.add_parser(
        "apply",
        help="declare a region from a YAML file: providers, sites, prices, games, venues, zones, seats, leases "
        "(idempotent; never deletes)",
    )
    apply.add_argument(
        "-f", "--file", type=Path, required=True, help="the region file (docs/examples/region.yaml)"
    )
    apply.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would be created, changed or left, and write nothing",
    )
    get = sub.add_parser("get", help="print the region's venues, seats, sites, hosts, sessions or games")
    get.add_argument("kind", choices=store.KINDS)
    get.add_argument(
        "-o", "--output", choices=("table", "json"), default="table", help="table (default) or json"
    )
    get.add_argument("--venue", default="", help="seats: only this venue's")
    get.add_argument("--all", action="store_true", help="sessions: ended ones too (newest first)")
    get.add_argument("--limit", type=int, default=200, help="sessions: at most this many (default 200)")
    for cmd in (apply, get):
        settings.add_arguments(cmd, BrokerConfig, only=("database_url", "data_dir"))
        logs.add_arguments(cmd)


def read(path: Path) -> model.Region:
    """The region a file declares (YAML, safe_load: plain data only); InvalidArgument naming the path inside it."""
    import yaml

    if path.stat().st_size > MAX_FILE_BYTES:
        raise errors.InvalidArgument(str(path), f"is larger than {MAX_FILE_BYTES // 2**20} MiB")
    text = path.read_text(encoding="utf-8")
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "somewhere"
        problem = getattr(exc, "problem", None) or str(exc)
        raise errors.InvalidArgument(f"{path}:{where}", f"not YAML: {problem}") from None
    return model.parse(document)


async def _pool(config: BrokerConfig) -> Any:
    import asyncpg

    from broker.store import database, embedded, migrate

    url = config.database_url
    if not url:
        url = await asyncio.to_thread(embedded.start, config.data_dir)
    conn = await asyncpg.connect(url)
    try:
        await migrate.apply(conn)  # as a broker does when it starts: the tables are this version's
    finally:
        await conn.close()
    return await database.create_pool(url, 1, 2)


async def _apply(config: BrokerConfig, args: argparse.Namespace) -> int:
    from broker.store import audit

    region = read(args.file)
    audit.set_actor(audit.Actor(f"cli:{_user()}", f"operator:cli:{_user()}"))
    pool = await _pool(config)
    try:
        outcome = await store.apply(pool, region, dry_run=args.dry_run)
    finally:
        await pool.close()
    print(report(outcome))
    return 0


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def report(outcome: store.Outcome) -> str:
    """One line per object (kind, key, what happens, what changes), then a summary."""
    would = not outcome.applied
    words = {
        Verdict.CREATE: "would create" if would else "created",
        Verdict.CHANGE: "would change" if would else "changed",
        Verdict.SAME: "unchanged",
    }
    rows = []
    for step in outcome.steps:
        verdict = words[step.verdict]
        detail = "; ".join(step.changes)
        if step.kind == "lease" and step.key in outcome.deferred:
            verdict = "deferred"
            detail = f"{outcome.deferred[step.key]}: apply again then"
        rows.append([step.kind, step.key, verdict, detail])
    counts = {v: sum(s.verdict is v for s in outcome.steps) for v in Verdict}
    deferred = len(outcome.deferred)
    summary = (
        f"{'dry run: ' if would else ''}{counts[Verdict.CREATE] - _deferred_new(outcome)} "
        f"{'to create' if would else 'created'}, {counts[Verdict.CHANGE]} {'to change' if would else 'changed'}, "
        f"{counts[Verdict.SAME]} unchanged"
        + (f", {deferred} deferred" if deferred else "")
        + (" (nothing written)" if would else "")
    )
    return table(["KIND", "NAME", "ACTION", "DETAIL"], rows) + "\n" + summary


def _deferred_new(outcome: store.Outcome) -> int:
    return sum(1 for s in outcome.steps if s.kind == "lease" and s.key in outcome.deferred)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns aligned to their widest cell; the last column is not padded."""
    cells = [list(header)] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def _money(micros: int) -> str:
    return f"{micros / 1_000_000:.2f}"


def _drained(r: Any) -> str:
    """A provider's drain (and when its sessions move, if it has a deadline), or the agent's own shutdown."""
    if r["drained"]:
        return f"yes, moves {_when(r['drain_deadline'])}" if r["drain_deadline"] is not None else "yes"
    return "shutting down" if r["draining"] else "no"


def _when(t: dt.datetime | None) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ") if t else ""


def _prices(prices: list[dict[str, Any]]) -> str:
    return ", ".join(
        f"{p['gpu_class']} {_money(p['price_micros'])} {p['currency']}"
        + (f" (+{len(p['bands'])} bands)" if p["bands"] else "")
        for p in prices
    )


# Per kind: the table's columns and how a row fills them.
COLUMNS: dict[str, tuple[list[str], Callable[[dict[str, Any]], list[Any]]]] = {
    "venues": (
        ["VENUE", "NAME", "TIME ZONE", "ZONES", "SEATS", "LIVE"],
        lambda r: [r["venue_id"], r["name"], r["time_zone"], r["zones"], r["seats"], r["live_sessions"]],
    ),
    "seats": (
        ["VENUE", "SEAT", "ZONE", "TIER", "CAP MS", "PLAYOUT", "SESSION", "HOST", "GAME"],
        lambda r: [
            r["venue_id"],
            r["seat_id"],
            r["zone_id"],
            r["tier"],
            r["latency_cap_ms"],
            r["playout"],
            r["state"] or "-",
            r["host_id"],
            r["game_id"],
        ],
    ),
    "sites": (
        ["SITE", "PROVIDER", "REGION", "PLACE", "HOSTS", "PRICES"],
        lambda r: [
            r["site_id"],
            r["provider_id"],
            r["region"],
            r["place"],
            f"{r['hosts_online']}/{r['hosts']}",
            _prices(r["prices"]),
        ],
    ),
    "hosts": (
        ["HOST", "PROVIDER", "SITE", "CLASS", "STATUS", "FREE", "LIVE", "DRAINED", "PRICE NOW", "HEARTBEAT"],
        lambda r: [
            r["host_id"],
            r["provider_id"],
            r["site_id"],
            r["gpu_class"],
            r["status"],
            f"{r['free_slots']}/{r['slots']}",
            r["live_sessions"],
            _drained(r),
            _money(r["price_micros"]),
            _when(r["last_heartbeat_at"]),
        ],
    ),
    "sessions": (
        ["SESSION", "VENUE", "SEAT", "GAME", "STATE", "HOST", "SITE", "RTT MS", "CREATED"],
        lambda r: [
            r["session_id"],
            r["venue_id"],
            r["seat_id"],
            r["game_id"],
            r["state"] + (f" ({r['end_reason']})" if r["end_reason"] else ""),
            r["host_id"],
            r["site_id"],
            r["latency_ms"],
            _when(r["created_at"]),
        ],
    ),
    "games": (
        ["GAME", "NAME", "VERSION", "SIZE BYTES", "IMAGE"],
        lambda r: [r["game_id"], r["name"], r["version"], r["image_size_bytes"], r["image_ref"]],
    ),
}


def _json_value(value: object) -> object:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return str(value)


async def _get(config: BrokerConfig, args: argparse.Namespace) -> int:
    from cloudseat import validate

    venue = validate.ident(args.venue, "--venue", required=False) or None
    limit = validate.int_range(args.limit, "--limit", 1, 100_000)
    pool = await _pool(config)
    try:
        rows = await store.get(pool, args.kind, venue_id=venue, all_sessions=args.all, limit=limit)
    finally:
        await pool.close()
    if args.output == "json":
        print(json.dumps(rows, default=_json_value, ensure_ascii=False, indent=2))
    else:
        header, fill = COLUMNS[args.kind]
        print(table(header, [fill(r) for r in rows]))
    return 0


def run(args: argparse.Namespace) -> int:
    """`apply` or `get`; 0, or 1 with the error (naming the path in the file) on stderr, nothing written."""
    logs.configure_from(args)
    config = settings.build(BrokerConfig, args)
    try:
        if args.command == "apply":
            return asyncio.run(_apply(config, args))
        return asyncio.run(_get(config, args))
    except errors.CloudseatError as exc:
        written = " (nothing was written)" if args.command == "apply" else ""
        print(f"cloudseat-broker {args.command}: {exc.message}{written}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cloudseat-broker {args.command}: {exc}", file=sys.stderr)
        return 1
