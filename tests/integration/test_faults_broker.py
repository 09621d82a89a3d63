"""The broker killed (SIGKILL) under load and restarted (issue 7).

One broker process (`python -m broker serve`) at the production liveness settings (heartbeat 5 s, lost after 13 s),
two real agent programs and six scripted hosts, 24 seats playing sessions in a loop. The broker is killed in the
middle and a new process started on the same port and database. Asserted:

- no session lost or duplicated: every request id answered names one session, and the database holds exactly the
  sessions the seats were answered about; no session ends but by its seat; the store's invariants hold;
- agents reconnect under the same epoch (nothing replaced, nothing refused);
- no host is marked lost during the restarted broker's grace period (it gives every agent host_lost_after to come
  back before judging), nor after it;
- StartSession retried with the same request id returns the same session;
- seats see only UNAVAILABLE (or their own deadline) while the broker is down, never UNKNOWN or INTERNAL, and their
  retries succeed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import time
from pathlib import Path

import asyncpg
import pytest
from cloudseat.client import BrokerClient
from cloudseat.v1 import common_pb2, fleet_pb2, session_pb2

from broker.config import BrokerConfig
from broker.server import Broker
from tests.integration import faults
from tests.integration.conftest import FAST
from tests.integration.scripted_agent import ScriptedAgent

pytestmark = pytest.mark.slow
S = common_pb2.SessionState
HEARTBEAT_S, LOST_AFTER_S = BrokerConfig().heartbeat_interval_s, BrokerConfig().host_lost_after_s


async def test_broker_killed_under_load_and_restarted(db_url: str, tmp_path: Path) -> None:
    port, agent_port = faults.free_port(), faults.free_port()
    target, agent_target = f"127.0.0.1:{port}", f"127.0.0.1:{agent_port}"
    first = await faults.start_broker(
        db_url,
        name="broker-1",
        listen=target,
        agent_listen=agent_target,
        heartbeat_s=HEARTBEAT_S,
        lost_after_s=LOST_AFTER_S,
    )
    second: faults.BrokerProcess | None = None
    agents: list[faults.LogProcess] = []
    fleet: list[faults.FleetAgent] = []
    load: faults.SeatLoad | None = None
    conn = await asyncpg.connect(db_url)
    try:
        async with BrokerClient(target) as client:
            seats = await faults.seed(client, seats=24, dark_sites=("site-dark",))
            # The real agents' site is out of the venue's reach: they show reconnection and liveness across the
            # restart, the scripted hosts carry the sessions (and count what they are sent).
            agents = [
                await faults.start_agent(tmp_path, f"agent-{i}", agent_target, site="site-dark") for i in (1, 2)
            ]
            fleet = [faults.FleetAgent([agent_target], f"host-{i:02d}", slots=3).start() for i in range(6)]
            hosts = [f"agent-{i}" for i in (1, 2)] + [a.host_id for a in fleet]

            async def all_online() -> bool:
                n = await conn.fetchval("SELECT count(*) FROM hosts WHERE status = 'online'")
                return bool(n == len(hosts))

            await faults.wait_until(all_online, timeout_s=30, interval_s=0.1, what="every host online")
            epochs = dict(await conn.fetch("SELECT host_id, epoch FROM hosts"))

            load = faults.SeatLoad([client], seats, hold_s=0.5).start()
            await asyncio.sleep(4.0)
            before_kill = dict(load.answers)
            assert before_kill, "the load made no session before the kill"

            first.signal(signal.SIGKILL)
            killed_at = time.monotonic()
            await first.kill()
            # Watch the hosts from here to past the grace period: none may be declared lost.
            statuses: list[tuple[float, str, str]] = []

            async def poll_hosts() -> None:
                while True:
                    for r in await conn.fetch("SELECT host_id, status FROM hosts"):
                        statuses.append((time.monotonic(), r["host_id"], r["status"]))
                    await asyncio.sleep(0.2)

            poller = asyncio.create_task(poll_hosts())
            await asyncio.sleep(1.0)  # down for a moment, under load
            second = await faults.start_broker(
                db_url,
                name="broker-2",
                listen=target,
                agent_listen=agent_target,
                heartbeat_s=HEARTBEAT_S,
                lost_after_s=LOST_AFTER_S,
            )
            up_at = time.monotonic()
            lease_at, _ = await second.wait_event("took the placement lease", timeout_s=15)

            # The same request id, asked again after the restart, returns the same session.
            rid, answers = next(iter(before_kill.items()))
            sid, _ = answers[0]
            retry = await client.start_session("cafe", rid.split("-")[0], "demo", request_id=rid)
            assert retry.session.session_id == sid and not retry.created

            # Every agent comes back under its own epoch.
            for proc in agents:
                await proc.wait_event(
                    "registered with the broker", since=killed_at, reconnect=True, timeout_s=30
                )

            async def fleet_back() -> bool:
                return all(any(t > up_at for t in fa.connected_at) for fa in fleet)

            await faults.wait_until(fleet_back, timeout_s=30, what="every scripted host reconnected")
            reconnected_after = max(
                [t for p in agents for t, _ in p.events("registered with the broker", since=up_at)]
                + [min(t for t in fa.connected_at if t > up_at) for fa in fleet]
            )

            await asyncio.sleep(3.0)  # more load on the new process
            await load.stop()
            # Past the grace period and two more liveness checks: still nobody lost.
            await asyncio.sleep(max(0.0, lease_at + LOST_AFTER_S + 2.5 - time.monotonic()))
            poller.cancel()
            with pytest.raises(asyncio.CancelledError):
                await poller

            lost = sorted({h for _, h, st in statuses if st != "online"})
            assert lost == [], f"hosts marked lost across the restart: {lost}"
            assert dict(await conn.fetch("SELECT host_id, epoch FROM hosts")) == epochs, (
                "an agent was replaced"
            )
            assert all(fa.refusals == [] for fa in fleet)
            # Sent more sessions than slots: the reconcile-order bug below (scripted hosts take them all and count).
            overbooked = sum(len(fa.overbooked) for fa in fleet)

            # No session lost or duplicated.
            for rid, seen in load.answers.items():
                assert len({s for s, _ in seen}) == 1, (
                    f"request {rid} answered with different sessions: {seen}"
                )
            answered = {rid: seen[0][0] for rid, seen in load.answers.items()}
            rows = await conn.fetch("SELECT request_id, session_id::text, state, end_reason FROM sessions")
            in_db = {r["request_id"]: r["session_id"] for r in rows}
            assert in_db == answered, (
                "the database holds sessions the seats were not answered about, or lacks some"
            )
            reasons = {r["end_reason"] for r in rows}
            assert reasons <= {"ENDED_BY_PATRON"}, f"sessions ended by something else: {reasons}"
            assert all(r["state"] == "ENDED" for r in rows), "a seat's last session was left live"
            assert load.bad_codes == {}, f"answers no client may see: {load.bad_codes}"
            assert load.ended_early == {}, load.ended_early
            await faults.check_store(db_url)
            faults.report(
                "broker SIGKILL under load, restarted (5 s / 13 s)",
                sessions=len(answered),
                retries_answered_created_false=sum(not c for seen in load.answers.values() for _, c in seen),
                down_s=round(up_at - killed_at, 2),
                seats_longest_outage_s=round(load.longest_outage_s(), 2),
                agents_all_back_after_restart_s=round(reconnected_after - up_at, 2),
                hosts_lost=0,
                codes=dict(load.codes),
                ready_wait_max_s=round(max(load.ready_waits, default=0.0), 2),
                never_ready=len(load.never_ready),
                starts_beyond_slots_after_reconnect=overbooked,
            )
    finally:
        if load is not None:
            await load.stop()
        for fa in fleet:
            await fa.close()
        for proc in agents:
            await proc.kill()
        for b in (first, second):
            if b is not None:
                await b.kill()
        await conn.close()


async def test_a_report_lost_with_the_broker_is_recovered_when_the_agent_reconnects(
    world: BrokerClient, broker: Broker
) -> None:
    """The agent started the session and said so, but the broker that received the report died before applying it
    (played here by an agent that does not report). It reconnects under the same epoch, running the session READY:
    the broker must catch up instead of timing the session out."""
    async with ScriptedAgent(world, "host-1", epoch=7, auto_ready=False) as agent:
        started = await world.start_session("cafe", "s1", "demo")
        sid = await asyncio.wait_for(agent.started.get(), 10)
        assert sid == started.session.session_id
    async with ScriptedAgent(world, "host-1", epoch=7, running=((sid, S.SESSION_STATE_READY),)):

        async def caught_up() -> bool:
            got = await world.sessions.GetSession(session_pb2.GetSessionRequest(session_id=sid))
            return bool(got.session.state == S.SESSION_STATE_READY)

        with contextlib.suppress(AssertionError):
            await faults.wait_until(caught_up, timeout_s=5, what="the broker applies the agent's state")
        got = await world.sessions.GetSession(session_pb2.GetSessionRequest(session_id=sid))
        host = await world.fleet.GetHost(fleet_pb2.GetHostRequest(host_id="host-1"))
        assert host.live_sessions == 1
        assert got.session.state == S.SESSION_STATE_READY, common_pb2.SessionState.Name(got.session.state)


@pytest.fixture
def broker_config(db_url: str) -> BrokerConfig:
    """Heartbeat 1 s, lost after 6 s: time for a reconnect without the host being declared lost."""
    return dataclasses.replace(FAST, database_url=db_url, heartbeat_interval_s=1.0, host_lost_after_s=6.0)


async def test_reconnect_stops_ended_sessions_before_starting_new_ones(
    world: BrokerClient, broker: Broker, db_url: str
) -> None:
    """A full host's link breaks unrecorded (the broker process holding it was restarted: nobody saw it die, so the
    host stays a placement candidate until it is judged lost); meanwhile its seats end their sessions and new ones
    are placed in the freed slots. When the agent reconnects, it must be told to stop the old ones before it is
    asked to start the new ones, as a real agent refuses a start when all its slots are busy."""
    async with ScriptedAgent(world, "host-1", epoch=3, slots=2) as agent:
        old = [await world.start_session("cafe", f"s{i}", "demo") for i in (1, 2)]
        for o in old:
            await world.wait_for(o.session.session_id, S.SESSION_STATE_READY)
        running = tuple((o.session.session_id, S.SESSION_STATE_READY) for o in old)
        del agent
    # This broker saw the link end and recorded it (nothing new goes to such a host); a restarted process would not
    # have: take the record back, as if it never was.
    conn = await asyncpg.connect(db_url)
    try:
        await faults.wait_until(
            lambda: conn.fetchval("SELECT link_lost_at IS NOT NULL FROM hosts WHERE host_id = 'host-1'"),
            timeout_s=5,
            what="the link's end recorded",
        )
        await conn.execute("UPDATE hosts SET link_lost_at = NULL WHERE host_id = 'host-1'")
    finally:
        await conn.close()
    for o in old:
        await world.end_session(o.session.session_id, o.session_token)
    new = [await world.start_session("cafe", f"s{i}", "demo") for i in (3, 4)]

    async def placed() -> bool:
        for n in new:
            got = await world.sessions.GetSession(
                session_pb2.GetSessionRequest(session_id=n.session.session_id)
            )
            if got.session.state != S.SESSION_STATE_PLACED:
                return False
        return True

    await faults.wait_until(placed, timeout_s=5, what="the new sessions placed on the away host")
    async with ScriptedAgent(world, "host-1", epoch=3, slots=2, running=running) as back:
        for n in new:
            await world.wait_for(n.session.session_id, S.SESSION_STATE_READY)
        order = [
            (m.WhichOneof("body"), m.start_session.session_id or m.stop_session.session_id)
            for m in back.commands
        ]
    stops = [i for i, (kind, _) in enumerate(order) if kind == "stop_session"]
    starts = [i for i, (kind, _) in enumerate(order) if kind == "start_session"]
    assert len(stops) == 2 and len(starts) == 2, order
    assert max(stops) < min(starts), f"a start came before the stops that free its slot: {order}"
    reasons = {back.commands[i].stop_session.reason for i in stops}
    assert reasons == {common_pb2.END_REASON_ENDED_BY_PATRON}, reasons


async def test_a_session_the_agent_no_longer_runs_is_ended_when_it_reconnects(
    world: BrokerClient, broker: Broker
) -> None:
    """The agent reconnects under the same epoch no longer running a session the broker holds STREAMING (its ENDED
    report was lost with a killed broker): the broker ends it FAILED, or the seat stays blocked and the slot held
    for ever (STREAMING has no timeout)."""
    async with ScriptedAgent(world, "host-1", epoch=7) as agent:
        started = await world.start_session("cafe", "s1", "demo")
        await world.wait_for(started.session.session_id, S.SESSION_STATE_READY)
        await agent.link.report(started.session.session_id, S.SESSION_STATE_STREAMING)
        await world.wait_for(started.session.session_id, S.SESSION_STATE_STREAMING)
    # The workload died and the agent's report of it never reached the database; it reconnects running nothing.
    async with ScriptedAgent(world, "host-1", epoch=7, running=()):
        ended = await world.wait_for(started.session.session_id, S.SESSION_STATE_ENDED, timeout_s=5)
        assert ended.state == S.SESSION_STATE_ENDED, "a session no host runs is still live"
        assert ended.end_reason == common_pb2.END_REASON_FAILED


async def test_a_site_that_loses_most_of_its_hosts_at_once_takes_no_new_session(
    world: BrokerClient, broker: Broker
) -> None:
    """A site's power or uplink fails: three of its four hosts' links die at once. Its fourth host, still linked
    (as the broker sees it: its link's end may simply not be seen yet), is free and nearer than the far site, but a
    resume of one of the lost sessions goes to the far site (broker.site_watch; docs/faults.md)."""
    names = [f"near-{i}" for i in range(4)]
    async with contextlib.AsyncExitStack() as stack:
        near = {n: await stack.enter_async_context(ScriptedAgent(world, n, slots=1)) for n in names}
        await stack.enter_async_context(ScriptedAgent(world, "far-1", site_id="site-far", slots=1))
        started = [await world.start_session("cafe", f"s{i}", "demo") for i in (1, 2, 3)]
        held = [(await world.wait_for(s.session.session_id, S.SESSION_STATE_READY)).host_id for s in started]
        assert len(set(held)) == 3 and set(held) < set(names)  # near ones, one each
        # The three near hosts holding the sessions lose their links; the free one stays.
        for host in held:
            await near[host].lose_link()
        gone = await world.wait_for(started[0].session.session_id, S.SESSION_STATE_ENDED, timeout_s=15)
        assert gone.end_reason == common_pb2.END_REASON_HOST_LOST
        resumed = await world.start_session(
            "cafe", "s1", "demo", resume=(started[0].session.session_id, started[0].session_token)
        )
        where = await world.wait_for(resumed.session.session_id, S.SESSION_STATE_READY)
        assert where.host_id == "far-1"
