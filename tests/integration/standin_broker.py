"""A stand-in AgentService on 127.0.0.1 that records what agents send, for tests of the agent's side of the link.

It registers every agent that connects (with the heartbeat interval it was given), keeps each connection's messages
in order, sends the commands a test queues, and notes how the connection ended: "half-closed" (the agent finished
writing), "cancelled" (its stream or channel was dropped), or "" (not yet). It judges nothing: the real broker's
rules are tested against the real broker; these tests look at what the agent puts on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable

from cloudseat.v1 import agent_pb2, agent_pb2_grpc
from grpc import aio

_CANCEL_GRACE_S = 0.2


@dataclasses.dataclass
class Connection:
    register: agent_pb2.Register
    received: list[agent_pb2.AgentMessage] = dataclasses.field(default_factory=list)
    commands: asyncio.Queue[agent_pb2.BrokerMessage] = dataclasses.field(default_factory=asyncio.Queue)
    ended: str = ""

    @property
    def host_id(self) -> str:
        return self.register.host_id

    def kinds(self) -> list[str]:
        return [str(m.WhichOneof("body")) for m in self.received]

    def of(self, kind: str) -> list[agent_pb2.AgentMessage]:
        return [m for m in self.received if m.WhichOneof("body") == kind]

    def send(self, msg: agent_pb2.BrokerMessage) -> None:
        self.commands.put_nowait(msg)

    async def until(self, test: Callable[[Connection], bool], timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not test(self):
                await asyncio.sleep(0.02)


class StandInBroker(agent_pb2_grpc.AgentServiceServicer):
    def __init__(self, heartbeat_interval_ms: int = 300) -> None:
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.connections: list[Connection] = []
        self.server: aio.Server | None = None
        self.port = 0

    async def start(self) -> str:
        self.server = aio.server()
        agent_pb2_grpc.add_AgentServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(None)

    def host(self, host_id: str) -> Connection:
        """The host's latest connection."""
        return [c for c in self.connections if c.host_id == host_id][-1]

    async def connected(self, n: int, timeout_s: float = 30.0) -> None:
        async with asyncio.timeout(timeout_s):
            while len(self.connections) < n:
                await asyncio.sleep(0.02)

    async def Connect(
        self, request_iterator: AsyncIterator[agent_pb2.AgentMessage], context: aio.ServicerContext
    ) -> None:
        messages = request_iterator.__aiter__()
        first = await anext(messages)
        conn = Connection(first.register)
        await context.write(
            agent_pb2.BrokerMessage(
                registered=agent_pb2.Registered(
                    host_id=first.register.host_id,
                    epoch=first.register.epoch,
                    heartbeat_interval_ms=self.heartbeat_interval_ms,
                    lost_after_ms=10 * self.heartbeat_interval_ms,
                )
            )
        )
        self.connections.append(conn)

        async def write() -> None:
            while True:
                await context.write(await conn.commands.get())

        writer = asyncio.create_task(write())
        try:
            async for msg in messages:
                conn.received.append(msg)
            # A client's cancel ends the messages just as a half-close does; the cancellation of this handler
            # follows a moment later (grpc 1.80). Only a call still standing after that was half-closed.
            await asyncio.sleep(_CANCEL_GRACE_S)
            conn.ended = "half-closed"
        except asyncio.CancelledError:
            conn.ended = "cancelled"
            raise
        except Exception as exc:
            conn.ended = f"cancelled ({type(exc).__name__})"
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
