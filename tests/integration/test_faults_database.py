"""PostgreSQL faults under load (issue 7): every broker connection killed (pg_terminate_backend), and the server
itself crashed (stopped with -m immediate: no checkpoint, WAL recovery at the next start) and started again.

Asserted: no half-applied batch (the store's invariants, read back from the database, hold: each host's free slots
agree with its live sessions, every history is a legal path, one live session per seat); the broker recovers by
itself (it places again, heartbeats land, a watcher opened before the fault hears of a change made after it);
clients see only UNAVAILABLE (or their own deadline) meanwhile, never UNKNOWN or INTERNAL, and their retries
succeed. The longest stretch a seat's calls kept failing is measured and printed, not asserted.

The restart uses a PostgreSQL server of this test's own (tests.integration.faults.Postgres): the session-wide one
serves every other test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from cloudseat import errors
from cloudseat.client import BrokerClient
from cloudseat.v1 import common_pb2, session_pb2
from grpc import aio

from broker.store import database, migrate
from broker.store import sessions as session_store
from tests.integration import faults
from tests.integration.conftest import FAST

pytestmark = pytest.mark.slow
S = common_pb2.SessionState


async def _kill_connections(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        killed: int = await conn.fetchval(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()) k"
        )
    finally:
        await conn.close()
    return killed


async def _recovered(client: BrokerClient, seat: str, timeout_s: float = 30) -> float:
    """Seconds until a new session on `seat` is READY: placed by the leader and started by its agent."""
    began = time.monotonic()
    started = await client.start_session("cafe", seat, "demo", timeout_s=timeout_s)
    sid = started.session.session_id
    try:
        ready = await client.wait_for(sid, S.SESSION_STATE_READY, timeout_s=timeout_s)
    except TimeoutError:
        got = await client.sessions.GetSession(
            session_pb2.GetSessionRequest(session_id=sid, include_history=True)
        )
        raise AssertionError(f"not READY in {timeout_s} s: {got}") from None
    assert ready.state == S.SESSION_STATE_READY, ready
    await client.end_session(started.session.session_id, started.session_token)
    return time.monotonic() - began


class _Watch:
    """A WatchSession opened before the fault, watched again after an UNAVAILABLE as a seat does: the states it saw
    and how often it had to watch again."""

    def __init__(self, client: BrokerClient, session_id: str) -> None:
        self.states: list[int] = []
        self.rewatched = 0
        self.task = asyncio.create_task(self._run(client, session_id))

    async def _run(self, client: BrokerClient, session_id: str) -> None:
        for _ in range(50):
            try:
                async for update in client.watch(session_id):
                    self.states.append(update.session.state)
                return
            except aio.AioRpcError as exc:
                if exc.code() is not grpc.StatusCode.UNAVAILABLE:
                    raise
                self.rewatched += 1
                await asyncio.sleep(0.2)


async def _under_load(
    url: str, fault: str, act: Callable[[], Awaitable[dict[str, object]]], capfd: pytest.CaptureFixture[str]
) -> None:
    """A broker (heartbeat 1 s, lost after 6 s) on `url`, six scripted hosts, 16 seats in a loop, one watched
    session; `act` makes the fault; then the checks."""
    # Heartbeat 1 s, lost after 6 s: no host may be declared lost because the database was away for seconds.
    config = dataclasses.replace(FAST, database_url=url, heartbeat_interval_s=1.0, host_lost_after_s=6.0)
    async with faults.running_broker(config) as broker, BrokerClient(f"127.0.0.1:{broker.port}") as client:
        seats = await faults.seed(client, seats=18)
        fleet = [
            faults.FleetAgent([f"127.0.0.1:{broker.port}"], f"host-{i}", slots=3).start() for i in range(6)
        ]
        load: faults.SeatLoad | None = None
        try:
            for fa in fleet:
                await asyncio.wait_for(fa.connected.wait(), 10)
            watched = await client.start_session("cafe", seats[-1], "demo")
            await client.wait_for(watched.session.session_id, S.SESSION_STATE_READY)
            watch = _Watch(client, watched.session.session_id)
            load = faults.SeatLoad([client], seats[:16], hold_s=0.3, ready_timeout_s=8).start()
            await asyncio.sleep(2.0)

            fault_at = time.monotonic()
            details = await act()
            fault_s = time.monotonic() - fault_at
            played_at_fault = load.played
            await asyncio.sleep(3.0)
            await load.stop()

            # The broker recovered by itself: it places and starts a new session, and a watcher opened before the
            # fault hears of a change made after it.
            not_recovered: BaseException | None = None
            try:
                recovered_s: float | None = await _recovered(client, seats[-2], timeout_s=15)
            except (AssertionError, TimeoutError, aio.AioRpcError) as exc:
                recovered_s, not_recovered = None, exc
            await client.end_session(watched.session.session_id, watched.session_token)
            await asyncio.wait_for(watch.task, 10)
            assert watch.states[-1] == S.SESSION_STATE_ENDED, watch.states

            assert load.played > played_at_fault, "no session was played after the fault"
            for rid, seen in load.answers.items():
                assert len({s for s, _ in seen}) == 1, (rid, seen)
            conn = await asyncpg.connect(url)
            try:
                in_db = {r["request_id"] for r in await conn.fetch("SELECT request_id FROM sessions")}
                lost = await conn.fetchval("SELECT count(*) FROM hosts WHERE status <> 'online'")
            finally:
                await conn.close()
            assert set(load.answers) <= in_db
            await faults.check_store(url)
            leadership = broker.leadership._task if broker.leadership is not None else None
            leader_error = leadership.exception() if leadership is not None and leadership.done() else None
            logged = capfd.readouterr()
            internal_untranslated = "InternalClientError" in logged.out + logged.err
            faults.report(
                fault,
                **details,
                fault_s=round(fault_s, 2),
                seats_longest_outage_s=round(load.longest_outage_s(), 2),
                new_session_ready_after_s=None if recovered_s is None else round(recovered_s, 2),
                sessions=len(load.answers),
                codes=dict(load.codes),
                never_ready=len(load.never_ready),
                watch_rewatched=watch.rewatched,
                hosts_not_online=lost,
                leadership_died_of=type(leader_error).__name__ if leader_error else None,
            )
            assert leader_error is None, f"the placement leadership died: {leader_error!r}"
            assert not internal_untranslated, "an asyncpg InternalClientError reached the log untranslated"
            assert lost == 0, "hosts declared lost because the database was away"
            assert recovered_s is not None, f"the broker did not place again after the fault: {not_recovered}"
            assert load.bad_codes == {}, f"answers no client may see: {load.bad_codes}"
        finally:
            if load is not None:
                await load.stop()
            for fa in fleet:
                await fa.close()


async def test_connections_killed_under_load(db_url: str, capfd: pytest.CaptureFixture[str]) -> None:
    """Three rounds, 0.7 s apart, of pg_terminate_backend on every connection to the broker's database: its pool,
    its notification listener and its placement lease connection."""

    async def act() -> dict[str, object]:
        killed = []
        for _ in range(3):
            killed.append(await _kill_connections(db_url))
            await asyncio.sleep(0.7)
        return {"connections_killed": killed}

    await _under_load(db_url, "PostgreSQL connections killed (1 s / 6 s)", act, capfd)


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[faults.Postgres]:
    pg = faults.Postgres(tmp_path)
    yield pg
    pg.close()


async def test_database_crashed_and_restarted_under_load(
    own_postgres: faults.Postgres, capfd: pytest.CaptureFixture[str]
) -> None:
    pg = own_postgres
    await faults.create_database(pg.url(), "cloudseat")
    url = pg.url("cloudseat")
    conn = await asyncpg.connect(url)
    try:
        await migrate.apply(conn)
    finally:
        await conn.close()

    async def act() -> dict[str, object]:
        began = time.monotonic()
        await asyncio.to_thread(pg.stop, "immediate")
        await asyncio.sleep(2.0)
        await asyncio.to_thread(pg.start)
        return {"database_down_s": round(time.monotonic() - began, 2)}

    await _under_load(url, "PostgreSQL crashed and restarted (1 s / 6 s)", act, capfd)


async def test_store_answers_unavailable_for_a_terminated_connection(db_url: str) -> None:
    """The store's calls, hammering a small pool while every backend is terminated over and over, fail only with
    the broker's own errors (Unavailable while the connections die), for at most 3 s."""
    pool = await database.create_pool(db_url, 4, 4)
    untranslated: list[BaseException] = []
    stop = time.monotonic() + 3.0

    async def hammer() -> None:
        while time.monotonic() < stop and not untranslated:
            try:
                await session_store.get(pool, uuid.uuid4())
            except errors.CloudseatError:
                pass
            except Exception as exc:
                untranslated.append(exc)
            await asyncio.sleep(0)

    async def killer() -> None:
        while time.monotonic() < stop and not untranslated:
            await _kill_connections(db_url)
            await asyncio.sleep(0.05)

    try:
        await asyncio.gather(killer(), *(hammer() for _ in range(8)))
        assert untranslated == [], f"{type(untranslated[0]).__name__}: {untranslated[0]}"
        # The pool replaced the connections that died: every one of its connections answers again.
        async with asyncio.timeout(10):
            for _ in range(3):
                answers = await asyncio.gather(
                    *(session_store.get(pool, uuid.uuid4()) for _ in range(8)), return_exceptions=True
                )
                if all(isinstance(a, errors.NotFound) for a in answers):
                    break
                await asyncio.sleep(0.5)
        assert all(isinstance(a, errors.NotFound) for a in answers), answers
    finally:
        await pool.close()


async def test_a_write_on_a_standby_answers_unavailable_and_drops_the_connection(db_url: str) -> None:
    """After a failover a connection may be left on the demoted primary, now read-only: a write there fails with
    SQLSTATE 25006. The store answers UNAVAILABLE (the caller retries) and drops that connection, so the next
    transaction gets a new one (here: after the database is writable again, as the new primary would be)."""
    name = f"ro_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(db_url)
    parts = urllib.parse.urlsplit(db_url)
    url = urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        pool = await database.create_pool(url, min_size=0, max_size=1)
        try:
            with pytest.raises(errors.Unavailable):
                async with database.transaction(pool) as conn:
                    await conn.execute("CREATE TABLE t (x int)")
            await admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = off')
            async with database.transaction(pool) as conn:  # a new connection: the read-only one was dropped
                await conn.execute("CREATE TABLE t (x int)")
                assert await conn.fetchval("SHOW transaction_read_only") == "off"
        finally:
            await pool.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
