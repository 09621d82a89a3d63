"""aiortc streaming for the agent: one peer connection per session, our own pacing and encoding, input channels.

    MediaSession(session_id, source, bitrate_kbps=..., config=MediaConfig(...), on_streaming=..., on_closed=...)
        await answer(offer_sdp) -> answer_sdp      InvalidOffer for an offer we cannot answer
        stats() -> SessionStats
        await close()

Modules: `session` (the peer connection), `track` (pacing, capture, encode), `encoder` (PyAV encoders, NVENC
detection), `pacing` and `feedback` (pure: slots, REMB and receiver reports), `offer` (offer checks, codec choice),
`ice` (host candidates only on the configured addresses), `errors`, `config`.
"""

from __future__ import annotations

from gpu_agent.media.config import IceServer, MediaConfig
from gpu_agent.media.errors import InvalidOffer, MediaError, NoCommonCodec, SessionClosed
from gpu_agent.media.session import MediaSession, SessionStats

__all__ = [
    "IceServer",
    "InvalidOffer",
    "MediaConfig",
    "MediaError",
    "MediaSession",
    "NoCommonCodec",
    "SessionClosed",
    "SessionStats",
]
