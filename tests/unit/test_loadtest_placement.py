"""`cloudseat-loadtest placement`: a small real run, and malformed instance files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loadtest import cli
from loadtest import instance as instance_file

SMALL = [
    "--hosts",
    "200",
    "--sites",
    "8",
    "--venues",
    "20",
    "--requests",
    "500",
    "--duration-ms",
    "20000",
    "--batch",
    "100",
    "--exact-max-requests",
    "100",
    "--exact-time-limit",
    "5",
    "--headline-batches",
    "2",
]

FIELDS = {
    "placements_per_s",
    "batch_ms_p50",
    "batch_ms_p99",
    "cost_total_engine",
    "cost_total_greedy",
    "cost_vs_greedy_pct",
    "gap_vs_exact_pct",
    "cap_violations",
    "unplaced",
    "baseline",
}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, str], Path]:
    out = tmp_path_factory.mktemp("placement")
    code = cli.main(
        [
            "placement",
            *SMALL,
            "--json",
            str(out / "r.json"),
            "--assignments",
            str(out / "a.json"),
            "--write-instance",
            str(out / "i.json"),
        ]
    )
    assert code == 0
    return json.loads((out / "r.json").read_text()), json.loads((out / "a.json").read_text()), out / "i.json"


def test_json_has_every_field(small_run: tuple[dict[str, Any], dict[str, str], Path]) -> None:
    result, _, _ = small_run
    assert FIELDS <= set(result)
    assert result["placements_per_s"] > 0
    assert result["cap_violations"] == 0
    assert result["solvers"]["engine"]["violations"] == 0
    assert result["baseline"]["solver"] == "greedy"
    assert result["baseline"]["placements_per_s"] > 0
    assert result["cost_vs_greedy_pct"] == pytest.approx(
        (result["cost_total_engine"] - result["cost_total_greedy"]) / result["cost_total_greedy"] * 100
    )
    # the exact replay ran (batches of 100 <= --exact-max-requests) and checked the engine batch by batch
    assert result["gap_vs_exact_pct"] is not None
    assert result["exact_check"]["batches"] > 0
    assert result["exact_check"]["proven_optimal"] > 0
    assert len(result["exact_sample"]) == 2  # two of the engine's own batches re-solved by CP-SAT
    for item in result["exact_sample"]:
        # The gap is on placement cost, and only between answers that placed as many sessions.
        if item["engine_placed"] == item["exact_placed"]:
            assert item["gap_pct"] is not None
            assert item["gap_pct"] >= 0 or not item["exact_proven_optimal"]
        else:
            assert item["gap_pct"] is None
        assert item["engine_placed"] <= item["exact_placed"] or not item["exact_proven_optimal"]
    check = result["exact_check"]
    assert check["engine_placed_fewer"] <= check["proven_optimal"]
    assert result["placed_engine"] == result["solvers"]["engine"]["placed"]
    assert result["headline"]["batches"] == 2
    # every engine batch with multi-slot requests against its lower bound: never below it
    bound = result["gap_bound"]
    assert bound["batches"] > 0
    assert bound["proven_optimal"] <= bound["batches"]
    assert bound["within_target"] + bound["more_pending_than_bound"] <= bound["batches"]
    assert 0 <= bound["mean_gap_bound_pct"] <= bound["max_gap_bound_pct"]


def test_assignments_file_validates(small_run: tuple[dict[str, Any], dict[str, str], Path]) -> None:
    result, assignments, instance_path = small_run
    inst = instance_file.read(instance_path)
    hosts = {h.id: h for h in inst.hosts}
    requests = {r.id: r for r in inst.requests}
    assert len(assignments) == result["solvers"]["engine"]["placed"] > 0
    for rid, hid in assignments.items():
        request, host = requests[rid], hosts[hid]
        assert host.online and not host.drained
        assert inst.latency[(request.venue_id, host.site_id)] <= request.cap_ms


def test_written_instance_round_trips(small_run: tuple[dict[str, Any], dict[str, str], Path]) -> None:
    _, _, instance_path = small_run
    raw = json.loads(instance_path.read_text())
    again = instance_file.to_json(instance_file.from_json(raw))
    assert again == raw


def _valid() -> dict[str, Any]:
    return {
        "version": 1,
        "hosts": [
            {
                "id": "h0",
                "site_id": "s0",
                "gpu_class": "l4",
                "free_slots": 2,
                "total_slots": 4,
                "price_micros": 1_500_000,
                "games": ["lol"],
            }
        ],
        "latency": [["v0", "s0", 5]],
        "leases": [{"id": "L", "venue_id": "v0", "gpu_class": "l4", "slots": 1, "site_id": "s0"}],
        "requests": [
            {
                "id": "r0",
                "venue_id": "v0",
                "game_id": "lol",
                "cap_ms": 30,
                "arrival_ms": 0,
                "duration_ms": 1000,
            }
        ],
    }


def _broken(path: str, value: Any) -> dict[str, Any]:
    doc = _valid()
    keys = path.split(".")
    target: Any = doc
    for key in keys[:-1]:
        target = target[int(key)] if isinstance(target, list) else target[key]
    last: Any = int(keys[-1]) if isinstance(target, list) else keys[-1]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value
    return doc


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("hosts.0.free_slots", -1, "instance.hosts[0].free_slots: must be an integer ≥ 0"),
        ("hosts.0.free_slots", "2", "instance.hosts[0].free_slots: must be an integer ≥ 0"),
        ("hosts.0.free_slots", 9, "instance.hosts[0].free_slots: must be ≤ total_slots (4)"),
        ("hosts.0.id", _DELETE, "instance.hosts[0].id: must be a non-empty string"),
        ("hosts.0.drained", "no", "instance.hosts[0].drained: must be true or false"),
        ("hosts.0.games", "lol", "instance.hosts[0].games: must be a list"),
        ("latency.0", ["v0", "s0"], "instance.latency[0]: must be [venue_id, site_id, ms]"),
        ("latency.0", ["v0", "s0", -3], "instance.latency[0][2]: must be an integer ≥ 0"),
        ("leases.0.slots", 0, "instance.leases[0].slots: must be an integer ≥ 1"),
        (
            "leases.0.max_latency_ms",
            10,
            "instance.leases[0].max_latency_ms: give site_id or max_latency_ms, not both",
        ),
        ("requests.0.cap_ms", True, "instance.requests[0].cap_ms: must be an integer ≥ 1"),
        ("requests.0.slots", 0, "instance.requests[0].slots: must be an integer ≥ 1"),
        ("requests", {}, "instance.requests: must be a list"),
        ("version", 2, "instance.version: must be 1"),
        ("hosts.0.images", ["lol"], "instance.hosts[0].images[0]: must be GAME_ID@VERSION"),
        ("images", [], "instance.images: must be an object"),
        ("images", {"lol": {"size_bytes": 5}}, "instance.images['lol'].version: must be a non-empty string"),
        (
            "images",
            {"lol": {"version": "2", "size_bytes": 5, "lacking_from": {"1": -1}}},
            "instance.images['lol'].lacking_from['1']: must be an integer ≥ 0",
        ),
        (
            "params",
            {"cold_start_micros_per_gib": -1},
            "instance.params.cold_start_micros_per_gib: must be an integer ≥ 0",
        ),
    ],
)
def test_malformed_instance_names_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], path: str, value: Any, message: str
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_broken(path, value)))
    assert cli.main(["placement", "--instance", str(bad), "--exact-max-requests", "0"]) == 2
    err = capsys.readouterr().err
    assert err == f"cloudseat-loadtest placement: error: {message}\n"


def test_duplicate_ids_and_unknown_hosts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = _valid()
    doc["hosts"].append(dict(doc["hosts"][0]))
    bad = tmp_path / "dup.json"
    bad.write_text(json.dumps(doc))
    assert cli.main(["placement", "--instance", str(bad)]) == 2
    assert "instance.hosts[1].id: duplicate host id 'h0'" in capsys.readouterr().err
    doc = _valid()
    doc["running"] = [{"host_id": "nope", "slots": 1, "end_ms": 10}]
    bad.write_text(json.dumps(doc))
    assert cli.main(["placement", "--instance", str(bad)]) == 2
    assert "instance.running[0].host_id: unknown host 'nope'" in capsys.readouterr().err


def test_not_json_and_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert cli.main(["placement", "--instance", str(bad)]) == 2
    assert capsys.readouterr().err.startswith("cloudseat-loadtest placement: error: instance: not JSON")
    assert cli.main(["placement", "--instance", str(tmp_path / "missing.json")]) == 2
    assert "instance: cannot read" in capsys.readouterr().err


def test_console_script_exit_code_and_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_broken("hosts.0.free_slots", -1)))
    done = subprocess.run(
        [sys.executable, "-m", "loadtest", "placement", "--instance", str(bad)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "cloudseat-loadtest placement: error: instance.hosts[0].free_slots: must be an integer ≥ 0"
    ]
    assert "Traceback" not in done.stderr


def test_runs_a_given_instance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_valid()))
    result = tmp_path / "r.json"
    assert (
        cli.main(["placement", "--instance", str(good), "--json", str(result), "--headline-batches", "1"])
        == 0
    )
    data = json.loads(result.read_text())
    assert data["solvers"]["engine"]["placed"] == 1
    assert "engine" in capsys.readouterr().out


def test_multi_slot_pct_sets_the_share_of_multi_slot_sessions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shares = {}
    for pct in (2.0, 8.0):
        out = tmp_path / f"i{pct}.json"
        args = ["placement", "--hosts", "50", "--sites", "5", "--venues", "10", "--requests", "2000"]
        code = cli.main([*args, "--multi-slot-pct", str(pct), "--headline-batches", "0", "--exact-sample", "0",
                         "--exact-max-requests", "0", "--write-instance", str(out)])
        assert code == 0
        requests = instance_file.read(out).requests
        shares[pct] = sum(1 for r in requests if r.slots > 1) / len(requests) * 100
    assert 1.0 <= shares[2.0] <= 3.0
    assert 6.5 <= shares[8.0] <= 9.5
    capsys.readouterr()
    assert cli.main(["placement", "--multi-slot-pct", "150"]) == 2
    assert "--multi-slot-pct" in capsys.readouterr().err


def test_an_instance_with_images_prices_cold_starts_by_the_bytes(tmp_path: Path) -> None:
    doc = _valid()
    doc["leases"] = []
    base = doc["hosts"][0]
    doc["hosts"] = [
        {**base, "id": "cold", "games": [], "price_micros": 1_500_000},
        {**base, "id": "holds-v1", "games": [], "price_micros": 1_600_000, "images": ["lol@1"]},
    ]
    doc["images"] = {"lol": {"version": "2", "size_bytes": 40 << 30, "lacking_from": {"1": 1 << 30}}}
    path = tmp_path / "i.json"
    path.write_text(json.dumps(doc))
    inst = instance_file.read(path)
    assert instance_file.to_json(inst)["images"] == doc["images"]
    out = tmp_path / "a.json"
    args = ["placement", "--instance", str(path), "--exact-max-requests", "0", "--exact-sample", "0"]
    assert cli.main([*args, "--headline-batches", "0", "--assignments", str(out)]) == 0
    assert json.loads(out.read_text()) == {"r0": "holds-v1"}
