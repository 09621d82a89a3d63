"""The game catalogue and its images: versions, and pre-warming a site's hosts.

An image is GAME_ID@VERSION. A host reports the images it holds (hosts.images_cached); the database derives the
games whose current catalogue version it holds (hosts.games_cached), which is what placement counts as warm. A game
update (a new version) therefore makes every host cold for that game at once — new sessions prefer hosts that fetch
the new version — while the sessions running on the old one go on: nothing ends them.
"""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg
from cloudseat import errors

from broker.store import audit
from broker.store.database import required_row, required_value, transaction, translated
from broker.store.queries import Q


async def put_game(
    pool: asyncpg.Pool,
    game_id: str,
    name: str,
    image_size_bytes: int,
    version: str = "",
    image: tuple[str, str, int] = ("", "", 0),
    lacking_from: Mapping[str, int] | None = None,
) -> tuple[asyncpg.Record, dict[str, int]]:
    """Publish or update a game of the catalogue; a new `version` is a game update ('' keeps the current one).
    `image`: the version's (reference, manifest digest, bytes new since the previous version), or empty.
    Returns the game's row and what each earlier version lacks of its version (`put_game_in`)."""
    async with transaction(pool) as conn:
        return await put_game_in(conn, game_id, name, image_size_bytes, version, image, lacking_from)


async def put_game_in(
    conn: asyncpg.Connection,
    game_id: str,
    name: str,
    image_size_bytes: int,
    version: str = "",
    image: tuple[str, str, int] = ("", "", 0),
    lacking_from: Mapping[str, int] | None = None,
) -> tuple[asyncpg.Record, dict[str, int]]:
    """`put_game` in the caller's transaction (broker.region applies a whole file in one).

    `lacking_from`: stored bytes of this version that a host holding each earlier version lacks (what placement
    prices a cold start by). With an image it replaces what was recorded for the version, and a new version's
    `update_bytes` counts for the version it replaces unless named; None leaves what was recorded."""
    image_ref, image_digest, update_bytes = image
    before = await conn.fetchrow(Q["game_image"], game_id)
    row: asyncpg.Record = await conn.fetchrow(
        Q["put_game"], game_id, name, image_size_bytes, version, image_ref, image_digest, update_bytes
    )
    current = row["version"]
    if image_ref and lacking_from is not None:
        lacking = {v: b for v, b in lacking_from.items() if v != current}
        if before is not None and before["version"] != current and update_bytes > 0:
            lacking.setdefault(before["version"], update_bytes)
        await conn.execute(Q["clear_game_lacking"], game_id, current)
        await conn.execute(Q["put_game_lacking"], game_id, current, list(lacking), list(lacking.values()))
    recorded = {r["from_version"]: r["bytes"] for r in await conn.fetch(Q["game_lacking"], game_id, current)}
    await audit.write(
        conn,
        "game.put",
        f"game:{game_id}",
        name=name,
        image_size_bytes=image_size_bytes,
        version=current,
        previous_version=before["version"] if before is not None else None,
        image_ref=row["image_ref"],
        lacking_from=recorded,
    )
    return row, recorded


async def prewarm(pool: asyncpg.Pool, site_id: str, game_id: str) -> tuple[str, list[str]]:
    """Have every online host of `site_id` that lacks the game's current version fetch it. Returns the version and
    the hosts told (the command reaches them when this commits, through whichever replica holds their link).
    NotFound for an unknown site or game."""
    async with transaction(pool) as conn:
        await required_value(
            conn, "site_exists", site_id, missing=errors.NotFound.of("site_id", "site", site_id)
        )
        game = await required_row(
            conn, "game_image", game_id, missing=errors.NotFound.of("game_id", "game", game_id)
        )
        rows = await conn.fetch(
            Q["prewarm_hosts"],
            site_id,
            game_id,
            game["version"],
            game["image_size_bytes"],
            game["image_ref"],
            game["image_digest"],
        )
        host_ids = [r["host_id"] for r in rows]
        await conn.execute(Q["record_prewarm"], site_id, game_id, game["version"], host_ids)
        await audit.write(
            conn,
            "game.prewarm",
            f"site:{site_id}",
            game_id=game_id,
            version=game["version"],
            host_ids=host_ids,
        )
    return game["version"], host_ids


async def prewarms_missed(pool: asyncpg.Pool, host_id: str) -> list[asyncpg.Record]:
    """The images pre-warmed at the host's site (current versions) that it does not hold: what a host that was
    away, or is new to the site, should fetch now."""
    with translated():
        rows: list[asyncpg.Record] = await pool.fetch(Q["prewarms_missed"], host_id)
    return rows
