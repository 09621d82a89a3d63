"""`cloudseat-loadtest fleet` end to end, small: a real broker process and PostgreSQL, a dozen simulated hosts on
real agent streams, a few venues' patrons for two seconds, then the greedy window, the profile and the report.
Correctness only: every session placed and ended, every field there, the report and its plots written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

FIELDS = {
    "starts_per_s": float,
    "placed_ms_p50": float,
    "placed_ms_p99": float,
    "errors": dict,
    "hosts_connected": int,
    "heartbeats_per_s": float,
    "queue_wait_ms_p50": float,
    "queue_wait_ms_p99": float,
    "cost_per_session": float,
    "cap_violations": int,
    "utilisation": dict,
    "echo_rps": float,
}
PLOTS = ("placed_cdf.png", "throughput.png", "utilisation.png", "cost_vs_greedy.png")
HOSTS = 12


def _fleet(
    *args: str, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadtest", "fleet", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_a_small_fleet_run_places_and_ends_every_session_and_reports(tmp_path: Path, db_url: str) -> None:
    out, report = tmp_path / "fleet.json", tmp_path / "report"
    done = _fleet(
        *("--hosts", str(HOSTS), "--sites", "3", "--venues", "4", "--rate", "15", "--duration", "2"),
        *("--echo-s", "0.3", "--heartbeat-interval", "1", "--host-lost-after", "5"),
        *("--json", str(out), "--report", str(report), "--database-url", db_url),
        *("--compare-greedy", "--profile", "--no-progress"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())

    for field, kind in FIELDS.items():
        assert field in result, field
        value = result[field]
        assert isinstance(value, kind) or (kind is float and isinstance(value, int)), (field, value)
    assert result["errors"] == {}, result["error_samples"]
    assert result["hosts_connected"] == HOSTS and result["heartbeats_per_s"] > 0
    assert result["starts_per_s"] > 0 and result["echo_rps"] > 0
    assert 0 < result["placed_ms_p50"] <= result["placed_ms_p99"]
    assert 0 <= result["queue_wait_ms_p50"] <= result["queue_wait_ms_p99"]
    assert result["cost_per_session"] > 0 and result["cap_violations"] == 0
    assert result["utilisation"] and all(0 <= u <= 1 for u in result["utilisation"].values())

    # Every patron's session was placed (seen through WatchSession) and ended, in both windows.
    for sessions in (result["sessions"], result["greedy"]["sessions"]):
        assert sessions["started"] > 0
        assert sessions["requested"] == sessions["started"] == sessions["placed"] == sessions["ended"]
        assert sessions["not_placed"] == sessions["ended_before_placed"] == 0
    commands = result["hosts"]["commands"]
    assert commands["start_session"] == commands["stop_session"] == result["sessions"]["placed"]
    assert result["cost_vs_greedy_pct"] is not None
    assert result["profile"] and result["profile"]["samples"] > 0

    text = (report / "report.md").read_text()
    for plot in PLOTS:
        assert (report / plot).stat().st_size > 1000, plot
        assert f"]({plot})" in text
    assert "Profile of the broker" in text


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--hosts", "0"], {}, "--hosts"),
        (["--duration", "-1"], {}, "--duration"),
        ([], {"CLOUDSEAT_LOADTEST_RATE": "fast"}, "CLOUDSEAT_LOADTEST_RATE"),
        ([], {"CLOUDSEAT_LOADTEST_PROFILE": "maybe"}, "CLOUDSEAT_LOADTEST_PROFILE"),
        (["--broker", "127.0.0.1:1", "--profile"], {}, "--profile"),
        (["--broker", "nowhere"], {}, "--broker"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], env: dict[str, str], says: str) -> None:
    done = _fleet(*args, env=env, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], done.stderr
