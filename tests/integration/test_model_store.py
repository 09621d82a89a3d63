"""A model test of the session lifecycle and the store (issue 7), against the real PostgreSQL.

A Hypothesis state machine drives the real store (broker.store, broker.lifecycle, the real scheduler and solver)
through random interleavings of: seats starting sessions (retries with a used request id included) and ending them
(with the right token or a wrong one); agents registering under a newer, the same or an older epoch, heartbeating
(under their epoch or a replaced one's), reporting moves and endings (from the right host or another); hosts
falling silent and being declared lost, or leaving; placement rounds, and hand-made batches that may oversubscribe a
host or name a host that is gone; waiting sessions timing out; the broker restarting (a new pool, the migrations
applied again).

A plain Python model predicts every outcome (the lifecycle's decisions are the pure module's own). After every step
the database must agree with the model, session by session and host by host, and every invariant of the store must
hold (tests.integration.faults.violations: one live session per seat, free slots = slots - held, legal histories).

Every rule draws the same shape of values whatever the state (indexes, read modulo the choices there are), so that a
replay draws the same way even where the database's choices (which host the solver picks) differ. Bounded: 30
examples of 50 steps, some ten seconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Awaitable, Sequence
from typing import ClassVar, TypeVar

import asyncpg
import pytest
from cloudseat import errors
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from broker import lifecycle, placement
from broker.lifecycle import EndReason, State
from broker.scheduler import Scheduler
from broker.store import database, migrate
from broker.store import hosts as host_store
from broker.store import placement as placement_store
from broker.store import sessions as session_store
from tests.integration import faults

pytestmark = pytest.mark.slow
T = TypeVar("T")
SEATS = ("s001", "s002", "s003", "s004", "s005")
HOSTS = {"h1": 2, "h2": 1, "h3": 2}  # host -> slots
SILENT_FOR = "2 hours"  # how far a silent host's last heartbeat (or a waiting session) is moved into the past
LOST_AFTER_S = 1800.0  # judged against SILENT_FOR: only the host made silent is lost
INDEX = st.integers(0, 2**16)  # an index into whatever there is to choose from, read modulo its length
FOLLOWING = {State.PLACED: State.STARTING, State.STARTING: State.READY, State.READY: State.STREAMING}


@dataclasses.dataclass
class SessionModel:
    sid: uuid.UUID
    seat: str
    rid: str
    token: str
    state: State = State.PENDING
    host: str | None = None
    reason: EndReason | None = None


@dataclasses.dataclass
class HostModel:
    epoch: int
    slots: int
    status: str = "online"
    # The connection its current registration arrived on.
    link_id: uuid.UUID = dataclasses.field(default_factory=uuid.uuid4)


class StoreMachine(RuleBasedStateMachine):
    url: ClassVar[str]
    loop: ClassVar[asyncio.AbstractEventLoop]

    def __init__(self) -> None:
        super().__init__()
        self.run(self._reset())
        self.pool: asyncpg.Pool = self.run(database.create_pool(self.url, 1, 3))
        self.sessions: dict[uuid.UUID, SessionModel] = {}
        self.order: list[uuid.UUID] = []  # sessions in the order they were created
        self.requests: list[str] = []
        self.hosts: dict[str, HostModel] = {}
        self.next_epoch = 100

    def run(self, coro: Awaitable[T]) -> T:
        return self.loop.run_until_complete(coro)

    async def _reset(self) -> None:
        conn = await asyncpg.connect(self.url)
        try:
            # Everything that refers to sessions and hosts goes too (the ledger, leases' use); the ledger's
            # append-only trigger is bypassed for this test-only reset by running as a replica would.
            await conn.execute("SET session_replication_role = replica")
            await conn.execute("TRUNCATE session_transitions, sessions, hosts CASCADE")
        finally:
            await conn.close()

    def teardown(self) -> None:
        self.run(self.pool.close())

    # -- helpers ---------------------------------------------------------------------------------------------------

    def held(self, host: str) -> int:
        return sum(1 for s in self.sessions.values() if s.host == host and s.state in lifecycle.ON_HOST)

    def live_on(self, host: str) -> list[SessionModel]:
        return [s for s in self.sessions.values() if s.host == host and s.state in lifecycle.ON_HOST]

    def end_model(self, s: SessionModel, reason: EndReason) -> None:
        s.state, s.reason = State.ENDED, reason

    def expect_error(self, call: Awaitable[object], kind: type[errors.CloudseatError]) -> None:
        try:
            self.run(call)
        except kind:
            event(f"refused: {kind.__name__}")
            return
        raise AssertionError(f"expected {kind.__name__}")

    def pick(self, which: int, preferred: Sequence[uuid.UUID]) -> SessionModel | None:
        """A session: three times in four one of `preferred` (those a rule can do something with), if any."""
        choices = preferred if preferred and which % 4 else self.order
        return self.sessions[choices[(which // 4) % len(choices)]] if choices else None

    def host_at(self, index: int) -> str:
        return sorted(HOSTS)[index % len(HOSTS)]

    def live_on_hosts(self) -> list[uuid.UUID]:
        return [sid for sid in self.order if self.sessions[sid].state in lifecycle.ON_HOST]

    @initialize()
    def hosts_join_and_seats_play(self) -> None:
        """Every example begins with the hosts online and two seats' sessions placed."""
        for host in sorted(HOSTS):
            self.register(host, "newer")
        for seat in SEATS[:2]:
            self.start(seat, None)
        self.placement_round()

    # -- seats -----------------------------------------------------------------------------------------------------

    @rule(seat=st.sampled_from(SEATS), retry=st.booleans(), which=INDEX, then_place=st.booleans())
    def start_session(self, seat: str, retry: bool, which: int, then_place: bool) -> None:
        """A seat asks for a session (a new request id, or one used before: a retry); the leader's scheduler may
        run a round at once."""
        self.start(seat, self.requests[which % len(self.requests)] if retry and self.requests else None)
        if then_place:
            self.placement_round()

    def start(self, seat: str, rid: str | None) -> None:
        known = None
        if rid is None:
            rid = f"r{len(self.requests)}"
        else:
            known = next(s for s in self.sessions.values() if s.rid == rid)
        req = session_store.StartRequest(request_id=rid, venue_id="cafe", seat_id=seat, game_id="demo")
        if known is not None and known.seat != seat:
            self.expect_error(session_store.start(self.pool, req), errors.AlreadyExists)
            return
        if known is None and any(
            s.seat == seat and s.state in lifecycle.LIVE for s in self.sessions.values()
        ):
            self.expect_error(session_store.start(self.pool, req), errors.FailedPrecondition)
            return
        row, created = self.run(session_store.start(self.pool, req))
        if known is not None:
            assert not created and row["session_id"] == known.sid, "a retry must return the original session"
            event("start: a retry answered with the original session")
            return
        assert created and row["state"] == "PENDING"
        sid = row["session_id"]
        self.sessions[sid] = SessionModel(sid, seat, rid, str(row["token"]))
        self.order.append(sid)
        self.requests.append(rid)

    @rule(
        who=st.sampled_from(
            ["patron", "patron", "someone with a wrong token", "agent", "agent of another host"]
        ),
        which=INDEX,
        reason=st.sampled_from(sorted(lifecycle.AGENT_REASONS)),
        host_index=INDEX,
    )
    def session_ends(self, who: str, which: int, reason: EndReason, host_index: int) -> None:
        """The patron ends a session (or someone without its token tries), or an agent reports it ended."""
        if who.startswith("agent"):
            s = self.pick(which, self.live_on_hosts())
            if s is not None:
                host = s.host if who == "agent" and s.host else self.host_at(host_index)
                self.agent_ends(s, reason, host)
            return
        s = self.pick(which, [sid for sid in self.order if self.sessions[sid].state in lifecycle.LIVE])
        if s is not None:
            self.patron_ends(s, right_token=who == "patron")

    def patron_ends(self, s: SessionModel, *, right_token: bool) -> None:
        token = s.token if right_token else "not-the-token"
        call = session_store.end(self.pool, s.sid, EndReason.ENDED_BY_PATRON, token=token)
        if not right_token:
            self.expect_error(call, errors.PermissionDenied)
            return
        row = self.run(call)
        if lifecycle.end(s.state, EndReason.ENDED_BY_PATRON) is not None:
            self.end_model(s, EndReason.ENDED_BY_PATRON)
        assert row["state"] == s.state.value

    def agent_ends(self, s: SessionModel, reason: EndReason, host: str) -> None:
        call = session_store.end(self.pool, s.sid, reason, "agent", host_id=host)
        if s.host != host:
            self.expect_error(call, errors.PermissionDenied)
            return
        try:
            move = lifecycle.end(s.state, reason)
        except errors.IllegalTransition:
            self.expect_error(call, errors.IllegalTransition)
            return
        self.run(call)
        if move is not None:
            self.end_model(s, reason)
            event("an agent ended a session")

    # -- agents ----------------------------------------------------------------------------------------------------

    @rule(
        host=st.sampled_from(sorted(HOSTS)),
        kind=st.sampled_from(["newer", "newer", "same", "older", "beat", "stale beat"]),
    )
    def agent_link(self, host: str, kind: str) -> None:
        """A new process of `host` registers (newer epoch), the same one reconnects (same), a stale one tries
        (older); or the agent reports its load, on its link or on a replaced one (which counts nothing)."""
        if kind.endswith("beat"):
            h = self.hosts[host]
            link_id = h.link_id if kind == "beat" else uuid.uuid4()
            counted = self.run(host_store.host_reports(self.pool, [(host, link_id, 0.5, 0.5, False)]))
            assert counted == ({link_id} if kind == "beat" and h.status == "online" else set())
        else:
            self.register(host, kind)

    def register(self, host: str, kind: str) -> None:
        h = self.hosts.get(host)
        if h is None:  # its first agent process
            self.next_epoch += 1
            epoch = self.next_epoch
        else:
            epoch = {"same": h.epoch, "newer": h.epoch + 1, "older": h.epoch - 1}[kind]
        # Links held by a broker process that never says it is alive: a host is lost once silent (host_goes_away).
        link = host_store.Link(uuid.uuid4(), "model-replica", None)
        call = host_store.register(self.pool, faults.registration(host, epoch=epoch, slots=HOSTS[host]), link)
        if h is not None and (kind == "older" or (kind == "same" and h.status == "lost")):
            self.expect_error(call, errors.StaleEpoch)
            return
        result = self.run(call)
        ended = set()
        if h is not None and kind == "newer":
            for s in self.live_on(host):
                self.end_model(s, EndReason.HOST_LOST)
                ended.add(str(s.sid))
            event(f"a newer epoch ended {len(ended)} sessions")
        assert set(result.ended) == ended
        self.hosts[host] = HostModel(epoch, HOSTS[host], link_id=link.link_id)
        assert {str(r["session_id"]) for r in result.live_sessions} == {
            str(s.sid) for s in self.live_on(host)
        }

    @rule(
        which=INDEX,
        to=st.sampled_from([State.STARTING, State.READY, State.STREAMING]),
        follow=st.integers(0, 3),
        right_host=st.booleans(),
        host_index=INDEX,
    )
    def agent_reports(self, which: int, to: State, follow: int, right_host: bool, host_index: int) -> None:
        """An agent reports a session moved on: mostly the next step, sometimes a jump or a repeat; mostly from the
        session's host, sometimes from another."""
        s = self.pick(which, [sid for sid in self.live_on_hosts()])
        if s is None:
            return
        if s.state in FOLLOWING and follow:
            to = FOLLOWING[s.state]
        host = s.host if right_host and s.host else self.host_at(host_index)
        call = session_store.advance(self.pool, s.sid, to, host_id=host)
        if s.host != host:
            self.expect_error(call, errors.PermissionDenied)
            return
        moves = lifecycle.catch_up(s.state, to)  # a jump records each step on the way
        row = self.run(call)
        if moves:
            s.state = moves[-1].to
            event(f"an agent moved a session to {s.state} in {len(moves)} step(s)")
        assert row["state"] == s.state.value

    # -- liveness --------------------------------------------------------------------------------------------------

    @rule(
        host=st.sampled_from(sorted(HOSTS)),
        how=st.sampled_from(["falls silent", "leaves", "a stale process leaves"]),
        act=st.integers(0, 2),
    )
    def host_goes_away(self, host: str, how: str, act: int) -> None:
        """The host falls silent (its last sign of life long ago, its broker process silent) and the liveness check
        declares it lost, or its agent
        says goodbye (set_offline), or a replaced process of it says goodbye (a stale epoch: nothing happens). Acts
        on one draw in three, so that hosts live long enough for their sessions to move on."""
        if act:
            return
        h = self.hosts[host]
        if how == "falls silent":
            self.run(
                self.pool.execute(
                    f"UPDATE hosts SET last_heartbeat_at = now() - interval '{SILENT_FOR}' WHERE host_id = $1",
                    host,
                )
            )
            lost, ended = self.run(host_store.mark_lost(self.pool, LOST_AFTER_S, LOST_AFTER_S))
            goes = h.status == "online"
            assert lost == ([host] if goes else [])
            new_status = "lost"
        else:
            stale = how != "leaves"
            ended = self.run(host_store.set_offline(self.pool, host, h.epoch - (1 if stale else 0)))
            goes = not stale and h.status == "online"
            new_status = "offline"
        expected: set[str] = set()
        if goes:
            h.status = new_status
            for s in self.live_on(host):
                self.end_model(s, EndReason.HOST_LOST)
                expected.add(str(s.sid))
            event(f"host {new_status} with {len(expected)} live sessions")
        assert set(ended) == expected

    @rule(which=INDEX)
    def time_passes(self, which: int) -> None:
        """A live session's last move is made two hours old: the liveness check ends it if its state has a limit."""
        live = [sid for sid in self.order if self.sessions[sid].state in lifecycle.LIVE]
        if not live:
            return
        s = self.sessions[live[which % len(live)]]
        self.run(
            self.pool.execute(
                f"UPDATE sessions SET updated_at = updated_at - interval '{SILENT_FOR}' WHERE session_id = $1",
                s.sid,
            )
        )
        rows = self.run(session_store.end_timed_out(self.pool, lifecycle.Timeouts()))
        if lifecycle.Timeouts().limit_s(s.state) is None:
            assert rows == []
            return
        assert [r["session_id"] for r in rows] == [s.sid]
        event(f"timed out in {s.state}")
        self.end_model(s, lifecycle.Timeouts.reason_for(s.state))

    # -- placement -------------------------------------------------------------------------------------------------

    @rule(
        how=st.sampled_from(["round", "hand-made batch"]),
        picks=st.lists(st.tuples(INDEX, INDEX), min_size=1, max_size=4),
    )
    def place(self, how: str, picks: list[tuple[int, int]]) -> None:
        """A placement round of the real scheduler, or a batch as a scheduler with a stale view might commit it."""
        if how == "round":
            self.placement_round()
        else:
            self.commit_batch(picks)

    def placement_round(self) -> None:
        pending = [sid for sid in self.order if self.sessions[sid].state is State.PENDING]
        store = placement_store.PostgresSchedulerStore(self.pool)
        scheduler = Scheduler(store, solver=placement.solve, window_s=0.0, batch_max=1000)
        self.run(scheduler.round())
        rows = self.run(
            self.pool.fetch(
                "SELECT session_id, state, host_id FROM sessions WHERE session_id = ANY($1)", pending
            )
        )
        for r in rows:
            if r["state"] == "PLACED":
                s, host = self.sessions[r["session_id"]], r["host_id"]
                assert host in self.hosts and self.hosts[host].status == "online", f"placed on {host}"
                s.state, s.host = State.PLACED, host
                assert self.held(host) <= HOSTS[host], f"{host} oversubscribed by the scheduler"
                event("the scheduler placed a session")
            else:
                assert r["state"] == "PENDING"

    def commit_batch(self, picks: list[tuple[int, int]]) -> None:
        """Any sessions (mostly pending ones) on any hosts: the database places exactly those still PENDING on a
        host still online, or refuses the whole batch if one host would go below zero free slots."""
        pending = [sid for sid in self.order if self.sessions[sid].state is State.PENDING]
        batch: dict[uuid.UUID, str] = {}
        for which, host_index in picks:
            s = self.pick(which, pending)
            if s is not None:
                batch.setdefault(s.sid, self.host_at(host_index))
        if not batch:
            return
        eligible = {
            sid: host
            for sid, host in batch.items()
            if self.sessions[sid].state is State.PENDING and self.hosts[host].status == "online"
        }
        over = any(self.held(h) + list(eligible.values()).count(h) > HOSTS[h] for h in HOSTS)
        call = placement_store.commit(
            self.pool, [(sid, host, "site-near", 5, 1_000_000) for sid, host in batch.items()]
        )
        if over:
            self.expect_error(call, errors.FailedPrecondition)  # the whole batch refused, nothing placed
            return
        placed = self.run(call)
        assert set(placed) == set(eligible)
        event(f"a hand-made batch placed {len(placed)} of {len(batch)}")
        for sid, host in eligible.items():
            self.sessions[sid].state, self.sessions[sid].host = State.PLACED, host

    # -- the broker restarts ---------------------------------------------------------------------------------------

    @rule(now=st.integers(0, 5))
    def broker_restarts(self, now: int) -> None:
        """The broker restarts: a new pool, the migrations applied again (nothing to apply). Acts on one draw in
        six: Hypothesis would otherwise pick this argument-poor rule far more often than the others."""
        if now:
            return
        self.run(self.pool.close())
        self.pool = self.run(database.create_pool(self.url, 1, 3))

        async def migrated() -> list[int]:
            async with self.pool.acquire() as conn:
                return await migrate.apply(conn)

        assert self.run(migrated()) == []

    # -- after every step ------------------------------------------------------------------------------------------

    @invariant()
    def database_agrees_with_the_model(self) -> None:
        async def check() -> None:
            async with self.pool.acquire() as conn:
                rows = await conn.fetch("SELECT session_id, state, end_reason, host_id FROM sessions")
                assert {r["session_id"] for r in rows} == set(self.sessions)
                for r in rows:
                    s = self.sessions[r["session_id"]]
                    got = (r["state"], r["end_reason"], r["host_id"])
                    want = (s.state.value, s.reason.value if s.reason else None, s.host)
                    assert got == want, f"session {s.sid}: database {got}, model {want}"
                for r in await conn.fetch("SELECT host_id, epoch, status, free_slots FROM hosts"):
                    h = self.hosts[r["host_id"]]
                    seen = (r["epoch"], r["status"], r["free_slots"])
                    expected = (h.epoch, h.status, h.slots - self.held(r["host_id"]))
                    assert seen == expected, f"host {r['host_id']}: database {seen}, model {expected}"
                broken = await faults.violations(conn)
                assert broken == [], broken

        self.run(check())


def test_lifecycle_and_store_against_a_model(db_url: str) -> None:
    loop = asyncio.new_event_loop()
    try:

        async def seed() -> None:
            pool = await database.create_pool(db_url, 1, 2)
            try:
                await faults.seed_store(pool, seats=len(SEATS))
            finally:
                await pool.close()

        loop.run_until_complete(seed())
        StoreMachine.url, StoreMachine.loop = db_url, loop
        run_state_machine_as_test(
            StoreMachine,
            settings=settings(
                max_examples=30,
                stateful_step_count=50,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            ),
        )
    finally:
        loop.close()
