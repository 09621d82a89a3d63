"""loadtest.fairshare's measuring parts: the flood's CPU priority, and the CPU and waits read from /proc."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from loadtest import fairshare


def _in_child(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", f"import os\nfrom loadtest import fairshare\n{code}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def test_the_idle_flood_runs_at_idle_cpu_priority() -> None:
    out = _in_child('fairshare.lower_priority("idle")\nprint(os.sched_getscheduler(0) == os.SCHED_IDLE)')
    assert out == "True"


def test_the_old_mode_lowers_the_flood_by_niceness_alone() -> None:
    code = 'before = os.nice(0)\nfairshare.lower_priority("nice")\n'
    code += "print(os.nice(0) == min(19, before + fairshare.FLOOD_NICE))"
    assert _in_child(code) == "True"


def test_a_priority_it_does_not_know_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="priority"):
        fairshare.lower_priority("realtime")


def test_the_processes_below_a_process_are_found_and_their_threads_cpu_summed() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        found = fairshare._tasks_of({os.getpid()})
        assert os.getpid() in found and child.pid in found
        cpu, waited = fairshare.sched_totals(found)
        assert cpu > 0.0 and waited >= 0.0
        assert fairshare.sched_totals(set()) == (0.0, 0.0)
    finally:
        child.communicate(b"")
