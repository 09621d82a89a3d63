"""Providers, sites, games, prices and the hosts' fleet-side controls (drain)."""

from __future__ import annotations

import asyncpg
from cloudseat import errors

from broker import metering
from broker.store import audit
from broker.store import metering as metering_store
from broker.store.database import required_row, required_value, transaction, translated
from broker.store.queries import Q


async def create_provider(pool: asyncpg.Pool, provider_id: str, name: str) -> asyncpg.Record:
    """Create a provider; AlreadyExists when the id is taken."""
    async with transaction(pool) as conn:
        return await create_provider_in(conn, provider_id, name)


async def create_provider_in(conn: asyncpg.Connection, provider_id: str, name: str) -> asyncpg.Record:
    """`create_provider` in the caller's transaction (broker.region applies a whole file in one)."""
    row: asyncpg.Record = await conn.fetchrow(Q["create_provider"], provider_id, name)
    await audit.write(
        conn, "provider.create", f"provider:{provider_id}", tenant=f"provider:{provider_id}", name=name
    )
    return row


async def create_site(
    pool: asyncpg.Pool, site_id: str, provider_id: str, name: str, region: str
) -> asyncpg.Record:
    """Create a site of an existing provider."""
    async with transaction(pool) as conn:
        return await create_site_in(conn, site_id, provider_id, name, region)


async def create_site_in(
    conn: asyncpg.Connection, site_id: str, provider_id: str, name: str, region: str
) -> asyncpg.Record:
    """`create_site` in the caller's transaction."""
    row: asyncpg.Record = await conn.fetchrow(Q["create_site"], site_id, provider_id, name, region)
    await audit.write(
        conn,
        "site.create",
        f"site:{site_id}",
        tenant=f"provider:{provider_id}",
        provider_id=provider_id,
        region=region,
    )
    return row


async def set_price(
    pool: asyncpg.Pool,
    site_id: str,
    gpu_class: str,
    price_micros: int,
    bands: tuple[metering.Band, ...] = (),
    utc_offset_minutes: int = 0,
    currency: str = "CNY",
) -> asyncpg.Record:
    """Set the on-demand price per slot-hour of a GPU class at a site, with its time-of-day bands (broker.metering),
    in `currency` (ISO 4217, checked by the caller). The running sessions of that site and class are metered up to
    this second at the old price first."""
    async with transaction(pool) as conn:
        return await set_price_in(
            conn, site_id, gpu_class, metering.Schedule(price_micros, bands, utc_offset_minutes), currency
        )


async def set_price_in(
    conn: asyncpg.Connection, site_id: str, gpu_class: str, schedule: metering.Schedule, currency: str
) -> asyncpg.Record:
    """`set_price` in the caller's transaction."""
    await metering_store.close_for_price_change(conn, site_id, gpu_class)
    row: asyncpg.Record = await conn.fetchrow(
        Q["set_price"],
        site_id,
        gpu_class,
        schedule.base_micros,
        schedule.bands_list(),
        schedule.utc_offset_minutes,
        currency,
    )
    await audit.write(
        conn,
        "price.set",
        f"site:{site_id}/{gpu_class}",
        price_micros_per_slot_hour=schedule.base_micros,
        bands=schedule.bands_list(),
        utc_offset_minutes=schedule.utc_offset_minutes,
        currency=currency,
    )
    return row


async def get_host(pool: asyncpg.Pool, host_id: str) -> asyncpg.Record:
    """A host with its price in force and live session count; NotFound when unknown."""
    return await required_row(
        pool, "get_host", host_id, missing=errors.NotFound.of("host_id", "host", host_id)
    )


async def list_hosts(
    pool: asyncpg.Pool, provider_id: str | None, site_id: str | None
) -> list[asyncpg.Record]:
    """Hosts, optionally of one provider and/or one site."""
    with translated():
        rows: list[asyncpg.Record] = await pool.fetch(Q["list_hosts"], provider_id, site_id)
    return rows


async def set_drained(
    pool: asyncpg.Pool, host_id: str, drained: bool, reason: str = "", deadline_s: int | None = None
) -> asyncpg.Record:
    """Drain (no new sessions) or undrain a host. A drain replaces the one in force: with a deadline `deadline_s`
    seconds from now by the database's clock (broker.drain: the sessions still there then move), or none (they go
    on until they end); an undrain clears it. Repeating either is a no-op; audited with the deadline."""
    async with transaction(pool) as conn:
        row = await required_row(
            conn,
            "set_drain",
            host_id,
            drained,
            deadline_s,
            missing=errors.NotFound.of("host_id", "host", host_id),
        )
        if row["drain_deadline"] is not None:
            await audit.write(
                conn, "host.drain", f"host:{host_id}", reason=reason, deadline=row["drain_deadline"]
            )
        elif drained:
            await audit.write(conn, "host.drain", f"host:{host_id}", reason=reason)
        else:
            await audit.write(conn, "host.undrain", f"host:{host_id}", reason=reason)
    return await get_host(pool, host_id)


async def site_provider(pool: asyncpg.Pool, site_id: str) -> str:
    """The provider that runs a site; NotFound when unknown."""
    provider: str = await required_value(
        pool, "site_exists", site_id, missing=errors.NotFound.of("site_id", "site", site_id)
    )
    return provider


async def host_provider(pool: asyncpg.Pool, host_id: str) -> str:
    """The provider that runs a host; NotFound when unknown."""
    provider: str = await required_value(
        pool, "host_provider", host_id, missing=errors.NotFound.of("host_id", "host", host_id)
    )
    return provider


async def drained_of(pool: asyncpg.Pool, host_ids: list[str]) -> dict[str, bool]:
    """Whether each of these hosts is drained (unknown hosts are left out)."""
    with translated():
        rows = await pool.fetch(Q["drained_of_hosts"], host_ids)
    return {r["host_id"]: r["drained"] for r in rows}


async def enrol_hosts(
    pool: asyncpg.Pool,
    provider_id: str,
    site_id: str,
    gpu_class: str,
    host_ids: list[str],
    prefix: str,
) -> None:
    """Enrol hosts into a site of `provider_id` (the caller checked it owns the site): `host_ids`, or every host id
    starting with `prefix`. AlreadyExists (naming nothing of the other provider) when another provider enrolled or
    runs any of them. Audited with the ids."""
    async with transaction(pool) as conn:
        await enrol_hosts_in(conn, provider_id, site_id, gpu_class, host_ids, prefix)


async def enrol_hosts_in(
    conn: asyncpg.Connection,
    provider_id: str,
    site_id: str,
    gpu_class: str,
    host_ids: list[str],
    prefix: str,
) -> None:
    """`enrol_hosts` in the caller's transaction."""
    enrolled_by = audit.actor().subject
    await conn.execute(Q["enrolment_lock"])
    if prefix:
        if await conn.fetchval(Q["enrolment_prefix_clash"], prefix, provider_id):
            raise errors.AlreadyExists("host_prefix: overlaps host ids another provider enrolled")
        await conn.execute(Q["enrol_prefix"], provider_id, site_id, gpu_class, prefix, enrolled_by)
    else:
        clash = await conn.fetchval(Q["enrolment_hosts_clash"], host_ids, provider_id)
        if clash is not None:
            raise errors.AlreadyExists(f"host_ids[{clash - 1}]: a host id another provider enrolled")
        await conn.execute(Q["enrol_hosts"], provider_id, site_id, gpu_class, host_ids, enrolled_by)
    await audit.write(
        conn,
        "host.enrol",
        f"site:{site_id}",
        tenant=f"provider:{provider_id}",
        gpu_class=gpu_class,
        host_ids=host_ids,
        host_prefix=prefix,
    )
