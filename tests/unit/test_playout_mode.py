"""A zone's playout mode on its way from PutZone to the agent's media session: the broker's request conversion
(validated, the field named), its conversions out (Zone, start command), and the agent's reading of the command."""

from __future__ import annotations

import pytest
from cloudseat.errors import InvalidArgument
from cloudseat.v1 import common_pb2

from broker.rpc import agent_commands, convert
from gpu_agent import sessions as agent_sessions
from gpu_agent.media import MediaConfig
from gpu_agent.media import playout_delay as pd

MODES = {
    common_pb2.PLAYOUT_MODE_AUTO: "AUTO",
    common_pb2.PLAYOUT_MODE_LOW_LATENCY: "LOW_LATENCY",
    common_pb2.PLAYOUT_MODE_SMOOTH: "SMOOTH",
}


def test_every_mode_of_the_contract_has_a_store_name_and_an_agent_mode_and_back() -> None:
    assert convert.PLAYOUT_FROM_PB == MODES
    assert {convert.PLAYOUT_TO_PB[name] for name in MODES.values()} == set(MODES)
    assert {m.value for m in pd.Mode} == set(MODES.values())
    for value, name in MODES.items():
        assert convert.playout(value, "playout") == name
        assert agent_sessions.playout_mode(value) is pd.Mode(name)


def test_unspecified_keeps_the_zones_mode() -> None:
    assert convert.playout(common_pb2.PLAYOUT_MODE_UNSPECIFIED, "playout") is None


@pytest.mark.parametrize("bad", [4, 99, -1])
def test_an_unknown_mode_is_refused_naming_the_field_and_the_choices(bad: int) -> None:
    with pytest.raises(InvalidArgument) as e:
        convert.playout(bad, "playout")
    assert e.value.field == "playout"
    assert "PLAYOUT_MODE_SMOOTH" in str(e.value) and str(bad) in str(e.value)


def _session(**extra: object) -> dict[str, object]:
    return {
        "session_id": "4b0f0e1c-2d9e-4a35-9d43-4f3a2b1c0d9e", "game_id": "demo", "tier": "720P60", "slots": 1,
        "venue_id": "cafe", "seat_id": "s1", **extra,
    }  # fmt: skip


def test_the_start_command_carries_the_sessions_mode_and_auto_for_a_change_without_one() -> None:
    smooth = agent_commands.start_command(_session(playout="SMOOTH")).start_session
    assert smooth.playout == common_pb2.PLAYOUT_MODE_SMOOTH
    assert agent_commands.start_command(_session()).start_session.playout == common_pb2.PLAYOUT_MODE_AUTO


def test_the_agent_takes_an_unspecified_or_unknown_mode_as_auto() -> None:
    assert agent_sessions.playout_mode(common_pb2.PLAYOUT_MODE_UNSPECIFIED) is pd.Mode.AUTO
    assert agent_sessions.playout_mode(42) is pd.Mode.AUTO


def test_the_clean_wait_is_bounded() -> None:
    for bad in (0.0, -1.0, 3601.0):
        with pytest.raises(ValueError, match="playout_clean_s"):
            MediaConfig(media_addresses=("127.0.0.1",), playout_clean_s=bad)
