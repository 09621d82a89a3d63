"""What a cold start costs: the bytes a host still lacks for the game's current version, priced and graded.

A host holding the current version (or a game listed warm) costs nothing. One holding an older version lacks only
what the current one added since (`GameImage.lacking_from`, recorded when the version was pushed); one holding
none lacks the whole image. The cost is `Params.cold_start_micros_per_gib` per GiB lacking, rounded up to a
*grade* (1/`GRADES` of `cold_start_penalty_micros`) and at most `cold_start_penalty_micros`, which is also the cost
when the image's size is unknown. Grading keeps the solvers' networks small: hosts whose costs fall in one grade
cost the same, so the flow reaches them through one node (broker/placement/flow.py), and every cost is a multiple
of the grade, which keeps the cost-scaling solver's numbers small.

`cold_start_micros` is the definition, written plainly (the validator uses it); `cold_costs` is the same for every
distinct holding of a batch at once (the frame uses it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from broker.placement.model import GameImage, Params

#: A cold start's cost is rounded up to a multiple of cold_start_penalty_micros / GRADES.
GRADES = 16

_GIB = 1 << 30

#: What a host holds, as placement pools hosts by it: (games warm on it, images it holds as GAME_ID@VERSION).
Holding = tuple[frozenset[str], frozenset[str]]


def graded(params: Params, lacking_bytes: int) -> int:
    """The cost of fetching `lacking_bytes` before a session can start (0 for none)."""
    penalty = params.cold_start_penalty_micros
    if lacking_bytes <= 0 or penalty == 0:
        return 0
    step = -(-penalty // GRADES)
    raw = -(-lacking_bytes * params.cold_start_micros_per_gib // _GIB)
    return min(penalty, -(-raw // step) * step)


def lacking_bytes(image: GameImage, game_id: str, images: frozenset[str]) -> int:
    """Bytes of `image` (the current version of `game_id`) that a host holding `images` lacks."""
    lacking = image.size_bytes
    prefix = f"{game_id}@"
    for held in images:
        if held.startswith(prefix):
            version = held[len(prefix) :]
            if version == image.version:
                return 0
            lacking = min(lacking, image.lacking_from.get(version, lacking))
    return lacking


def cold_start_micros(
    params: Params, images: Mapping[str, GameImage], game_id: str, games: frozenset[str], held: frozenset[str]
) -> int:
    """The cold-start cost of `game_id` on a host with warm `games` holding the images `held`."""
    if game_id in games:
        return 0
    image = images.get(game_id)
    if image is None or image.size_bytes <= 0:
        return 0 if image is not None and f"{game_id}@{image.version}" in held else params.cold_start_penalty_micros
    return graded(params, lacking_bytes(image, game_id, held))


def cold_costs(
    params: Params, images: Mapping[str, GameImage], holdings: Sequence[Holding], game_index: Mapping[str, int]
) -> npt.NDArray[np.int64]:
    """cost[holding, game] of `cold_start_micros` for every holding and every game of `game_index` (a batch's).

    Loops over what the (few) distinct holdings hold, not over hosts or (holding, game) pairs.
    """
    n_games = max(len(game_index), 1)
    full = np.full(n_games, params.cold_start_penalty_micros, dtype=np.int64)
    # image held -> (game, its cost): the current version costs nothing, an older one what it lacks
    partial: dict[str, tuple[int, int]] = {}
    for game_id, j in game_index.items():
        image = images.get(game_id)
        if image is None:
            continue
        partial[f"{game_id}@{image.version}"] = (j, 0)
        if image.size_bytes <= 0:
            continue
        full[j] = graded(params, image.size_bytes)
        for version, lacking in image.lacking_from.items():
            if version != image.version:
                partial[f"{game_id}@{version}"] = (j, graded(params, min(lacking, image.size_bytes)))
    cost = np.empty((max(len(holdings), 1), n_games), dtype=np.int64)
    cost[:] = full
    for h, (games, held) in enumerate(holdings):
        row = cost[h]
        for name in held:
            hit = partial.get(name)
            if hit is not None and hit[1] < row[hit[0]]:
                row[hit[0]] = hit[1]
        for game in games:
            at = game_index.get(game)
            if at is not None:
                row[at] = 0
    return cost
