"""Workloads: the demo game reacts to every input kind and stamps its frames; the PyAV source loops a file."""

from __future__ import annotations

import fractions
import time
from pathlib import Path

import av
import numpy as np
import pytest
from cloudseat import seat_protocol as sp

from gpu_agent import workloads
from gpu_agent.workloads.demo import KEY_RIGHT

W, H, FPS = 320, 180, 30
T0 = 5_000_000
STEP = 1_000_000 // FPS


def _outside_stamp(frame: np.ndarray) -> np.ndarray:
    out = frame.copy()
    out[: sp.STAMP_HEIGHT, : sp.STAMP_WIDTH] = 0
    return out


INPUTS = [
    sp.KeyInput(1, 0, KEY_RIGHT, down=True),
    sp.KeyInput(1, 0, 0x2C, down=True),  # space: not a movement key, still a colour
    sp.MouseMove(1, 0, 25, -10),
    sp.MouseAbs(1, 0, 60000, 60000),
    sp.MouseButton(1, 0, 0, down=True),
    sp.Wheel(1, 0, 0, 240),
    sp.Gamepad(1, 0, 0, 0b1011, (20000, 0, 0, 0, 0, 0)),
    sp.Gamepad(1, 0, 0, 0, (0, 0, 0, 0, 32767, 0)),  # a trigger alone
]


@pytest.mark.parametrize("msg", INPUTS, ids=lambda m: type(m).__name__)
def test_the_demo_reacts_visibly_to_each_input_kind(msg: sp.InputMessage) -> None:
    """Two games render the same instants; only one gets the input. The first frame after it already differs."""
    plain, played = (workloads.DemoGame(W, H, FPS) for _ in range(2))
    for game in (plain, played):
        game.next_frame(T0)
    played.apply_input(msg)
    a, b = plain.next_frame(T0 + STEP), played.next_frame(T0 + STEP)
    assert not np.array_equal(_outside_stamp(a), _outside_stamp(b))
    stamp = sp.read_stamp(b)
    assert stamp is not None and stamp.last_input_id == 1


def test_demo_frames_carry_their_number_capture_time_and_highest_input() -> None:
    game = workloads.make_source("demo", W, H, FPS, {})
    assert isinstance(game, workloads.DemoGame)
    seen = []
    for i, input_id in enumerate([0, 5, 3, 9, 0]):  # 3 arrives after 5, as unordered motion may
        if input_id:
            game.apply_input(sp.MouseMove(input_id, 0, 1, 1))
        frame = game.next_frame(T0 + i * STEP)
        assert frame.shape == (H, W, 3) and frame.dtype == np.uint8
        seen.append(sp.read_stamp(frame))
    assert seen == [
        sp.Stamp(0, T0, 0),
        sp.Stamp(1, T0 + STEP, 5),
        sp.Stamp(2, T0 + 2 * STEP, 5),
        sp.Stamp(3, T0 + 3 * STEP, 9),
        sp.Stamp(4, T0 + 4 * STEP, 9),
    ]


def test_the_demo_scene_moves_by_itself() -> None:
    game = workloads.DemoGame(W, H, FPS)
    a = _outside_stamp(game.next_frame(T0))
    b = _outside_stamp(game.next_frame(T0 + 10 * STEP))
    assert not np.array_equal(a, b)


def test_a_held_key_keeps_moving_the_player() -> None:
    game = workloads.DemoGame(W, H, FPS)
    game.next_frame(T0)
    game.apply_input(sp.KeyInput(1, 0, KEY_RIGHT, down=True))
    frames = [_outside_stamp(game.next_frame(T0 + i * STEP)).copy() for i in range(1, 4)]
    game.apply_input(sp.KeyInput(2, 0, KEY_RIGHT, down=False))
    x = [game._player[0]]
    game.next_frame(T0 + 4 * STEP)
    game.next_frame(T0 + 5 * STEP)
    assert game._player[0] == x[0]  # released: it stopped
    assert not np.array_equal(frames[0], frames[2])


# -- the PyAV source --------------------------------------------------------------------------------------------

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]


@pytest.fixture
def colours_file(tmp_path: Path) -> Path:
    """A 0.2 s file: six frames at 30 fps, each one solid colour."""
    path = tmp_path / "colours.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30, options={"crf": "1", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = fractions.Fraction(1, 30)
        for i, colour in enumerate(COLOURS):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), colour, dtype=np.uint8), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def _colour_index(frame: np.ndarray) -> int:
    centre = frame[H // 2, W // 2].astype(int)
    return int(np.argmin([np.abs(centre - np.array(c)).sum() for c in COLOURS]))


def test_the_av_source_plays_a_file_on_the_callers_clock_and_loops(colours_file: Path) -> None:
    spec = workloads.AvSourceSpec(str(colours_file))
    source = workloads.make_source("trailer", W, H, FPS, {"trailer": spec})
    try:
        assert isinstance(source, workloads.AvSource) and not source.live
        indices, stamps = [], []
        for k in range(3 * len(COLOURS)):
            frame = source.next_frame(T0 + k * STEP)
            assert frame.shape == (H, W, 3)
            indices.append(_colour_index(frame))
            stamps.append(sp.read_stamp(frame))
    finally:
        source.close()
    assert indices == list(range(len(COLOURS))) * 3
    assert [s.frame_number for s in stamps if s is not None] == list(range(3 * len(COLOURS)))


def test_the_av_source_skips_frames_when_the_tier_is_slower(colours_file: Path) -> None:
    source = workloads.AvSource(workloads.AvSourceSpec(str(colours_file)), W, H, 10)
    try:
        indices = [_colour_index(source.next_frame(T0 + k * 100_000)) for k in range(4)]
    finally:
        source.close()
    assert indices == [0, 3, 0, 3]  # 10 fps over a 30 fps file: every third frame


def test_a_live_source_is_read_by_a_thread_latest_frame_wins() -> None:
    spec = workloads.AvSourceSpec("testsrc2=size=96x64:rate=30", format="lavfi")
    source = workloads.make_source("grab", W, H, FPS, {"grab": spec})
    try:
        assert isinstance(source, workloads.AvSource) and source.live
        deadline = time.monotonic() + 10
        frame = source.next_frame(T0)
        while not frame[sp.STAMP_HEIGHT :].any() and time.monotonic() < deadline:
            time.sleep(0.02)
            frame = source.next_frame(T0)
        assert frame[sp.STAMP_HEIGHT :].any()  # a picture arrived
        assert sp.read_stamp(frame) is not None
    finally:
        source.close()
    assert source._thread is not None and not source._thread.is_alive()


def test_an_unknown_game_is_refused() -> None:
    with pytest.raises(workloads.UnknownGame) as caught:
        workloads.make_source("no-such-game", W, H, FPS, {})
    assert isinstance(caught.value, workloads.WorkloadError)


def test_a_source_that_does_not_open_fails_as_a_workload_error(tmp_path: Path) -> None:
    spec = workloads.AvSourceSpec(str(tmp_path / "missing.mp4"))
    with pytest.raises(workloads.SourceFailed):
        workloads.make_source("trailer", W, H, FPS, {"trailer": spec})


def test_a_configured_source_accepts_the_agent_config_shape(colours_file: Path) -> None:
    """The agent's config gives options as (name, value) pairs and format "" for none."""

    class Config:
        url = str(colours_file)
        format = ""
        options = (("probesize", "32768"),)

    source = workloads.make_source("trailer", W, H, FPS, {"trailer": Config()})
    source.close()


@pytest.mark.parametrize(
    ("width", "height", "fps"), [(160, 32, 30), (320, 31, 30), (321, 180, 30), (320, 180, 0)]
)
def test_sizes_a_stream_cannot_carry_are_refused(width: int, height: int, fps: int) -> None:
    with pytest.raises(workloads.WorkloadError):
        workloads.make_source("demo", width, height, fps, {})
