"""The playout-delay RTP header extension, which aiortc lacks: the sender's word on how long the receiver may hold a
frame before rendering it.

    http://www.webrtc.org/experiments/rtp-hdrext/playout-delay
    one element of 3 bytes: MIN (12 bits) then MAX (12 bits), both in units of 10 ms (0 .. 40.95 s)

A receiver that negotiated it keeps its render delay within [MIN, MAX]. MIN = MAX = 0, what cloud-gaming senders
send, tells Chromium to render each frame as soon as it is decoded: its jitter buffer stops adding the delay it
would otherwise estimate from the network's jitter (~10 ms on loopback, more on a real link), and its video
renderer takes the low-latency path. The price is on a link that jitters: nothing smooths the frames out, so the
picture shows the network's unevenness instead of hiding it behind a delay (docs/streaming.md measures both).

The seat decides whether: Chromium offers the extension by default (the kiosk page can withhold it, see
docs/kiosk.md), and the agent answers it whenever it is offered and then writes it into every video packet. The
seat's zone decides what (`Mode`, the broker's PlayoutMode): AUTO, zero while the link delivers and the receiver's
own adaptive delay while it loses packets (`PlayoutPolicy`); LOW_LATENCY, always zero; SMOOTH, always the
adaptive delay (`FixedPlayout`). aiortc negotiates only the
header extensions in its `HEADER_EXTENSIONS` table and writes only those its `HeaderExtensionsMap` knows, so this
module adds the URI to the table (`register`, idempotent) and gives a sender a map that writes one more element
(`attach`). The codec (`pack` / `unpack`) is pure.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, Protocol

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
# The receiver's own adaptive jitter buffer, within Chromium's default bounds (0 to 10 s): what it does without
# the extension, asked for while the link loses packets.
ADAPTIVE: Final = PlayoutDelay(0, 10_000)


class Mode(enum.StrEnum):
    """A zone's playout mode (the contract's PlayoutMode, by the names the broker stores)."""

    AUTO = "AUTO"
    LOW_LATENCY = "LOW_LATENCY"
    SMOOTH = "SMOOTH"


class Playout(Protocol):
    """What a media session asks of its playout choice: the delay now, and a new one after a receiver report."""

    @property
    def delay(self) -> PlayoutDelay: ...

    def on_report(self, loss_fraction: float, now_us: int) -> PlayoutDelay | None: ...


class FixedPlayout:
    """One delay whatever the link does (LOW_LATENCY: `ZERO`, SMOOTH: `ADAPTIVE`)."""

    def __init__(self, delay: PlayoutDelay) -> None:
        self.delay = delay

    def on_report(self, loss_fraction: float, now_us: int) -> PlayoutDelay | None:
        return None


class PlayoutPolicy:
    """Which delay to ask for, from the seat's receiver reports. Pure: time comes in as an argument.

    Zero while the link delivers: each frame is rendered as soon as it is decoded. Once a report shows the link
    losing packets (``loss_fraction`` at least ``lossy``), the receiver's adaptive delay: with none, a frame that
    waits for a retransmission or a keyframe freezes the picture instead of being absorbed by the jitter buffer
    (measured on a link with 1% loss: docs/streaming.md#a-bad-link). Back to zero after ``clean_for_us`` without
    a lossy report. A receiver takes the delay from each frame, so a change applies without renegotiating.
    A single packet lost in a report's second (~300 packets at 720p60) reads as 0/256 and changes nothing.
    """

    def __init__(self, *, lossy: float = 0.005, clean_for_us: int = 30_000_000) -> None:
        if not 0 < lossy <= 1:
            raise ValueError(f"lossy must be within (0, 1], not {lossy}")
        if clean_for_us <= 0:
            raise ValueError(f"clean_for_us must be positive, not {clean_for_us}")
        self.lossy = lossy
        self.clean_for_us = clean_for_us
        self.delay = ZERO
        self._last_lossy_us: int | None = None

    def on_report(self, loss_fraction: float, now_us: int) -> PlayoutDelay | None:
        """Take one receiver report's loss fraction (0..1); the new delay when it changes, else None."""
        if loss_fraction >= self.lossy:
            self._last_lossy_us = now_us
            wanted = ADAPTIVE
        elif self._last_lossy_us is not None and now_us - self._last_lossy_us < self.clean_for_us:
            wanted = self.delay
        else:
            wanted = ZERO
        if wanted == self.delay:
            return None
        self.delay = wanted
        return wanted


def for_mode(mode: Mode, *, clean_for_us: int = 30_000_000) -> Playout:
    """The playout choice of a session of ``mode``; ``clean_for_us``: AUTO's wait on a clean link before zero."""
    if mode is Mode.LOW_LATENCY:
        return FixedPlayout(ZERO)
    if mode is Mode.SMOOTH:
        return FixedPlayout(ADAPTIVE)
    return PlayoutPolicy(clean_for_us=clean_for_us)


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


class ExtensionsMap(rtp.HeaderExtensionsMap):
    """aiortc's map, plus the playout delay in every packet once the extension is negotiated."""

    def __init__(self, delay: PlayoutDelay) -> None:
        super().__init__()
        self._element = pack(delay)
        self.id: int | None = None

    def set_delay(self, delay: PlayoutDelay) -> None:
        """Write ``delay`` from the next packet on."""
        self._element = pack(delay)

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


def attach(sender: RTCRtpSender, delay: PlayoutDelay = ZERO) -> ExtensionsMap:
    """Make ``sender`` write ``delay`` into its packets when the extension is negotiated. Call it before the
    sender starts (``RTCRtpSender.send``, which the peer connection calls once the answer is set): that is when
    the map learns the negotiated ids. The map is a private attribute of aiortc's sender: the one place it is
    read, for new packets and retransmissions alike. The map it returns changes the delay (`set_delay`)."""
    register()
    mapping = ExtensionsMap(delay)
    sender._RTCRtpSender__rtp_header_extensions_map = mapping  # type: ignore[attr-defined]
    return mapping
