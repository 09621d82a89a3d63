"""The drain's countdown, pure: warnings ahead of the deadline as paid time gives them, and the words a seat shows."""

from __future__ import annotations

import subprocess
import sys

import pytest

from broker import drain


def test_warnings_at_5_and_1_minute_then_the_move_is_due() -> None:
    config = drain.DrainConfig()
    assert config.warnings_s == (300.0, 60.0)
    first = drain.read(1800, config)
    assert first.warning_s is None and first.time_left_s == 1800 and first.next_due_s == 1500
    five = drain.read(299.5, config, first.announced)
    assert five.warning_s == 300 and five.next_due_s == pytest.approx(239.5)
    quiet = drain.read(200, config, five.announced)
    assert quiet.warning_s is None
    one = drain.read(59, config, quiet.announced)
    assert one.warning_s == 60 and one.next_due_s == 59
    due = drain.read(-0.5, config, one.announced)
    # No grace: nothing is announced at the deadline (the session moves), and nothing else is due.
    assert due.time_up and due.time_left_s == 0 and due.warning_s is None and due.next_due_s is None


def test_a_later_deadline_rearms_and_a_late_drain_warns_once() -> None:
    config = drain.DrainConfig()
    one = drain.read(50, config)
    # A drain set 50 s ahead crossed both thresholds at once: one warning, the most urgent.
    assert one.warning_s == 60
    moved = drain.read(1000, config, one.announced)
    assert moved.warning_s is None and moved.announced == frozenset()
    assert drain.read(290, config, moved.announced).warning_s == 300


def test_words() -> None:
    assert drain.warning_text(300).startswith("this game host closes for maintenance in 5 minutes: ")
    assert "in 1 minute:" in drain.warning_text(60)
    assert "in 3 seconds:" in drain.warning_text(3)
    assert "paid time left is kept" in drain.warning_text(60)


def test_bad_config_refused() -> None:
    with pytest.raises(ValueError):
        drain.DrainConfig(warnings_s=(300.0, 0.0))


def test_pure() -> None:
    code = (
        "import sys, broker.drain; "
        "bad = [m for m in ('asyncio', 'asyncpg', 'grpc') if m in sys.modules]; "
        "assert not bad and not any(m.endswith('_pb2') for m in sys.modules), bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
