"""The scripted input a headless seat plays (and a windowed one can be told to): pure, deterministic.

A patron-like mix at a fixed rate: the right-arrow key pressed and released, the mouse nudged, a button clicked,
the wheel turned and the left stick moved, in a fixed cycle. Each message is of `cloudseat.seat_protocol`'s input
format; the sender fills in the input id and the send time. Every kind changes the demo game's state, so every
message shows in a later frame's stamp (what input→photon is measured on).
"""

from __future__ import annotations

from cloudseat import seat_protocol as sp

# USB HID usage ids (keyboard page): the right and left arrows.
RIGHT_ARROW = 0x4F
LEFT_ARROW = 0x50

_CYCLE: tuple[sp.InputMessage, ...] = (
    sp.KeyInput(0, 0, key=RIGHT_ARROW, down=True),
    sp.MouseMove(0, 0, dx=12, dy=-4),
    sp.KeyInput(0, 0, key=RIGHT_ARROW, down=False),
    sp.MouseButton(0, 0, button=0, down=True),
    sp.MouseButton(0, 0, button=0, down=False),
    sp.KeyInput(0, 0, key=LEFT_ARROW, down=True),
    sp.Wheel(0, 0, dx=0, dy=120),
    sp.KeyInput(0, 0, key=LEFT_ARROW, down=False),
    sp.Gamepad(0, 0, pad=0, buttons=1, axes=(8000, 0, 0, 0, 0, 0)),
    sp.Gamepad(0, 0, pad=0, buttons=0, axes=(0, 0, 0, 0, 0, 0)),
)


def step(n: int) -> sp.InputMessage:
    """The n-th message of the pattern (n >= 0); the pattern repeats every len(cycle) messages."""
    return _CYCLE[n % len(_CYCLE)]


def cycle_length() -> int:
    return len(_CYCLE)
