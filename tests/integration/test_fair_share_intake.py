"""How the tenant port takes new calls out of gRPC (broker.intake), and how a refusal whose caller has gone ends.

Real gRPC on 127.0.0.1 port 0. The loop is kept busy by blocking callbacks, one per turn, so what is counted is
turns of the loop, not time: grpc.aio alone takes one new call per turn or two, so calls that arrived while the loop
was busy reach their handlers one by one; with requests outstanding they reach them together.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from cloudseat.client import BrokerClient
from cloudseat.v1 import venue_pb2
from grpc import aio

from broker import intake
from broker.config import BrokerConfig
from broker.rpc import interceptor
from broker.server import Broker
from tests.integration.conftest import FAST

pytestmark = pytest.mark.slow

CALLS = 40


def _ident(raw: bytes) -> bytes:
    return raw


class _Handlers(grpc.GenericRpcHandler):
    """One unary method whose behaviour the test gives."""

    def __init__(self, behaviour: Callable[[bytes, aio.ServicerContext], Any]) -> None:
        self.behaviour = behaviour

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(self.behaviour, _ident, _ident)


class _Counting(aio.ServerInterceptor):
    """Counts the calls it sees: the extra requests go through the server's interceptors like grpc.aio's own."""

    def __init__(self) -> None:
        self.seen = 0

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        self.seen += 1
        return await continuation(details)


async def _server(
    ahead: int, behaviour: Callable[[bytes, aio.ServicerContext], Any], counting: _Counting | None = None
) -> tuple[intake.Server, int]:
    server = intake.Server(interceptors=[counting] if counting else [], options=[], ahead=ahead)
    server.add_generic_rpc_handlers([_Handlers(behaviour)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


def test_this_grpc_has_what_intake_drives() -> None:
    assert intake.supported()


async def _turns_until_all_entered(ahead: int) -> int:
    """Turns of a busy loop from the moment CALLS new calls wait in gRPC until every one of them has reached its
    handler. The calls are sent by another thread while this loop is blocked, so all of them wait in gRPC's core
    (or in its completion queue) when the loop comes back."""
    entered = 0
    turns = 0
    all_in = asyncio.Event()

    async def behaviour(request: bytes, context: aio.ServicerContext) -> bytes:
        nonlocal entered
        entered += 1
        if entered == CALLS:
            all_in.set()
        return request

    server, port = await _server(ahead, behaviour)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    call = channel.unary_unary("/t/Call")
    await asyncio.to_thread(call, b"warm", timeout=10)  # the connection is up before the loop is blocked
    sent = threading.Event()
    futures: list[grpc.Future] = []

    def send() -> None:
        futures.extend(call.future(b"x", timeout=30) for _ in range(CALLS))
        sent.set()

    loop = asyncio.get_running_loop()
    stop = False

    def hog() -> None:
        nonlocal turns
        if stop:
            return
        turns += 1
        time.sleep(0.02)  # a busy turn; one hog per turn of the loop
        loop.call_soon(hog)

    try:
        thread = threading.Thread(target=send)
        thread.start()
        sent.wait(10)  # blocks this loop while the calls are sent: they wait in gRPC meanwhile
        thread.join()
        time.sleep(0.2)  # noqa: ASYNC251 - still blocked: the calls reach the server meanwhile
        loop.call_soon(hog)
        await asyncio.wait_for(all_in.wait(), timeout=60)
        counted = turns
        stop = True
        assert [await asyncio.to_thread(f.result, timeout=30) for f in futures] == [b"x"] * CALLS
    finally:
        stop = True
        channel.close()
        await server.stop(None)
    return counted


async def test_calls_waiting_in_grpc_reach_their_handlers_together_with_requests_outstanding() -> None:
    alone = await _turns_until_all_entered(ahead=0)
    ahead = await _turns_until_all_entered(ahead=32)
    # grpc.aio alone: at least a turn per call (its one request is renewed only once its call's task has started).
    assert alone >= CALLS, alone
    # With requests outstanding, the calls that wait are taken up in a few turns, whatever their number.
    assert ahead < CALLS // 2, ahead


async def test_calls_taken_ahead_pass_the_interceptors_and_the_server_stops() -> None:
    counting = _Counting()

    async def echo(request: bytes, context: aio.ServicerContext) -> bytes:
        await asyncio.sleep(0)
        return request

    server, port = await _server(4, echo, counting)
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/t/Echo")
        answers = await asyncio.gather(*(call(str(i).encode(), timeout=30) for i in range(50)))
    assert answers == [str(i).encode() for i in range(50)]
    assert counting.seen == 50
    assert server.taken > 0  # some came through the extra requests
    # Stopping fails the outstanding requests; the server ends without waiting on them.
    await asyncio.wait_for(server.stop(None), timeout=30)


async def test_a_refusal_whose_caller_has_gone_ends_the_call_quietly(caplog: pytest.LogCaptureFixture) -> None:
    """The caller's deadline passes while the loop is blocked, before the handler answers: gRPC's core refuses to
    send the status, and the handler ends without an error logged (interceptor._abort)."""
    outcome: list[str] = []

    async def late(request: bytes, context: aio.ServicerContext) -> bytes | None:
        time.sleep(1.0)  # noqa: ASYNC251 - the loop blocked past the caller's 0.2 s deadline
        try:
            await interceptor._abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, "overloaded: retry in 100 ms")
        except aio.AbortError:
            outcome.append("answered")
            raise
        outcome.append("gone")
        return None

    server, port = await _server(4, late)
    caplog.set_level(logging.ERROR)
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        with pytest.raises(aio.AioRpcError) as failed:
            await channel.unary_unary("/t/Late")(b"x", timeout=0.2)
        assert failed.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        # The server goes on serving: the next call is answered (here, refused in time).
        with pytest.raises(aio.AioRpcError) as refused:
            await channel.unary_unary("/t/Late")(b"x", timeout=30)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    await server.stop(None)
    assert outcome == ["gone", "answered"]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.fixture
def broker_config(db_url: str) -> BrokerConfig:
    # The agents on a port of their own: the tenant port is then a tenant port only, and takes calls ahead.
    return dataclasses.replace(FAST, database_url=db_url, agent_listen="127.0.0.1:0", accept_ahead=8)


@pytest.fixture
async def venue_client(broker: Broker) -> AsyncIterator[BrokerClient]:
    async with BrokerClient(f"127.0.0.1:{broker.port}") as c:
        yield c


async def test_the_broker_tenant_port_takes_calls_ahead(broker: Broker, venue_client: BrokerClient) -> None:
    await venue_client.venues.CreateVenue(venue_pb2.CreateVenueRequest(venue_id="v1", name="V"), timeout=30)
    got = await asyncio.gather(
        *(venue_client.venues.GetVenue(venue_pb2.GetVenueRequest(venue_id="v1"), timeout=30) for _ in range(40))
    )
    assert {g.venue_id for g in got} == {"v1"}
    tenant = next(s for s in broker._servers if isinstance(s, intake.Server))
    assert tenant.taken > 0
