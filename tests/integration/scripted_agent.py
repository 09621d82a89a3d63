"""A scripted agent: a real gRPC client speaking AgentService, with no media, for broker tests.

It registers, sends load reports in the background, and answers commands the way a healthy agent would: a start
command is reported STARTING then READY, a negotiation gets a minimal SDP answer. Tests steer it (lose its link,
report STREAMING, refuse an offer) through its methods. Its link lives on the test's channel: losing it cancels the
stream without a goodbye, which the broker takes as a link lost (a dead transport ends the stream the same way).
"""

from __future__ import annotations

import asyncio
import contextlib

from cloudseat.client import AgentLinkClient, BrokerClient
from cloudseat.v1 import agent_pb2, common_pb2

ANSWER_SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


class ScriptedAgent:
    def __init__(
        self,
        client: BrokerClient,
        host_id: str,
        *,
        site_id: str = "site-near",
        provider_id: str = "prov",
        epoch: int = 1,
        slots: int = 2,
        price_micros: int = 1_000_000,
        games: tuple[str, ...] = ("demo",),
        auto_ready: bool = True,
        running: tuple[tuple[str, int], ...] = (),
        peer_address: str = "",
    ) -> None:
        self.link = AgentLinkClient(
            client,
            agent_pb2.Register(
                host_id=host_id,
                provider_id=provider_id,
                site_id=site_id,
                epoch=epoch,
                agent_version="scripted-1",
                inventory=agent_pb2.HostInventory(
                    gpu_class="rtx4080",
                    slots=slots,
                    games_cached=list(games),
                    media_addresses=["127.0.0.1"],
                    price_micros_per_slot_hour=price_micros,
                    peer_address=peer_address,
                ),
                running=[agent_pb2.RunningSession(session_id=s, state=st) for s, st in running],
            ),
        )
        self.auto_ready = auto_ready
        self.heartbeating = True
        self.commands: list[agent_pb2.BrokerMessage] = []
        self.started: asyncio.Queue[str] = asyncio.Queue()
        self.stopped: asyncio.Queue[str] = asyncio.Queue()
        self.offers: asyncio.Queue[agent_pb2.NegotiateCommand] = asyncio.Queue()
        self.refuse_offers = False
        self._tasks: list[asyncio.Task[None]] = []
        self.closed_with: BaseException | None = None

    async def __aenter__(self) -> ScriptedAgent:
        await self.link.open()
        self._tasks = [asyncio.create_task(self._beat()), asyncio.create_task(self._serve())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def lose_link(self) -> None:
        """The link ends without a goodbye, as a killed agent's would: the broker gives it the grace to come back,
        then declares the host lost."""
        await self.close()

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.link.close()

    async def _beat(self) -> None:
        assert self.link.registered is not None
        interval = self.link.registered.heartbeat_interval_ms / 1000
        while True:
            if self.heartbeating:
                await self.link.heartbeat(cpu_load=0.2)
            await asyncio.sleep(interval)

    async def _serve(self) -> None:
        try:
            async for msg in self.link.commands():
                self.commands.append(msg)
                kind = msg.WhichOneof("body")
                if kind == "start_session":
                    sid = msg.start_session.session_id
                    if self.auto_ready:
                        await self.link.report(sid, common_pb2.SESSION_STATE_STARTING)
                        await self.link.report(sid, common_pb2.SESSION_STATE_READY)
                    self.started.put_nowait(sid)
                elif kind == "stop_session":
                    self.stopped.put_nowait(msg.stop_session.session_id)
                elif kind == "negotiate":
                    n = msg.negotiate
                    if self.refuse_offers:
                        await self.link.answer(n.correlation_id, error="malformed offer")
                    else:
                        await self.link.answer(n.correlation_id, sdp=ANSWER_SDP)
                    self.offers.put_nowait(n)
        except Exception as exc:  # the broker closed the stream: keep why, for the test to look at
            self.closed_with = exc
