"""The Python client's window: SDL 2 through pygame-ce. Shows the stream, turns the window's input into messages.

Input, in `cloudseat.seat_protocol`'s format:

- keys: SDL's scancodes *are* USB HID usage ids (keyboard page 0x07), which is what `KeyInput.key` carries, so a key
  travels as the physical key pressed whatever the seat's keyboard layout;
- mouse: absolute position over the picture (MOUSE_ABS) until the patron clicks into the window, then relative
  motion with the pointer captured (MOUSE_MOVE, like the browser's pointer lock); Ctrl+Alt releases it;
- buttons and wheel; game controllers through SDL's joystick API (XInput layout), as W3C standard-gamepad buttons and
  axes (GAMEPAD).

Ctrl+Alt+Q or closing the window ends the session. `post` injects a message as the equivalent SDL event, so a
scripted run goes through the same event path a patron's hands do.
"""

from __future__ import annotations

import os
from typing import Any

import av
from cloudseat import seat_protocol as sp

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import pygame  # after the environment variable that silences its banner

# SDL mouse buttons → seat_protocol buttons (0 left, 1 right, 2 middle, 3 back, 4 forward).
_BUTTONS = {1: 0, 3: 1, 2: 2, 6: 3, 7: 4}
_BUTTON_TO_SDL = {v: k for k, v in _BUTTONS.items()}
# SDL joystick buttons of an XInput pad → W3C standard gamepad button indices.
_PAD_BUTTONS = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 9, 8: 16, 9: 10, 10: 11}
# SDL joystick axes of an XInput pad → seat_protocol axes (lx, ly, rx, ry, lt, rt).
_PAD_AXES = {0: 0, 1: 1, 3: 2, 4: 3, 2: 4, 5: 5}


class WindowError(Exception):
    """No window could be opened (no display)."""


def _clip16(value: float) -> int:
    return max(-32768, min(32767, int(value)))


class Window:
    def __init__(self, *, title: str, size: tuple[int, int] = (1280, 720)) -> None:
        try:
            pygame.display.init()
            pygame.font.init()
            pygame.joystick.init()
            self.surface = pygame.display.set_mode(size, pygame.RESIZABLE)
        except pygame.error as exc:
            raise WindowError(f"cannot open a window: {exc}") from None
        pygame.display.set_caption(title)
        self._font = pygame.font.Font(None, 22)
        self._frame: av.VideoFrame | None = None
        self._fresh = False
        self._overlay: list[str] = []
        self._picture_rect = pygame.Rect(0, 0, *size)
        self._captured = False
        self._pads: dict[int, Any] = {}
        self._pad_state: dict[int, tuple[int, list[int]]] = {}
        self.closed = False

    # -- frames -------------------------------------------------------------------------------------------

    def show(self, frame: av.VideoFrame, stamp: sp.Stamp | None) -> None:
        """The receiver's frame callback: keep the newest; converted only when drawn."""
        self._frame, self._fresh = frame, True

    def set_overlay(self, lines: list[str]) -> None:
        self._overlay = [line for line in lines if line]

    def draw(self) -> None:
        if not self._fresh or self._frame is None:
            return
        self._fresh = False
        frame = self._frame
        rgb = frame.to_ndarray(format="rgb24")
        picture = pygame.image.frombuffer(rgb.tobytes(), (frame.width, frame.height), "RGB")
        win_w, win_h = self.surface.get_size()
        scale = min(win_w / frame.width, win_h / frame.height)
        w, h = max(1, int(frame.width * scale)), max(1, int(frame.height * scale))
        self._picture_rect = pygame.Rect((win_w - w) // 2, (win_h - h) // 2, w, h)
        if (w, h) != (frame.width, frame.height):
            picture = pygame.transform.scale(picture, (w, h))
        self.surface.fill((0, 0, 0))
        self.surface.blit(picture, self._picture_rect.topleft)
        y = 6
        for line in self._overlay:
            text = self._font.render(line, True, (255, 255, 255), (0, 0, 0))
            text.set_alpha(200)
            self.surface.blit(text, (8, win_h - 30 - y))
            y += 22
        pygame.display.flip()

    # -- input --------------------------------------------------------------------------------------------

    def poll(self) -> list[sp.InputMessage] | None:
        """The input since the last poll, as messages; None once the window is closed."""
        out: list[sp.InputMessage] = []
        for event in pygame.event.get():
            msg = self._translate(event)
            if self.closed:
                return None
            if msg is not None:
                out.append(msg)
        return out

    def _translate(self, event: Any) -> sp.InputMessage | None:
        t = event.type
        if t == pygame.QUIT:
            self.closed = True
            return None
        if t in (pygame.KEYDOWN, pygame.KEYUP):
            mods = pygame.key.get_mods()
            if t == pygame.KEYDOWN and mods & pygame.KMOD_CTRL and mods & pygame.KMOD_ALT:
                if event.key == pygame.K_q:
                    self.closed = True
                    return None
                self._capture(False)
            if not 0 < event.scancode <= 0xFFFF:
                return None
            return sp.KeyInput(0, 0, key=event.scancode, down=t == pygame.KEYDOWN)
        if t == pygame.MOUSEMOTION:
            if self._captured:
                dx, dy = event.rel
                return sp.MouseMove(0, 0, dx=_clip16(dx), dy=_clip16(dy)) if (dx or dy) else None
            return self._absolute(event.pos)
        if t in (pygame.MOUSEBUTTONDOWN, pygame.MOUSEBUTTONUP):
            if event.button not in _BUTTONS:
                return None  # 4 and 5: SDL's legacy wheel buttons; MOUSEWHEEL carries the wheel
            if t == pygame.MOUSEBUTTONDOWN and not self._captured and getattr(event, "touch", False) is False:
                self._capture(True)
            return sp.MouseButton(0, 0, button=_BUTTONS[event.button], down=t == pygame.MOUSEBUTTONDOWN)
        if t == pygame.MOUSEWHEEL:
            return sp.Wheel(0, 0, dx=_clip16(event.x * 120), dy=_clip16(event.y * 120))
        if t == pygame.JOYDEVICEADDED:
            pad = pygame.joystick.Joystick(event.device_index)
            self._pads[pad.get_instance_id()] = pad
            return None
        if t == pygame.JOYDEVICEREMOVED:
            self._pads.pop(event.instance_id, None)
            self._pad_state.pop(event.instance_id, None)
            return None
        if t in (pygame.JOYBUTTONDOWN, pygame.JOYBUTTONUP, pygame.JOYAXISMOTION, pygame.JOYHATMOTION):
            return self._gamepad(event)
        return None

    def _absolute(self, pos: tuple[int, int]) -> sp.InputMessage | None:
        r = self._picture_rect
        if not r.collidepoint(pos):
            return None
        x = (pos[0] - r.x) * 0xFFFF // max(1, r.w - 1)
        y = (pos[1] - r.y) * 0xFFFF // max(1, r.h - 1)
        return sp.MouseAbs(0, 0, x=min(0xFFFF, x), y=min(0xFFFF, y))

    def _capture(self, on: bool) -> None:
        self._captured = on
        pygame.event.set_grab(on)
        pygame.mouse.set_visible(not on)
        pygame.mouse.set_relative_mode(on)

    def _gamepad(self, event: Any) -> sp.InputMessage | None:
        instance = event.instance_id
        order = sorted(self._pads)
        pad = order.index(instance) if instance in order else 0
        if pad >= sp.MAX_GAMEPADS:
            return None
        buttons, axes = self._pad_state.get(instance, (0, [0] * sp.GAMEPAD_AXES))
        if event.type in (pygame.JOYBUTTONDOWN, pygame.JOYBUTTONUP) and event.button in _PAD_BUTTONS:
            bit = 1 << _PAD_BUTTONS[event.button]
            buttons = buttons | bit if event.type == pygame.JOYBUTTONDOWN else buttons & ~bit
        elif event.type == pygame.JOYAXISMOTION and event.axis in _PAD_AXES:
            index = _PAD_AXES[event.axis]
            value = event.value * 32767
            axes[index] = max(0, min(32767, int((value + 32767) / 2))) if index >= 4 else _clip16(value)
        elif event.type == pygame.JOYHATMOTION:
            hx, hy = event.value  # the d-pad: W3C buttons 12 up, 13 down, 14 left, 15 right
            buttons &= ~(0b1111 << 12)
            buttons |= (hy > 0) << 12 | (hy < 0) << 13 | (hx < 0) << 14 | (hx > 0) << 15
        else:
            return None
        self._pad_state[instance] = (buttons, axes)
        return sp.Gamepad(
            0, 0, pad=pad, buttons=buttons, axes=(axes[0], axes[1], axes[2], axes[3], axes[4], axes[5])
        )

    # -- scripted input ------------------------------------------------------------------------------------

    def post(self, msg: sp.InputMessage) -> None:
        """Put the SDL event a patron's hands would have made for `msg` on the window's event queue."""
        event: pygame.event.Event | None = None
        if isinstance(msg, sp.KeyInput):
            kind = pygame.KEYDOWN if msg.down else pygame.KEYUP
            event = pygame.event.Event(kind, key=0, scancode=msg.key, mod=0)
        elif isinstance(msg, sp.MouseMove):
            event = pygame.event.Event(
                pygame.MOUSEMOTION, pos=self._picture_rect.center, rel=(msg.dx, msg.dy), buttons=(0, 0, 0)
            )
            if not self._captured:
                self._captured = True  # a scripted patron has clicked in; don't grab the real pointer
        elif isinstance(msg, sp.MouseButton):
            kind = pygame.MOUSEBUTTONDOWN if msg.down else pygame.MOUSEBUTTONUP
            event = pygame.event.Event(kind, button=_BUTTON_TO_SDL[msg.button], pos=self._picture_rect.center)
        elif isinstance(msg, sp.Wheel):
            event = pygame.event.Event(pygame.MOUSEWHEEL, x=msg.dx // 120, y=msg.dy // 120, flipped=False)
        if event is not None:
            pygame.event.post(event)

    def save(self, path: os.PathLike[str] | str) -> None:
        """The window as it shows now, as a PNG."""
        self._fresh = True
        self.draw()
        pygame.image.save(self.surface, str(path))

    def close(self) -> None:
        if self._captured:
            self._capture(False)
        pygame.display.quit()
