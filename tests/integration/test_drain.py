"""A provider's drain through the real broker (broker.drain): new sessions go elsewhere at once; running ones go on
until they end, or until the drain's deadline, with their patrons warned ahead of it; at the deadline they end
HOST_DRAINED and resume on another host ahead of the queue with their paid time kept; an undrain (or a drain with no
deadline) before then cancels the move; bad input is named and writes nothing. Warnings in seconds (BrokerConfig)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import math
import time

import asyncpg
import grpc
import pytest
from cloudseat.client import BrokerClient
from cloudseat.v1 import common_pb2, fleet_pb2, session_pb2
from grpc import aio

from broker import cli
from broker.config import BrokerConfig
from broker.drain import DrainConfig
from broker.server import Broker
from tests.integration.scripted_agent import ScriptedAgent

S = common_pb2.SessionState
C = grpc.StatusCode


@pytest.fixture
def broker_config(broker_config: BrokerConfig) -> BrokerConfig:
    return dataclasses.replace(broker_config, drain=DrainConfig(warnings_s=(3.0, 1.0)))


async def _streaming(
    world: BrokerClient, agents: dict[str, ScriptedAgent], seat: str, paid_s: int = 0
) -> tuple[str, str]:
    """A session of `seat` STREAMING on whichever of `agents` (by host id) it was placed on."""
    started = await world.start_session("cafe", seat, "demo", paid_time_s=paid_s)
    sid = started.session.session_id
    ready = await world.wait_for(sid, S.SESSION_STATE_READY)
    await agents[ready.host_id].link.report(sid, S.SESSION_STATE_STREAMING)
    await world.wait_for(sid, S.SESSION_STATE_STREAMING)
    return sid, started.session_token


async def _host(world: BrokerClient, host_id: str) -> fleet_pb2.Host:
    return await world.fleet.GetHost(fleet_pb2.GetHostRequest(host_id=host_id))


async def _drain(world: BrokerClient, host_id: str, deadline_s: int = 0) -> fleet_pb2.Host:
    return await world.fleet.DrainHost(
        fleet_pb2.DrainHostRequest(host_id=host_id, reason="kernel update", deadline_s=deadline_s)
    )


async def _queue_place(client: BrokerClient, session_id: str) -> tuple[int, int]:
    async with asyncio.timeout(30):
        async for update in client.watch(session_id):
            if update.queue_position:
                return update.queue_position, update.queue_length
    raise AssertionError("the session left the queue before a position was shown")


async def _stays(world: BrokerClient, sid: str, state: int, for_s: float) -> None:
    """The session is still in `state` after `for_s` (a liveness duty runs several times meanwhile)."""
    with pytest.raises(TimeoutError):
        await world.wait_for(sid, S.SESSION_STATE_ENDED, timeout_s=for_s)
    assert (await world.sessions.GetSession(session_pb2.GetSessionRequest(session_id=sid))).session.state == state


async def test_a_drain_without_deadline_sends_new_sessions_elsewhere_and_lets_running_ones_go_on(
    world: BrokerClient,
) -> None:
    async with ScriptedAgent(world, "host-1", slots=2) as drained_agent:
        sid, token = await _streaming(world, {"host-1": drained_agent}, "s1")
        host = await _drain(world, "host-1")
        assert host.drained and not host.HasField("drain_deadline") and host.live_sessions == 1
        async with ScriptedAgent(world, "host-2", slots=2):
            # Room is left on host-1, but the new session goes to host-2 at once.
            other = await world.start_session("cafe", "s2", "demo")
            placed = await world.wait_for(other.session.session_id, S.SESSION_STATE_READY)
            assert placed.host_id == "host-2"
            # The running one goes on, with no move announced, past the agent's drain command.
            async with asyncio.timeout(30):
                while not any(c.WhichOneof("body") == "drain" for c in drained_agent.commands):
                    await asyncio.sleep(0.05)
            async with asyncio.timeout(30):
                first = await anext(aiter(world.watch(sid)))
            assert first.session.state == S.SESSION_STATE_STREAMING and not first.HasField("move_in_s")
            await _stays(world, sid, S.SESSION_STATE_STREAMING, 2.0)
            assert drained_agent.stopped.empty()
            listed = await world.fleet.ListHosts(fleet_pb2.ListHostsRequest(provider_id="prov"))
            by_id = {h.host_id: h for h in listed.hosts}
            assert by_id["host-1"].drained and by_id["host-1"].live_sessions == 1
            assert not by_id["host-2"].drained
            # It ends when its patron ends it: the drained host is then empty.
            await world.end_session(sid, token)
            assert (await _host(world, "host-1")).live_sessions == 0


async def test_a_deadline_warns_then_moves_the_sessions_ahead_of_the_queue_with_their_paid_time(
    world: BrokerClient, db_url: str
) -> None:
    async with ScriptedAgent(world, "host-1", slots=1) as drained_agent:
        sid, token = await _streaming(world, {"host-1": drained_agent}, "s1", paid_s=3600)
        async with ScriptedAgent(world, "host-2", slots=1) as other_agent:
            busy, busy_token = await _streaming(world, {"host-2": other_agent}, "s2")
            # The fleet is full: s3 queues.
            waiting = await world.start_session("cafe", "s3", "demo")
            assert await _queue_place(world, waiting.session.session_id) == (1, 1)

            updates: list[session_pb2.SessionUpdate] = []

            async def follow() -> None:
                async with asyncio.timeout(30):
                    async for update in world.watch(sid):
                        updates.append(update)

            watcher = asyncio.create_task(follow())
            async with asyncio.timeout(30):
                while not updates:
                    await asyncio.sleep(0.02)
            host = await _drain(world, "host-1", deadline_s=5)
            assert host.drained and host.live_sessions == 1 and host.HasField("drain_deadline")
            listed = await world.fleet.ListHosts(fleet_pb2.ListHostsRequest(site_id="site-near"))
            assert [h.drain_deadline for h in listed.hosts if h.host_id == "host-1"] == [host.drain_deadline]

            await watcher
            ended = updates[-1].session
            assert ended.state == S.SESSION_STATE_ENDED and ended.end_reason == common_pb2.END_REASON_HOST_DRAINED
            # Moved at the deadline by the database clock, not before.
            assert ended.ended_at.ToMicroseconds() >= host.drain_deadline.ToMicroseconds()
            assert await asyncio.wait_for(drained_agent.stopped.get(), 10) == sid

            # Warned as paid time warns: the time before the move, then each threshold once, with its words.
            told = [u for u in updates if u.HasField("move_in_s")]
            assert told and 0 < told[0].move_in_s <= 5
            warnings = [(u.move_warning_s, list(u.warnings)) for u in updates if u.move_warning_s]
            assert [w for w, _ in warnings] == [3, 1]
            assert warnings[0][1] and warnings[0][1][0].startswith("this game host closes for maintenance in 3 ")
            assert "paid time left is kept" in warnings[1][1][0]

            # The seat resumes it: ahead of s3, which waited longer, with the paid time it had left.
            resumed = await world.start_session("cafe", "s1", "demo", resume=(sid, token))
            assert resumed.session.resumes_session_id == sid
            played_s = ended.ended_at.ToDatetime() - ended.paid_until.ToDatetime() + dt.timedelta(seconds=3600)
            assert resumed.session.paid_time_s == math.ceil(3600 - played_s.total_seconds())
            assert await _queue_place(world, resumed.session.session_id) == (1, 2)
            # The drained host is empty, and takes nothing new; a slot elsewhere goes to the resumed session first.
            assert (await _host(world, "host-1")).live_sessions == 0
            await world.end_session(busy, busy_token)
            placed = await world.wait_for(resumed.session.session_id, S.SESSION_STATE_READY)
            assert placed.host_id == "host-2"
            assert (await world.wait_for(waiting.session.session_id, S.SESSION_STATE_PENDING)).state == (
                S.SESSION_STATE_PENDING
            )

    conn = await asyncpg.connect(db_url)
    try:
        audit = await conn.fetch(
            "SELECT action, actor, target, detail FROM audit_log WHERE action IN ('host.drain', 'session.end') "
            "AND (target = 'host:host-1' OR target = $1) ORDER BY seq",
            f"session:{sid}",
        )
    finally:
        await conn.close()
    assert [(r["action"], r["actor"]) for r in audit][-1] == ("session.end", "system:drain")
    drained = [r for r in audit if r["action"] == "host.drain"]
    assert drained and '"deadline"' in drained[0]["detail"] and "kernel update" in drained[0]["detail"]


async def test_an_undrain_or_a_drain_without_deadline_before_the_deadline_cancels_the_move(
    world: BrokerClient,
) -> None:
    async with (
        ScriptedAgent(world, "host-1", slots=1) as undrained_agent,
        ScriptedAgent(world, "host-2", slots=1) as redrained_agent,
    ):
        agents = {"host-1": undrained_agent, "host-2": redrained_agent}
        first, _ = await _streaming(world, agents, "s1")
        second, _ = await _streaming(world, agents, "s2")
        by_host = {
            (await world.sessions.GetSession(session_pb2.GetSessionRequest(session_id=s))).session.host_id: s
            for s in (first, second)
        }
        assert set(by_host) == {"host-1", "host-2"}
        watched: list[session_pb2.SessionUpdate] = []

        async def follow() -> None:
            async for update in world.watch(by_host["host-1"]):
                watched.append(update)

        watcher = asyncio.create_task(follow())
        try:
            for h in ("host-1", "host-2"):
                assert (await _drain(world, h, deadline_s=2)).HasField("drain_deadline")
            async with asyncio.timeout(30):
                while not any(u.HasField("move_in_s") for u in watched):
                    await asyncio.sleep(0.02)
            undrained = await world.fleet.UndrainHost(fleet_pb2.UndrainHostRequest(host_id="host-1"))
            assert not undrained.drained and not undrained.HasField("drain_deadline")
            # A drain replaces the one in force: no deadline now, so nothing moves.
            redrained = await _drain(world, "host-2")
            assert redrained.drained and not redrained.HasField("drain_deadline")
            # The watcher is told: the move is off.
            async with asyncio.timeout(30):
                while not watched or watched[-1].HasField("move_in_s"):
                    await asyncio.sleep(0.02)
            # Well past the old deadline, both go on.
            await _stays(world, by_host["host-1"], S.SESSION_STATE_STREAMING, 3.0)
            await _stays(world, by_host["host-2"], S.SESSION_STATE_STREAMING, 0.5)
            assert undrained_agent.stopped.empty() and redrained_agent.stopped.empty()
        finally:
            watcher.cancel()


async def test_the_deadline_outlives_the_broker_that_set_it(
    world: BrokerClient, broker: Broker, broker_config: BrokerConfig
) -> None:
    """Set through one replica, which then stops: the next leader moves the sessions at the deadline the database
    keeps (the agent's link is held by the replica that stays)."""
    other = Broker(broker_config)
    await other.start()
    try:
        async with (
            BrokerClient(f"127.0.0.1:{other.port}") as via_other,
            ScriptedAgent(via_other, "host-1", slots=1) as agent,
        ):
            sid, _ = await _streaming(via_other, {"host-1": agent}, "s1")
            host = await _drain(world, "host-1", deadline_s=3)
            assert broker.leadership is not None and broker.leadership.is_leader
            await broker.stop(grace_s=0.5)
            ended = await via_other.wait_for(sid, S.SESSION_STATE_ENDED, timeout_s=20)
            assert ended.end_reason == common_pb2.END_REASON_HOST_DRAINED
            assert ended.ended_at.ToMicroseconds() >= host.drain_deadline.ToMicroseconds()
            assert other.leadership is not None and other.leadership.is_leader
            assert await asyncio.wait_for(agent.stopped.get(), 10) == sid
    finally:
        await other.stop(grace_s=0.5)


async def test_drain_refusals_name_the_field_and_write_nothing(world: BrokerClient, db_url: str) -> None:
    async with ScriptedAgent(world, "host-1", slots=1):
        cases = [
            (fleet_pb2.DrainHostRequest(host_id="host-1", deadline_s=604_801), C.INVALID_ARGUMENT, "deadline_s: "),
            (fleet_pb2.DrainHostRequest(host_id="host 1", deadline_s=60), C.INVALID_ARGUMENT, "host_id: "),
            (fleet_pb2.DrainHostRequest(host_id="nohost", deadline_s=60), C.NOT_FOUND, "host_id: no host"),
            (fleet_pb2.DrainHostRequest(host_id="host-1", reason="x" * 201, deadline_s=60), C.INVALID_ARGUMENT,
             "reason: "),
        ]  # fmt: skip
        for request, code, details in cases:
            with pytest.raises(aio.AioRpcError) as refused:
                await world.fleet.DrainHost(request)
            assert refused.value.code() is code, request
            assert (refused.value.details() or "").startswith(details), refused.value.details()
        host = await _host(world, "host-1")
        assert not host.drained and not host.HasField("drain_deadline")
    conn = await asyncpg.connect(db_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'host.drain'") == 0
        # The database holds the rule too: a deadline only on a drained host.
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE hosts SET drain_deadline = now() WHERE host_id = 'host-1'")
    finally:
        await conn.close()


async def test_the_cli_drains_with_a_deadline_and_undrains(
    world: BrokerClient, broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    async def run(*argv: str) -> tuple[int, str, str]:
        # The CLI runs its own event loop: in a thread, as from a shell.
        code = await asyncio.to_thread(cli.main, [*argv, "--broker", f"127.0.0.1:{broker.port}"])
        out, err = capsys.readouterr()
        # The broker's own log lines share the captured streams: the CLI's answer is the last line.
        last = (out.splitlines() or [""])[-1]
        return code, last, err

    async with ScriptedAgent(world, "host-1", slots=1):
        asked = time.time()
        code, out, _ = await run("drain", "host-1", "--deadline", "30m", "--reason", "fan swap")
        answered = time.time()
        assert code == 0 and out.startswith("host-1: drained, 0 sessions left, moving at ")
        host = await _host(world, "host-1")
        # 30 minutes from the moment the drain was made, which lies within the CLI's call (same machine's clock).
        assert int(asked) + 1800 - 1 <= host.drain_deadline.seconds <= int(answered) + 1800 + 1

        code, _, err = await run("drain", "host-1", "--deadline", "soon")
        assert code == 2 and err.startswith("cloudseat-broker: --deadline: 'soon' is not a lifetime")
        code, _, err = await run("drain", "nohost")
        assert code == 1 and "host_id: no host 'nohost'" in err
        assert (await _host(world, "host-1")).drain_deadline == host.drain_deadline  # nothing written

        code, out, _ = await run("undrain", "host-1")
        assert code == 0 and out == "host-1: taking sessions (0 sessions running)"
        assert not (await _host(world, "host-1")).HasField("drain_deadline")
