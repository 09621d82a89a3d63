"""`cloudseat-loadtest stream` end to end, briefly: a broker, an agent process and a Python client seat."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

FIELDS = (
    "streams",
    "fps_p50",
    "capture_to_decoded_ms_p50",
    "capture_to_decoded_ms_p99",
    "encode_ms_p50",
    "cpu_per_stream_pct",
    "input_to_photon_ms_p50",
    "input_to_photon_ms_p99",
    "session_ready_ms_p50",
    "session_ready_ms_p95",
    "freezes",
    "freezes_per_min",
    "measured_pct",
    "link",
    "baseline",
)


def test_stream_benchmark_writes_every_field(tmp_path: Path, db_url: str) -> None:
    out = tmp_path / "stream.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtest",
            "stream",
            "--streams",
            "1",
            "--duration",
            "2",
            "--codec",
            "vp8",
            "--client",
            "python",
            "--ready-probes",
            "2",
            "--json",
            str(out),
            "--database-url",
            db_url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    for field in FIELDS:
        assert field in result, field
    assert result["streams"] == 1 and result["per_stream"][0]["frames"] > 0
    assert result["fps_p50"] > 0 and result["baseline"]["encode_ms_p50"] > 0
    # Two probes and the stream's own session each measured session ready.
    assert result["session_ready_samples"] == 3 and result["session_ready_ms_p95"] > 0
    assert result["link"] == {"loss_pct": 0.0, "rate_mbit": 0.0} and result["measured_pct"] is None  # Python seats
