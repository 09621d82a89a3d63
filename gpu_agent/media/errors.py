"""The media errors: one root.

MediaError             the root
├── InvalidOffer       the seat's SDP offer is malformed or cannot be answered; the session keeps running
│   └── NoCommonCodec  the offer has no video codec we can send (H.264 or VP8, as configured)
└── SessionClosed      the media session was closed
"""

from __future__ import annotations


class MediaError(Exception):
    """The media session failed."""


class InvalidOffer(MediaError):
    """The SDP offer is malformed or cannot be answered."""


class NoCommonCodec(InvalidOffer):
    """The offer has no video codec we can send."""


class SessionClosed(MediaError):
    """The media session is closed."""
