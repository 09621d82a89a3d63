"""What the fleet run reads of the broker from outside: its gRPC message counter in the /metrics text, and the role
of each of its processes."""

from __future__ import annotations

import pytest

from loadtest import fleet_processes

METRICS = """\
# HELP cloudseat_grpc_messages_total gRPC messages in and out.
# TYPE cloudseat_grpc_messages_total counter
cloudseat_grpc_messages_total{direction="in"} 1200.0
cloudseat_grpc_messages_total{direction="out"} 1300.0
cloudseat_grpc_messages_created{direction="in"} 1.7e9
# HELP cloudseat_queue_length Sessions waiting for placement.
# TYPE cloudseat_queue_length gauge
cloudseat_queue_length 3.0
"""


def test_the_message_counter_is_summed_over_its_labels() -> None:
    assert fleet_processes.grpc_messages(METRICS) == 2500


def test_a_counter_declared_without_the_suffix_reads_the_same() -> None:
    text = METRICS.replace("# TYPE cloudseat_grpc_messages_total", "# TYPE cloudseat_grpc_messages")
    assert fleet_processes.grpc_messages(text) == 2500


def test_a_broker_without_the_counter_reads_none() -> None:
    text = "# TYPE cloudseat_queue_length gauge\ncloudseat_queue_length 3.0\n"
    assert fleet_processes.grpc_messages(text) is None
    assert fleet_processes.grpc_messages("") is None


@pytest.mark.parametrize(
    ("root", "comm", "argv", "role"),
    [
        (True, "python", ["python", "-m", "broker", "serve"], "main"),
        (False, "python", ["python", "-m", "broker", "worker", "--role", "agents"], "agents"),
        (False, "python3.11", ["python", "-m", "broker", "--role=front"], "front"),
        (False, "broker-place", ["python", "-m", "broker"], "broker-place"),
        (False, "python3", ["python", "-c", "from multiprocessing.spawn import spawn_main"], "worker"),
        (False, "python3", ["python", "-m", "broker", "serve"], "child"),
    ],
)
def test_a_process_role_comes_from_its_flag_its_name_or_its_kind(
    root: bool, comm: str, argv: list[str], role: str
) -> None:
    assert fleet_processes.process_role(root, comm, argv) == role


def test_the_placement_rounds_in_a_window_come_from_the_brokers_own_histogram() -> None:
    # The broker's real counters and /metrics rendering, read the way the fleet run reads them.
    from broker.console.metrics import Metrics
    from broker.counters import Counters
    from loadtest import fleet_summary

    counters = Counters()
    metrics = Metrics(counters)
    counters.round_phases({"read": 0.004, "solve": 0.020, "commit": 0.003})
    before = fleet_processes.round_phases(metrics.render().decode())
    for _ in range(98):
        counters.round_phases({"read": 0.004, "solve": 0.040, "commit": 0.008})
    counters.round_phases({"read": 0.2, "solve": 0.040, "commit": 0.008})
    counters.round_phases({"read": 0.2, "solve": 0.040, "commit": 2.0})
    after = fleet_processes.round_phases(metrics.render().decode())
    assert after["solve"]["count"] == 101

    got = fleet_summary.placement_rounds(before, after, 10.0)
    assert got is not None
    assert got["rounds"] == 100 and got["rounds_per_s"] == 10.0
    assert got["solve"] == {"mean_ms": 40.0, "p50_ms_le": 50.0, "p99_ms_le": 50.0}
    assert got["read"]["p50_ms_le"] == 5.0 and got["read"]["p99_ms_le"] == 250.0
    assert got["commit"]["p99_ms_le"] == 10.0  # the one 2 s commit is the 100th: past p99
    assert fleet_summary.placement_rounds({}, {}, 10.0) is None
    assert fleet_summary.placement_rounds(after, after, 10.0) is None
