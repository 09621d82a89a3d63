"""`cloudseat-loadtest images` end to end on a small game: every figure the issue names comes out, from the real
registry and the agent's own fetch path, and no install is ever corrupt."""

from __future__ import annotations

import json
from pathlib import Path

from loadtest import cli

FIELDS = {
    "publish_mb_per_s", "fetch_mb_per_s", "baseline_mb_per_s", "update_bytes_moved_pct",
    "site_registry_bytes_ratio", "site_warm_s", "corrupt_installs",
}  # fmt: skip


def test_the_images_benchmark_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "images.json"
    code = cli.main(
        ["images", "--size", "4000000", "--hosts", "2", "--work-dir", str(tmp_path / "work"), "--json", str(out)]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert FIELDS <= set(result)
    assert result["corrupt_installs"] == 0
    assert result["corrupt_deliveries"] == result["corrupt_refetched"] > 0
    # Two hosts of one site pulled each chunk from the registry once.
    assert result["site_registry_bytes_ratio"] == 1.0
    # An update moves less than the whole version.
    assert 0 < result["update_bytes_moved_pct"] < 100
