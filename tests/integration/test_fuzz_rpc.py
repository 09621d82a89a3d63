"""Fuzzing every RPC (issue 7): random and boundary values in every field of every request, for every method of the
four services, read from the contract's descriptors (so a new method or field is fuzzed without touching this file).

Every call must answer a proper status: OK or a client-facing code (INVALID_ARGUMENT, NOT_FOUND, ...), never
UNKNOWN or INTERNAL, which mean an unhandled case in the broker. The streams too: WatchSession is read for a moment,
AgentService.Connect gets a random sequence of agent messages (a random registration first, or not). Afterwards the
broker is still up: health SERVING, and a session can be started, placed and ended.

Values: the world's real ids, tokens and session ids mixed with random text and the boundaries of each field's
checks (empty, 64/65 and 128/129 characters, NUL and other control characters, non-ASCII, SDP-like text, 64 KiB + 1),
integers at their type's limits, unknown enum values, NaN and infinities, lists of 0-3 items or 1,001.

Wire-level garbage (bytes that are not a valid message, such as a string field holding invalid UTF-8) is the last
test here: it fails in gRPC's deserializer before any servicer runs, and the interceptor answers INVALID_ARGUMENT.
"""

from __future__ import annotations

import asyncio
import collections
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import grpc
import pytest
from cloudseat.client import BrokerClient
from cloudseat.v1 import (
    agent_pb2,
    audit_pb2,
    billing_pb2,
    common_pb2,
    fleet_pb2,
    lease_pb2,
    session_pb2,
    venue_pb2,
)
from google.protobuf import descriptor, message
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from broker.server import Broker
from tests.integration.scripted_agent import ScriptedAgent

pytestmark = pytest.mark.slow
C = grpc.StatusCode
F = descriptor.FieldDescriptor
SERVICES = [
    m.DESCRIPTOR.services_by_name[name]
    for m, name in (
        (session_pb2, "SessionService"),
        (venue_pb2, "VenueService"),
        (fleet_pb2, "FleetService"),
        (billing_pb2, "BillingService"),
        (lease_pb2, "LeaseService"),
        (agent_pb2, "AgentService"),
        (audit_pb2, "AuditService"),
    )
]
METHODS = [m for s in SERVICES for m in s.methods]
NEVER = (C.UNKNOWN, C.INTERNAL)
_INT_LIMITS = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
}
SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


def _texts(known: list[str]) -> SearchStrategy[str]:
    boundaries = [
        "", " ", "x" * 64, "x" * 65, "r" * 128, "r" * 129, "x" * 201, "a b", "a\x00b", "\x7f", "\u0085", "é",
        "游戏", "../../etc/passwd", "'; DROP TABLE sessions; --", "%s%n", "offer", "answer", SDP, "v=0",
        str(uuid.UUID(int=0)), str(uuid.uuid4()), "-1", "9" * 30, "0x" + "f" * 16,
    ]  # fmt: skip
    return st.one_of(
        st.sampled_from(known + boundaries),
        st.text(st.characters(exclude_categories=["Cs"]), max_size=80),  # any text protobuf can carry
        st.just("v=0\r\n" + "a" * (64 * 1024 - 4)),  # one byte over the SDP bound
    )


def _scalar(field: F, texts: SearchStrategy[str]) -> SearchStrategy[Any]:
    t = field.type
    if t == F.TYPE_STRING:
        return texts
    if t == F.TYPE_BYTES:
        return st.binary(max_size=64)
    if t == F.TYPE_BOOL:
        return st.booleans()
    if t in (F.TYPE_FLOAT, F.TYPE_DOUBLE):
        return st.one_of(
            st.sampled_from([0.0, -0.0, 1.0, -1.0, float("nan"), float("inf"), float("-inf"), 3.4e38]),
            st.floats(width=32 if t == F.TYPE_FLOAT else 64),
        )
    if t == F.TYPE_ENUM:
        assert field.enum_type is not None
        values = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(values), st.integers(-1, max(values) + 3), st.just(2**31 - 1))
    lo, hi = _INT_LIMITS[t]
    return st.one_of(st.sampled_from(sorted({lo, hi, 0, 1, lo + 1, hi - 1} | ({-1} if lo < 0 else set()))),
                     st.integers(lo, hi), st.integers(-3, 1001).filter(lambda n: lo <= n <= hi))  # fmt: skip


def messages(desc: descriptor.Descriptor, texts: SearchStrategy[str], depth: int = 0) -> SearchStrategy[Any]:
    """Any message of type `desc`: each field absent or set to a random or boundary value (nested to depth 3)."""
    cls = message_class(desc)
    if depth > 3:
        return st.just(cls())
    optional: dict[str, SearchStrategy[Any]] = {}
    for field in desc.fields:
        if field.type == F.TYPE_MESSAGE:
            one: SearchStrategy[Any] = st.deferred(
                lambda f=field: messages(f.message_type, texts, depth + 1)  # type: ignore[misc]
            )
        else:
            one = _scalar(field, texts)
        if field.is_repeated:
            optional[field.name] = st.one_of(
                st.lists(one, max_size=3), one.map(lambda v: [v] * 1001) if depth == 0 else st.nothing()
            )
        else:
            optional[field.name] = one
    return st.fixed_dictionaries({}, optional=optional).map(lambda values: _build(cls, values))


def _build(cls: type[message.Message], values: dict[str, Any]) -> message.Message:
    msg = cls()
    for name, value in values.items():
        field = msg.DESCRIPTOR.fields_by_name[name]
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            # A map: the strategy draws its entries as entry messages (key, value).
            target = getattr(msg, name)
            for entry in value:
                if field.message_type.fields_by_name["value"].type == F.TYPE_MESSAGE:
                    target[entry.key].CopyFrom(entry.value)
                else:
                    target[entry.key] = entry.value
        elif field.is_repeated:
            getattr(msg, name).extend(value)
        elif field.type == F.TYPE_MESSAGE:
            getattr(msg, name).CopyFrom(value)
        else:
            setattr(msg, name, value)
    return msg


def message_class(desc: descriptor.Descriptor) -> type[message.Message]:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(desc)


class Probe:
    """Calls any method with any request, from Hypothesis's thread onto the event loop; keeps every status seen."""

    def __init__(self, client: BrokerClient, loop: asyncio.AbstractEventLoop) -> None:
        self.channel = client.channel
        self.loop = loop
        self.seen: collections.Counter[str] = collections.Counter()
        self.bad: list[str] = []

    def path(self, method: descriptor.MethodDescriptor) -> str:
        return f"/{method.containing_service.full_name}/{method.name}"

    def run(self, make: Callable[[], Coroutine[Any, Any, None]]) -> None:
        asyncio.run_coroutine_threadsafe(make(), self.loop).result(timeout=30)

    def _record(
        self, method: descriptor.MethodDescriptor, code: grpc.StatusCode, details: str, req: Any
    ) -> None:
        self.seen[f"{method.name} {code.name}"] += 1
        if code in NEVER:
            self.bad.append(f"{method.name} -> {code.name} {details!r} for {str(req)[:300]!r}")

    async def unary(self, method: descriptor.MethodDescriptor, request: message.Message) -> None:
        call = self.channel.unary_unary(
            self.path(method),
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=message_class(method.output_type).FromString,
        )
        try:
            await call(request, timeout=15)
            self._record(method, C.OK, "", request)
        except aio.AioRpcError as exc:
            self._record(method, exc.code(), exc.details() or "", request)

    async def watch(self, method: descriptor.MethodDescriptor, request: message.Message) -> None:
        call = self.channel.unary_stream(
            self.path(method),
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=message_class(method.output_type).FromString,
        )(request, timeout=15)
        try:
            async with asyncio.timeout(0.3):
                async for _ in call:
                    pass
            self._record(method, C.OK, "", request)
        except TimeoutError:
            self._record(method, C.OK, "(still open)", request)
        except aio.AioRpcError as exc:
            self._record(method, exc.code(), exc.details() or "", request)
        finally:
            call.cancel()

    async def connect(self, method: descriptor.MethodDescriptor, sent: list[message.Message]) -> None:
        call = self.channel.stream_stream(
            self.path(method),
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=message_class(method.output_type).FromString,
        )(timeout=15)
        try:
            for m in sent:
                # Written one at a time, stopping once the broker has ended the call: a write racing that end
                # fails on our side with a client-side INTERNAL ("Internal error from Core"), which would hide
                # the broker's own answer.
                await asyncio.sleep(0.02)
                if call.done():
                    break
                await call.write(m)
            async with asyncio.timeout(0.3):
                async for _ in call:
                    pass
        except TimeoutError:
            self._record(method, C.OK, "(still open)", sent[:2])
            return
        except aio.AioRpcError:
            pass
        finally:
            if not call.done():
                call.cancel()
        if call.cancelled():
            return
        code, details = await call.code(), await call.details() or ""
        if code is C.INTERNAL and details == "Internal error from Core":
            self.seen["Connect (client-side write race)"] += 1
            return
        self._record(method, code, details, sent[:2])


async def _known(world: BrokerClient) -> list[str]:
    """Real ids and capabilities of the world, so that requests reach past the first checks."""
    ids = [
        "cafe",
        "std",
        "s1",
        "s2",
        "s3",
        "s4",
        "demo",
        "prov",
        "site-near",
        "site-far",
        "host-1",
        "rtx4080",
        "Asia/Shanghai",
    ]
    for seat in ("s1", "s2"):
        started = await world.start_session("cafe", seat, "demo")
        ids += [started.session.session_id, started.session_token, started.session.request_id]
    return ids


def _fuzz_method(probe: Probe, method: descriptor.MethodDescriptor, requests: st.SearchStrategy[Any]) -> None:
    """Ten random and boundary requests to one unary method."""

    @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
    @given(requests)
    def fuzz(request: message.Message) -> None:
        probe.run(lambda: probe.unary(method, request))

    fuzz()


async def test_every_rpc_answers_a_proper_status_to_random_and_boundary_values(
    world: BrokerClient, broker: Broker
) -> None:
    async with ScriptedAgent(world, "host-1", slots=4):
        texts = _texts(await _known(world))
        probe = Probe(world, asyncio.get_running_loop())
        unary = [m for m in METHODS if not m.client_streaming and not m.server_streaming]

        def fuzz_unary() -> None:
            # Every method gets its share, however many there are.
            for method in unary:
                _fuzz_method(probe, method, messages(method.input_type, texts))

        watch = next(m for m in METHODS if m.server_streaming and not m.client_streaming)
        connect = next(m for m in METHODS if m.client_streaming)
        agent_messages = messages(connect.input_type, texts)
        # Half the streams open with a valid registration, so that what follows reaches the registered link.
        registrations = st.builds(
            lambda n, slots, epoch: agent_pb2.AgentMessage(
                register=agent_pb2.Register(
                    host_id=f"fuzz-{n}",
                    provider_id="prov",
                    site_id="site-far",
                    epoch=epoch,
                    inventory=agent_pb2.HostInventory(gpu_class="fuzz", slots=slots, games_cached=["demo"]),
                )
            ),
            st.integers(0, 3),
            st.integers(1, 4),
            st.integers(1, 2**63 - 1),
        )
        streams = st.one_of(
            st.lists(agent_messages, min_size=1, max_size=4),
            st.tuples(registrations, st.lists(agent_messages, max_size=4)).map(lambda t: [t[0], *t[1]]),
        )

        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        @given(
            st.one_of(
                st.tuples(st.just(watch), messages(watch.input_type, texts)),
                st.tuples(st.just(connect), streams),
            )
        )
        def fuzz_streams(case: tuple[descriptor.MethodDescriptor, Any]) -> None:
            method, request = case
            if method is watch:
                probe.run(lambda: probe.watch(method, request))
            else:
                probe.run(lambda: probe.connect(method, request))

        await asyncio.to_thread(fuzz_unary)
        await asyncio.to_thread(fuzz_streams)
        print("FAULT fuzz statuses:", dict(sorted(probe.seen.items())))
        assert probe.bad == [], "\n".join(probe.bad[:10])
        reached = {key.split()[0] for key in probe.seen}
        missed = {m.name for m in METHODS} - reached
        assert not missed, f"methods never called: {missed}"

    # Still up: health says SERVING, and a session goes the whole way.
    health = health_pb2_grpc.HealthStub(world.channel)
    status = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    async with ScriptedAgent(world, "host-after", slots=2):
        # Hosts the fuzzing registered may still count as online for a moment: keep the session off them.
        for host in (await world.fleet.ListHosts(fleet_pb2.ListHostsRequest())).hosts:
            if host.host_id != "host-after":
                await world.fleet.DrainHost(fleet_pb2.DrainHostRequest(host_id=host.host_id))
        started = await world.start_session("cafe", "s3", "demo")
        ready = await world.wait_for(started.session.session_id, common_pb2.SESSION_STATE_READY)
        assert ready.state == common_pb2.SESSION_STATE_READY
        await world.end_session(started.session.session_id, started.session_token)


def _key(number: int, wire_type: int = 2) -> bytes:
    return _varint(number << 3 | wire_type)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _bad_utf8(desc: descriptor.Descriptor, depth: int = 0) -> bytes | None:
    """A message of type `desc` whose first string field (nested, if the message has none of its own) holds invalid
    UTF-8, or None if it has no string field within reach."""
    for field in desc.fields:
        if field.type == F.TYPE_STRING:
            return _key(field.number) + b"\x05\xff\xfe\xfd\xfc\xfb"
    for field in desc.fields:
        if field.type == F.TYPE_MESSAGE and depth < 3:
            inner = _bad_utf8(field.message_type, depth + 1)
            if inner is not None:
                return _key(field.number) + _varint(len(inner)) + inner
    return None


def _garbage(desc: descriptor.Descriptor) -> list[bytes]:
    out = [
        b"\xff\xff\xff",  # not protobuf at all
        b"\x0a\xff\xff\xff\xff\x0f",  # field 1 with a length far past the end
    ]
    bad_utf8 = _bad_utf8(desc)  # what any non-Python client can send
    if bad_utf8 is not None:
        out.append(bad_utf8)
    return out


async def test_undecodable_requests_answer_invalid_argument(world: BrokerClient) -> None:
    answers: dict[str, set[str]] = collections.defaultdict(set)
    written: dict[str, int] = collections.Counter()
    for method in METHODS:
        path = f"/{method.containing_service.full_name}/{method.name}"
        garbage = _garbage(method.input_type)
        assert method.name == "ListGames" or len(garbage) == 3, f"{method.name}: no string field to spoil"
        for raw in garbage:
            try:
                if method.client_streaming:
                    call = world.channel.stream_stream(path)(timeout=5)
                    await call.write(raw)
                    await call.done_writing()
                    async for _ in call:
                        written[method.name] += 1
                    code, details = await call.code(), await call.details()
                elif method.server_streaming:
                    async for _ in world.channel.unary_stream(path)(raw, timeout=5):
                        written[method.name] += 1
                    code, details = C.OK, ""
                else:
                    await world.channel.unary_unary(path)(raw, timeout=5)
                    code, details = C.OK, ""
            except aio.AioRpcError as exc:
                code, details = exc.code(), exc.details() or ""
            answers[method.name].add(f"{code.name} {details}")
    wrong = {
        name: got
        for name, got in answers.items()
        if got != {f"INVALID_ARGUMENT request: not a valid {_input_type(name)}"}
    }
    assert wrong == {}, wrong
    assert written == {}, "a call that could not be decoded wrote something"

    health = health_pb2_grpc.HealthStub(world.channel)
    status = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert status.status == health_pb2.HealthCheckResponse.SERVING


def _input_type(method_name: str) -> str:
    return next(m.input_type.full_name for m in METHODS if m.name == method_name)
