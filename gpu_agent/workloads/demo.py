"""The built-in demo game: a scrolling pattern, a player square and a cursor, rendered with NumPy on the CPU.

Cheap enough for 720p60 beside a software encoder on one core: it renders I420, what the encoder takes, so no colour
conversion runs per frame; the background is computed once, twice as wide as the frame, and each frame copies a
scrolled window of it into a reused buffer (well under a millisecond at 720p); the rest is small rectangles. Every
input kind changes the picture in the first frame rendered after it is applied:

- keys: arrows / WASD held move the player; any key pressed gives the player the colour of that key;
- mouse motion (relative or absolute) moves the cursor; a held button fills the cursor;
- the wheel grows or shrinks the player;
- a gamepad's left stick moves the player, its buttons light a row of lamps, its triggers fill a bar.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from cloudseat import seat_protocol as sp

from gpu_agent.workloads.base import FrameSource, i420_planes

# USB HID usage ids (keyboard page 0x07) that move the player: (dx, dy) per key.
KEY_RIGHT, KEY_LEFT, KEY_DOWN, KEY_UP = 0x4F, 0x50, 0x51, 0x52
KEY_W, KEY_A, KEY_S, KEY_D = 0x1A, 0x04, 0x16, 0x07
MOVE_KEYS: dict[int, tuple[int, int]] = {
    KEY_RIGHT: (1, 0), KEY_D: (1, 0),
    KEY_LEFT: (-1, 0), KEY_A: (-1, 0),
    KEY_DOWN: (0, 1), KEY_S: (0, 1),
    KEY_UP: (0, -1), KEY_W: (0, -1),
}  # fmt: skip

GAMEPAD_LAMPS = 16
# Red and green peaks and the blue level of the background without an installed image.
DEFAULT_PALETTE = (255, 255, 96)
_MAX_DT_S = 0.1  # a stalled renderer must not teleport the player


class DemoGame(FrameSource):
    """The demo workload; see the module docstring."""

    pixel_format = "yuv420p"

    def __init__(
        self, width: int, height: int, fps: int, palette: tuple[int, int, int] | None = None
    ) -> None:
        super().__init__(width, height, fps)
        self.palette = palette or DEFAULT_PALETTE
        self._background = i420_planes(_background(width, height, self.palette), 2 * width, height)
        self._picture = np.empty((height * 3 // 2, width), dtype=np.uint8)
        self._planes = i420_planes(self._picture, width, height)
        self._scroll_px_per_s = width / 4
        self._speed_px_per_s = height / 2  # player speed at full key or stick
        self._size = max(16, height // 10)
        self._player = [float(width // 2), float(height // 2)]
        self._colour = _yuv((255, 200, 0))
        self._keys_held: set[int] = set()
        self._stick = (0.0, 0.0)
        self._pad_buttons = 0
        self._pad_triggers = (0, 0)
        self._cursor = [width // 3, height // 3]
        self._buttons_held: set[int] = set()
        self._last_us: int | None = None

    # -- input --------------------------------------------------------------------------------------------

    def _apply(self, msg: sp.InputMessage, now_us: int) -> None:
        if isinstance(msg, sp.KeyInput):
            if msg.down:
                self._keys_held.add(msg.key)
                self._colour = _key_colour(msg.key)
            else:
                self._keys_held.discard(msg.key)
        elif isinstance(msg, sp.MouseMove):
            self._cursor = [self._cursor[0] + msg.dx, self._cursor[1] + msg.dy]
        elif isinstance(msg, sp.MouseAbs):
            self._cursor = [msg.x * (self.width - 1) // 0xFFFF, msg.y * (self.height - 1) // 0xFFFF]
        elif isinstance(msg, sp.MouseButton):
            if msg.down:
                self._buttons_held.add(msg.button)
            else:
                self._buttons_held.discard(msg.button)
        elif isinstance(msg, sp.Wheel):
            self._size = int(np.clip(self._size + 8 * msg.dy // 120, 16, self.height // 2))
        elif isinstance(msg, sp.Gamepad):
            self._stick = (msg.axes[0] / 32768, msg.axes[1] / 32768)
            self._pad_buttons = msg.buttons
            self._pad_triggers = (msg.axes[4], msg.axes[5])
        self._cursor = [
            int(np.clip(self._cursor[0], 0, self.width - 1)),
            int(np.clip(self._cursor[1], 0, self.height - 1)),
        ]

    # -- rendering ----------------------------------------------------------------------------------------

    def _render(self, now_us: int) -> np.ndarray:
        dt = 0.0 if self._last_us is None else min(_MAX_DT_S, max(0.0, (now_us - self._last_us) / 1e6))
        self._last_us = now_us
        self._move_player(dt)

        # An even offset keeps the half-size chroma planes aligned with luma.
        offset = int(now_us * self._scroll_px_per_s // 1_000_000) % self.width & ~1
        for plane, background, scale in zip(self._planes, self._background, (1, 2, 2), strict=True):
            np.copyto(plane, background[:, offset // scale : (offset + self.width) // scale])

        x, y, s = int(self._player[0]), int(self._player[1]), self._size
        _fill(self._planes, x - s // 2, y - s // 2, s, s, self._colour)
        self._draw_cursor()
        self._draw_gamepad()
        return self._picture

    def _move_player(self, dt: float) -> None:
        vx = sum(MOVE_KEYS[k][0] for k in self._keys_held if k in MOVE_KEYS) + self._stick[0]
        vy = sum(MOVE_KEYS[k][1] for k in self._keys_held if k in MOVE_KEYS) + self._stick[1]
        half = self._size / 2
        self._player[0] = float(
            np.clip(self._player[0] + vx * self._speed_px_per_s * dt, half, self.width - half)
        )
        self._player[1] = float(
            np.clip(self._player[1] + vy * self._speed_px_per_s * dt, half, self.height - half)
        )

    def _draw_cursor(self) -> None:
        cx, cy = self._cursor
        arm, planes = max(8, self.height // 60), self._planes
        if self._buttons_held:
            _fill(planes, cx - arm, cy - arm, 2 * arm + 1, 2 * arm + 1, _WHITE)
        else:
            _fill(planes, cx - arm, cy - 1, 2 * arm + 1, 3, _WHITE)
            _fill(planes, cx - 1, cy - arm, 3, 2 * arm + 1, _WHITE)

    def _draw_gamepad(self) -> None:
        lamp, planes = max(6, self.height // 72), self._planes
        y = self.height - 2 * lamp
        for i in range(GAMEPAD_LAMPS):
            _fill(
                planes,
                lamp + i * 2 * lamp,
                y,
                lamp,
                lamp,
                _LAMP_ON if self._pad_buttons >> i & 1 else _LAMP_OFF,
            )
        bar_h = self.height // 4
        for j, trigger in enumerate(self._pad_triggers):
            fill_h = bar_h * trigger // 32767
            x = self.width - (3 - j) * 2 * lamp
            _fill(planes, x, self.height - lamp - bar_h, lamp, bar_h, _LAMP_OFF)
            if fill_h:
                _fill(planes, x, self.height - lamp - fill_h, lamp, fill_h, _LAMP_ON)


Planes = tuple[np.ndarray, np.ndarray, np.ndarray]


def _yuv(rgb: tuple[float, float, float]) -> tuple[int, int, int]:
    """BT.601 limited range, as FFmpeg converts by default."""
    r, g, b = rgb
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    return round(y), round(u), round(v)


_WHITE = _yuv((255, 255, 255))
_LAMP_ON = _yuv((0, 255, 0))
_LAMP_OFF = _yuv((40, 40, 40))


def _fill(planes: Planes, x: int, y: int, w: int, h: int, colour: tuple[int, int, int]) -> None:
    """Fill a rectangle of an I420 picture, clipped to it (chroma covers the half-size pixels it touches)."""
    luma = planes[0]
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(luma.shape[1], x + w), min(luma.shape[0], y + h)
    if x0 < x1 and y0 < y1:
        luma[y0:y1, x0:x1] = colour[0]
        planes[1][y0 // 2 : (y1 + 1) // 2, x0 // 2 : (x1 + 1) // 2] = colour[1]
        planes[2][y0 // 2 : (y1 + 1) // 2, x0 // 2 : (x1 + 1) // 2] = colour[2]


def _key_colour(key: int) -> tuple[int, int, int]:
    """A bright colour that differs between neighbouring key codes."""
    hue = (key * 0.618034) % 1.0
    rgb = np.clip(np.abs((hue * 6 + np.array([0.0, 4.0, 2.0])) % 6 - 3) - 1, 0, 1)
    r, g, b = (64 + rgb * 191).tolist()
    return _yuv((r, g, b))


def read_palette(assets: Path) -> tuple[int, int, int] | None:
    """The palette an installed demo image carries: the first three bytes (red, green, blue peaks of the background)
    of assets/palette.bin; None when it has none. The tree was checked on install: its links stay inside it."""
    path = assets / "assets" / "palette.bin"
    try:
        with open(path, "rb") as f:
            data = f.read(3)
    except OSError:
        return None
    return (data[0], data[1], data[2]) if len(data) == 3 else None


def _background(width: int, height: int, palette: tuple[int, int, int] = (255, 255, 96)) -> np.ndarray:
    """A pattern periodic in x with period ``width``, computed twice as wide so a scrolled window is one slice;
    I420 (height * 3 // 2, 2 * width). The palette gives the peaks of red and green and the level of blue."""
    x = np.arange(2 * width, dtype=np.float32)
    y = np.arange(height, dtype=np.float32)
    phase = (x % width) / width
    red = palette[0] * np.abs(2 * phase - 1)  # a triangle wave: no seam where the window wraps
    green = palette[1] * y / max(1, height - 1)
    out = np.empty((height, 2 * width, 3), dtype=np.uint8)
    out[:, :, 0] = red[np.newaxis, :].astype(np.uint8)
    out[:, :, 1] = green[:, np.newaxis].astype(np.uint8)
    out[:, :, 2] = palette[2]
    # A grid of dark lines makes the motion easy to see (and to encode as motion).
    step = max(16, width // 20)
    out[:, (np.arange(2 * width) % step) < 2] //= 3
    out[(np.arange(height) % step) < 2, :] //= 3
    i420: np.ndarray = av.VideoFrame.from_ndarray(out, format="rgb24").to_ndarray(format="yuv420p")
    return i420
