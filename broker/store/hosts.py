"""Hosts as their agents see them: registration with epochs, the links that hold them, batched load reports, and
loss by the database clock (a link seen dead, or the broker process holding it silent)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
from cloudseat import errors

from broker import enrolment, lifecycle
from broker.lifecycle import State
from broker.store import audit
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
    peer_address: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Link:
    """The connection a registration arrived on: its id (new per connection), the broker process holding it, and
    where that process takes forwarded calls (Negotiate) for the agent."""

    link_id: uuid.UUID
    replica_id: str
    address: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class Registered:
    epoch: int
    drained: bool
    # Sessions the broker holds on this host (to reconcile with what the agent runs).
    live_sessions: list[asyncpg.Record]
    # Sessions ended because a new agent process replaced the old one.
    ended: list[str]


async def register(
    pool: asyncpg.Pool, reg: Registration, link: Link | None = None, *, enrolment_required: bool = False
) -> Registered:
    """Register (or re-register) a host under an epoch.

    The same epoch may reconnect while the host is not lost; an older epoch is refused; a newer epoch replaces the
    old agent process, and the sessions it held end with HOST_LOST. After the host was declared lost, only a newer
    epoch is accepted, so the old process can never serve its old sessions again. `link` is the connection the
    registration arrived on (None: no link, a host written by a tool; it is lost after lost_after, unless a link
    takes it).

    The host must agree with its binding, and with `enrolment_required` a new host must be enrolled
    (broker.enrolment decides). A first registration, a move and a new epoch are audited with the registration; a
    refusal (PermissionDenied) is audited on its own, as the registration itself writes nothing.
    """
    try:
        return await _register(pool, reg, link, enrolment_required)
    except errors.PermissionDenied as exc:
        async with transaction(pool) as conn:
            await audit.write(
                conn,
                "host.register_refused",
                f"host:{reg.host_id}",
                tenant=f"provider:{reg.provider_id}",
                site_id=reg.site_id,
                epoch=reg.epoch,
                reason=exc.message,
            )
        raise


async def _register(
    pool: asyncpg.Pool, reg: Registration, link: Link | None, enrolment_required: bool
) -> Registered:
    async with transaction(pool, notifies=True) as conn:
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
        bound = None if current is None else enrolment.Binding(current["provider_id"], current["site_id"])
        enrolled = None
        if enrolment_required and (bound is None or bound.site_id != reg.site_id):
            row = await conn.fetchrow(Q["enrolment_of"], reg.host_id)
            enrolled = (
                None
                if row is None
                else enrolment.Binding(row["provider_id"], row["site_id"], row["gpu_class"])
            )
        claim = enrolment.Claim(reg.host_id, reg.provider_id, reg.site_id, reg.gpu_class)
        outcome = enrolment.decide(claim, bound, enrolled, enrolment_required=enrolment_required)
        if current is not None:
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
            link.link_id if link else None,
            link.replica_id if link else None,
            link.address if link else None,
            reg.peer_address,
        )
        live = await conn.fetch(Q["host_live_sessions"], reg.host_id)
        # The site's other hosts learn it serves chunks now (or no longer, from the site it left).
        sites = [reg.site_id] if current is None else list({reg.site_id, current["site_id"]})
        await conn.execute(Q["notify_site_peers"], sites, reg.host_id)
        new_epoch = current is not None and reg.epoch > current["epoch"]
        if outcome is not enrolment.Outcome.SAME or new_epoch:
            await audit.write(
                conn,
                "host.reregister" if outcome is enrolment.Outcome.SAME else outcome.value,
                f"host:{reg.host_id}",
                tenant=f"provider:{reg.provider_id}",
                site_id=reg.site_id,
                gpu_class=reg.gpu_class,
                epoch=reg.epoch,
                previous_epoch=None if current is None else current["epoch"],
                previous_site_id=None if current is None else current["site_id"],
                sessions_ended=len(ended),
                enrolled=enrolment_required,
            )
    return Registered(epoch=row["epoch"], drained=row["drained"], live_sessions=list(live), ended=ended)


async def site_peer_lists(pool: asyncpg.Pool, site_ids: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    """Each site's online hosts as (host id, peer address); a site with none is left out."""
    with translated():
        rows = await pool.fetch(Q["site_peer_lists"], list(site_ids))
    lists: dict[str, list[tuple[str, str]]] = {}
    for r in rows:
        lists.setdefault(r["site_id"], []).append((r["host_id"], r["peer_address"]))
    return lists


async def site_peers(pool: asyncpg.Pool, host_id: str) -> list[tuple[str, str]]:
    """The serving hosts of the host's site as (host id, peer address), this one among them."""
    with translated():
        rows = await pool.fetch(Q["site_peers"], host_id)
    return [(r["host_id"], r["peer_address"]) for r in rows]


async def host_reports(
    pool: asyncpg.Pool, reports: Sequence[tuple[str, uuid.UUID, float, float, bool]]
) -> set[uuid.UUID]:
    """Record a batch of load reports (host_id, link_id, cpu_load, gpu_load, draining) with the database clock.

    Returns the links whose reports counted: those still holding an online host. A link missing from it was
    replaced (a newer connection or epoch) or its host declared lost: its agent reports into the void."""
    if not reports:
        return set()
    columns = [list(col) for col in zip(*reports, strict=True)]
    async with transaction(pool) as conn:
        # In host id order, as every writer of many hosts (migration 0012).
        await conn.execute(Q["lock_sessions_then_hosts"], [], columns[0])
        rows = await conn.fetch(Q["host_reports"], *columns)
    return {r["link_id"] for r in rows}


async def links_lost(pool: asyncpg.Pool, links: Sequence[tuple[str, uuid.UUID]]) -> None:
    """The links (host, link id) ended without a goodbye: record when (database clock), each unless its host has moved
    on to another link. Placement stops using such a host at once; the leader declares it lost once the grace for a
    reconnect has passed (mark_lost)."""
    if not links:
        return
    with translated():
        await pool.execute(Q["links_lost"], [h for h, _ in links], [link for _, link in links])


async def links_stale(pool: asyncpg.Pool, link_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """Of `link_ids`, those that no longer hold their host (not online, or replaced by a newer link)."""
    if not link_ids:
        return set()
    with translated():
        rows = await pool.fetch(Q["links_stale"], list(link_ids))
    return {r["link_id"] for r in rows}


async def replica_alive(pool: asyncpg.Pool, replica_id: str, address: str) -> None:
    """This broker process, which holds agents' links, is alive (database clock)."""
    with translated():
        await pool.execute(Q["replica_alive"], replica_id, address)


async def replicas_forget(pool: asyncpg.Pool) -> None:
    with translated():
        await pool.execute(Q["replicas_forget"])


async def broker_address(pool: asyncpg.Pool, host_id: str) -> str | None:
    """The address of the replica that last held the host's agent link (None: unknown host or never recorded)."""
    with translated():
        address: str | None = await pool.fetchval(Q["host_broker_address"], host_id)
    return address


async def set_games_cached(pool: asyncpg.Pool, host_id: str, epoch: int, games: Sequence[str]) -> None:
    async with transaction(pool) as conn:
        await conn.execute(Q["set_games_cached"], host_id, epoch, list(games))


async def set_image_fetches(
    pool: asyncpg.Pool, host_id: str, epoch: int, fetches: Sequence[Mapping[str, Any]]
) -> None:
    """Record the image fetches the host reports under way or failed (the provider console shows them)."""
    with translated():
        await pool.execute(Q["set_image_fetches"], host_id, epoch, list(fetches))


async def mark_lost(
    pool: asyncpg.Pool, link_grace_s: float, lost_after_s: float
) -> tuple[list[str], list[str]]:
    """Declare lost every online host whose link was seen dead more than `link_grace_s` ago, or whose link's broker
    process has been silent (and the host too) for `lost_after_s`, by the database clock; end its sessions with
    HOST_LOST, in one transaction. Returns (lost host ids, ended session ids)."""
    with translated():
        found = [r["host_id"] for r in await pool.fetch(Q["find_lost"], link_grace_s, lost_after_s)]
    if not found:
        return [], []
    async with transaction(pool) as conn:
        # Their sessions, then the hosts, each in id order, as every writer of many sessions (migration 0012).
        await conn.execute(Q["lock_sessions_on_hosts"], found)
        lost = [r["host_id"] for r in await conn.fetch(Q["mark_lost"], link_grace_s, lost_after_s, found)]
        ended = []
        if lost:
            ended = [str(r["session_id"]) for r in await conn.fetch(Q["end_sessions_on_hosts"], lost)]
    return lost, ended


async def end_sessions_on_gone_hosts(pool: asyncpg.Pool) -> list[str]:
    """End (HOST_LOST) the live sessions of hosts that are no longer online: a placement that raced the host's
    loss (gone_hosts_holding_sessions). Returns the ended session ids; usually none, in one read."""
    with translated():
        found = [r["host_id"] for r in await pool.fetch(Q["gone_hosts_holding_sessions"])]
    if not found:
        return []
    async with transaction(pool) as conn:
        await conn.execute(Q["lock_sessions_on_hosts"], found)
        return [str(r["session_id"]) for r in await conn.fetch(Q["end_sessions_on_hosts"], found)]


async def set_offline(pool: asyncpg.Pool, host_id: str, epoch: int) -> list[str]:
    """The agent of `epoch` left cleanly: mark the host offline and end what it still held (HOST_LOST)."""
    async with transaction(pool) as conn:
        site_id = await conn.fetchval(Q["set_offline"], host_id, epoch)
        if site_id is None:
            return []  # replaced by a newer epoch meanwhile, or already lost
        rows = await conn.fetch(Q["end_host_sessions"], host_id, "HOST_LOST", "the agent went offline")
        await conn.execute(Q["notify_site_peers"], [site_id], host_id)
    return [str(r["session_id"]) for r in rows]


# The forward moves an agent reports, in the order a session makes them.
_REPORTED_STEPS = (State.STARTING, State.READY, State.STREAMING)


async def advance_reported(
    pool: asyncpg.Pool, reports: Sequence[tuple[uuid.UUID, str, State]]
) -> list[errors.CloudseatError | None]:
    """Apply agents' reports that sessions moved forward — (session id, reporting host, new state), in the order
    they were sent — in one transaction.

    Each report is judged as `sessions.advance` judges one: the session must exist and be on the reporting host,
    a repeated or late report is a no-op, a report may skip moves, and each is recorded on the way
    (broker.lifecycle.catch_up). Returns, per report, None or the error that refused it; refused reports change
    nothing, the others commit together. One statement per step (STARTING, READY, STREAMING) moves every session
    taking that step, so the triggers record each move as usual.
    """
    if not reports:
        return []
    outcomes: list[errors.CloudseatError | None] = []
    steps: dict[State, list[uuid.UUID]] = {s: [] for s in _REPORTED_STEPS}
    async with transaction(pool, notifies=True) as conn:
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
                moves = lifecycle.catch_up(state, to)
            except errors.IllegalTransition as exc:
                outcomes.append(exc)
                continue
            for move in moves:
                steps[move.to].append(sid)
            if moves:
                now[sid] = (moves[-1].to, on)
            outcomes.append(None)
        for i, to in enumerate(_REPORTED_STEPS):
            if steps[to]:
                before = State.PLACED if i == 0 else _REPORTED_STEPS[i - 1]
                await conn.execute(Q["advance_reported"], steps[to], before, to)
    return outcomes
