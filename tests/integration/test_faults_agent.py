"""Faults of a GPU agent (issue 7): killed (SIGKILL), frozen (SIGSTOP), cut off (packets dropped).

Each time: the host is marked lost within the bound, its sessions end HOST_LOST, the patron watching is told at
once, nothing new is placed there; the old process coming back under its old epoch is refused; its old sessions are
never served twice (the broker keeps them ENDED, tells any process claiming them to stop, and refuses to relay an
offer to them). The agents are the real program (`python -m gpu_agent run`); the faults are real signals and real
dropped packets in a network namespace of the test's own.

Bounds asserted: "marked lost within 15 s" of the fault, with a documented margin for the design's own quantum (the
leader checks liveness once a second) and for a shared 2-core machine; "told at once" as within 2 s. Liveness is the
agent's link: the broker pings it below Python, sees a killed agent's link end at once and a frozen or cut-off one's
within two pings, and gives it the rest of host_lost_after to come back. The measured figures are printed (FAULT
lines) for docs/faults.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from cloudseat.client import AgentLinkClient, BrokerClient
from cloudseat.v1 import agent_pb2, common_pb2, fleet_pb2, session_pb2
from grpc import aio

from broker.config import BrokerConfig
from broker.server import Broker
from broker.store import database
from broker.store import hosts as host_store
from broker.store import placement as placement_store
from broker.store import sessions as session_store
from tests.integration import faults
from tests.integration.conftest import FAST
from tests.integration.scripted_agent import ScriptedAgent

pytestmark = pytest.mark.slow
S = common_pb2.SessionState
HOST_LOST_BOUND_S = 15.0
# The leader judges liveness once a second: a host is declared up to 1 s after host_lost_after (13 s by default) from
# its last sign of life, within the 15 s bound. The margin is for a loaded 2-core machine only.
LOST_MARGIN_S = 1.0
TOLD_AT_ONCE_S = 2.0


class Watcher:
    """WatchSession on one session in the background: when (wall clock) and with what it saw the session end."""

    def __init__(self, client: BrokerClient, session_id: str) -> None:
        self.ended: common_pb2.Session | None = None
        self.ended_at_wall = 0.0
        self._task = asyncio.create_task(self._watch(client, session_id))

    async def _watch(self, client: BrokerClient, session_id: str) -> None:
        async for update in client.watch(session_id):
            if update.session.state == S.SESSION_STATE_ENDED:
                self.ended_at_wall = time.time()
                self.ended = update.session
                return

    async def wait(self, timeout_s: float) -> common_pb2.Session:
        async with asyncio.timeout(timeout_s):
            await asyncio.shield(self._task)
        assert self.ended is not None
        return self.ended


async def _host(client: BrokerClient, host_id: str) -> fleet_pb2.Host:
    return await client.fleet.GetHost(fleet_pb2.GetHostRequest(host_id=host_id))


async def _online(
    client: BrokerClient, host_id: str, *, epoch_above: int = 0, timeout_s: float = 30
) -> fleet_pb2.Host:
    async def check() -> fleet_pb2.Host | None:
        try:
            h = await _host(client, host_id)
        except aio.AioRpcError:
            return None
        return h if h.status == fleet_pb2.HOST_STATUS_ONLINE and h.epoch > epoch_above else None

    host: fleet_pb2.Host = await faults.wait_until(
        check, timeout_s=timeout_s, interval_s=0.1, what=f"{host_id} online above epoch {epoch_above}"
    )
    return host


async def _ended_at(url: str, session_id: str) -> tuple[float, float | None]:
    """(the session's ended_at, when its host's link was seen dead: None if it never was) as epoch seconds, both by
    the database clock."""
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT extract(epoch FROM s.ended_at)::float8 AS ended, "
            "extract(epoch FROM h.link_lost_at)::float8 AS link_lost "
            "FROM sessions s JOIN hosts h ON h.host_id = s.host_id WHERE s.session_id = $1",
            session_id,
        )
    finally:
        await conn.close()
    assert row is not None
    return float(row["ended"]), row["link_lost"]


async def _old_epoch_refused(client: BrokerClient, host_id: str, epoch: int, running: str) -> str:
    """Register as the old process would, claiming the old session: the broker must refuse."""
    link = AgentLinkClient(
        client,
        agent_pb2.Register(
            host_id=host_id,
            provider_id="prov",
            site_id="site-near",
            epoch=epoch,
            agent_version="old-process",
            inventory=agent_pb2.HostInventory(gpu_class="cpu", slots=2, games_cached=["demo"]),
            running=[agent_pb2.RunningSession(session_id=running, state=S.SESSION_STATE_READY)],
        ),
    )
    try:
        with pytest.raises(aio.AioRpcError) as refused:
            await link.open(timeout_s=10)
    finally:
        await link.close()
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION, refused.value.details()
    details = refused.value.details() or ""
    assert "epoch" in details
    return details


async def _never_served_twice(client: BrokerClient, started: session_pb2.StartSessionResponse) -> None:
    """The lost session stays ENDED HOST_LOST, and no offer is relayed to it any more."""
    sid = started.session.session_id
    got = await client.sessions.GetSession(
        session_pb2.GetSessionRequest(session_id=sid, include_history=True)
    )
    assert got.session.state == S.SESSION_STATE_ENDED
    assert got.session.end_reason == common_pb2.END_REASON_HOST_LOST
    assert [t.to_state for t in got.history][-1] == S.SESSION_STATE_ENDED
    assert sum(t.to_state == S.SESSION_STATE_ENDED for t in got.history) == 1
    with pytest.raises(aio.AioRpcError) as e:
        await client.sessions.Negotiate(
            session_pb2.NegotiateRequest(
                session_id=sid,
                session_token=started.session_token,
                offer=common_pb2.SessionDescription(type="offer", sdp="v=0\r\n"),
            )
        )
    assert e.value.code() is grpc.StatusCode.FAILED_PRECONDITION


async def _placed_on(client: BrokerClient, session_id: str, timeout_s: float = 15) -> str:
    session = await client.wait_for(session_id, S.SESSION_STATE_READY, timeout_s=timeout_s)
    assert session.state == S.SESSION_STATE_READY, session
    return str(session.host_id)


# -- SIGKILL at production timings ---------------------------------------------------------------------------------


@pytest.fixture
def production_config(db_url: str) -> BrokerConfig:
    """The production liveness settings (BrokerConfig's defaults); the rest as the FAST tests."""
    defaults = BrokerConfig()
    return dataclasses.replace(
        FAST,
        database_url=db_url,
        heartbeat_interval_s=defaults.heartbeat_interval_s,
        link_ping_s=defaults.link_ping_s,
        link_ping_timeout_s=defaults.link_ping_timeout_s,
        host_lost_after_s=defaults.host_lost_after_s,
    )


@pytest.fixture
async def production(production_config: BrokerConfig) -> AsyncIterator[tuple[Broker, BrokerClient]]:
    async with (
        faults.running_broker(production_config) as broker,
        BrokerClient(f"127.0.0.1:{broker.port}") as client,
    ):
        yield broker, client


async def test_agent_killed_host_lost_within_15s_at_production_timings(
    production: tuple[Broker, BrokerClient], production_config: BrokerConfig, tmp_path: Path
) -> None:
    broker, client = production
    began = time.monotonic()  # the broker, and its leader's grace, started just before
    await faults.seed(client, seats=4)
    agent = await faults.start_agent(tmp_path, "agent-1", f"127.0.0.1:{broker.port}")
    spare = faults.FleetAgent([f"127.0.0.1:{broker.port}"], "spare-1", slots=1)
    try:
        first = await _online(client, "agent-1")
        started = await client.start_session("cafe", "s001", "demo")
        assert await _placed_on(client, started.session.session_id) == "agent-1"
        spare.start()  # a second host, for what comes after the loss
        await _online(client, "spare-1")
        watcher = Watcher(client, started.session.session_id)
        # A leader that has just taken the lease judges no host lost for host_lost_after, so every agent can
        # reconnect first (broker.liveness): kill once that is over, to measure a region that is running.
        await asyncio.sleep(max(0.0, began + production_config.host_lost_after_s + 1.0 - time.monotonic()))

        agent.signal(signal.SIGKILL)
        killed_at = time.time()

        ended = await watcher.wait(timeout_s=HOST_LOST_BOUND_S + 10)
        assert ended.end_reason == common_pb2.END_REASON_HOST_LOST
        ended_at, link_lost = await _ended_at(broker.database_url, started.session.session_id)
        assert link_lost is not None, "the dead link was not recorded"
        lost_after_kill = ended_at - killed_at
        told_after = watcher.ended_at_wall - ended_at
        faults.report(
            "agent SIGKILL (production: pings every 8 s, 2 s to answer, lost after 13 s)",
            kill_to_link_seen_dead_s=round(link_lost - killed_at, 2),
            kill_to_host_lost_s=round(lost_after_kill, 2),
            host_lost_to_patron_told_s=round(told_after, 3),
        )
        assert lost_after_kill <= HOST_LOST_BOUND_S + LOST_MARGIN_S
        assert told_after <= TOLD_AT_ONCE_S
        host = await _host(client, "agent-1")
        assert host.status == fleet_pb2.HOST_STATUS_LOST and host.free_slots == host.slots

        # Nothing new goes there: the next session gets the other host.
        second = await client.start_session("cafe", "s002", "demo")
        assert await _placed_on(client, second.session.session_id) == "spare-1"

        # The old process's epoch is refused; the old session is never served again.
        await _old_epoch_refused(client, "agent-1", first.epoch, started.session.session_id)
        await _never_served_twice(client, started)
        # A process of a newer epoch that claims the old session is told to stop it.
        async with ScriptedAgent(
            client,
            "agent-1",
            epoch=first.epoch + 1,
            running=((started.session.session_id, S.SESSION_STATE_READY),),
        ) as newer:
            assert await asyncio.wait_for(newer.stopped.get(), 10) == started.session.session_id
        await faults.check_store(broker.database_url)
    finally:
        await spare.close()
        await agent.kill()


# -- SIGSTOP and SIGCONT -----------------------------------------------------------------------------------------


async def test_agent_frozen_is_lost_then_comes_back_under_a_new_epoch(
    world: BrokerClient, broker: Broker, tmp_path: Path
) -> None:
    """FAST timings (pings 0.25 s, lost after 1.5 s): the logic is the production one, the wait shorter."""
    agent = await faults.start_agent(tmp_path, "agent-1", f"127.0.0.1:{broker.port}")
    spare = faults.FleetAgent([f"127.0.0.1:{broker.port}"], "spare-1", slots=1)
    try:
        first = await _online(world, "agent-1")
        started = await world.start_session("cafe", "s1", "demo")
        sid = started.session.session_id
        assert await _placed_on(world, sid) == "agent-1"
        spare.start()  # one slot: it takes the next session, and the one after must wait for agent-1
        await _online(world, "spare-1")
        watcher = Watcher(world, sid)

        agent.signal(signal.SIGSTOP)
        frozen_at = time.time()
        ended = await watcher.wait(timeout_s=HOST_LOST_BOUND_S + 5)
        assert ended.end_reason == common_pb2.END_REASON_HOST_LOST
        ended_at, _ = await _ended_at(broker.database_url, sid)
        lost_after = ended_at - frozen_at
        told_after = watcher.ended_at_wall - ended_at
        assert lost_after <= HOST_LOST_BOUND_S
        assert told_after <= TOLD_AT_ONCE_S

        second = await world.start_session("cafe", "s2", "demo")
        assert await _placed_on(world, second.session.session_id) == "spare-1"

        # Thawed: the broker has closed its stream ("declared lost"), so it lets its sessions go and registers
        # under a newer epoch; the old epoch stays refused.
        thawed = time.monotonic()
        agent.signal(signal.SIGCONT)
        back = await _online(world, "agent-1", epoch_above=first.epoch, timeout_s=30)
        back_after = time.monotonic() - thawed
        await agent.wait_event("the broker retired this agent's epoch; starting afresh", timeout_s=5)
        await agent.wait_event("session stopped by the broker", session_id=sid, timeout_s=5)
        await _old_epoch_refused(world, "agent-1", first.epoch, sid)
        await _never_served_twice(world, started)
        # Back in service: a new session is placed on it again.
        third = await world.start_session("cafe", "s3", "demo")
        assert await _placed_on(world, third.session.session_id, timeout_s=20) == "agent-1"
        faults.report(
            "agent SIGSTOP (FAST pings 0.25 s, lost after 1.5 s)",
            freeze_to_host_lost_s=round(lost_after, 2),
            host_lost_to_patron_told_s=round(told_after, 3),
            thaw_to_online_new_epoch_s=round(back_after, 2),
            epochs=f"{first.epoch}->{back.epoch}",
        )
        await faults.check_store(broker.database_url)
    finally:
        await spare.close()
        await agent.kill()


# -- cut off: every packet between agent and broker dropped ---------------------------------------------------------


async def test_agent_cut_off_is_lost_and_its_old_epoch_refused_on_return(db_url: str, tmp_path: Path) -> None:
    """The agent and the broker replica it links to run in a network namespace; nftables there drops every packet
    between them (no reset). The test's own calls go to a second replica outside, on the same database, which
    learns every change through PostgreSQL. Pings 1 s, lost after 3 s."""
    async with faults.partitioned(db_url, tmp_path, heartbeat_s=1.0, lost_after_s=3.0, seats=4) as world:
        client, inner, agent = world.client, world.inner, world.agent
        spare = faults.FleetAgent([f"127.0.0.1:{world.outer.port}"], "spare-1", slots=1)
        try:
            first = await _online(client, "agent-1")
            started = await client.start_session("cafe", "s001", "demo")
            sid = started.session.session_id
            assert await _placed_on(client, sid, timeout_s=20) == "agent-1"
            spare.start()
            await _online(client, "spare-1")
            watcher = Watcher(client, sid)

            cut_at_wall, cut_at = time.time(), time.monotonic()
            await world.cut()
            ended = await watcher.wait(timeout_s=HOST_LOST_BOUND_S + 5)
            assert ended.end_reason == common_pb2.END_REASON_HOST_LOST
            ended_at, _ = await _ended_at(db_url, sid)
            lost_after = ended_at - cut_at_wall
            told_after = watcher.ended_at_wall - ended_at
            assert lost_after <= HOST_LOST_BOUND_S
            assert told_after <= TOLD_AT_ONCE_S
            second = await client.start_session("cafe", "s002", "demo")
            assert await _placed_on(client, second.session.session_id) == "spare-1"

            # The agent's keepalive gives up on the dead connection; only then is the network healed, so the
            # agent comes back with its old epoch, which is refused, and registers under a new one.
            t_gave_up, _ = await agent.wait_event("broker link closed", since=cut_at, timeout_s=30)
            await world.heal()
            await agent.wait_event("the broker retired this agent's epoch; starting afresh", timeout_s=30)
            await agent.wait_event("session stopped by the broker", session_id=sid, timeout_s=5)
            back = await _online(client, "agent-1", epoch_above=first.epoch, timeout_s=30)
            refusals = [
                e
                for _, e in inner.events("rpc", method="/cloudseat.v1.AgentService/Connect")
                if e.get("status") == "FAILED_PRECONDITION"
            ]
            assert refusals, "the old epoch's return must be refused"
            await _old_epoch_refused(client, "agent-1", first.epoch, sid)
            await _never_served_twice(client, started)
            faults.report(
                "agent cut off (pings 1 s, lost after 3 s)",
                cut_to_host_lost_s=round(lost_after, 2),
                host_lost_to_patron_told_s=round(told_after, 3),
                agent_keepalive_gave_up_s=round(t_gave_up - cut_at, 2),
                epochs=f"{first.epoch}->{back.epoch}",
            )
            await faults.check_store(db_url)
        finally:
            await spare.close()


# -- a batch planned before the host was lost ----------------------------------------------------------------------


async def _one_host_one_request(pool: asyncpg.Pool) -> asyncpg.Record:
    """The seeded world with one host (host-1, two slots) and one pending request (r1 from seat s001)."""
    await faults.seed_store(pool, seats=1)
    await host_store.register(pool, faults.registration("host-1", epoch=1, slots=2))
    row, _ = await session_store.start(
        pool, session_store.StartRequest(request_id="r1", venue_id="cafe", seat_id="s001", game_id="demo")
    )
    return row


async def test_a_batch_planned_before_the_host_was_lost_does_not_place_there(db_url: str) -> None:
    """Nothing new goes to a lost host even when the batch was planned before the loss: the leader's scheduler reads
    the hosts, solves off the event loop, then commits, and its liveness duty may declare a host lost in between.
    Played here step by step on the real store."""
    pool = await database.create_pool(db_url, 1, 2)
    try:
        row = await _one_host_one_request(pool)
        hosts = await placement_store.candidate_hosts(pool)
        assert [h["host_id"] for h in hosts] == ["host-1"]
        # The scheduler is solving; meanwhile the host falls silent and the liveness duty declares it lost.
        await pool.execute("UPDATE hosts SET last_heartbeat_at = now() - interval '1 minute'")
        lost, _ = await host_store.mark_lost(pool, 15.0, 15.0)
        assert lost == ["host-1"]
        placed = await placement_store.commit(
            pool, [(row["session_id"], "host-1", "site-near", 5, 1_000_000)]
        )
        state = await pool.fetchval("SELECT state FROM sessions WHERE session_id = $1", row["session_id"])
        assert placed == [] and state == "PENDING", f"placed on a lost host: {state}"
    finally:
        await pool.close()


async def test_a_placement_that_raced_the_host_loss_is_ended_by_the_next_check(db_url: str) -> None:
    """The race the test above does not cover: the placement commit reads its host online while the liveness duty's
    transaction is declaring it lost; the commit's slot update waits for the host's row, then goes on once the loss
    committed, after that transaction had ended the host's sessions. The session is left PLACED on a lost host (its
    seat would wait for an end that never comes) until the next check ends it. Played with two connections on the
    real store, the commit's wait for the row lock read from pg_stat_activity."""
    pool = await database.create_pool(db_url, 1, 3)
    try:
        row = await _one_host_one_request(pool)
        sid = row["session_id"]
        async with pool.acquire() as losing:
            tx = losing.transaction()
            await tx.start()
            await losing.execute("UPDATE hosts SET status = 'lost' WHERE host_id = 'host-1'")
            commit = asyncio.ensure_future(
                placement_store.commit(pool, [(sid, "host-1", "site-near", 5, 1_000_000)])
            )
            async with asyncio.timeout(30):
                while not await pool.fetchval(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                ):
                    await asyncio.sleep(0.02)
            await tx.commit()
            placed = await commit
        state = await pool.fetchval("SELECT state FROM sessions WHERE session_id = $1", sid)
        assert placed == [sid] and state == "PLACED"  # on a host already lost
        assert await host_store.end_sessions_on_gone_hosts(pool) == [str(sid)]
        ended = await pool.fetchrow("SELECT state, end_reason FROM sessions WHERE session_id = $1", sid)
        assert (ended["state"], ended["end_reason"]) == ("ENDED", "HOST_LOST")
        assert await host_store.end_sessions_on_gone_hosts(pool) == []
    finally:
        await pool.close()
