"""The placement data model, the latency policy, and the purity of the package."""

from __future__ import annotations

import subprocess
import sys

import pytest

from broker.placement import (
    UNREACHABLE_MS,
    Host,
    LatencyMatrix,
    LatencyPolicy,
    Lease,
    Params,
    PendingReason,
    Request,
)


def test_latency_policy_steps_loosen_toward_the_cap() -> None:
    policy = LatencyPolicy()
    assert policy.target_ms(30, 0) == 15
    assert policy.target_ms(30, 1_999) == 15
    assert policy.target_ms(30, 2_000) == 22  # 75% of 30, rounded down
    assert policy.target_ms(30, 4_999) == 22
    assert policy.target_ms(30, 5_000) == 30
    assert policy.target_ms(30, 10**9) == 30
    assert policy.target_ms(10, 0) == 5


def test_latency_policy_never_exceeds_the_cap() -> None:
    policy = LatencyPolicy(((0, 100), (1_000, 100)))
    for cap in (1, 7, 30, 1000):
        for waited in (0, 999, 1_000, 10**6):
            assert policy.target_ms(cap, waited) <= cap


def test_latency_policy_custom_steps() -> None:
    policy = LatencyPolicy(((0, 40), (500, 60), (900, 90)))
    assert [policy.target_ms(100, w) for w in (0, 499, 500, 899, 900)] == [40, 40, 60, 60, 90]


@pytest.mark.parametrize(
    "steps",
    [(), ((100, 50),), ((0, 50), (0, 75)), ((0, 50), (2000, 75), (1000, 100)), ((0, 0),), ((0, 101),)],
)
def test_latency_policy_rejects_bad_steps(steps: tuple[tuple[int, int], ...]) -> None:
    with pytest.raises(ValueError):
        LatencyPolicy(steps)


def test_values_check_themselves() -> None:
    with pytest.raises(ValueError):
        Request("r", "v", "g", cap_ms=10, target_ms=11, arrival_ms=0)
    with pytest.raises(ValueError):
        Request("r", "v", "g", cap_ms=10, target_ms=5, arrival_ms=0, slots=0)
    with pytest.raises(ValueError):
        Host("h", "s", "l4", free_slots=5, total_slots=4, price_micros=1, games=frozenset())
    with pytest.raises(ValueError):
        Lease("l", "v", "l4", unused_slots=-1)
    with pytest.raises(ValueError):
        Params(stay_pending_cost_micros=0)


def test_pending_reason_members_are_the_wire_names() -> None:
    assert [r.value for r in PendingReason] == [
        "QUEUED",
        "NO_SITE_WITHIN_CAP",
        "NO_CAPACITY_WITHIN_CAP",
        "CANDIDATES_DRAINED",
        "WAITING_FOR_LOOSER_CAP",
    ]
    assert PendingReason("QUEUED") is PendingReason.QUEUED
    assert isinstance(PendingReason.QUEUED, str)


def test_default_pending_cost_dwarfs_any_placement() -> None:
    params = Params()
    dearest = 4 * 5_000_000 + params.latency_weight_micros_per_ms * 1_000 + params.cold_start_penalty_micros
    assert params.stay_pending_cost_micros > 10 * dearest


def test_latency_matrix_is_a_mapping_of_measured_pairs() -> None:
    matrix = LatencyMatrix(["v0", "v1"], ["s0", "s1"], [[3, UNREACHABLE_MS], [7, 9]])
    assert dict(matrix) == {("v0", "s0"): 3, ("v1", "s0"): 7, ("v1", "s1"): 9}
    assert len(matrix) == 3
    assert ("v0", "s1") not in matrix
    assert matrix.get(("v0", "s1")) is None
    assert matrix[("v1", "s1")] == 9
    with pytest.raises(KeyError):
        matrix[("v9", "s0")]
    assert dict(LatencyMatrix.from_mapping(dict(matrix))) == dict(matrix)


def test_the_core_imports_no_io_stack() -> None:
    """broker.placement is pure: importing it pulls in no asyncio, asyncpg, grpc or protobuf."""
    code = (
        "import sys, broker.placement, broker.placement.engine, broker.placement.exact;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('asyncio', 'asyncpg', 'grpc')"
        " or m.endswith('_pb2') or m.startswith('google.protobuf'));"
        "print(','.join(bad))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
