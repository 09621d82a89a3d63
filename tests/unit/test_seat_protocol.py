"""The seat protocol: stamps survive lossy coding and refuse misreads; input messages round-trip or are refused."""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from cloudseat import seat_protocol as sp
from hypothesis import given, settings
from hypothesis import strategies as st

U32 = st.integers(0, 2**32 - 1)
U64 = st.integers(0, 2**64 - 1)
I16 = st.integers(-32768, 32767)
U16 = st.integers(0, 0xFFFF)
stamps = st.builds(sp.Stamp, U32, U64, U32)


def test_the_module_stays_pure() -> None:
    code = textwrap.dedent(
        """
        import sys
        import cloudseat.seat_protocol
        heavy = {"asyncio", "aiortc", "av", "grpc", "structlog"} & {m.split(".")[0] for m in sys.modules}
        print(",".join(sorted(heavy)))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""


# -- frame stamps -----------------------------------------------------------------------------------------------


@settings(max_examples=60)
@given(stamp=stamps, seed=st.integers(0, 2**32 - 1), extra=st.tuples(st.integers(0, 40), st.integers(0, 40)))
def test_a_stamp_reads_back_from_any_background(stamp: sp.Stamp, seed: int, extra: tuple[int, int]) -> None:
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (sp.STAMP_HEIGHT + extra[0], sp.STAMP_WIDTH + extra[1], 3), dtype=np.uint8)
    sp.write_stamp(frame, stamp)
    assert sp.read_stamp(frame) == stamp
    assert sp.read_stamp(np.ascontiguousarray(frame[:, :, 1])) == stamp  # a luma-like single plane


@given(stamps)
def test_stamp_bytes_round_trip(stamp: sp.Stamp) -> None:
    data = sp.stamp_bytes(stamp)
    assert len(data) == 20
    assert sp.parse_stamp_bytes(data) == stamp


@settings(max_examples=40)
@given(stamp=stamps, row=st.integers(0, sp.STAMP_ROWS - 1), column=st.integers(0, sp.STAMP_COLUMNS - 1))
def test_a_flipped_cell_reads_as_none(stamp: sp.Stamp, row: int, column: int) -> None:
    frame = np.zeros((sp.STAMP_HEIGHT, sp.STAMP_WIDTH, 3), dtype=np.uint8)
    sp.write_stamp(frame, stamp)
    cell = frame[row * 8 : row * 8 + 8, column * 8 : column * 8 + 8]
    cell[...] = 255 - cell
    assert sp.read_stamp(frame) is None


@pytest.mark.parametrize(
    "fill",
    [
        lambda shape: np.zeros(shape, np.uint8),
        lambda shape: np.full(shape, 255, np.uint8),
        lambda shape: np.random.default_rng(7).integers(0, 256, shape, dtype=np.uint8),
    ],
    ids=["black", "white", "noise"],
)
def test_a_frame_without_a_stamp_reads_as_none(fill: object) -> None:
    frame = fill((720, 1280, 3))  # type: ignore[operator]
    assert sp.read_stamp(frame) is None


def test_a_shifted_stamp_reads_as_none() -> None:
    frame = np.zeros((64, 400, 3), dtype=np.uint8)
    sp.write_stamp(frame, sp.Stamp(1234, 5678, 9))
    shifted = np.zeros_like(frame)
    shifted[:, 8:] = frame[:, :-8]
    assert sp.read_stamp(shifted) is None


def test_stamp_refuses_frames_it_cannot_hold() -> None:
    with pytest.raises(ValueError):
        sp.write_stamp(np.zeros((31, 320, 3), np.uint8), sp.Stamp(0, 0, 0))
    with pytest.raises(ValueError):
        sp.read_stamp(np.zeros((32, 320, 3), np.float32))
    with pytest.raises(ValueError):
        sp.Stamp(2**32, 0, 0)


@pytest.mark.parametrize("codec", ["h264", "vp8"])
@pytest.mark.parametrize(
    ("width", "height", "layout"), [(1280, 720, "rgb24"), (1280, 720, "yuv420p"), (1920, 1080, "yuv420p")]
)
def test_a_stamp_survives_lossy_encoding(codec: str, width: int, height: int, layout: str) -> None:
    """Noise is the worst background for the encoder; 10 Mbit/s is a 720p60 tier's rate (1080p gets the same:
    fewer bits per pixel than its tier would). The stamp is read back from RGB, as a generic reader would."""
    import av

    from gpu_agent.media.encoder import VideoEncoder
    from gpu_agent.workloads.base import stamp_picture

    encoder = VideoEncoder(codec, width, height, 60, 10_000_000, threads=1)
    decoder = av.CodecContext.create(codec, "r")
    assert isinstance(decoder, av.VideoCodecContext)
    rng = np.random.default_rng(3)
    shape = (height, width, 3) if layout == "rgb24" else (height * 3 // 2, width)
    sent = {}
    read = []
    for i in range(6):
        picture = rng.integers(0, 256, shape, dtype=np.uint8)
        stamp = sp.Stamp(i, 10**12 + i * 16_667, i // 2)
        stamp_picture(picture, layout, width, height, stamp)
        sent[i * 90_000 // 60] = stamp
        for packet in encoder.encode(picture, layout, i):
            for decoded in decoder.decode(packet):
                assert packet.pts is not None
                read.append((sent[packet.pts], sp.read_stamp(decoded.to_ndarray(format="rgb24"))))
    assert len(read) >= 5
    assert all(want == got for want, got in read)


# -- input messages ---------------------------------------------------------------------------------------------

messages = st.one_of(
    st.builds(sp.KeyInput, U32, U64, U16, st.booleans(), st.booleans()),
    st.builds(sp.MouseMove, U32, U64, I16, I16),
    st.builds(sp.MouseAbs, U32, U64, U16, U16),
    st.builds(sp.MouseButton, U32, U64, st.integers(0, sp.MAX_MOUSE_BUTTON), st.booleans()),
    st.builds(sp.Wheel, U32, U64, I16, I16),
    st.builds(
        sp.Gamepad, U32, U64, st.integers(0, sp.MAX_GAMEPADS - 1), U32,
        st.tuples(I16, I16, I16, I16, st.integers(0, 32767), st.integers(0, 32767)),
    ),
)  # fmt: skip


@given(messages)
def test_input_round_trips(msg: sp.InputMessage) -> None:
    data = sp.encode_input(msg)
    assert len(data) <= sp.MAX_INPUT_BYTES
    assert sp.decode_input(data) == msg
    assert sp.decode_input(bytearray(data)) == msg


@given(st.binary(max_size=80))
def test_any_bytes_decode_to_a_message_or_an_input_error(data: bytes) -> None:
    try:
        msg = sp.decode_input(data)
    except sp.InputError:
        return
    assert sp.encode_input(msg) == data


def test_motion_travels_unreliable_the_rest_reliable() -> None:
    assert sp.channel_for(sp.MouseMove(1, 0, 1, 1)) == sp.MOTION_CHANNEL
    assert sp.channel_for(sp.MouseAbs(1, 0, 1, 1)) == sp.MOTION_CHANNEL
    for msg in (sp.KeyInput(1, 0, 4, True), sp.MouseButton(1, 0, 0, True), sp.Wheel(1, 0, 0, 120)):
        assert sp.channel_for(msg) == sp.RELIABLE_CHANNEL


def _header(kind: int, version: int = sp.INPUT_VERSION) -> bytes:
    return struct.pack("!BBIQ", version, kind, 7, 1000)


KEY = _header(sp.InputKind.KEY)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", sp.MalformedInput),
        (KEY[:13], sp.MalformedInput),  # shorter than the header
        (KEY, sp.MalformedInput),  # a header without its body
        (KEY + b"\x00\x04\x01\x00", sp.MalformedInput),  # one byte too many
        (KEY + b"\x00\x04\x04", sp.MalformedInput),  # reserved key flag
        (_header(sp.InputKind.MOUSE_BUTTON) + b"\x08\x01", sp.MalformedInput),  # no button 8
        (_header(sp.InputKind.MOUSE_BUTTON) + b"\x00\x02", sp.MalformedInput),  # neither up nor down
        (_header(sp.InputKind.GAMEPAD) + struct.pack("!BI6h", 16, 0, 0, 0, 0, 0, 0, 0), sp.MalformedInput),
        (_header(sp.InputKind.GAMEPAD) + struct.pack("!BI6h", 0, 0, 0, 0, 0, 0, -1, 0), sp.MalformedInput),
        ("text is not input", sp.MalformedInput),
        (KEY + bytes(51), sp.OversizedInput),  # 65 bytes
        (bytes(1000), sp.OversizedInput),
        (_header(0) + bytes(4), sp.UnknownInputKind),
        (_header(7) + bytes(4), sp.UnknownInputKind),
        (_header(255), sp.UnknownInputKind),
        (_header(sp.InputKind.KEY, version=2) + b"\x00\x04\x01", sp.UnsupportedInputVersion),
        (_header(sp.InputKind.KEY, version=0) + b"\x00\x04\x01", sp.UnsupportedInputVersion),
    ],
)
def test_malformed_input_is_refused_with_the_right_error(
    data: bytes | str, error: type[sp.InputError]
) -> None:
    with pytest.raises(error) as caught:
        sp.decode_input(data)
    assert isinstance(caught.value, ValueError)
    assert str(caught.value)


def test_a_message_out_of_range_cannot_be_built() -> None:
    with pytest.raises(sp.MalformedInput):
        sp.MouseMove(1, 0, 40000, 0)
    with pytest.raises(sp.MalformedInput):
        sp.KeyInput(-1, 0, 4, True)
    with pytest.raises(sp.MalformedInput):
        sp.Gamepad(1, 0, 0, 0, (0, 0, 0, 0, 0))  # type: ignore[arg-type]
