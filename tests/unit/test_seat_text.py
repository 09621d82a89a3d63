"""What a seat tells its patron: one line per session step, one line per setup mistake (thin_client.seat)."""

from __future__ import annotations

import grpc
import pytest
from cloudseat import retry
from cloudseat import seat_protocol as sp
from cloudseat.v1 import common_pb2, session_pb2
from grpc import aio

from broker import lifecycle
from thin_client import scripted
from thin_client.seat import SeatConfig, describe, explain, lost_contact, resumable, waiting

S = common_pb2.SessionState
CFG = SeatConfig(broker="10.0.0.1:50051", venue_id="cafe", seat_id="s1")


def _update(state: int, **fields: object) -> session_pb2.SessionUpdate:
    queue = {k: fields.pop(k) for k in ("queue_position", "queue_length") if k in fields}
    return session_pb2.SessionUpdate(
        session=common_pb2.Session(state=state, game_id="demo", **fields),  # type: ignore[arg-type]
        **queue,  # type: ignore[arg-type]
    )


def test_each_step_reads_as_one_line() -> None:
    assert (
        describe(_update(S.SESSION_STATE_PENDING, queue_position=3, queue_length=9)) == "in the queue: 3 of 9"
    )
    assert (
        describe(
            _update(
                S.SESSION_STATE_PENDING,
                queue_position=1,
                queue_length=1,
                pending_reason=common_pb2.PENDING_REASON_NO_CAPACITY_WITHIN_CAP,
            )
        )
        == "in the queue: 1 of 1 (every host close enough for this zone is busy)"
    )
    assert (
        describe(_update(S.SESSION_STATE_PLACED, host_id="h1", site_id="a", latency_ms=6))
        == "placed on h1 at a (6 ms away)"
    )
    assert describe(_update(S.SESSION_STATE_STARTING, host_id="h1")) == "starting demo on h1"
    assert describe(
        _update(S.SESSION_STATE_ENDED, end_reason=common_pb2.END_REASON_HOST_LOST, end_detail="no heartbeat")
    ) == ("ended: the game host was lost (no heartbeat)")
    for state in S.values():
        assert "\n" not in describe(_update(state))


def test_resumable_matches_the_broker_rule() -> None:
    for reason in common_pb2.EndReason.values():
        if reason == common_pb2.END_REASON_UNSPECIFIED:
            continue
        name = common_pb2.EndReason.Name(reason).removeprefix("END_REASON_")
        session = common_pb2.Session(state=S.SESSION_STATE_ENDED, end_reason=reason)
        assert resumable(session) is (lifecycle.EndReason(name) in lifecycle.RESUMABLE), name
    assert not resumable(common_pb2.Session(state=S.SESSION_STATE_STREAMING))


def _rpc_error(code: grpc.StatusCode, details: str) -> aio.AioRpcError:
    return aio.AioRpcError(code, aio.Metadata(), aio.Metadata(), details=details)


@pytest.mark.parametrize(
    ("code", "details", "expected"),
    [
        (
            grpc.StatusCode.UNAVAILABLE,
            "failed to connect to all addresses",
            "cannot reach the broker at 10.0.0.1",
        ),
        # gRPC's own text for a name that does not resolve (recorded from grpcio 1.80): never shown raw.
        (
            grpc.StatusCode.UNAVAILABLE,
            "errors resolving nosuch.invalid:50051: [field:hostname lookup error:address lookup failed for "
            "nosuch.invalid:50051: Domain name not found]",
            "cannot resolve the broker's host name '10.0.0.1' (--broker 10.0.0.1:50051)",
        ),
        (
            grpc.StatusCode.UNAVAILABLE,
            "failed to connect to all addresses; last error: UNKNOWN: ipv4:10.0.0.1:50051: Failed to connect to "
            "remote host: Connection refused",
            "nothing listens there (connection refused); check the broker address (--broker)",
        ),
        (grpc.StatusCode.UNAVAILABLE, "venue store: the database cannot be reached", "cannot serve this seat now"),
        (grpc.StatusCode.INTERNAL, "boom", "the broker at 10.0.0.1:50051 failed (boom)"),
        (grpc.StatusCode.UNAUTHENTICATED, "authorization: no token", "this seat has no token: give --token-file"),
        (grpc.StatusCode.NOT_FOUND, "venue_id: no venue 'x'", "venue_id: no venue 'x'; check --venue"),
        (grpc.StatusCode.NOT_FOUND, "game_id: no game 'x'", "check --game"),
        (
            grpc.StatusCode.PERMISSION_DENIED,
            "session_token: does not match",
            "refused this seat's credentials",
        ),
        (
            grpc.StatusCode.FAILED_PRECONDITION,
            "seat_id: the seat already has a live session",
            "already has a live",
        ),
        (
            grpc.StatusCode.INVALID_ARGUMENT,
            "seat_id: must be 1-64",
            "the seat's request was refused: seat_id",
        ),
        (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "overloaded: retry in 30 ms",
            "the broker is too busy to take this seat now; try again in a minute",
        ),
    ],
)
def test_refusals_say_what_to_fix(code: grpc.StatusCode, details: str, expected: str) -> None:
    message = str(explain(_rpc_error(code, details), CFG))
    assert expected in message and "\n" not in message


def test_a_wait_to_ask_again_says_why_and_when() -> None:
    assert waiting(retry.BUSY, 0.4, CFG) == "the broker is busy; your request is kept; trying again in 0.4 s"
    assert waiting(retry.BUSY, 0.012, CFG).endswith("trying again in 0.1 s")  # never "in 0.0 s"
    assert (
        waiting(retry.UNREACHABLE, 1.0, CFG)
        == "cannot reach the broker at 10.0.0.1:50051; your request is kept; trying again in 1.0 s"
    )


def test_a_lost_broker_is_said_with_what_the_seat_keeps() -> None:
    """While the broker cannot be reached, the seat says so, that it retries, and what it keeps: never the last
    queue reason, which was about the hosts, not the broker."""
    queued = common_pb2.Session(
        state=S.SESSION_STATE_PENDING, pending_reason=common_pb2.PENDING_REASON_NO_CAPACITY_WITHIN_CAP
    )
    assert lost_contact(queued, CFG) == (
        "cannot reach the broker at 10.0.0.1:50051; retrying; your place in the queue is kept"
    )
    assert lost_contact(common_pb2.Session(state=S.SESSION_STATE_STREAMING), CFG).endswith("; the game goes on")
    assert lost_contact(common_pb2.Session(state=S.SESSION_STATE_STARTING), CFG).endswith("; your session is kept")


def test_scripted_pattern_is_valid_input_that_changes_the_game() -> None:
    kinds = set()
    for n in range(scripted.cycle_length()):
        msg = scripted.step(n)
        assert sp.decode_input(sp.encode_input(msg)) == msg
        kinds.add(type(msg))
    assert {sp.KeyInput, sp.MouseMove, sp.MouseButton, sp.Wheel, sp.Gamepad} <= kinds
    assert scripted.step(0) == scripted.step(scripted.cycle_length())
