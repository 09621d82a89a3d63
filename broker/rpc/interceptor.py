"""The server interceptor: the caller authenticated and metered (broker.guard) before any servicer runs, ids
bound into the log context, one summary line per RPC, errors mapped to statuses.

Servicers raise the broker's own errors; this is the only place that turns them into gRPC statuses (through
broker.rpc.status). An unexpected exception is logged with its traceback and answers INTERNAL without details.
The caller's principal is available to servicers as `broker.auth.caller()`.

Request bytes that do not parse as their message (a string field holding invalid UTF-8, a length past the end) fail
in gRPC's deserializer, before any handler runs, where gRPC would answer UNKNOWN or INTERNAL. Each handler's
deserializer is wrapped so that they answer INVALID_ARGUMENT ("request: not a valid <type>") instead, once the caller
is admitted and before the servicer sees anything.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc
import structlog
from cloudseat import errors
from google.protobuf import message
from grpc import aio
from grpc._cython import cygrpc

from broker import auth
from broker.counters import Counters
from broker.guard import ALWAYS_ADMITTED, Guard
from broker.overload import OVER as _OVER
from broker.overload import Admission, Shares
from broker.rpc import status
from broker.store import audit

log = structlog.get_logger("broker.rpc")

_ID_FIELDS = ("session_id", "venue_id", "seat_id", "host_id", "site_id", "provider_id")
# gRPC's trailer for a server's "retry after this many milliseconds".
PUSHBACK = "grpc-retry-pushback-ms"


def _ids(request: Any) -> dict[str, str]:
    out = {}
    for name in _ID_FIELDS:
        value = getattr(request, name, None)
        if isinstance(value, str) and value:
            out[name] = value[:80]
    return out


class _Undecodable:
    """What a unary request decodes to when its bytes are not a valid message: the handler raises `error` once the
    caller is admitted (gRPC decodes a unary request before the handler runs, so it cannot raise there)."""

    def __init__(self, error: errors.InvalidArgument) -> None:
        self.error = error


def _decoder(
    deserializer: Callable[[bytes], Any] | None, *, streaming: bool
) -> Callable[[bytes], Any] | None:
    """`deserializer`, with a DecodeError turned into errors.InvalidArgument: raised for a streamed request (gRPC
    decodes those as the servicer iterates, so it surfaces in the servicer like any broker error), returned as an
    _Undecodable for a unary one."""
    if deserializer is None:
        return None
    described = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    name = getattr(described, "full_name", "message")
    wrapped = deserializer

    def decode(raw: bytes) -> Any:
        try:
            return wrapped(raw)
        except message.DecodeError:
            error = errors.InvalidArgument("request", f"not a valid {name}")
            if streaming:
                raise error from None
            return _Undecodable(error)

    return decode


def _decoded(request: Any) -> Any:
    if isinstance(request, _Undecodable):
        raise request.error
    return request


class _Call:
    """Bookkeeping for one RPC: the caller, the status it ends with and the summary line."""

    def __init__(self, method: str, guard: Guard) -> None:
        self.method = method
        self.guard = guard
        self.code = grpc.StatusCode.OK
        self.started = time.perf_counter()
        self.ids: dict[str, str] = {}
        self.caller = auth.TRUSTED

    def admit(self, context: aio.ServicerContext) -> None:
        """Authenticate the caller and spend one call of its tenant's rate; the servicer then sees it as
        auth.caller()."""
        self.caller = self.guard.authenticate(
            self.method, tuple(context.invocation_metadata() or ()), context.auth_context() or {}
        )
        self.guard.spend(self.caller)
        auth.set_caller(self.caller)
        audit.set_actor(audit.Actor(self.caller.subject, self.caller.tenant, str(context.peer() or "")))

    async def fail(self, context: aio.ServicerContext, exc: BaseException) -> None:
        self.guard.refused(exc, self.method, str(context.peer() or ""))
        if isinstance(exc, errors.CloudseatError):
            self.code = status.code_for(exc)
            if isinstance(exc, errors.ResourceExhausted) and exc.retry_after_ms is not None:
                context.set_trailing_metadata(((PUSHBACK, str(exc.retry_after_ms)),))
            if self.code is grpc.StatusCode.INTERNAL:
                log.error("store error", method=self.method, exc_info=exc, **self.ids)
            await _abort(context, self.code, exc.message)
            return
        self.code = grpc.StatusCode.INTERNAL
        log.error("unexpected error", method=self.method, exc_info=exc, **self.ids)
        await _abort(context, grpc.StatusCode.INTERNAL, "internal error")

    def done(self, context: aio.ServicerContext) -> None:
        code = context.code()
        if isinstance(code, grpc.StatusCode) and code is not grpc.StatusCode.OK:
            self.code = code
        fields = {
            "method": self.method,
            "status": self.code.name,
            "duration_ms": round((time.perf_counter() - self.started) * 1000, 2),
            **self.ids,
            **({} if self.caller.trusted else {"caller": self.caller.subject}),
        }
        if self.code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
            log.error("rpc", **fields)
        else:
            log.info("rpc", **fields)


def _check_not_expired(context: aio.ServicerContext) -> None:
    """A call whose deadline passed while it waited to be served: its caller has gone, so doing it is wasted work
    at best (and under overload, work taken from calls that can still be answered). Nothing is written."""
    left = context.time_remaining()
    if left is not None and left <= 0:
        raise errors.DeadlineExceeded("the call's deadline passed before it was served; nothing was done")


class _Fair:
    """Admission past capacity per tenant (broker.overload): the loop's lateness and each tenant's recent calls."""

    def __init__(self, admission: Admission, counters: Counters, guard: Guard) -> None:
        self.admission = admission
        self.shares = Shares()
        self.counters = counters
        self.guard = guard

    def light(self, tenant: str) -> bool:
        """Well under its share of the recent calls, or holding no refusals while another tenant has some held (by
        rate, a held flood looks no heavier than the others; measured: the quiet venue refused for holding "11
        calls in progress here, its share" beside one)."""
        if self.shares.light(tenant, time.monotonic()):
            return True
        return self.guard.others_held(tenant) and not self.guard.holding(tenant)

    def holds(self, tenant: str) -> bool:
        """Whether a refusal of `tenant` for its calls in progress is held for its hint (Guard.hold_refusal) rather
        than answered at once: when it shares this process with other tenants and asks for more than its fair share
        of the recent calls. A tenant asking no more than the others is past the capacity like them, not flooding,
        and a held refusal would only keep its caller's connection busy."""
        return self.guard.sharing(tenant) and self.shares.ratio(tenant, time.monotonic())[0] > _OVER

    def refusal(self, method: str, tenant: str, *, noted: bool = False) -> tuple[int, bool] | None:
        """None: let the call in. Else refuse it before anything is done (no log line: the refusal must cost less
        than the call): the retry hint in ms, and whether the tenant is over its share (its refusal is then held,
        Guard.hold_refusal). `noted`: the call was counted at the door already (Interceptor.intercept_service)."""
        if method.endswith(ALWAYS_ADMITTED):
            return None
        now = time.monotonic()
        # Demand, not what was let in: a flooding tenant stays heavy while it is being shed.
        if not noted:
            self.shares.note(tenant, now)
        if not self.admission.pressed:
            return None
        ratio, heaviest = self.shares.ratio(tenant, now)
        if self.admission.admit_tenant(random.random(), ratio, heaviest):
            return None
        if heaviest <= _OVER and self.guard.others_held(tenant) and not self.guard.holding(tenant):
            # Nobody seems over by its recent calls, but another tenant has refusals held: it is over its share,
            # and its calls arrive only as fast as its holds end, so by rate it looks like the others (measured:
            # the quiet venue refused 63 of 291 calls, "overloaded", beside a flood holding its connections'
            # every stream). This tenant, holding none, is spared.
            return None
        return self.admission.retry_after_ms(), ratio > _OVER


async def _shed(
    guard: Guard,
    counters: Counters,
    tenant: str,
    retry_ms: int,
    message: str,
    context: aio.ServicerContext,
    *,
    hold: bool,
) -> NoReturn:
    """Refuse a call of `tenant`: RESOURCE_EXHAUSTED with the hint. With `hold` (the tenant is over its share),
    answered once the hint has passed (while the tenant holds few enough such refusals), so that a caller that asks
    again at once waits in its own connection rather than in the queue of new calls every tenant's call passes
    through (broker.overload.Slots.hold)."""
    hold_s = guard.hold_refusal(tenant, retry_ms, context.time_remaining()) if hold else 0.0
    if hold_s > 0:
        try:
            await asyncio.sleep(hold_s)
        finally:
            guard.release_refusal(tenant)
    counters.add("calls_shed")
    context.set_trailing_metadata(((PUSHBACK, str(retry_ms)),))
    await _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, message)
    raise _Unanswered


class _Unanswered(Exception):
    """A refusal whose caller had gone before it could be answered: the handler ends quietly."""


async def _abort(context: aio.ServicerContext, code: grpc.StatusCode, details: str) -> None:
    """End the call with `code` (raises aio.AbortError), or return when the caller has already gone.

    A caller that went (its deadline passed, or it cancelled) before the answer was sent: gRPC's core refuses to
    send the status (ExecuteBatchError), and there is nobody to tell. Before this, each such call was logged as an
    unexpected error with its traceback, and a held refusal whose hold ran to the caller's deadline was one
    (measured: 150 a second under a flood; rendering them cost the loop more than the refusals themselves). Once
    the handler returns, gRPC ends the call with the abort recorded on it, quietly."""
    try:
        await context.abort(code, details)
    except cygrpc.ExecuteBatchError:
        return


def _unary(
    method: str,
    guard: Guard,
    counters: Counters,
    behavior: Callable[..., Awaitable[Any]],
    fair: _Fair | None = None,
    *,
    noted: bool = False,
) -> Callable[..., Awaitable[Any]]:
    async def handler(request: Any, context: aio.ServicerContext) -> Any:
        # A unary call is two messages, whatever its answer.
        counters.add("grpc_messages_in")
        counters.add("grpc_messages_out")
        call = _Call(method, guard)
        call.ids = _ids(request)
        release: Callable[[], None] | None = None
        shed = False
        try:
            call.admit(context)
            tenant = call.caller.tenant
            # Its share of the recent calls while the loop runs late, then of the calls in progress: refused
            # without a log line, and held when the tenant is over its share.
            refused = fair.refusal(method, tenant, noted=noted) if fair is not None else None
            if refused is not None:
                shed = True
                retry_ms, over = refused
                message = f"overloaded: retry in {retry_ms} ms"
                await _shed(guard, counters, tenant, retry_ms, message, context, hold=over)
            try:
                entered = guard.enter(method, tenant, light=fair is not None and fair.light(tenant))
            except errors.ResourceExhausted as exc:
                shed = True
                # Held only when it shares the process and asks for more than its share: a refusal of a tenant
                # that asks no more than the others is answered at once, whatever it holds (measured: 500 venues
                # past capacity, each at its one call in progress, had every refusal held for up to its deadline,
                # the held calls filled the seats' connections, and nothing was answered for 15 s).
                hold = fair.holds(tenant) if fair is not None else guard.sharing(tenant)
                await _shed(guard, counters, tenant, exc.retry_after_ms or 0, exc.message, context, hold=hold)
            if entered:
                release = guard.hold(tenant)  # the servicer may give it back while it waits (broker.guard.waiting)
            _check_not_expired(context)
            with structlog.contextvars.bound_contextvars(**call.ids):
                return await behavior(_decoded(request), context)
        except aio.AbortError:
            raise
        except _Unanswered:
            return None
        except Exception as exc:
            await call.fail(context, exc)
        finally:
            if release is not None:
                release()
            if not shed:
                call.done(context)

    return handler




def _server_stream(
    method: str, guard: Guard, counters: Counters, behavior: Callable[..., AsyncIterator[Any]]
) -> Callable[..., AsyncIterator[Any]]:
    async def handler(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
        counters.add("grpc_messages_in")
        call = _Call(method, guard)
        call.ids = _ids(request)
        opened = False
        try:
            call.admit(context)
            request = _decoded(request)
            guard.open_stream(call.caller)
            opened = True
            with structlog.contextvars.bound_contextvars(**call.ids):
                async for item in behavior(request, context):
                    counters.add("grpc_messages_out")
                    yield item
        except aio.AbortError:
            raise
        except Exception as exc:
            await call.fail(context, exc)
        finally:
            if opened:
                guard.close_stream(call.caller)
            call.done(context)

    return handler


class _CountingContext:
    """A bidirectional call's context that counts the messages written."""

    def __init__(self, context: aio.ServicerContext, counters: Counters) -> None:
        self._context = context
        self._counters = counters

    async def write(self, message: Any) -> None:
        self._counters.add("grpc_messages_out")
        await self._context.write(message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


async def _counted(messages: AsyncIterator[Any], counters: Counters) -> AsyncIterator[Any]:
    async for item in messages:
        counters.add("grpc_messages_in")
        yield item


def _bidi(method: str, guard: Guard, counters: Counters, behavior: Callable[..., Any]) -> Callable[..., Any]:
    # Bidirectional servicers here are coroutines that write with context.write; the ids come from the servicer,
    # which binds them into the log context itself once the first message says who is calling.
    if inspect.isasyncgenfunction(behavior):
        raise TypeError(f"{method}: write bidirectional servicers as coroutines")

    async def handler(request_iterator: Any, context: aio.ServicerContext) -> None:
        call = _Call(method, guard)
        try:
            call.admit(context)
            await behavior(_counted(request_iterator, counters), _CountingContext(context, counters))
        except aio.AbortError:
            raise
        except Exception as exc:
            await call.fail(context, exc)
        finally:
            call.ids = {k: v for k, v in structlog.contextvars.get_contextvars().items() if k in _ID_FIELDS}
            call.done(context)

    return handler


def _refuse(counters: Counters, retry_after_ms: int) -> Callable[..., Awaitable[Any]]:
    """The whole of a call refused at the door: no caller check, no log line, no work; two messages and a hint."""

    async def handler(request: Any, context: aio.ServicerContext) -> Any:
        counters.add("grpc_messages_in")
        counters.add("grpc_messages_out")
        counters.add("calls_shed")
        context.set_trailing_metadata(((PUSHBACK, str(retry_after_ms)),))
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"overloaded: retry in {retry_after_ms} ms")

    return handler


class Interceptor(aio.ServerInterceptor):
    def __init__(
        self,
        guard: Guard | None = None,
        counters: Counters | None = None,
        admission: Admission | None = None,
    ) -> None:
        self.guard = guard or Guard(None)
        self.counters = counters or Counters()
        # Past capacity, new unary calls are refused per tenant once the caller is known (broker.overload); when
        # the loop is drowning and no tenant is above its share (every tenant shed alike), here, before anything
        # else is done for them.
        self.admission = admission
        self._fair = _Fair(admission, self.counters, self.guard) if admission is not None else None

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
            "request_deserializer": _decoder(
                handler.request_deserializer, streaming=handler.request_streaming
            ),
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            noted = False
            if self._fair is not None and not method.endswith(ALWAYS_ADMITTED):
                now = time.monotonic()
                # Every call whose tenant is known from its metadata alone is counted here, at the door, whatever
                # becomes of it: a flood's calls refused below (drowning) must still count as its demand, or its
                # share decays while it floods, nobody seems over their share, and the door refuses everyone alike
                # (measured: the quiet venue refused 125 of 300 calls, "overloaded", beside a flood at 8x its share).
                tenant = self.guard.known_tenant(method, handler_call_details.invocation_metadata)
                if tenant is not None:
                    self._fair.shares.note(tenant, now)
                    noted = True
                if (
                    self._fair.admission.shed_share >= 1.0
                    and not self._fair.shares.anyone_over(now)
                    and not self.guard.others_held("")
                ):
                    return grpc.unary_unary_rpc_method_handler(
                        _refuse(self.counters, self._fair.admission.retry_after_ms()), **kw
                    )
            return grpc.unary_unary_rpc_method_handler(
                _unary(method, self.guard, self.counters, handler.unary_unary, self._fair, noted=noted), **kw
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _server_stream(method, self.guard, self.counters, handler.unary_stream), **kw
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                _bidi(method, self.guard, self.counters, handler.stream_stream), **kw
            )
        return handler
