"""The protocol description is enough: a codec built from it alone agrees with cloudseat.seat_protocol.

The browser's codec (thin_client/kiosk/static/protocol.js) is built from `protocol_description()` and nothing else;
here a small Python reader and writer built the same way (from the JSON, no module constants) must agree with the
module on every stamp and every input message. The browser tests run the JavaScript itself against the module.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from typing import Any

import numpy as np
from cloudseat import seat_protocol as sp
from hypothesis import given, settings
from hypothesis import strategies as st

DESCRIPTION: dict[str, Any] = json.loads(json.dumps(sp.protocol_description()))  # exactly what the page gets

I16 = st.integers(-32768, 32767)
U16 = st.integers(0, 0xFFFF)
U32 = st.integers(0, 2**32 - 1)
U64 = st.integers(0, 2**64 - 1)
messages = st.one_of(
    st.builds(sp.KeyInput, U32, U64, U16, st.booleans(), st.booleans()),
    st.builds(sp.MouseMove, U32, U64, I16, I16),
    st.builds(sp.MouseAbs, U32, U64, U16, U16),
    st.builds(sp.MouseButton, U32, U64, st.integers(0, sp.MAX_MOUSE_BUTTON), st.booleans()),
    st.builds(sp.Wheel, U32, U64, I16, I16),
    st.builds(
        sp.Gamepad,
        U32,
        U64,
        st.integers(0, sp.MAX_GAMEPADS - 1),
        U32,
        st.tuples(I16, I16, I16, I16, st.integers(0, 32767), st.integers(0, 32767)),
    ),
)


# -- a codec from the description alone -------------------------------------------------------------------------


def _fields(msg: sp.InputMessage, kind: str) -> dict[str, int]:
    """The message's values under the description's field names (what the page has from its DOM events)."""
    if isinstance(msg, sp.KeyInput):
        flags = DESCRIPTION["input"]["key_flags"]
        return {
            "key": msg.key,
            "flags": (flags["down"] if msg.down else 0) | (flags["repeat"] if msg.repeat else 0),
        }
    if isinstance(msg, sp.MouseButton):
        return {"button": msg.button, "down": int(msg.down)}
    if isinstance(msg, sp.Gamepad):
        names = DESCRIPTION["input"]["kinds"][kind]["fields"]
        return dict(zip(names, (msg.pad, msg.buttons, *msg.axes), strict=True))
    return {name: getattr(msg, name) for name in DESCRIPTION["input"]["kinds"][kind]["fields"]}


def encode_from_description(
    kind: str, input_id: int, sent_us: int, fields: dict[str, int]
) -> tuple[str, bytes]:
    d = DESCRIPTION["input"]
    spec = d["kinds"][kind]
    header = dict(version=d["version"], kind=spec["code"], input_id=input_id, sent_us=sent_us)
    data = struct.pack(d["header"]["format"], *(header[n] for n in d["header"]["fields"]))
    data += struct.pack(spec["format"], *(fields[n] for n in spec["fields"]))
    assert len(data) <= d["max_bytes"]
    return spec["channel"], data


def _kind_of(msg: sp.InputMessage) -> str:
    return {
        sp.KeyInput: "KEY",
        sp.MouseMove: "MOUSE_MOVE",
        sp.MouseAbs: "MOUSE_ABS",
        sp.MouseButton: "MOUSE_BUTTON",
        sp.Wheel: "WHEEL",
        sp.Gamepad: "GAMEPAD",
    }[type(msg)]


def read_stamp_from_description(rgb: np.ndarray) -> tuple[int, ...] | None:
    s = DESCRIPTION["stamp"]
    cell, inset = s["cell"], s["sample_inset"]
    channel = {"red": 0, "green": 1, "blue": 2}[s["channel"]]
    bits = []
    for row in range(s["rows"]):
        for col in range(s["columns"]):
            y0, x0 = row * cell + inset, col * cell + inset
            block = rgb[y0 : y0 + cell - 2 * inset, x0 : x0 + cell - 2 * inset, channel]
            bits.append(int(block.mean() >= s["threshold"]))
    data = np.packbits(np.array(bits, dtype=np.uint8)).tobytes()
    assert len(data) == s["bytes"]
    crc = s["crc"]
    covered = data[crc["covers"][0] : crc["covers"][1]]
    if zlib.crc32(covered, crc["seed"]) != int.from_bytes(
        data[crc["offset"] : crc["offset"] + crc["bytes"]], "big"
    ):
        return None
    return tuple(int.from_bytes(data[f["offset"] : f["offset"] + f["bytes"]], "big") for f in s["fields"])


# -- tests ------------------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(messages)
def test_input_written_from_the_description_is_what_the_agent_reads(msg: sp.InputMessage) -> None:
    kind = _kind_of(msg)
    channel, data = encode_from_description(kind, msg.input_id, msg.sent_us, _fields(msg, kind))
    assert data == sp.encode_input(msg)
    assert sp.decode_input(data) == msg
    assert channel == sp.channel_for(msg)


@settings(max_examples=40, deadline=None)
@given(st.builds(sp.Stamp, U32, U64, U32), st.integers(0, 2**32 - 1))
def test_stamps_read_from_the_description_are_what_the_agent_wrote(stamp: sp.Stamp, seed: int) -> None:
    frame = np.random.default_rng(seed).integers(0, 256, (40, 330, 3), dtype=np.uint8)
    sp.write_stamp(frame, stamp)
    assert read_stamp_from_description(frame) == (stamp.frame_number, stamp.capture_us, stamp.last_input_id)
    frame[:8, :8] = 255 - frame[:8, :8]  # one cell flipped: the CRC refuses it
    assert read_stamp_from_description(frame) is None


def test_the_description_matches_the_module() -> None:
    s, i = DESCRIPTION["stamp"], DESCRIPTION["input"]
    assert (s["width"], s["height"], s["cell"]) == (sp.STAMP_WIDTH, sp.STAMP_HEIGHT, sp.STAMP_CELL)
    assert s["columns"] * s["rows"] == s["bytes"] * 8
    assert s["crc"]["seed"] == zlib.crc32(b"cloudseat-stamp/1")
    # The polynomial is zlib's: a table-driven CRC over it (as the page computes it) gives zlib's answer.
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (s["crc"]["polynomial"] ^ (c >> 1)) if c & 1 else c >> 1
        table.append(c)
    c = s["crc"]["seed"] ^ 0xFFFFFFFF
    for byte in b"123456789":
        c = table[(c ^ byte) & 0xFF] ^ (c >> 8)
    assert c ^ 0xFFFFFFFF == zlib.crc32(b"123456789", s["crc"]["seed"])

    assert i["version"] == sp.INPUT_VERSION and i["max_bytes"] == sp.MAX_INPUT_BYTES
    assert set(i["kinds"]) == {k.name for k in sp.InputKind}
    for spec in [i["header"], *i["kinds"].values()]:
        codes = re.findall(r"(\d*)([bBhHiIqQ])", spec["format"])
        assert sum(int(n or 1) for n, _ in codes) == len(spec["fields"])
        assert struct.calcsize(spec["format"]) == spec["bytes"]
    assert set(i["channels"]) == {sp.MOTION_CHANNEL, sp.RELIABLE_CHANNEL}
    assert i["channels"][sp.MOTION_CHANNEL] == {"ordered": False, "max_retransmits": 0}
    assert i["mouse_buttons"][:3] == ["left", "right", "middle"]


def test_key_codes_are_usb_hid_usages_under_w3c_names() -> None:
    codes = sp.KEY_CODES
    assert len(set(codes.values())) == len(codes)  # one usage per name
    assert all(0 < v <= 0xFFFF for v in codes.values())
    assert [codes[f"Key{c}"] for c in "AZ"] == [0x04, 0x1D]
    assert [codes[f"Digit{d}"] for d in "190"] == [0x1E, 0x26, 0x27]
    assert [codes[f"F{n}"] for n in (1, 12)] == [0x3A, 0x45]
    assert {k: codes[k] for k in ("Enter", "Escape", "Backspace", "Tab", "Space")} == {
        "Enter": 0x28, "Escape": 0x29, "Backspace": 0x2A, "Tab": 0x2B, "Space": 0x2C,
    }  # fmt: skip
    assert [codes[k] for k in ("ShiftLeft", "MetaRight", "Minus", "Slash")] == [0xE1, 0xE7, 0x2D, 0x38]
    assert [codes[k] for k in ("Home", "PageDown", "Delete")] == [0x4A, 0x4E, 0x4C]
    assert DESCRIPTION["key_codes"] == codes

    from gpu_agent.workloads import demo

    # The demo game moves on these keys: the names a seat sends must reach it.
    assert (codes["ArrowRight"], codes["ArrowLeft"], codes["ArrowDown"], codes["ArrowUp"]) == (
        demo.KEY_RIGHT, demo.KEY_LEFT, demo.KEY_DOWN, demo.KEY_UP,
    )  # fmt: skip
    assert (codes["KeyW"], codes["KeyA"], codes["KeyS"], codes["KeyD"]) == (
        demo.KEY_W, demo.KEY_A, demo.KEY_S, demo.KEY_D,
    )  # fmt: skip


def test_narrowed_ranges_are_the_ones_the_agent_enforces() -> None:
    """Each range the description gives is exactly what decode_input accepts for that field."""
    for kind, spec in DESCRIPTION["input"]["kinds"].items():
        fields = {name: 0 for name in spec["fields"]}
        for name, (low, high) in spec["ranges"].items():
            for value, ok in ((low, True), (high, True), (low - 1, False), (high + 1, False)):
                try:
                    _, data = encode_from_description(kind, 1, 0, {**fields, name: value})
                except struct.error:
                    assert not ok  # outside the struct type itself
                    continue
                try:
                    sp.decode_input(data)
                except sp.InputError:
                    assert not ok, (kind, name, value)
                else:
                    assert ok, (kind, name, value)
