"""Reading the seat's SDP offer before it touches a peer connection, and choosing the codec to answer with.

aiortc's parser raises whatever the malformed text provokes (ValueError, KeyError, IndexError, ...), and a
description that parses can still lack what an answer needs; checking first turns all of that into `InvalidOffer`
and leaves the running peer connection untouched.

A seat may choose its own playout mode over its zone's with one session-level attribute of ours in its offer,
``a=x-cloudseat-playout:AUTO|LOW_LATENCY|SMOOTH`` (the kiosk page's ``?playout=``, docs/kiosk.md#latency-knobs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiortc import sdp

from gpu_agent.media.errors import InvalidOffer, NoCommonCodec
from gpu_agent.media.playout_delay import Mode

MAX_OFFER_BYTES = 64 * 1024
PLAYOUT_ATTRIBUTE = "x-cloudseat-playout"
_PLAYOUT_LINE = re.compile(rf"^a={PLAYOUT_ATTRIBUTE}:(.*?)\r?$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Offer:
    ice_ufrag: str  # a new one means an ICE restart: the seat started over
    video_codecs: frozenset[str]  # lower-case names: "h264", "vp8", ...
    has_data_channel: bool
    playout: Mode | None = None  # the seat's own playout mode; None: the zone's


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
        playout=_playout(text),
    )


def _playout(text: str) -> Mode | None:
    """The offer's ``a=x-cloudseat-playout:MODE``, before the first media section; None when it has none."""
    session_level = text.split("\nm=", 1)[0]
    found = _PLAYOUT_LINE.findall(session_level)
    if not found:
        return None
    if len(found) > 1:
        raise InvalidOffer(f"the offer has {len(found)} {PLAYOUT_ATTRIBUTE} lines; at most one")
    try:
        return Mode(found[0].strip())
    except ValueError:
        choices = ", ".join(m.value for m in Mode)
        raise InvalidOffer(f"the offer's {PLAYOUT_ATTRIBUTE} must be one of {choices}, not {found[0][:40]!r}") from None


def choose_codec(configured: str, offer: Offer) -> str:
    """The codec to send: "h264" or "vp8". "auto" prefers H.264 (cheaper in software here, and NVENC's)."""
    wanted = ("h264", "vp8") if configured == "auto" else (configured,)
    for codec in wanted:
        if codec in offer.video_codecs:
            return codec
    offered = ", ".join(sorted(offer.video_codecs)) or "none"
    raise NoCommonCodec(f"the offer's video codecs ({offered}) include no {' or '.join(wanted)}")
