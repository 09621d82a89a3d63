"""What the GPU agent and the seat's thin client agree on, byte for byte: the frame stamp and the input messages.

Pure: imports numpy and the standard library only (no asyncio, aiortc, av, grpc), so both programs and the tests
can use it anywhere, and a test keeps it so.

Frame stamp
===========

Every frame the agent sends carries, in its top-left corner, a block of black and white cells that a receiver reads
back after decoding, so latency is measurable without a camera:

========================  ======  ===============================================================
field                     bytes   meaning
========================  ======  ===============================================================
frame_number              4       uint32, counts frames of one source from 0 (wraps at 2**32)
capture_us                8       uint64, the agent's monotonic clock (CLOCK_MONOTONIC) in µs at capture
last_input_id             4       uint32, the highest input id the source had applied before rendering (0: none)
crc                       4       CRC-32 (zlib) of the 16 bytes above, seeded with CRC-32 of ``b"cloudseat-stamp/1"``
========================  ======  ===============================================================

All fields big-endian: 20 bytes = 160 bits, most significant bit of the first byte first. The bits fill a grid of
``STAMP_ROWS`` x ``STAMP_COLUMNS`` = 4 x 40 cells, row by row, each cell ``STAMP_CELL`` = 8 x 8 pixels: bit 1 is
white (255, 255, 255), bit 0 black. The stamp covers the 320 x 32 pixels at the frame's top-left corner, whatever
the frame size; cells sit on the 8-pixel grid that H.264 and VP8 transform on, and black/white at full contrast
survives lossy coding at streaming bitrates (a test encodes 720p with libx264 and VP8 and reads it back).

A reader averages the central 4 x 4 pixels of each cell (green channel of RGB, or luma) and thresholds at 128, which
also works on limited-range luma (16..235). The seeded CRC makes a misread, a frame without a stamp, or a stamp of
another format read as ``None`` rather than as wrong numbers (a random pattern passes with probability 2**-32).
The capture time is comparable with a receiver's clock only when both run on one machine (tests, benchmarks).

Input messages
==============

The seat sends input over two WebRTC data channels (labels below): pointer motion on ``MOTION_CHANNEL`` (unordered,
no retransmission: a late motion is worthless), everything else on ``RELIABLE_CHANNEL`` (ordered, reliable). Each
message is one binary data-channel message: a 14-byte header and a body whose size the kind fixes.

Header (big-endian, ``!BBIQ``)::

    version   uint8    INPUT_VERSION (1); other versions are refused
    kind      uint8    one of InputKind
    input_id  uint32   chosen by the seat, increasing; the agent stamps the highest id it has applied
    sent_us   uint64   the seat's monotonic clock in µs when sent (meaningful to the seat only)

Bodies (big-endian):

=====  ============  ===========  ==============================================================================
kind   name          struct       fields
=====  ============  ===========  ==============================================================================
1      KEY           ``!HB``      key: uint16 USB HID usage id (keyboard page 0x07); flags: bit 0 down, bit 1 repeat
2      MOUSE_MOVE    ``!hh``      dx, dy: int16 relative motion in the seat's pixels
3      MOUSE_ABS     ``!HH``      x, y: uint16 absolute position, 0..65535 spanning the frame's width and height
4      MOUSE_BUTTON  ``!BB``      button: 0 left, 1 right, 2 middle, 3 back, 4 forward (<= 7); down: 0 or 1
5      WHEEL         ``!hh``      dx, dy: int16, 120 per wheel notch, positive dy scrolls up
6      GAMEPAD       ``!BI6h``    pad: 0..15; buttons: uint32 bitmask (W3C standard gamepad button order);
                                  axes: left x, left y, right x, right y (-32768..32767), left and right trigger
                                  (0..32767)
=====  ============  ===========  ==============================================================================

A message is at most 64 bytes (``MAX_INPUT_BYTES``; the largest today is 31). :func:`decode_input` refuses anything
else with an :class:`InputError` (a ``ValueError``)::

    InputError                  the root: the message is refused
    ├── OversizedInput          longer than MAX_INPUT_BYTES (checked before anything else is read)
    ├── UnsupportedInputVersion a version this side does not speak
    ├── UnknownInputKind        a kind not in the table
    └── MalformedInput          text instead of bytes, wrong length for its kind, a field out of range

Keys travel as USB HID usages; ``KEY_CODES`` maps W3C ``KeyboardEvent.code`` names ("KeyA", "ArrowLeft",
"ShiftLeft", ...) to them, so every seat client names keys the same way (the browser reads the code from its key
events, the Python client maps its toolkit's key names to these codes).

For clients that cannot import this module
==========================================

The browser client runs JavaScript, so :func:`protocol_description` states everything above as JSON-able data: stamp
geometry, sampling and threshold, the field layout, the CRC and its seed value, the input header and each kind's
struct format, size, field names, narrower field ranges and channel, the channels' reliability, the limits and
``KEY_CODES``. The kiosk
serves it, and the page's codec is built from it alone (no constant copied into JavaScript); tests run that codec
against this module in both directions.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass
from typing import Final

import numpy as np

# -- frame stamp ------------------------------------------------------------------------------------------------

STAMP_CELL: Final = 8
STAMP_COLUMNS: Final = 40
STAMP_ROWS: Final = 4
STAMP_WIDTH: Final = STAMP_CELL * STAMP_COLUMNS  # 320 px
STAMP_HEIGHT: Final = STAMP_CELL * STAMP_ROWS  # 32 px
STAMP_SAMPLE_INSET: Final = STAMP_CELL // 4  # a reader averages each cell's central 4 x 4 pixels
STAMP_THRESHOLD: Final = 128  # mean at or above: bit 1 (white)

_STAMP_FIELDS: Final = struct.Struct("!IQI")
_STAMP_FIELD_NAMES: Final = ("frame_number", "capture_us", "last_input_id")
_STAMP_CRC: Final = struct.Struct("!I")
_STAMP_SEED: Final = zlib.crc32(b"cloudseat-stamp/1")
_STAMP_BITS: Final = (_STAMP_FIELDS.size + _STAMP_CRC.size) * 8
assert _STAMP_BITS == STAMP_COLUMNS * STAMP_ROWS

_U32: Final = 2**32
_U64: Final = 2**64


@dataclass(frozen=True, slots=True)
class Stamp:
    """What a frame carries: its number, its capture time and the last input applied before it was rendered."""

    frame_number: int
    capture_us: int
    last_input_id: int

    def __post_init__(self) -> None:
        if not 0 <= self.frame_number < _U32:
            raise ValueError(f"frame_number {self.frame_number} is not a uint32")
        if not 0 <= self.capture_us < _U64:
            raise ValueError(f"capture_us {self.capture_us} is not a uint64")
        if not 0 <= self.last_input_id < _U32:
            raise ValueError(f"last_input_id {self.last_input_id} is not a uint32")


def stamp_bytes(stamp: Stamp) -> bytes:
    """The 20 bytes a stamp's cells carry: the fields and their seeded CRC."""
    fields = _STAMP_FIELDS.pack(stamp.frame_number, stamp.capture_us, stamp.last_input_id)
    return fields + _STAMP_CRC.pack(zlib.crc32(fields, _STAMP_SEED))


def parse_stamp_bytes(data: bytes) -> Stamp | None:
    """The stamp in 20 bytes, or None when the CRC does not match."""
    if len(data) != _STAMP_FIELDS.size + _STAMP_CRC.size:
        return None
    fields, (crc,) = data[: _STAMP_FIELDS.size], _STAMP_CRC.unpack(data[_STAMP_FIELDS.size :])
    if zlib.crc32(fields, _STAMP_SEED) != crc:
        return None
    return Stamp(*_STAMP_FIELDS.unpack(fields))


def _check_frame(frame: np.ndarray) -> None:
    if frame.dtype != np.uint8 or frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] < 1):
        raise ValueError(f"a stamp needs a uint8 (H, W) or (H, W, C) frame, not {frame.dtype} {frame.shape}")
    if frame.shape[0] < STAMP_HEIGHT or frame.shape[1] < STAMP_WIDTH:
        raise ValueError(
            f"frame {frame.shape[1]}x{frame.shape[0]} is smaller than a stamp ({STAMP_WIDTH}x{STAMP_HEIGHT})"
        )


def write_stamp(frame: np.ndarray, stamp: Stamp) -> None:
    """Paint ``stamp`` into the top-left ``STAMP_WIDTH`` x ``STAMP_HEIGHT`` pixels of ``frame``, in place.

    ``frame`` is RGB (H, W, 3) or a single plane (H, W) such as luma, dtype uint8.
    """
    _check_frame(frame)
    bits = np.unpackbits(np.frombuffer(stamp_bytes(stamp), dtype=np.uint8)).reshape(STAMP_ROWS, STAMP_COLUMNS)
    cells = np.repeat(np.repeat(bits * np.uint8(255), STAMP_CELL, axis=0), STAMP_CELL, axis=1)
    region = frame[:STAMP_HEIGHT, :STAMP_WIDTH]
    if frame.ndim == 3:
        region[...] = cells[:, :, np.newaxis]
    else:
        region[...] = cells


def read_stamp(frame: np.ndarray) -> Stamp | None:
    """The stamp in ``frame`` (RGB (H, W, 3) or luma (H, W), uint8), or None when it cannot be read reliably.

    Raises ValueError only for a frame that cannot hold a stamp at all (wrong dtype or shape, too small).
    """
    _check_frame(frame)
    region = frame[:STAMP_HEIGHT, :STAMP_WIDTH]
    if region.ndim == 3:
        region = region[:, :, 1 if region.shape[2] >= 3 else 0]
    cells = region.reshape(STAMP_ROWS, STAMP_CELL, STAMP_COLUMNS, STAMP_CELL)
    inset = STAMP_SAMPLE_INSET
    inner = cells[:, inset : STAMP_CELL - inset, :, inset : STAMP_CELL - inset]
    means = inner.mean(axis=(1, 3), dtype=np.float32)
    bits = (means >= STAMP_THRESHOLD).astype(np.uint8).reshape(-1)
    return parse_stamp_bytes(np.packbits(bits).tobytes())


# -- input messages ---------------------------------------------------------------------------------------------

INPUT_VERSION: Final = 1
MAX_INPUT_BYTES: Final = 64
MOTION_CHANNEL: Final = "input-motion"
RELIABLE_CHANNEL: Final = "input"

_HEADER: Final = struct.Struct("!BBIQ")

KEY_DOWN: Final = 0x01
KEY_REPEAT: Final = 0x02
MAX_MOUSE_BUTTON: Final = 7
MAX_GAMEPADS: Final = 16
GAMEPAD_AXES: Final = 6


class InputError(ValueError):
    """An input message was refused."""


class OversizedInput(InputError):
    """The input message is longer than MAX_INPUT_BYTES."""


class UnsupportedInputVersion(InputError):
    """The input message is of a version this side does not speak."""


class UnknownInputKind(InputError):
    """The input message's kind is not one this version defines."""


class MalformedInput(InputError):
    """The input message does not match its kind's format."""


class InputKind(enum.IntEnum):
    KEY = 1
    MOUSE_MOVE = 2
    MOUSE_ABS = 3
    MOUSE_BUTTON = 4
    WHEEL = 5
    GAMEPAD = 6


_BODIES: Final[dict[InputKind, struct.Struct]] = {
    InputKind.KEY: struct.Struct("!HB"),
    InputKind.MOUSE_MOVE: struct.Struct("!hh"),
    InputKind.MOUSE_ABS: struct.Struct("!HH"),
    InputKind.MOUSE_BUTTON: struct.Struct("!BB"),
    InputKind.WHEEL: struct.Struct("!hh"),
    InputKind.GAMEPAD: struct.Struct("!BI6h"),
}


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise MalformedInput(f"{name} {value} is outside {low}..{high}")


@dataclass(frozen=True, slots=True)
class _Input:
    input_id: int
    sent_us: int

    def _check_header(self) -> None:
        _check_range("input_id", self.input_id, 0, _U32 - 1)
        _check_range("sent_us", self.sent_us, 0, _U64 - 1)


@dataclass(frozen=True, slots=True)
class KeyInput(_Input):
    key: int
    down: bool
    repeat: bool = False

    def __post_init__(self) -> None:
        self._check_header()
        _check_range("key", self.key, 0, 0xFFFF)


@dataclass(frozen=True, slots=True)
class MouseMove(_Input):
    dx: int
    dy: int

    def __post_init__(self) -> None:
        self._check_header()
        _check_range("dx", self.dx, -32768, 32767)
        _check_range("dy", self.dy, -32768, 32767)


@dataclass(frozen=True, slots=True)
class MouseAbs(_Input):
    x: int
    y: int

    def __post_init__(self) -> None:
        self._check_header()
        _check_range("x", self.x, 0, 0xFFFF)
        _check_range("y", self.y, 0, 0xFFFF)


@dataclass(frozen=True, slots=True)
class MouseButton(_Input):
    button: int
    down: bool

    def __post_init__(self) -> None:
        self._check_header()
        _check_range("button", self.button, 0, MAX_MOUSE_BUTTON)


@dataclass(frozen=True, slots=True)
class Wheel(_Input):
    dx: int
    dy: int

    def __post_init__(self) -> None:
        self._check_header()
        _check_range("dx", self.dx, -32768, 32767)
        _check_range("dy", self.dy, -32768, 32767)


@dataclass(frozen=True, slots=True)
class Gamepad(_Input):
    pad: int
    buttons: int
    axes: tuple[int, int, int, int, int, int]

    def __post_init__(self) -> None:
        self._check_header()
        _check_range("pad", self.pad, 0, MAX_GAMEPADS - 1)
        _check_range("buttons", self.buttons, 0, _U32 - 1)
        if len(self.axes) != GAMEPAD_AXES:
            raise MalformedInput(f"a gamepad has {GAMEPAD_AXES} axes, not {len(self.axes)}")
        for i, axis in enumerate(self.axes):
            _check_range(f"axis {i}", axis, 0 if i >= 4 else -32768, 32767)


InputMessage = KeyInput | MouseMove | MouseAbs | MouseButton | Wheel | Gamepad


def encode_input(msg: InputMessage) -> bytes:
    """The wire form of ``msg`` (see the module docstring)."""
    body: tuple[int, ...]
    if isinstance(msg, KeyInput):
        kind, body = (
            InputKind.KEY,
            (msg.key, (KEY_DOWN if msg.down else 0) | (KEY_REPEAT if msg.repeat else 0)),
        )
    elif isinstance(msg, MouseMove):
        kind, body = InputKind.MOUSE_MOVE, (msg.dx, msg.dy)
    elif isinstance(msg, MouseAbs):
        kind, body = InputKind.MOUSE_ABS, (msg.x, msg.y)
    elif isinstance(msg, MouseButton):
        kind, body = InputKind.MOUSE_BUTTON, (msg.button, int(msg.down))
    elif isinstance(msg, Wheel):
        kind, body = InputKind.WHEEL, (msg.dx, msg.dy)
    elif isinstance(msg, Gamepad):
        kind, body = InputKind.GAMEPAD, (msg.pad, msg.buttons, *msg.axes)
    else:
        raise TypeError(f"not an input message: {type(msg).__name__}")
    return _HEADER.pack(INPUT_VERSION, kind, msg.input_id, msg.sent_us) + _BODIES[kind].pack(*body)


def decode_input(data: bytes | bytearray | memoryview | str) -> InputMessage:
    """The message in ``data``; raises an :class:`InputError` subclass for anything that is not exactly one."""
    if isinstance(data, str):
        raise MalformedInput("input messages are binary, not text")
    if len(data) > MAX_INPUT_BYTES:
        raise OversizedInput(f"{len(data)} bytes is more than {MAX_INPUT_BYTES}")
    if len(data) < _HEADER.size:
        raise MalformedInput(f"{len(data)} bytes is shorter than the {_HEADER.size}-byte header")
    version, kind_code, input_id, sent_us = _HEADER.unpack_from(data)
    if version != INPUT_VERSION:
        raise UnsupportedInputVersion(f"input version {version}; this side speaks {INPUT_VERSION}")
    try:
        kind = InputKind(kind_code)
    except ValueError:
        raise UnknownInputKind(f"input kind {kind_code} is unknown") from None
    body = _BODIES[kind]
    if len(data) != _HEADER.size + body.size:
        raise MalformedInput(f"a {kind.name} message is {_HEADER.size + body.size} bytes, not {len(data)}")
    fields = body.unpack_from(data, _HEADER.size)
    if kind is InputKind.KEY:
        key, flags = fields
        if flags & ~(KEY_DOWN | KEY_REPEAT):
            raise MalformedInput(f"key flags {flags:#04x} set reserved bits")
        return KeyInput(input_id, sent_us, key, bool(flags & KEY_DOWN), bool(flags & KEY_REPEAT))
    if kind is InputKind.MOUSE_MOVE:
        return MouseMove(input_id, sent_us, *fields)
    if kind is InputKind.MOUSE_ABS:
        return MouseAbs(input_id, sent_us, *fields)
    if kind is InputKind.MOUSE_BUTTON:
        button, down = fields
        if down not in (0, 1):
            raise MalformedInput(f"button state {down} is neither 0 nor 1")
        return MouseButton(input_id, sent_us, button, bool(down))
    if kind is InputKind.WHEEL:
        return Wheel(input_id, sent_us, *fields)
    pad, buttons, *axes = fields
    return Gamepad(input_id, sent_us, pad, buttons, (axes[0], axes[1], axes[2], axes[3], axes[4], axes[5]))


def channel_for(msg: InputMessage) -> str:
    """The data channel label ``msg`` travels on: pointer motion unreliable, the rest reliable."""
    return MOTION_CHANNEL if isinstance(msg, MouseMove | MouseAbs) else RELIABLE_CHANNEL


# -- key names --------------------------------------------------------------------------------------------------


def _key_codes() -> dict[str, int]:
    """W3C UI Events ``KeyboardEvent.code`` -> USB HID usage id (HID Usage Tables, keyboard/keypad page 0x07)."""
    codes: dict[str, int] = {}
    for i in range(26):
        codes[f"Key{chr(ord('A') + i)}"] = 0x04 + i
    for i in range(1, 10):
        codes[f"Digit{i}"] = 0x1E + i - 1
    codes["Digit0"] = 0x27
    codes.update(
        Enter=0x28, Escape=0x29, Backspace=0x2A, Tab=0x2B, Space=0x2C,
        Minus=0x2D, Equal=0x2E, BracketLeft=0x2F, BracketRight=0x30, Backslash=0x31, IntlHash=0x32,
        Semicolon=0x33, Quote=0x34, Backquote=0x35, Comma=0x36, Period=0x37, Slash=0x38, CapsLock=0x39,
    )  # fmt: skip
    for i in range(1, 13):
        codes[f"F{i}"] = 0x3A + i - 1
    codes.update(
        PrintScreen=0x46, ScrollLock=0x47, Pause=0x48, Insert=0x49, Home=0x4A, PageUp=0x4B, Delete=0x4C,
        End=0x4D, PageDown=0x4E, ArrowRight=0x4F, ArrowLeft=0x50, ArrowDown=0x51, ArrowUp=0x52,
        NumLock=0x53, NumpadDivide=0x54, NumpadMultiply=0x55, NumpadSubtract=0x56, NumpadAdd=0x57,
        NumpadEnter=0x58,
    )  # fmt: skip
    for i in range(1, 10):
        codes[f"Numpad{i}"] = 0x59 + i - 1
    codes.update(
        Numpad0=0x62, NumpadDecimal=0x63, IntlBackslash=0x64, ContextMenu=0x65, NumpadEqual=0x67,
        F13=0x68, F14=0x69, F15=0x6A, F16=0x6B, F17=0x6C, F18=0x6D, F19=0x6E, F20=0x6F,
        F21=0x70, F22=0x71, F23=0x72, F24=0x73,
        IntlRo=0x87, KanaMode=0x88, IntlYen=0x89, Convert=0x8A, NonConvert=0x8B, Lang1=0x90, Lang2=0x91,
        ControlLeft=0xE0, ShiftLeft=0xE1, AltLeft=0xE2, MetaLeft=0xE3,
        ControlRight=0xE4, ShiftRight=0xE5, AltRight=0xE6, MetaRight=0xE7,
    )  # fmt: skip
    return codes


KEY_CODES: Final[dict[str, int]] = _key_codes()


# -- the description for clients in other languages ----------------------------------------------------------------

# Each struct field's name, in format order; together with _HEADER and _BODIES this is the whole wire format.
_HEADER_FIELDS: Final = ("version", "kind", "input_id", "sent_us")
_BODY_FIELDS: Final[dict[InputKind, tuple[str, ...]]] = {
    InputKind.KEY: ("key", "flags"),
    InputKind.MOUSE_MOVE: ("dx", "dy"),
    InputKind.MOUSE_ABS: ("x", "y"),
    InputKind.MOUSE_BUTTON: ("button", "down"),
    InputKind.WHEEL: ("dx", "dy"),
    InputKind.GAMEPAD: ("pad", "buttons",
                        "left_x", "left_y", "right_x", "right_y", "left_trigger", "right_trigger"),
}  # fmt: skip
# Fields whose valid values are narrower than their struct type (the checks in the message classes above).
_FIELD_RANGES: Final[dict[InputKind, dict[str, tuple[int, int]]]] = {
    InputKind.KEY: {"flags": (0, KEY_DOWN | KEY_REPEAT)},
    InputKind.MOUSE_BUTTON: {"button": (0, MAX_MOUSE_BUTTON), "down": (0, 1)},
    InputKind.GAMEPAD: {
        "pad": (0, MAX_GAMEPADS - 1),
        "left_trigger": (0, 32767),
        "right_trigger": (0, 32767),
    },
}
# The kinds on the unordered, unreliable channel (what `channel_for` decides for messages).
_MOTION_KINDS: Final = frozenset({InputKind.MOUSE_MOVE, InputKind.MOUSE_ABS})
MOUSE_BUTTONS: Final = ("left", "right", "middle", "back", "forward")  # index = the button number on the wire
WHEEL_NOTCH: Final = 120  # wheel units per notch
_CRC32_POLYNOMIAL: Final = 0xEDB88320  # zlib's CRC-32, in its reflected (LSB-first) form


def protocol_description() -> dict[str, object]:
    """Everything a seat client needs to read stamps and write input, as JSON-able data (see the module docstring).

    Built from the constants and struct formats above, so it cannot drift from what this module does."""
    fields: list[dict[str, object]] = []
    offset = 0
    for name, code in zip(_STAMP_FIELD_NAMES, _STAMP_FIELDS.format[1:], strict=True):
        size = struct.calcsize("!" + code)
        fields.append({"name": name, "offset": offset, "bytes": size, "type": f"uint{size * 8}"})
        offset += size
    stamp = {
        "cell": STAMP_CELL,
        "columns": STAMP_COLUMNS,
        "rows": STAMP_ROWS,
        "width": STAMP_WIDTH,
        "height": STAMP_HEIGHT,
        "origin": "top-left",
        "sample_inset": STAMP_SAMPLE_INSET,  # average the pixels [inset, cell - inset) of each cell, both axes
        "channel": "green",  # of RGB; luma works too
        "threshold": STAMP_THRESHOLD,  # mean >= threshold: bit 1
        "bit_order": "most significant bit of the first byte first, cells row by row",
        "byte_order": "big",
        "bytes": _STAMP_FIELDS.size + _STAMP_CRC.size,
        "fields": fields,
        "crc": {
            "offset": _STAMP_FIELDS.size,
            "bytes": _STAMP_CRC.size,
            "covers": [0, _STAMP_FIELDS.size],
            "algorithm": "CRC-32 as zlib.crc32(data, seed): reflected, init ~seed, final xor 0xFFFFFFFF",
            "polynomial": _CRC32_POLYNOMIAL,
            "seed": _STAMP_SEED,
        },
        "clock": "capture_us is the agent's CLOCK_MONOTONIC in microseconds",
    }
    kinds = {
        kind.name: {
            "code": int(kind),
            "format": _BODIES[kind].format,
            "bytes": _BODIES[kind].size,
            "fields": list(_BODY_FIELDS[kind]),
            # [low, high] for fields narrower than their struct type; the others may take the type's whole range
            "ranges": {name: list(r) for name, r in _FIELD_RANGES.get(kind, {}).items()},
            "channel": MOTION_CHANNEL if kind in _MOTION_KINDS else RELIABLE_CHANNEL,
        }
        for kind in InputKind
    }
    return {
        "stamp": stamp,
        "input": {
            "version": INPUT_VERSION,
            "max_bytes": MAX_INPUT_BYTES,
            "header": {"format": _HEADER.format, "bytes": _HEADER.size, "fields": list(_HEADER_FIELDS)},
            "kinds": kinds,
            "channels": {
                MOTION_CHANNEL: {"ordered": False, "max_retransmits": 0},
                RELIABLE_CHANNEL: {"ordered": True},
            },
            "key_flags": {"down": KEY_DOWN, "repeat": KEY_REPEAT},
            "mouse_buttons": list(MOUSE_BUTTONS),
            "max_mouse_button": MAX_MOUSE_BUTTON,
            "max_gamepads": MAX_GAMEPADS,
            "wheel_notch": WHEEL_NOTCH,
            "struct_codes": "Python struct: ! big-endian; B/b 8-bit, H/h 16, I/i 32, Q/q 64 (upper: unsigned); "
            "a count repeats the next code",
        },
        "key_codes": dict(KEY_CODES),
    }
