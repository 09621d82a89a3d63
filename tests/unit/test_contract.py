"""The checked-in generated code matches the .proto files, and the pure modules stay pure."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_current(tmp_path: Path) -> None:
    subprocess.run([str(ROOT / "scripts" / "gen-proto"), str(tmp_path)], check=True, cwd=ROOT)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2*.py*"))
    assert generated, "scripts/gen-proto produced nothing"
    checked_in = sorted(p.relative_to(ROOT / "proto") for p in (ROOT / "proto").rglob("*_pb2*.py*"))
    assert generated == checked_in
    stale = [str(p) for p in generated if not filecmp.cmp(tmp_path / p, ROOT / "proto" / p, shallow=False)]
    assert not stale, f"generated code is stale, run scripts/gen-proto: {stale}"


@pytest.mark.parametrize(
    "module", ["broker.lifecycle", "broker.tiers", "cloudseat.validate", "broker.metering"]
)
def test_pure_modules_import_no_io(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('asyncio', 'asyncpg', 'grpc') or m.endswith('_pb2')]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"{module} pulls in {out}"
