"""`cloudseat-client play` end to end: a real broker, real agent processes, the client as its own process.

Headless and in an SDL window (SDL's offscreen "dummy" video driver: no display here, the window's event path is
real), the seat's setup mistakes as one-line messages, and a host lost mid-game resumed into a new session.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest
from cloudseat.client import BrokerClient
from cloudseat.v1 import common_pb2, fleet_pb2, session_pb2

from broker.server import Broker
from tests.integration.conftest import Launch

pytestmark = pytest.mark.slow
S = common_pb2.SessionState


async def _online(client: BrokerClient, *hosts: str) -> None:
    async with asyncio.timeout(30):
        while True:
            listed = await client.fleet.ListHosts(fleet_pb2.ListHostsRequest())
            online = {h.host_id for h in listed.hosts if h.status == fleet_pb2.HOST_STATUS_ONLINE}
            if set(hosts) <= online:
                return
            await asyncio.sleep(0.1)


async def _client(
    broker_addr: str, *args: str, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "thin_client",
        "play",
        "--broker",
        broker_addr,
        "--ice-address",
        "127.0.0.1",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )


async def _finish(proc: asyncio.subprocess.Process, timeout_s: float = 60) -> tuple[int, str, str]:
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _ended(client: BrokerClient, session_id: str) -> common_pb2.Session:
    got = await client.sessions.GetSession(session_pb2.GetSessionRequest(session_id=session_id))
    return got.session


async def test_headless_client_plays_sends_input_and_ends(
    world: BrokerClient, broker: Broker, launch: Launch, tmp_path: Path
) -> None:
    await launch("agent-1")
    await _online(world, "agent-1")
    out_json = tmp_path / "play.json"
    proc = await _client(
        f"127.0.0.1:{broker.port}",
        *("--venue", "cafe", "--seat", "s1", "--zone", "std", "--game", "demo"),
        *("--headless", "--duration", "4", "--stats-every", "0.5", "--json", str(out_json)),
        *("--report-every", "1"),
    )
    code, out, err = await _finish(proc)
    assert code == 0, out + err
    # The patron saw each step: with a free host the start's answer is the placement itself (no queue to show),
    # and an agent whose game comes up at once reports it ready without a "starting" first.
    for step in (
        "placed on agent-1 at site-near",
        "demo is ready on agent-1",
        "playing demo on agent-1",
    ):
        assert step in out, out
    assert "fps" in out and "input→photon" in out
    result = json.loads(out_json.read_text())
    assert result["frames"] > 30 and result["unreadable_frames"] == 0
    # Inputs went out and later frames' stamps carried them.
    assert result["inputs_sent"] > 0 and result["inputs_shown"] > 0
    assert result["input_to_photon_ms_p50"] is not None
    assert result["capture_to_decoded_ms_p50"] is not None and result["session_ready_ms_p50"] is not None
    assert len(result["sessions"]) == 1 and result["resumes"] == 0 and result["reconnects"] == 0
    assert result["samples"] and all("fps" in s for s in result["samples"])
    # The seat reported its own stats windows, and the broker keeps them for the SLA.
    assert result["stats_reported"] > 0, err
    assert broker.pool is not None
    seat_samples = await broker.pool.fetchval(
        "SELECT coalesce(sum(seat_samples), 0) FROM stream_minutes WHERE session_id = $1::uuid",
        result["sessions"][0]["session_id"],
    )
    assert seat_samples == result["stats_reported"]
    # Ended cleanly, by the patron.
    session = await _ended(world, result["sessions"][0]["session_id"])
    assert (
        session.state == S.SESSION_STATE_ENDED and session.end_reason == common_pb2.END_REASON_ENDED_BY_PATRON
    )


async def test_window_client_sends_its_window_input(
    world: BrokerClient, broker: Broker, launch: Launch, tmp_path: Path, artifacts_dir: Path
) -> None:
    await launch("agent-1")
    await _online(world, "agent-1")
    out_json = tmp_path / "play.json"
    shot = artifacts_dir / "thin-client-window.png"
    shot.unlink(missing_ok=True)
    proc = await _client(
        f"127.0.0.1:{broker.port}",
        *("--venue", "cafe", "--seat", "s2", "--game", "demo", "--scripted-input", "--input-hz", "20"),
        *("--duration", "3", "--json", str(out_json), "--screenshot", str(shot)),
        env={"SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy"},
    )
    code, out, err = await _finish(proc)
    assert code == 0, out + err
    result = json.loads(out_json.read_text())
    # The scripted input went through SDL's event queue and the window's translation, and frames showed it.
    assert result["inputs_sent"] > 0 and result["inputs_shown"] > 0 and result["frames"] > 30
    assert shot.stat().st_size > 10_000  # the window's last picture, kept for people to look at


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--venue", "nowhere", "--seat", "s1", "--game", "demo"),
            "venue_id: no venue 'nowhere'; check --venue",
        ),
        (("--venue", "cafe", "--seat", "s99", "--game", "demo"), "seat_id: no seat 's99'; check --seat"),
        (("--venue", "cafe", "--seat", "s1", "--game", "chess"), "game_id: no game 'chess'; check --game"),
        (
            ("--venue", "cafe", "--seat", "s1", "--game", "demo", "--zone", "vip"),
            "zone_id: seat 's1' is in zone",
        ),
        (("--venue", "cafe", "--seat", "no spaces", "--game", "demo"), "seat_id: must be"),
    ],
)
async def test_setup_mistakes_are_one_line(
    world: BrokerClient, broker: Broker, args: tuple[str, ...], message: str
) -> None:
    proc = await _client(f"127.0.0.1:{broker.port}", *args, "--headless", "--duration", "2")
    code, _, err = await _finish(proc)
    assert code == 2
    assert err.count("\n") == 1 and message in err and "Traceback" not in err, err


async def test_unreachable_broker_is_one_line(tmp_path: Path) -> None:
    proc = await _client("127.0.0.1:9", "--venue", "cafe", "--seat", "s1", "--game", "demo", "--headless")
    code, _, err = await _finish(proc)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "cannot reach the broker at 127.0.0.1:9" in err


async def test_lost_host_resumes_into_a_new_session_at_once(
    world: BrokerClient, broker: Broker, launch: Launch, tmp_path: Path
) -> None:
    agents = {"agent-1": await launch("agent-1"), "agent-2": await launch("agent-2")}
    await _online(world, *agents)
    out_json = tmp_path / "play.json"
    proc = await _client(
        f"127.0.0.1:{broker.port}",
        *("--venue", "cafe", "--seat", "s1", "--game", "demo", "--headless", "--stats-every", "0.5"),
        *("--json", str(out_json)),
    )
    assert proc.stdout is not None
    first: common_pb2.Session | None = None
    async with asyncio.timeout(30):
        while first is None:
            line = (await proc.stdout.readline()).decode()
            assert line, "the client stopped before playing"
            if line.startswith("session "):
                session_id = line.split()[1]
            if line.startswith("playing demo"):
                first = await _ended(world, session_id)
    # The host dies under the patron.
    agents[first.host_id].send_signal(signal.SIGKILL)
    async with asyncio.timeout(30):
        while True:
            line = (await proc.stdout.readline()).decode()
            assert line, "the client stopped instead of resuming"
            if line.startswith("playing demo"):
                break
    proc.send_signal(signal.SIGINT)
    code, out, err = await _finish(proc)
    assert code == 0, out + err
    result = json.loads(out_json.read_text())
    assert result["resumes"] == 1 and len(result["sessions"]) == 2
    lost, resumed = result["sessions"]
    assert lost["session_id"] == first.session_id and resumed["resumes_session_id"] == first.session_id
    assert resumed["host_id"] != first.host_id
    assert (await _ended(world, first.session_id)).end_reason == common_pb2.END_REASON_HOST_LOST
    final = await _ended(world, resumed["session_id"])
    assert final.end_reason == common_pb2.END_REASON_ENDED_BY_PATRON
