"""Several broker replicas on one PostgreSQL (issue 7): an allocation storm, the placement leader killed or frozen,
and what a replica must learn about hosts whose agents are linked to another replica.

The storm: three `python -m broker serve` processes, scripted hosts linked to different replicas, seats calling
every replica at once, including conflicting calls for one seat on several replicas and one request id sent to all
three. Asserted throughout (sampled) and at the end: no slot placed twice (each host's live sessions fit its slots,
its free slots agree, no session placed twice), no seat with two live sessions, one session per request id. Then
the placement leader is killed: another replica must place within 15 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from cloudseat import tls
from cloudseat.client import BrokerClient
from cloudseat.v1 import common_pb2, fleet_pb2, session_pb2
from grpc import aio

from broker import issuing
from broker.config import SecurityConfig
from tests.integration import faults
from tests.integration.conftest import FAST
from tests.integration.scripted_agent import ANSWER_SDP, ScriptedAgent

pytestmark = pytest.mark.slow
S = common_pb2.SessionState
TAKEOVER_BOUND_S = 15.0
HEARTBEAT_S, LINK_PING_S, LOST_AFTER_S = 1.0, 1.0, 6.0


async def _leader(replicas: list[faults.BrokerProcess], *, since: float = 0.0) -> faults.BrokerProcess:
    """The replica that took the placement lease (after `since`) and has not given it up."""

    async def find() -> faults.BrokerProcess | None:
        for r in replicas:
            if r.proc.returncode is None and r.events("took the placement lease", since=since):
                taken = r.events("took the placement lease", since=since)[-1][0]
                if not r.events("gave up the placement lease", since=taken):
                    return r
        return None

    leader: faults.BrokerProcess = await faults.wait_until(find, timeout_s=20, what="a placement leader")
    return leader


async def _conflicts(clients: list[BrokerClient], seats: list[str]) -> None:
    """For each seat, at once: three different requests on three replicas (exactly one may win), and one request id
    sent to all three replicas (one session, the same for everyone)."""
    for seat in seats:
        different = [
            session_pb2.StartSessionRequest(
                request_id=f"{seat}-{uuid.uuid4().hex[:8]}", venue_id="cafe", seat_id=seat, game_id="demo"
            )
            for _ in clients
        ]
        answers = await asyncio.gather(
            *(c.sessions.StartSession(r, timeout=10) for c, r in zip(clients, different, strict=True)),
            return_exceptions=True,
        )
        won = [a for a in answers if isinstance(a, session_pb2.StartSessionResponse)]
        lost = [a for a in answers if isinstance(a, aio.AioRpcError)]
        assert len(won) == 1, answers
        assert all(e.code() is grpc.StatusCode.FAILED_PRECONDITION for e in lost), lost
        # The winner's request id, retried on every replica at once: the same session, created by nobody new.
        rid = next(r.request_id for r, a in zip(different, answers, strict=True) if a is won[0])
        again = await asyncio.gather(
            *(
                c.sessions.StartSession(
                    session_pb2.StartSessionRequest(
                        request_id=rid, venue_id="cafe", seat_id=seat, game_id="demo"
                    ),
                    timeout=10,
                )
                for c in clients
            )
        )
        assert {a.session.session_id for a in again} == {won[0].session.session_id}
        assert not any(a.created for a in again)


async def test_allocation_storm_on_three_replicas_and_the_leader_killed(db_url: str) -> None:
    replicas = list(
        await asyncio.gather(
            *(
                faults.start_broker(
                    db_url,
                    name=f"replica-{i}",
                    heartbeat_s=HEARTBEAT_S,
                    lost_after_s=LOST_AFTER_S,
                    link_ping_s=LINK_PING_S,
                )
                for i in range(3)
            )
        )
    )
    targets = [r.target for r in replicas]
    agent_targets = [r.agent_target for r in replicas]
    clients = [BrokerClient(t) for t in targets]
    fleet: list[faults.FleetAgent] = []
    load: faults.SeatLoad | None = None
    conn = await asyncpg.connect(db_url)
    sampling = await asyncpg.connect(db_url)
    samples: list[str] = []
    sampled = 0

    async def sample() -> None:
        nonlocal sampled
        while True:
            samples.extend(await faults.violations(sampling, history=False))
            sampled += 1
            await asyncio.sleep(0.1)

    sampler: asyncio.Task[None] | None = None
    try:
        leader = await _leader(replicas)
        seats = await faults.seed(clients[0], seats=50)
        # Eight hosts of two slots (16 slots for 50 seats), each linked to a replica, moving on when it goes.
        fleet = [
            faults.FleetAgent(
                agent_targets[i % 3 :] + agent_targets[: i % 3],
                f"host-{i}",
                slots=2,
                site_id=("site-near", "site-far")[i % 2],
            ).start()
            for i in range(8)
        ]

        async def online() -> bool:
            return bool(await conn.fetchval("SELECT count(*) = 8 FROM hosts WHERE status = 'online'"))

        await faults.wait_until(online, timeout_s=20, what="every host online")
        sampler = asyncio.create_task(sample())
        await _conflicts(clients, seats[:10])
        load = faults.SeatLoad(clients, seats[10:], hold_s=0.3, ready_timeout_s=10).start()
        await asyncio.sleep(4.0)

        killed_wall, killed_at = time.time(), time.monotonic()
        await leader.kill()
        survivors = [r for r in replicas if r is not leader]
        successor = await _leader(survivors, since=killed_at)
        lease_s = successor.events("took the placement lease", since=killed_at)[0][0] - killed_at

        async def placed_after_kill() -> float | None:
            at: float | None = await conn.fetchval(
                "SELECT extract(epoch FROM min(at))::float8 FROM session_transitions "
                "WHERE to_state = 'PLACED' AND at > to_timestamp($1)",
                killed_wall,
            )
            return at

        first_placed = await faults.wait_until(
            placed_after_kill,
            timeout_s=TAKEOVER_BOUND_S + 5,
            interval_s=0.1,
            what="a placement by a survivor",
        )
        takeover_s = first_placed - killed_wall
        assert takeover_s <= TAKEOVER_BOUND_S
        await asyncio.sleep(3.0)
        await load.stop()
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler

        assert samples == [], "invariants broken during the storm:\n" + "\n".join(samples[:20])
        await faults.check_store(db_url)
        assert load.bad_codes == {}, load.bad_codes
        for rid, seen in load.answers.items():
            assert len({s for s, _ in seen}) == 1, (rid, seen)
        placements = await conn.fetchval("SELECT count(*) FROM session_transitions WHERE to_state = 'PLACED'")
        faults.report(
            "3 replicas, allocation storm, leader SIGKILL",
            sessions=len(load.answers) + 10,
            placements=placements,
            invariant_samples=sampled,
            kill_to_new_lease_s=round(lease_s, 2),
            kill_to_first_placement_s=round(takeover_s, 2),
            codes=dict(load.codes),
        )
    finally:
        if sampler is not None:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        if load is not None:
            await load.stop()
        for fa in fleet:
            await fa.close()
        for c in clients:
            await c.close()
        for r in replicas:
            await r.kill()
        await conn.close()
        await sampling.close()


async def test_frozen_leader_is_replaced_within_15s(db_url: str) -> None:
    replicas = list(
        await asyncio.gather(
            *(
                faults.start_broker(
                    db_url,
                    name=f"replica-{i}",
                    heartbeat_s=HEARTBEAT_S,
                    lost_after_s=LOST_AFTER_S,
                    link_ping_s=LINK_PING_S,
                )
                for i in range(2)
            )
        )
    )
    leader = await _leader(replicas)
    other = next(r for r in replicas if r is not leader)
    fleet: faults.FleetAgent | None = None
    try:
        async with BrokerClient(other.target) as client:
            await faults.seed(client, seats=2)
            fleet = faults.FleetAgent([other.agent_target], "host-1", slots=2).start()
            await asyncio.wait_for(fleet.connected.wait(), 10)
            leader.signal(signal.SIGSTOP)
            frozen_at = time.monotonic()
            started = await client.start_session("cafe", "s001", "demo")
            with contextlib.suppress(TimeoutError):
                await client.wait_for(
                    started.session.session_id, S.SESSION_STATE_PLACED, timeout_s=TAKEOVER_BOUND_S
                )
            got = await client.sessions.GetSession(
                session_pb2.GetSessionRequest(session_id=started.session.session_id)
            )
            waited = time.monotonic() - frozen_at
            assert got.session.state != S.SESSION_STATE_PENDING, (
                f"nothing placed {waited:.1f} s after the freeze"
            )
            lease_s = other.events("took the placement lease", since=frozen_at)[0][0] - frozen_at

            # Thawed, the old leader finds it lost the lease and stops its duties, and does not take it back.
            thawed_at = time.monotonic()
            leader.signal(signal.SIGCONT)
            await leader.wait_event("gave up the placement lease", timeout_s=10, since=thawed_at)
            stepped_down_s = time.monotonic() - thawed_at
            await asyncio.sleep(2.0)  # the old leader tries to take the lease again (every second) meanwhile
            assert not leader.events("took the placement lease", since=thawed_at)
            conn = await asyncpg.connect(db_url)
            try:
                holder = await conn.fetchval("SELECT holder FROM leadership WHERE name = 'placement'")
            finally:
                await conn.close()
            # The lease is held by the other broker's leader process (the holder names its pid).
            pids = {other.pid, *faults.descendants(other.pid)}
            assert int(holder.split("/")[1]) in pids, (holder, pids)
            faults.report(
                "2 replicas, leader SIGSTOP",
                freeze_to_new_lease_s=round(lease_s, 2),
                freeze_to_placed_s=round(waited, 2),
                thaw_to_step_down_s=round(stepped_down_s, 2),
            )
    finally:
        if fleet is not None:
            await fleet.close()
        for r in replicas:
            await r.kill()


# -- what one replica must learn from another (in-process replicas on one database) -------------------------------


@contextlib.asynccontextmanager
async def _pair(db_url: str) -> AsyncIterator[tuple[BrokerClient, BrokerClient]]:
    """Replica A, the placement leader (it judges liveness), and replica B, in this process on one database, with
    a client for each; the world seeded."""
    config = dataclasses.replace(FAST, database_url=db_url)
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(faults.running_broker(config))

        async def leads() -> bool:
            return bool(a.leadership is not None and a.leadership.is_leader)

        await faults.wait_until(leads, timeout_s=10, what="replica A leads")
        b = await stack.enter_async_context(faults.running_broker(config))
        ca = await stack.enter_async_context(BrokerClient(f"127.0.0.1:{a.port}"))
        cb = await stack.enter_async_context(BrokerClient(f"127.0.0.1:{b.port}"))
        await faults.seed(ca, seats=4)
        yield ca, cb


async def test_a_host_lost_while_linked_to_another_replica_is_told(db_url: str) -> None:
    async with _pair(db_url) as (leader, other):
        async with ScriptedAgent(other, "host-1", epoch=4) as agent:
            started = await leader.start_session("cafe", "s001", "demo")
            await leader.wait_for(started.session.session_id, S.SESSION_STATE_READY)
            # The leader judges the host lost while its link is held by the other replica (as it does when the
            # holder's link was seen dead, or the holder fell silent, and the agent still beats on: a partition).
            conn = await asyncpg.connect(db_url)
            try:
                await conn.execute(
                    "UPDATE hosts SET link_lost_at = now() - interval '1 minute' WHERE host_id = 'host-1'"
                )
            finally:
                await conn.close()
            ended = await leader.wait_for(started.session.session_id, S.SESSION_STATE_ENDED, timeout_s=10)
            assert ended.end_reason == common_pb2.END_REASON_HOST_LOST

            async def told() -> bool:
                return agent.closed_with is not None

            await faults.wait_until(
                told, timeout_s=5, what="the thawed agent told that its epoch was retired"
            )
            assert isinstance(agent.closed_with, aio.AioRpcError)
            assert agent.closed_with.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert "epoch" in (agent.closed_with.details() or "")


async def test_an_undrain_served_by_another_replica_reaches_the_agent(db_url: str) -> None:
    async with _pair(db_url) as (holder, other):
        async with ScriptedAgent(holder, "host-1") as agent:
            await holder.fleet.DrainHost(fleet_pb2.DrainHostRequest(host_id="host-1"))
            await other.fleet.UndrainHost(fleet_pb2.UndrainHostRequest(host_id="host-1"))

            async def undrained() -> bool:
                drains = [c.drain.drained for c in agent.commands if c.WhichOneof("body") == "drain"]
                return drains[-1:] == [False]

            await faults.wait_until(undrained, timeout_s=5, what="the agent told of the undrain")


async def test_negotiate_through_a_replica_that_does_not_hold_the_agent(db_url: str) -> None:
    async with _pair(db_url) as (holder, other):
        async with ScriptedAgent(holder, "host-1"):
            started = await other.start_session("cafe", "s001", "demo")
            await other.wait_for(started.session.session_id, S.SESSION_STATE_READY)
            answer = await other.sessions.Negotiate(
                session_pb2.NegotiateRequest(
                    session_id=started.session.session_id,
                    session_token=started.session_token,
                    offer=common_pb2.SessionDescription(type="offer", sdp="v=0\r\n"),
                ),
                timeout=10,
            )
            assert answer.answer.sdp == ANSWER_SDP


async def test_negotiate_forwarded_with_security_on(db_url: str, tmp_path: Path) -> None:
    """With authentication on, the forward carries the seat's own token over TLS (trusting the region's CA) to the
    replica holding the agent's link, which checks the caller again; a neighbouring seat is told there is no such
    session."""
    creds = issuing.make(tmp_path / "creds", ["host-1"])
    security = SecurityConfig(
        cert=creds.broker.cert, key=creds.broker.key, client_ca=creds.ca, token_key=creds.token_key
    )
    config = dataclasses.replace(
        FAST, database_url=db_url, insecure=False, security=security, agent_listen="127.0.0.1:0"
    )
    async with contextlib.AsyncExitStack() as stack:
        holder = await stack.enter_async_context(faults.running_broker(config))
        other = await stack.enter_async_context(faults.running_broker(config))

        async def client(port: int, role: str, **claims: str) -> BrokerClient:
            token = issuing.issue_token(creds.token_key, role, ttl_s=600, **claims)
            c = BrokerClient(f"127.0.0.1:{port}", token=token, credentials=tls.client_credentials(creds.ca))
            return await stack.enter_async_context(c)

        operator = await client(holder.port, "operator")
        await faults.seed(operator, seats=2)
        await operator.enrol_hosts("site-near", ["host-1"])
        agent_channel = BrokerClient(
            f"127.0.0.1:{holder.agent_port}", credentials=tls.channel_credentials(creds.agent("host-1"))
        )
        agent = ScriptedAgent(await stack.enter_async_context(agent_channel), "host-1")
        await stack.enter_async_context(agent)
        seat = await client(other.port, "seat", venue_id="cafe", seat_id="s001")
        started = await seat.start_session("cafe", "s001", "demo")
        await seat.wait_for(started.session.session_id, S.SESSION_STATE_READY)
        negotiate = session_pb2.NegotiateRequest(
            session_id=started.session.session_id,
            session_token=started.session_token,
            offer=common_pb2.SessionDescription(type="offer", sdp="v=0\r\n"),
        )
        answer = await seat.sessions.Negotiate(negotiate, timeout=10)
        assert answer.answer.sdp == ANSWER_SDP
        neighbour = await client(other.port, "seat", venue_id="cafe", seat_id="s002")
        with pytest.raises(aio.AioRpcError) as refused:
            await neighbour.sessions.Negotiate(negotiate, timeout=10)
        # Not its session: answered as one that does not exist.
        assert refused.value.code() is grpc.StatusCode.NOT_FOUND
