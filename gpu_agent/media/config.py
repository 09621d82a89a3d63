"""The media configuration the agent builds once from its host config."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

CODECS = ("auto", "h264", "vp8")


@dataclass(frozen=True)
class IceServer:
    """A STUN or TURN server, as in WebRTC's RTCIceServer."""

    urls: Sequence[str] | str
    username: str = ""
    credential: str = ""


@dataclass(frozen=True)
class MediaConfig:
    """``media_addresses``: the only addresses ICE offers as host candidates (e.g. ("127.0.0.1",) in tests).
    ``ice_servers``: STUN/TURN, none by default (aiortc's default Google STUN is never used).
    ``codec``: "auto" (H.264 when the seat offers it, on NVENC when present, else VP8) | "h264" | "vp8".
    ``encoder_threads``: threads per software encoder (None: up to 2)."""

    media_addresses: tuple[str, ...]
    ice_servers: tuple[IceServer, ...] = ()
    codec: str = "auto"
    encoder_threads: int | None = None

    def __post_init__(self) -> None:
        if not self.media_addresses:
            raise ValueError("media_addresses must name at least one address")
        if self.codec not in CODECS:
            raise ValueError(f"codec must be one of {', '.join(CODECS)}, not {self.codec!r}")
