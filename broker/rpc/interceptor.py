"""The server interceptor: ids bound into the log context, one summary line per RPC, errors mapped to statuses.

Servicers raise the broker's own errors; this is the only place that turns them into gRPC statuses (through
broker.rpc.status). An unexpected exception is logged with its traceback and answers INTERNAL without details.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog
from grpc import aio

from broker import errors
from broker.rpc import status

log = structlog.get_logger("broker.rpc")

_ID_FIELDS = ("session_id", "venue_id", "seat_id", "host_id", "site_id", "provider_id")


def _ids(request: Any) -> dict[str, str]:
    out = {}
    for name in _ID_FIELDS:
        value = getattr(request, name, None)
        if isinstance(value, str) and value:
            out[name] = value[:80]
    return out


class _Call:
    """Bookkeeping for one RPC: the status it ends with and the summary line."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.code = grpc.StatusCode.OK
        self.started = time.perf_counter()
        self.ids: dict[str, str] = {}

    async def fail(self, context: aio.ServicerContext, exc: BaseException) -> None:
        if isinstance(exc, errors.CloudseatError):
            self.code = status.code_for(exc)
            if self.code is grpc.StatusCode.INTERNAL:
                log.error("store error", method=self.method, exc_info=exc, **self.ids)
            await context.abort(self.code, exc.message)
        self.code = grpc.StatusCode.INTERNAL
        log.error("unexpected error", method=self.method, exc_info=exc, **self.ids)
        await context.abort(grpc.StatusCode.INTERNAL, "internal error")

    def done(self, context: aio.ServicerContext) -> None:
        code = context.code()
        if isinstance(code, grpc.StatusCode) and code is not grpc.StatusCode.OK:
            self.code = code
        fields = {
            "method": self.method,
            "status": self.code.name,
            "duration_ms": round((time.perf_counter() - self.started) * 1000, 2),
            **self.ids,
        }
        if self.code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
            log.error("rpc", **fields)
        else:
            log.info("rpc", **fields)


def _unary(method: str, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def handler(request: Any, context: aio.ServicerContext) -> Any:
        call = _Call(method)
        call.ids = _ids(request)
        try:
            with structlog.contextvars.bound_contextvars(**call.ids):
                return await behavior(request, context)
        except aio.AbortError:
            raise
        except Exception as exc:
            await call.fail(context, exc)
        finally:
            call.done(context)

    return handler


def _server_stream(
    method: str, behavior: Callable[..., AsyncIterator[Any]]
) -> Callable[..., AsyncIterator[Any]]:
    async def handler(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
        call = _Call(method)
        call.ids = _ids(request)
        try:
            with structlog.contextvars.bound_contextvars(**call.ids):
                async for item in behavior(request, context):
                    yield item
        except aio.AbortError:
            raise
        except Exception as exc:
            await call.fail(context, exc)
        finally:
            call.done(context)

    return handler


def _bidi(method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
    # Bidirectional servicers here are coroutines that write with context.write; the ids come from the servicer,
    # which binds them into the log context itself once the first message says who is calling.
    if inspect.isasyncgenfunction(behavior):
        raise TypeError(f"{method}: write bidirectional servicers as coroutines")

    async def handler(request_iterator: Any, context: aio.ServicerContext) -> None:
        call = _Call(method)
        try:
            await behavior(request_iterator, context)
        except aio.AbortError:
            raise
        except Exception as exc:
            await call.fail(context, exc)
        finally:
            call.ids = {k: v for k, v in structlog.contextvars.get_contextvars().items() if k in _ID_FIELDS}
            call.done(context)

    return handler


class Interceptor(aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        if method.startswith(("/grpc.health", "/grpc.reflection")):
            return handler
        kw = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(_unary(method, handler.unary_unary), **kw)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(_server_stream(method, handler.unary_stream), **kw)
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(_bidi(method, handler.stream_stream), **kw)
        return handler
