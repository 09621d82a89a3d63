"""The playout-delay RTP header extension, which aiortc lacks: the sender's word on how long the receiver may hold a
frame before rendering it.

    http://www.webrtc.org/experiments/rtp-hdrext/playout-delay
    one element of 3 bytes: MIN (12 bits) then MAX (12 bits), both in units of 10 ms (0 .. 40.95 s)

A receiver that negotiated it keeps its render delay within [MIN, MAX]. MIN = MAX = 0, what cloud-gaming senders
send, tells Chromium to render each frame as soon as it is decoded: its jitter buffer stops adding the delay it
would otherwise estimate from the network's jitter (~10 ms on loopback, more on a real link), and its video
renderer takes the low-latency path. The price is on a link that jitters: nothing smooths the frames out, so the
picture shows the network's unevenness instead of hiding it behind a delay (docs/streaming.md measures both).

The seat decides: Chromium offers the extension by default (the kiosk page can withhold it, see docs/kiosk.md), and
the agent answers it whenever it is offered and then writes it into every video packet. aiortc negotiates only the
header extensions in its `HEADER_EXTENSIONS` table and writes only those its `HeaderExtensionsMap` knows, so this
module adds the URI to the table (`register`, idempotent) and gives a sender a map that writes one more element
(`attach`). The codec (`pack` / `unpack`) is pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from aiortc import RTCRtpSender, rtp
from aiortc.codecs import HEADER_EXTENSIONS
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters

URI: Final = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay"
UNIT_MS: Final = 10
MAX_MS: Final = 0xFFF * UNIT_MS


@dataclass(frozen=True, slots=True)
class PlayoutDelay:
    """The receiver's render delay bounds, ms (multiples of 10, 0..40950, min <= max)."""

    min_ms: int = 0
    max_ms: int = 0

    def __post_init__(self) -> None:
        for name, value in (("min_ms", self.min_ms), ("max_ms", self.max_ms)):
            if not 0 <= value <= MAX_MS or value % UNIT_MS:
                raise ValueError(f"{name} must be a multiple of {UNIT_MS} in 0..{MAX_MS}, not {value}")
        if self.min_ms > self.max_ms:
            raise ValueError(f"min_ms ({self.min_ms}) must not exceed max_ms ({self.max_ms})")


ZERO: Final = PlayoutDelay(0, 0)


def pack(delay: PlayoutDelay) -> bytes:
    """The extension element's 3 bytes."""
    value = (delay.min_ms // UNIT_MS) << 12 | delay.max_ms // UNIT_MS
    return value.to_bytes(3, "big")


def unpack(data: bytes) -> PlayoutDelay:
    """The delay from an element's bytes; ValueError when it is not 3 bytes or its MIN exceeds its MAX."""
    if len(data) != 3:
        raise ValueError(f"a playout-delay element is 3 bytes, not {len(data)}")
    value = int.from_bytes(data, "big")
    return PlayoutDelay((value >> 12) * UNIT_MS, (value & 0xFFF) * UNIT_MS)


def register() -> None:
    """Let aiortc negotiate the extension on video: an offer that carries it is answered with it (under the
    offerer's id); an offer aiortc makes carries it under the first id its table leaves free."""
    video = HEADER_EXTENSIONS["video"]
    if any(ext.uri == URI for ext in video):
        return
    free = min(set(range(1, 15)) - {ext.id for ext in video})
    video.append(RTCRtpHeaderExtensionParameters(id=free, uri=URI))


class _ExtensionsMap(rtp.HeaderExtensionsMap):
    """aiortc's map, plus the playout delay in every packet once the extension is negotiated."""

    def __init__(self, delay: PlayoutDelay) -> None:
        super().__init__()
        self._element = pack(delay)
        self.id: int | None = None

    def configure(self, parameters: RTCRtpParameters) -> None:
        super().configure(parameters)
        self.id = next((ext.id for ext in parameters.headerExtensions if ext.uri == URI), None)

    def set(self, values: rtp.HeaderExtensions) -> tuple[int, bytes]:
        profile, value = super().set(values)
        if self.id is None:
            return profile, value
        # aiortc packs its own list; read it back (padding dropped) and pack it again with ours added.
        elements = rtp.unpack_header_extensions(profile, value)
        elements.append((self.id, self._element))
        return rtp.pack_header_extensions(elements)


def attach(sender: RTCRtpSender, delay: PlayoutDelay = ZERO) -> None:
    """Make ``sender`` write ``delay`` into its packets when the extension is negotiated. Call it before the
    sender starts (``RTCRtpSender.send``, which the peer connection calls once the answer is set): that is when
    the map learns the negotiated ids. The map is a private attribute of aiortc's sender: the one place it is
    read, for new packets and retransmissions alike."""
    register()
    sender._RTCRtpSender__rtp_header_extensions_map = _ExtensionsMap(delay)  # type: ignore[attr-defined]
