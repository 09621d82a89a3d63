"""Reading the seat's SDP offer before it touches a peer connection, and choosing the codec to answer with.

aiortc's parser raises whatever the malformed text provokes (ValueError, KeyError, IndexError, ...), and a
description that parses can still lack what an answer needs; checking first turns all of that into `InvalidOffer`
and leaves the running peer connection untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiortc import sdp

from gpu_agent.media.errors import InvalidOffer, NoCommonCodec

MAX_OFFER_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Offer:
    ice_ufrag: str  # a new one means an ICE restart: the seat started over
    video_codecs: frozenset[str]  # lower-case names: "h264", "vp8", ...
    has_data_channel: bool


def parse_offer(text: str) -> Offer:
    if not isinstance(text, str) or not text.strip():
        raise InvalidOffer("the offer is empty")
    if len(text) > MAX_OFFER_BYTES:
        raise InvalidOffer(f"the offer is {len(text)} bytes, more than {MAX_OFFER_BYTES}")
    if not text.lstrip().startswith("v=0"):
        raise InvalidOffer("the offer is not SDP (no v=0 line first)")
    try:
        description = sdp.SessionDescription.parse(text)
    except Exception as exc:  # the parser has no error type of its own
        raise InvalidOffer(f"the offer does not parse: {type(exc).__name__}: {exc}") from exc
    video = [m for m in description.media if m.kind == "video"]
    if not video:
        raise InvalidOffer("the offer has no video section")
    media = video[0]
    if media.port == 0 or media.direction not in ("recvonly", "sendrecv"):
        raise InvalidOffer(f"the offer's video section does not receive (direction {media.direction})")
    for m in description.media:
        if m.ice is None or not m.ice.usernameFragment or not m.ice.password:
            raise InvalidOffer(f"the offer's {m.kind} section has no ICE credentials")
        if m.dtls is None or not m.dtls.fingerprints:
            raise InvalidOffer(f"the offer's {m.kind} section has no DTLS fingerprint")
    codecs = frozenset(c.mimeType.split("/", 1)[-1].lower() for c in media.rtp.codecs)
    assert media.ice is not None  # checked above
    return Offer(
        ice_ufrag=str(media.ice.usernameFragment),
        video_codecs=codecs,
        has_data_channel=any(m.kind == "application" for m in description.media),
    )


def choose_codec(configured: str, offer: Offer) -> str:
    """The codec to send: "h264" or "vp8". "auto" prefers H.264 (cheaper in software here, and NVENC's)."""
    wanted = ("h264", "vp8") if configured == "auto" else (configured,)
    for codec in wanted:
        if codec in offer.video_codecs:
            return codec
    offered = ", ".join(sorted(offer.video_codecs)) or "none"
    raise NoCommonCodec(f"the offer's video codecs ({offered}) include no {' or '.join(wanted)}")
