"""How a tenant server takes new calls out of gRPC: with several requests outstanding, not one.

grpc.aio's server asks gRPC's core for the next new call one at a time: it asks, waits for the answer to come
through the completion queue's thread and back into the event loop, starts the call's task, and only then asks
again. Every new call therefore costs about two turns of the loop, and a loop busy with other work turns slowly:
past capacity the calls not yet taken up wait in the core, in arrival order, where no Python can see whose they
are. That is the queue a flooding tenant fills ahead of everyone else (measured, docs/security.md#fair-share-under-load:
a quiet venue's calls spent 8-25 ms in the broker's handlers and about 880 ms in that queue behind a flood's).

`Intake` keeps `ahead` more requests outstanding beside grpc.aio's own, so each time the completion queue's events
reach the loop it takes up to that many new calls at once. The core's queue then stays short, a new call reaches
the interceptor (broker.rpc.interceptor) within a turn or two, and there its tenant is known: a tenant over its
share is refused or held there, in Python, where holding costs a timer and keeps the caller's connection busy
(broker.overload.Slots.hold), and the other tenants' calls go in beside it.

This drives grpc.aio's server through three names that are not its public interface (`AioServer._request_call`,
`cygrpc._handle_rpc`, `cygrpc._schedule_rpc_coro`; grpcio 1.80, which pyproject.toml pins to one minor). They are
checked when the server starts: if they are missing or differ (another gRPC), the server takes calls as grpc.aio
does alone, and says so in the log once.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Sequence
from typing import Any

import grpc
import structlog
from grpc import aio
from grpc._cython import cygrpc
from grpc.aio import _server as aio_server

log = structlog.get_logger("broker.intake")

# The arguments of the private entry points this module calls, as grpcio 1.80 has them.
_HANDLE_RPC_ARGS = ("generic_handlers", "interceptors", "rpc_state", "loop", "concurrency_exceeded")
_SCHEDULE_ARGS = ("rpc_coro", "rpc_state", "loop")


def supported() -> bool:
    """Whether this gRPC has the entry points `Intake` drives, with the arguments it passes."""

    def args(function: Any) -> tuple[str, ...]:
        code = getattr(function, "__code__", None)
        return tuple(code.co_varnames[: code.co_argcount]) if code is not None else ()

    handle = getattr(cygrpc, "_handle_rpc", None)
    schedule = getattr(cygrpc, "_schedule_rpc_coro", None)
    request = getattr(cygrpc.AioServer, "_request_call", None)
    return (
        args(handle) == _HANDLE_RPC_ARGS
        and args(schedule) == _SCHEDULE_ARGS
        and request is not None
        and inspect.iscoroutinefunction(request) is not False
    )


class Server(aio_server.Server):  # type: ignore[misc]  # grpc is untyped (pyproject.toml)
    """grpc.aio's server that also takes new calls with `ahead` requests outstanding (0: as grpc.aio alone)."""

    def __init__(
        self, *, interceptors: Sequence[aio.ServerInterceptor], options: Sequence[tuple[str, Any]], ahead: int
    ) -> None:
        super().__init__(None, (), interceptors, tuple(options), None, None)
        self._interceptors = tuple(interceptors)
        self._handlers: list[grpc.GenericRpcHandler] = []
        self._ahead = ahead
        self._takers: list[asyncio.Task[None]] = []
        self._calls: set[asyncio.Task[Any]] = set()
        self.taken = 0  # calls taken up by the extra requests (tests read it)

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._handlers.extend(generic_rpc_handlers)
        super().add_generic_rpc_handlers(generic_rpc_handlers)

    async def start(self) -> None:
        await super().start()
        if self._ahead <= 0:
            return
        if not supported():
            log.warning("this gRPC lacks what taking new calls ahead needs; calls are taken one at a time")
            return
        self._takers = [
            asyncio.create_task(self._take(), name=f"intake-{i}") for i in range(self._ahead)
        ]

    async def _take(self) -> None:
        """One outstanding request for a new call, renewed as each call arrives, until the server stops."""
        core = self._server
        loop = asyncio.get_running_loop()
        while core.is_running():
            try:
                state = await core._request_call()
            except Exception:  # the request fails when the server shuts down: nothing more to take
                return
            self.taken += 1
            handling = cygrpc._handle_rpc(self._handlers, self._interceptors, state, loop, False)
            call = loop.create_task(cygrpc._schedule_rpc_coro(handling, state, loop))
            self._calls.add(call)
            call.add_done_callback(self._calls.discard)

    async def stop(self, grace: float | None) -> None:
        await super().stop(grace)
        for taker in self._takers:
            taker.cancel()
        await asyncio.gather(*self._takers, return_exceptions=True)
        self._takers = []
