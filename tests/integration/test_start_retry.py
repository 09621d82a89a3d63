"""A seat facing an overloaded broker: StartSession refused with RESOURCE_EXHAUSTED and a pushback trailer is asked
again with the same request id, no sooner than the broker asked, and every seat client says so while it waits.

The broker here is a real grpc.aio server on 127.0.0.1 port 0 implementing SessionService the way the overloaded
broker answers (`BusyBroker`): its StartSession refuses the first N calls, recording each call's request id, its
wait_for_placement_ms and when it came, then answers with the session still in the queue. Driven through the typed
client, the seat flow, the Python client as its own process, the kiosk's API and the kiosk page in Chromium.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest
from cloudseat import retry
from cloudseat.client import BrokerClient
from cloudseat.v1 import common_pb2, session_pb2, session_pb2_grpc, venue_pb2_grpc
from grpc import aio

from tests.integration import browser as b
from thin_client import seat as seat_flow
from thin_client.seat import SeatConfig, SeatError, SeatSession

S = common_pb2.SessionState
BUSY_LINE = "the broker is busy; your request is kept; trying again in"


@dataclasses.dataclass
class Call:
    request_id: str
    wait_for_placement_ms: int
    at: float  # the loop's clock when it arrived


class BusyBroker(session_pb2_grpc.SessionServiceServicer, venue_pb2_grpc.VenueServiceServicer):
    """StartSession refuses the first `refuse` calls as an overloaded broker does, then answers one session, still
    PENDING at 3 of 7; WatchSession sends `watch` and holds the stream open. Enough of the rest for the seat
    clients: ListGames, EndSession, and ListSeats refused as a seat's credentials are (so the kiosk skips it)."""

    def __init__(self) -> None:
        self.refuse = 0
        # RESOURCE_EXHAUSTED: the broker's own refusal; CANCELLED: what a seat sees when the broker's gRPC refused
        # the call before the broker took it up (--accept-wait), as EndSession and WatchSession may be too.
        self.refuse_code = grpc.StatusCode.RESOURCE_EXHAUSTED
        self.end_refuse = 0
        self.end_calls = 0
        self.watch_refuse = 0
        self.watch_calls = 0
        self.pushback_ms: int | None = 30
        self.calls: list[Call] = []
        self.session = common_pb2.Session(
            session_id=str(uuid.uuid4()),
            venue_id=b.VENUE,
            seat_id=b.SEAT,
            game_id="demo",
            state=S.SESSION_STATE_PENDING,
        )
        # The watch's current state first, as the broker's: the same step, without the queue position yet.
        self.watch = [session_pb2.SessionUpdate(session=self.session)]
        self.target = ""

    async def StartSession(
        self, request: session_pb2.StartSessionRequest, context: aio.ServicerContext
    ) -> session_pb2.StartSessionResponse:
        self.calls.append(
            Call(request.request_id, request.wait_for_placement_ms, asyncio.get_running_loop().time())
        )
        if len(self.calls) <= self.refuse:
            if self.refuse_code is not grpc.StatusCode.RESOURCE_EXHAUSTED:
                await context.abort(self.refuse_code, "")
            if self.pushback_ms is not None:
                context.set_trailing_metadata(((retry.PUSHBACK_KEY, str(self.pushback_ms)),))
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"overloaded: retry in {self.pushback_ms or 100} ms"
            )
        session = common_pb2.Session()
        session.CopyFrom(self.session)
        session.request_id = request.request_id
        return session_pb2.StartSessionResponse(
            session=session, session_token="t" * 32, created=True, queue_position=3, queue_length=7
        )

    async def WatchSession(
        self, request: session_pb2.WatchSessionRequest, context: aio.ServicerContext
    ) -> AsyncIterator[session_pb2.SessionUpdate]:
        self.watch_calls += 1
        if self.watch_calls <= self.watch_refuse:
            await context.abort(grpc.StatusCode.CANCELLED, "")
        for update in self.watch:
            yield update
        await asyncio.Event().wait()  # a live session's watch stays open

    async def EndSession(
        self, request: session_pb2.EndSessionRequest, context: aio.ServicerContext
    ) -> session_pb2.EndSessionResponse:
        self.end_calls += 1
        if self.end_calls <= self.end_refuse:
            await context.abort(grpc.StatusCode.CANCELLED, "")
        ended = common_pb2.Session()
        ended.CopyFrom(self.session)
        ended.state, ended.end_reason = S.SESSION_STATE_ENDED, common_pb2.END_REASON_ENDED_BY_PATRON
        return session_pb2.EndSessionResponse(session=ended)

    async def ListGames(
        self, request: session_pb2.ListGamesRequest, context: aio.ServicerContext
    ) -> session_pb2.ListGamesResponse:
        response = session_pb2.ListGamesResponse()
        response.games.add(game_id="demo", name="Demo")
        return response

    async def ListSeats(self, request: Any, context: aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "a seat token may not list its venue's seats")

    def request_ids(self) -> set[str]:
        return {c.request_id for c in self.calls}

    def gaps(self) -> list[float]:
        return [later.at - earlier.at for earlier, later in itertools.pairwise(self.calls)]


@pytest.fixture
async def busy() -> AsyncIterator[BusyBroker]:
    fake = BusyBroker()
    server = aio.server()
    session_pb2_grpc.add_SessionServiceServicer_to_server(fake, server)
    venue_pb2_grpc.add_VenueServiceServicer_to_server(fake, server)
    fake.target = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    await server.start()
    try:
        yield fake
    finally:
        await server.stop(None)


def _cfg(busy: BusyBroker) -> SeatConfig:
    return SeatConfig(broker=busy.target, venue_id=b.VENUE, seat_id=b.SEAT)


async def test_a_refused_start_is_asked_again_with_the_same_request_after_the_hint(busy: BusyBroker) -> None:
    busy.refuse, busy.pushback_ms = 3, 30
    waits: list[tuple[int, float, str]] = []
    async with BrokerClient(busy.target, token="seat-token") as client:  # the seat's interceptors on the path
        started = await client.start_session(
            "cafe", "k1", "demo", wait_for_placement_ms=2000, on_wait=lambda *w: waits.append(w)
        )
    assert started.session.session_id == busy.session.session_id and started.queue_position == 3
    # Four calls, one request: whichever of them the broker took, it is one session.
    assert len(busy.calls) == 4 and busy.request_ids() == {started.session.request_id}
    assert [c.wait_for_placement_ms for c in busy.calls] == [2000] * 4
    # The seat was told before each wait; each wait honoured the hint, plus at most half again.
    assert [(attempt, reason) for attempt, _, reason in waits] == [
        (1, retry.BUSY),
        (2, retry.BUSY),
        (3, retry.BUSY),
    ]
    assert all(0.030 <= delay <= 0.045 for _, delay, _ in waits), waits
    assert all(gap >= 0.030 - 0.002 for gap in busy.gaps()), busy.gaps()  # never back sooner than asked


async def test_without_a_hint_the_waits_grow(busy: BusyBroker) -> None:
    busy.refuse, busy.pushback_ms = 3, None
    waits: list[tuple[int, float, str]] = []
    async with BrokerClient(busy.target) as client:
        await client.start_session("cafe", "k1", "demo", on_wait=lambda *w: waits.append(w))
    floors = [0.05, 0.1, 0.2]
    assert [w[0] for w in waits] == [1, 2, 3] and len(busy.request_ids()) == 1
    assert all(floor <= delay <= floor * 1.5 for floor, (_, delay, _) in zip(floors, waits, strict=True)), (
        waits
    )


async def test_a_busy_broker_is_waited_for_past_the_timeout_up_to_the_busy_budget(busy: BusyBroker) -> None:
    busy.refuse, busy.pushback_ms = 1000, 100
    async with BrokerClient(busy.target) as client:
        with pytest.raises(aio.AioRpcError) as refused:
            await client.start_session("cafe", "k1", "demo", timeout_s=0.3, busy_timeout_s=1.0)
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(busy.request_ids()) == 1
    # It kept asking past the 0.3 s timeout, since the broker kept answering, and stopped at the busy budget (1 s,
    # plus the last call's way there).
    assert 0.3 < busy.calls[-1].at - busy.calls[0].at < 1.5

    # A hint past the budget: giving up at once beats coming back early for another refusal.
    busy.calls.clear()
    busy.pushback_ms = 5000
    async with BrokerClient(busy.target) as client:
        with pytest.raises(aio.AioRpcError):
            await client.start_session("cafe", "k1", "demo", timeout_s=0.3, busy_timeout_s=1.0)
    assert len(busy.calls) == 1


async def test_calls_a_busy_brokers_grpc_refused_are_asked_again(busy: BusyBroker) -> None:
    """CANCELLED from the broker: its gRPC refused the call before the broker took it up, so nothing was done. A start
    is asked again with the same request (the backoff, no hint), an end again (ending is idempotent), and the seat's
    watch is opened again."""
    busy.refuse, busy.refuse_code, busy.end_refuse, busy.watch_refuse = 2, grpc.StatusCode.CANCELLED, 2, 1
    waits: list[tuple[int, float, str]] = []
    async with BrokerClient(busy.target) as client:
        started = await client.start_session("cafe", "k1", "demo", on_wait=lambda *w: waits.append(w))
        assert len(busy.calls) == 3 and busy.request_ids() == {started.session.request_id}
        assert [(attempt, reason) for attempt, _, reason in waits] == [(1, retry.BUSY), (2, retry.BUSY)]
        assert 0.05 <= waits[0][1] <= 0.075 and 0.1 <= waits[1][1] <= 0.15, waits

        ended = await client.end_session(started.session.session_id, started.session_token)
        assert ended.state == S.SESSION_STATE_ENDED and busy.end_calls == 3

        seat = SeatSession(client, _cfg(busy))
        seat.session = started.session
        updates = seat.updates()
        try:
            first = await asyncio.wait_for(anext(updates), 10)
        finally:
            await updates.aclose()
        assert first.session.session_id == busy.session.session_id and busy.watch_calls == 2


async def test_the_placement_wait_is_cut_to_fit_the_call(busy: BusyBroker) -> None:
    async with BrokerClient(busy.target) as client:
        await client.start_session("cafe", "k1", "demo", wait_for_placement_ms=2000, timeout_s=2.0)
        await client.start_session("cafe", "k1", "demo")  # other callers: no wait unless asked
    assert 0 < busy.calls[0].wait_for_placement_ms <= 1000 and busy.calls[1].wait_for_placement_ms == 0


async def test_the_seat_shows_the_wait_then_the_answer_at_once(busy: BusyBroker) -> None:
    busy.refuse, busy.pushback_ms = 2, 30
    placed = common_pb2.Session()
    placed.CopyFrom(busy.session)
    placed.state, placed.host_id, placed.site_id = S.SESSION_STATE_PLACED, "h1", "near"
    busy.watch.append(session_pb2.SessionUpdate(session=placed))
    lines: list[str] = []
    cfg = _cfg(busy)
    async with BrokerClient(busy.target) as client:
        seat = SeatSession(client, cfg)
        answer = await seat.start(
            "demo", on_wait=lambda _, delay, why: lines.append(seat_flow.waiting(why, delay, cfg))
        )
        # The answer is the first step, queue position and all; the watch's repeat of it is not shown again.
        assert seat_flow.describe(answer) == "in the queue: 3 of 7"
        async with asyncio.timeout(10):
            following = seat.updates(after=answer)
            first = await anext(following)
            await following.aclose()
    assert first.session.state == S.SESSION_STATE_PLACED
    assert len(lines) == 2 and all(line.startswith(BUSY_LINE) for line in lines), lines
    assert {c.wait_for_placement_ms for c in busy.calls} == {seat_flow.PLACEMENT_WAIT_MS}
    assert len(busy.request_ids()) == 1


async def test_a_final_refusal_is_one_line(busy: BusyBroker) -> None:
    busy.refuse, busy.pushback_ms = 1000, 3_600_000
    async with BrokerClient(busy.target) as client:
        with pytest.raises(SeatError) as refused:
            await SeatSession(client, _cfg(busy)).start("demo")
    assert str(refused.value) == "the broker is too busy to take this seat now; try again in a minute"


@pytest.mark.slow
async def test_the_python_client_prints_the_wait(busy: BusyBroker) -> None:
    busy.refuse, busy.pushback_ms = 2, 30
    ended = common_pb2.Session()
    ended.CopyFrom(busy.session)
    ended.state, ended.end_reason = S.SESSION_STATE_ENDED, common_pb2.END_REASON_ENDED_BY_VENUE
    busy.watch.append(session_pb2.SessionUpdate(session=ended))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "thin_client", "play", "--broker", busy.target, "--venue", b.VENUE,
        "--seat", b.SEAT, "--game", "demo", "--headless", "--ice-address", "127.0.0.1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    assert proc.returncode == 1, text + err.decode()  # the session ended, not by the patron
    lines = text.splitlines()
    assert [line.startswith(BUSY_LINE) for line in lines[:2]] == [True, True], text
    assert lines.count("in the queue: 3 of 7") == 1 and "ended: the venue ended the session" in text


async def test_the_kiosk_says_why_it_waits_and_refuses_for_good_with_429(busy: BusyBroker) -> None:
    busy.refuse, busy.pushback_ms = 3, 300
    async with b.kiosk(busy.target) as kiosk, aiohttp.ClientSession(kiosk.url) as http:
        seen: list[Any] = []

        async def watch_starting() -> None:
            while True:
                async with http.get("/api/starting") as r:
                    seen.append((await r.json())["waiting"])
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch_starting())
        try:
            async with http.post("/api/sessions", json={"game_id": "demo"}) as r:
                status, started = r.status, await r.json()
        finally:
            watcher.cancel()
        assert status == 201 and started["session"]["text"] == "in the queue: 3 of 7", started
        waits = [w for w in seen if w is not None]
        assert waits and all(w["reason"] == "busy" and w["text"].startswith(BUSY_LINE) for w in waits), seen
        assert {w["attempt"] for w in waits} <= {1, 2, 3} and all(
            300 <= w["retry_in_ms"] <= 450 for w in waits
        )
        async with http.get("/api/starting") as r:
            assert (await r.json()) == {"waiting": None}
        assert len(busy.request_ids()) == 1

    busy.calls.clear()
    busy.refuse, busy.pushback_ms = 1000, 3_600_000
    async with b.kiosk(busy.target) as kiosk, aiohttp.ClientSession(kiosk.url) as http:
        async with http.post("/api/sessions", json={"game_id": "demo"}) as r:
            assert r.status == 429
            assert await r.json() == {
                "error": "the broker is too busy to take this seat now; try again in a minute",
                "field": "broker",
            }


@pytest.mark.slow
async def test_the_kiosk_page_shows_the_wait_then_the_queue(busy: BusyBroker) -> None:
    busy.refuse, busy.pushback_ms = 3, 400
    async with b.kiosk(busy.target) as kiosk, b.chromium() as chromium:
        page = await b.seat_page(chromium, kiosk.url)
        await page.goto(kiosk.url)
        await b.wait_state(page, ["idle"], 15)
        await page.click('button[data-game-id="demo"]')
        await b.wait_state(page, ["waiting"], 15)
        assert (await page.inner_text("#message")).startswith(BUSY_LINE)
        await b.wait_state(page, ["queued"], 15)
        assert await page.inner_text("#queue") == "3 / 7"
        assert await page.inner_text("#message") == "in the queue: 3 of 7"
        states = [h["state"] for h in await page.evaluate("cloudseat.history")]
        assert set(states[states.index("starting") :]) == {"starting", "waiting", "queued"}, states
