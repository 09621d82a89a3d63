"""Hosts as their agents see them: registration with epochs, batched heartbeats, and loss by the database clock."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence

import asyncpg
from cloudseat import errors

from broker import lifecycle
from broker.lifecycle import State
from broker.store.database import required_row, transaction, translated
from broker.store.queries import Q


@dataclasses.dataclass(frozen=True, slots=True)
class Registration:
    host_id: str
    provider_id: str
    site_id: str
    epoch: int
    agent_version: str
    gpu_class: str
    slots: int
    price_micros: int
    games_cached: tuple[str, ...] = ()
    media_addresses: tuple[str, ...] = ()
    gpus: tuple[dict[str, object], ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Registered:
    epoch: int
    drained: bool
    # Sessions the broker holds on this host (to reconcile with what the agent runs).
    live_sessions: list[asyncpg.Record]
    # Sessions ended because a new agent process replaced the old one.
    ended: list[str]


async def register(pool: asyncpg.Pool, reg: Registration) -> Registered:
    """Register (or re-register) a host under an epoch.

    The same epoch may reconnect while the host is not lost; an older epoch is refused; a newer epoch replaces the
    old agent process, and the sessions it held end with HOST_LOST. After the host was declared lost, only a newer
    epoch is accepted, so the old process can never serve its old sessions again.
    """
    async with transaction(pool) as conn:
        site = await required_row(
            conn,
            "site_exists",
            reg.site_id,
            missing=errors.NotFound.of("register.site_id", "site", reg.site_id),
        )
        if site["provider_id"] != reg.provider_id:
            raise errors.PermissionDenied(
                f"register.site_id: site {reg.site_id!r} belongs to another provider, not {reg.provider_id!r}"
            )
        ended: list[str] = []
        current = await conn.fetchrow(Q["lock_host"], reg.host_id)
        if current is not None:
            if current["provider_id"] != reg.provider_id:
                raise errors.PermissionDenied(
                    f"register.host_id: host {reg.host_id!r} belongs to another provider"
                )
            if reg.epoch < current["epoch"]:
                raise errors.StaleEpoch(
                    f"register.epoch: {reg.epoch} is older than the host's current epoch {current['epoch']}"
                )
            if reg.epoch == current["epoch"] and current["status"] == "lost":
                raise errors.StaleEpoch(
                    f"register.epoch: host {reg.host_id!r} was declared lost under epoch {reg.epoch}; "
                    "a restarted agent must present a newer epoch"
                )
            if reg.epoch > current["epoch"]:
                rows = await conn.fetch(
                    Q["end_host_sessions"], reg.host_id, "HOST_LOST", "the agent restarted under a new epoch"
                )
                ended = [str(r["session_id"]) for r in rows]
        held = await conn.fetchval(Q["held_slots"], reg.host_id)
        if reg.slots < held:
            raise errors.FailedPrecondition(
                f"register.inventory.slots: {reg.slots} is fewer than the {held} slots its live sessions hold"
            )
        row = await conn.fetchrow(
            Q["upsert_host"],
            reg.host_id,
            reg.provider_id,
            reg.site_id,
            reg.gpu_class,
            reg.slots,
            held,
            reg.price_micros,
            list(reg.games_cached),
            list(reg.gpus),
            list(reg.media_addresses),
            reg.agent_version,
            reg.epoch,
        )
        live = await conn.fetch(Q["host_live_sessions"], reg.host_id)
    return Registered(epoch=row["epoch"], drained=row["drained"], live_sessions=list(live), ended=ended)


async def heartbeats(
    pool: asyncpg.Pool,
    beats: Sequence[tuple[str, int, float, float, bool]],
    broker_address: str | None = None,
) -> set[tuple[str, int]]:
    """Record a batch of heartbeats (host_id, epoch, cpu_load, gpu_load, draining) with the database clock, and
    that the replica at `broker_address` (when given) holds those hosts' links.

    Returns the (host_id, epoch) of the beats that counted: those of an online host under that epoch. A beat
    missing from it comes from an agent process the broker has retired (its host was declared lost, or replaced by
    a newer epoch)."""
    if not beats:
        return set()
    columns = [list(col) for col in zip(*beats, strict=True)]
    async with transaction(pool) as conn:
        rows = await conn.fetch(Q["heartbeats"], *columns, broker_address)
    return {(r["host_id"], r["epoch"]) for r in rows}


async def link_host(pool: asyncpg.Pool, host_id: str, epoch: int, broker_address: str) -> None:
    """Record that the replica reachable at `broker_address` holds the link of the host's agent of `epoch`."""
    with translated():
        await pool.execute(Q["link_host"], host_id, epoch, broker_address)


async def broker_address(pool: asyncpg.Pool, host_id: str) -> str | None:
    """The address of the replica that last held the host's agent link (None: unknown host or never recorded)."""
    with translated():
        address: str | None = await pool.fetchval(Q["host_broker_address"], host_id)
    return address


async def set_games_cached(pool: asyncpg.Pool, host_id: str, epoch: int, games: Sequence[str]) -> None:
    async with transaction(pool) as conn:
        await conn.execute(Q["set_games_cached"], host_id, epoch, list(games))


async def mark_lost(pool: asyncpg.Pool, lost_after_s: float) -> tuple[list[str], list[str]]:
    """Declare lost every online host silent for longer than lost_after_s (by the database clock) and end its
    sessions with HOST_LOST, in one transaction. Returns (lost host ids, ended session ids)."""
    async with transaction(pool) as conn:
        lost = [r["host_id"] for r in await conn.fetch(Q["mark_lost"], lost_after_s)]
        ended = []
        if lost:
            ended = [str(r["session_id"]) for r in await conn.fetch(Q["end_sessions_on_hosts"], lost)]
    return lost, ended


async def set_offline(pool: asyncpg.Pool, host_id: str, epoch: int) -> list[str]:
    """The agent of `epoch` left cleanly: mark the host offline and end what it still held (HOST_LOST)."""
    async with transaction(pool) as conn:
        if await conn.fetchval(Q["set_offline"], host_id, epoch) is None:
            return []  # replaced by a newer epoch meanwhile, or already lost
        rows = await conn.fetch(Q["end_host_sessions"], host_id, "HOST_LOST", "the agent went offline")
    return [str(r["session_id"]) for r in rows]


# The forward moves an agent reports, in the order a session makes them.
_REPORTED_STEPS = (State.STARTING, State.READY, State.STREAMING)


async def advance_reported(
    pool: asyncpg.Pool, reports: Sequence[tuple[uuid.UUID, str, State]]
) -> list[errors.CloudseatError | None]:
    """Apply agents' reports that sessions moved forward — (session id, reporting host, new state), in the order
    they were sent — in one transaction.

    Each report is judged as `sessions.advance` judges one: the session must exist and be on the reporting host,
    a repeated or late report is a no-op, a jump is refused (broker.lifecycle). Returns, per report, None or the
    error that refused it; refused reports change nothing, the others commit together. One statement per step
    (STARTING, READY, STREAMING) moves every session taking that step, so the triggers record each move as usual.
    """
    if not reports:
        return []
    outcomes: list[errors.CloudseatError | None] = []
    steps: dict[State, list[uuid.UUID]] = {s: [] for s in _REPORTED_STEPS}
    async with transaction(pool) as conn:
        rows = await conn.fetch(Q["lock_reported_sessions"], sorted({sid for sid, _, _ in reports}))
        now = {r["session_id"]: (State(r["state"]), r["host_id"]) for r in rows}
        for sid, host_id, to in reports:
            got = now.get(sid)
            if got is None:
                outcomes.append(errors.NotFound.of("session_id", "session", str(sid)))
                continue
            state, on = got
            if on != host_id:
                outcomes.append(
                    errors.PermissionDenied(f"session_id: session {sid} is not on host {host_id!r}")
                )
                continue
            try:
                move = lifecycle.advance(state, to)
            except errors.IllegalTransition as exc:
                outcomes.append(exc)
                continue
            if move is not None:
                steps[move.to].append(sid)
                now[sid] = (move.to, on)
            outcomes.append(None)
        for i, to in enumerate(_REPORTED_STEPS):
            if steps[to]:
                before = State.PLACED if i == 0 else _REPORTED_STEPS[i - 1]
                await conn.execute(Q["advance_reported"], steps[to], before, to)
    return outcomes
