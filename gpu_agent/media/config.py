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
    ``encoder_threads``: threads per software encoder (None: up to 2).
    ``playout_clean_s``: how long a session in playout mode AUTO waits without a lossy receiver report before it
    asks for zero delay again (gpu_agent.media.playout_delay.PlayoutPolicy; 30 s, tests shorten it)."""

    media_addresses: tuple[str, ...]
    ice_servers: tuple[IceServer, ...] = ()
    codec: str = "auto"
    encoder_threads: int | None = None
    playout_clean_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.media_addresses:
            raise ValueError("media_addresses must name at least one address")
        if self.codec not in CODECS:
            raise ValueError(f"codec must be one of {', '.join(CODECS)}, not {self.codec!r}")
        if not 0 < self.playout_clean_s <= 3600:
            raise ValueError(f"playout_clean_s must be within (0, 3600], not {self.playout_clean_s}")
