"""Session workloads: what renders the frames a session streams.

`make_source(game_id, ...)` gives the built-in demo game for ``"demo"`` (coloured by the palette of its installed
image, when the host holds one) and an FFmpeg-readable source for a game id the host's config maps to one; anything
else is `UnknownGame`. Errors: see `gpu_agent.workloads.base`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from gpu_agent.workloads.av_source import AvSource, AvSourceSpec, SourceSpec
from gpu_agent.workloads.base import FrameSource, SourceFailed, UnknownGame, WorkloadError
from gpu_agent.workloads.demo import DemoGame, read_palette

__all__ = [
    "DEMO_GAME",
    "AvSource",
    "AvSourceSpec",
    "DemoGame",
    "FrameSource",
    "SourceFailed",
    "SourceSpec",
    "UnknownGame",
    "WorkloadError",
    "make_source",
]

DEMO_GAME = "demo"


def make_source(
    game_id: str,
    width: int,
    height: int,
    fps: int,
    sources: Mapping[str, SourceSpec],
    assets: Path | None = None,
) -> FrameSource:
    """The frame source for ``game_id`` at the tier's size and rate.

    A game id configured in ``sources`` wins, so a host may serve even ``"demo"`` from a file; otherwise ``"demo"`` is
    the built-in game. Raises `UnknownGame` for anything else, `WorkloadError` (or `SourceFailed`) when the source
    cannot start.
    """
    spec = sources.get(game_id)
    if spec is not None:
        return AvSource(spec, width, height, fps)
    if game_id == DEMO_GAME:
        # The demo reads its palette from its installed image when the host holds one (assets/palette.bin).
        return DemoGame(width, height, fps, read_palette(assets) if assets is not None else None)
    raise UnknownGame(f"game {game_id!r} is neither built in nor configured on this host")
