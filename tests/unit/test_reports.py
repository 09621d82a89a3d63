"""gpu_agent.reports: session moves coalesced over a window, and when a heartbeat is due. Pure, so plain tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cloudseat.v1 import common_pb2

from gpu_agent.reports import LOAD_STEP, REPORT_WINDOW_S, HeartbeatSchedule, Report, SessionReports, Step

ROOT = Path(__file__).resolve().parents[2]
FAILED = common_pb2.END_REASON_FAILED
DRAINED = common_pb2.END_REASON_HOST_DRAINED


# -- session moves ------------------------------------------------------------------------------------------------


def test_steps_are_the_contracts_session_states() -> None:
    for step in Step:
        assert common_pb2.SessionState.Value(f"SESSION_STATE_{step.name}") == step.value


def test_only_the_latest_forward_state_of_a_session_is_reported() -> None:
    r = SessionReports()
    r.move("a", Step.STARTING, now=0.0)
    r.move("a", Step.READY, now=0.001)
    r.move("a", Step.STREAMING, now=0.002)
    assert r.flush() == [Report("a", Step.STREAMING)]


def test_sessions_keep_the_order_they_first_moved_in() -> None:
    r = SessionReports()
    r.move("a", Step.STARTING, now=0.0)
    r.move("b", Step.STARTING, now=0.001)
    r.move("a", Step.READY, now=0.002)  # a moves again after b: still first
    r.move("c", Step.READY, now=0.003)
    r.move("b", Step.STREAMING, now=0.004)
    assert [(x.session_id, x.step) for x in r.flush()] == [
        ("a", Step.READY),
        ("b", Step.STREAMING),
        ("c", Step.READY),
    ]


def test_ended_supersedes_everything_and_keeps_its_reason_and_detail() -> None:
    r = SessionReports()
    r.move("a", Step.STARTING, now=0.0)
    r.move("a", Step.ENDED, now=0.001, end_reason=FAILED, detail="workload failed to start")
    r.move("a", Step.READY, now=0.002)  # late: the session is over
    r.move("a", Step.ENDED, now=0.003, end_reason=DRAINED, detail="later")  # the first end is the real one
    assert r.flush() == [Report("a", Step.ENDED, FAILED, "workload failed to start")]


def test_a_move_back_is_dropped() -> None:
    r = SessionReports()
    r.move("a", Step.STREAMING, now=0.0)
    r.move("a", Step.READY, now=0.001)
    r.move("a", Step.STREAMING, now=0.002)  # repeated: nothing new
    assert r.flush() == [Report("a", Step.STREAMING)]


def test_a_reason_is_kept_only_with_ended() -> None:
    r = SessionReports()
    r.move("a", Step.READY, now=0.0, end_reason=FAILED, detail="not an end")
    assert r.flush() == [Report("a", Step.READY)]


def test_flush_empties_and_closes_the_window() -> None:
    r = SessionReports(window_s=0.05)
    assert r.due_at is None and r.flush() == []
    r.move("a", Step.STARTING, now=10.0)
    assert len(r) == 1 and r.due_at == pytest.approx(10.05)
    r.move("b", Step.STARTING, now=10.04)  # a later move does not push the window on
    assert r.due_at == pytest.approx(10.05)
    assert len(r.flush()) == 2
    assert len(r) == 0 and r.due_at is None and r.flush() == []
    r.move("a", Step.READY, now=11.0)  # a new window, and what was flushed is forgotten
    assert r.due_at == pytest.approx(11.05) and r.flush() == [Report("a", Step.READY)]


def test_take_due_waits_for_the_end_of_the_window() -> None:
    r = SessionReports(window_s=0.05)
    r.move("a", Step.STARTING, now=1.0)
    r.move("a", Step.READY, now=1.02)
    assert r.take_due(1.049) == [] and len(r) == 1
    assert r.take_due(1.05) == [Report("a", Step.READY)]
    assert r.take_due(2.0) == []


def test_a_compressed_start_up_inside_the_window_is_one_report() -> None:
    # The fleet simulator's hosts: STARTING on the command, READY and STREAMING 20 ms later.
    r = SessionReports()
    r.move("a", Step.STARTING, now=0.0)
    r.move("a", Step.READY, now=0.02)
    r.move("a", Step.STREAMING, now=0.02)
    assert REPORT_WINDOW_S > 0.02
    assert r.take_due(REPORT_WINDOW_S) == [Report("a", Step.STREAMING)]


# -- heartbeats ---------------------------------------------------------------------------------------------------


def test_an_idle_host_with_steady_load_sends_nothing() -> None:
    h = HeartbeatSchedule(5.0, now=0.0, cpu=0.2, gpu=0.0)
    for t in range(1, 600):
        assert not h.due(float(t), sessions=0, cpu=0.2 + LOAD_STEP / 2, gpu=0.05)


def test_a_busy_host_beats_every_interval() -> None:
    h = HeartbeatSchedule(5.0, now=0.0)
    assert not h.due(4.9, sessions=1, cpu=0.0, gpu=0.0)
    assert h.due(5.0, sessions=1, cpu=0.0, gpu=0.0)
    h.sent(5.0, cpu=0.0, gpu=0.0)
    assert not h.due(9.9, sessions=1, cpu=0.0, gpu=0.0)
    assert h.due(10.0, sessions=2, cpu=0.0, gpu=0.0)


def test_games_or_draining_changes_go_at_once() -> None:
    h = HeartbeatSchedule(5.0, now=0.0)
    assert h.due(0.1, sessions=0, cpu=0.0, gpu=0.0, games_changed=True)
    h.sent(0.1, cpu=0.0, gpu=0.0)
    assert h.due(0.2, sessions=0, cpu=0.0, gpu=0.0, draining=True)
    h.sent(0.2, cpu=0.0, gpu=0.0, draining=True)
    assert not h.due(0.3, sessions=0, cpu=0.0, gpu=0.0, draining=True)
    assert h.due(0.4, sessions=0, cpu=0.0, gpu=0.0, draining=False)


def test_a_load_change_goes_but_not_more_often_than_the_interval() -> None:
    h = HeartbeatSchedule(5.0, now=0.0, cpu=0.1, gpu=0.1)
    assert not h.due(1.0, sessions=0, cpu=0.1, gpu=0.3)  # moved, but too soon
    assert h.due(5.0, sessions=0, cpu=0.1, gpu=0.3)
    assert h.due(5.0, sessions=0, cpu=0.3, gpu=0.1)
    h.sent(5.0, cpu=0.1, gpu=0.3)
    # Measured from the last one sent, not from the registration.
    assert not h.due(11.0, sessions=0, cpu=0.1, gpu=0.35)
    assert h.due(11.0, sessions=0, cpu=0.1, gpu=0.1)  # down counts as well as up


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        HeartbeatSchedule(0, now=0.0)


def test_the_module_imports_no_io() -> None:
    code = (
        "import json, sys\n"
        "import gpu_agent.reports\n"
        "heavy = {'asyncio', 'grpc', 'google', 'cloudseat', 'structlog'}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
