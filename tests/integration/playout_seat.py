"""A seat that reads the playout delay the agent writes into its packets: an aiortc receiver in a process of its own.

    python -m tests.integration.playout_seat BROKER SESSION_ID SESSION_TOKEN [MODE]

It offers the playout-delay RTP header extension (as Chromium does; aiortc's own receiver does not), negotiates
through the broker (SessionService.Negotiate), decodes the stream, and every half second prints one JSON line on
stdout (MODE: the seat's own playout mode over its zone's, in its offer as the kiosk page's ?playout= puts it):

    {"packets": N, "delays": {"MIN/MAX": packets, ...}, "rr_loss": F, "frames": N}

- ``delays``: the extension's value in the video packets (new and retransmitted) that arrived in that half second,
  read from the decrypted packets before aiortc parses them, by the id the agent's answer gave the extension;
  "none" counts packets without it;
- ``rr_loss``: the highest loss fraction (0..1) that this seat's receiver reports said for the video stream in that
  half second (what the agent's PlayoutPolicy reads);
- ``frames``: frames decoded in all.

It runs until its stdin closes or it is signalled. The first line ``{"connected": true, "extension_id": ID}``
says the answer is applied. Everything it logs goes to stderr.

A test runs it with `run` (a context manager yielding a `SeatProcess`) and reads its lines with `SeatProcess.until`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import os
import re
import signal
import struct
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import AnyRtcpPacket, RtcpRrPacket
from cloudseat import ice
from cloudseat.client import BrokerClient
from cloudseat.v1 import common_pb2, session_pb2

from gpu_agent.media import playout_delay

INTERVAL_S = 0.5
ZERO, ADAPTIVE = "0/0", "0/10000"  # playout_delay.ZERO and ADAPTIVE as the lines name them


def extension_id(answer_sdp: str) -> int | None:
    """The id the answer gives the playout-delay extension in its video section; None when not negotiated."""
    found = re.search(rf"^a=extmap:(\d+)(?:/\w+)? {re.escape(playout_delay.URI)}\s*$", answer_sdp, re.MULTILINE)
    return int(found.group(1)) if found else None


def with_mode(offer_sdp: str, mode: str) -> str:
    """The offer with the seat's own playout mode after its timing line (none when ``mode`` is empty)."""
    if not mode:
        return offer_sdp
    return re.sub(r"^(t=.*\r\n)", rf"\1a=x-cloudseat-playout:{mode}\r\n", offer_sdp, count=1, flags=re.MULTILINE)


def media_ssrc(answer_sdp: str) -> int | None:
    """The SSRC of the answer's video (the first of its FID group: the second is retransmissions')."""
    found = re.search(r"^a=ssrc-group:FID (\d+)", answer_sdp, re.MULTILINE) or re.search(
        r"^a=ssrc:(\d+)", answer_sdp, re.MULTILINE
    )
    return int(found.group(1)) if found else None


def playout_element(packet: bytes, ident: int) -> bytes | None:
    """The value of one-byte-header extension element ``ident`` (RFC 8285) in an RTP packet, else None."""
    if len(packet) < 12 or packet[0] >> 6 != 2 or not packet[0] & 0x10:
        return None
    pos = 12 + 4 * (packet[0] & 0x0F)
    if len(packet) < pos + 4:
        return None
    profile, words = struct.unpack_from("!HH", packet, pos)
    if profile != 0xBEDE:
        return None
    data, i = packet[pos + 4 : pos + 4 + 4 * words], 0
    while i < len(data):
        if data[i] == 0:
            i += 1
            continue
        element, length = data[i] >> 4, (data[i] & 0x0F) + 1
        if element == ident:
            return data[i + 1 : i + 1 + length]
        i += 1 + length
    return None


class Seat:
    def __init__(self) -> None:
        self.delays: collections.Counter[str] = collections.Counter()
        self.packets = 0
        self.frames = 0
        self.rr_loss = 0.0
        self._ident: int | None = None
        self._media_ssrc: int | None = None

    def watch(self, pc: RTCPeerConnection, receiver: RTCRtpReceiver, answer_sdp: str) -> None:
        """Read every RTP packet the transport takes, and every receiver report the receiver sends."""
        self._ident = extension_id(answer_sdp)
        self._media_ssrc = media_ssrc(answer_sdp)
        transport = receiver.transport
        original = transport._handle_rtp_data

        async def handle_rtp(data: bytes, arrival_time_ms: int) -> None:
            self._count(data)
            await original(data, arrival_time_ms)

        transport._handle_rtp_data = handle_rtp  # type: ignore[method-assign]
        send = receiver._send_rtcp

        async def send_rtcp(packet: AnyRtcpPacket) -> None:
            if isinstance(packet, RtcpRrPacket):
                for report in packet.reports:
                    if report.ssrc == self._media_ssrc:  # the report the agent reads; not the retransmissions'
                        self.rr_loss = max(self.rr_loss, report.fraction_lost / 256)
            await send(packet)

        receiver._send_rtcp = send_rtcp  # type: ignore[method-assign]

    def _count(self, data: bytes) -> None:
        if len(data) < 12 or 72 <= (data[1] & 0x7F) <= 76:  # RTCP shares the port (RFC 5761): not a video packet
            return
        self.packets += 1
        element = playout_element(data, self._ident) if self._ident is not None else None
        if element is None:
            self.delays["none"] += 1
            return
        delay = playout_delay.unpack(element)
        self.delays[f"{delay.min_ms}/{delay.max_ms}"] += 1

    def line(self) -> dict[str, object]:
        out: dict[str, object] = {
            "packets": self.packets, "delays": dict(self.delays), "rr_loss": round(self.rr_loss, 4),
            "frames": self.frames,
        }  # fmt: skip
        self.delays.clear()
        self.packets = 0
        self.rr_loss = 0.0
        return out


def emit(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main(target: str, session_id: str, token: str, mode: str = "") -> None:
    playout_delay.register()  # the offer carries the extension, as a Chromium seat's does
    seat = Seat()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)

    async def until_stdin_closes() -> None:
        while await stdin.readline():
            pass
        stop.set()

    watcher = asyncio.ensure_future(until_stdin_closes())
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    transceiver = pc.addTransceiver("video", direction="recvonly")

    async def consume(track: MediaStreamTrack) -> None:
        while True:
            try:
                await track.recv()
            except MediaStreamError:
                return
            seat.frames += 1

    consumers: list[asyncio.Future[None]] = []
    pc.on("track", lambda track: consumers.append(asyncio.ensure_future(consume(track))))
    async with BrokerClient(target) as client:
        with ice.host_addresses(("127.0.0.1",)):
            await pc.setLocalDescription(await pc.createOffer())
        response = await client.sessions.Negotiate(
            session_pb2.NegotiateRequest(
                session_id=session_id,
                session_token=token,
                offer=common_pb2.SessionDescription(type="offer", sdp=with_mode(pc.localDescription.sdp, mode)),
            )
        )
    seat.watch(pc, transceiver.receiver, response.answer.sdp)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=response.answer.sdp, type="answer"))
    emit({"connected": True, "extension_id": extension_id(response.answer.sdp)})
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), INTERVAL_S)
        except TimeoutError:
            emit(seat.line())
    watcher.cancel()
    for task in consumers:
        task.cancel()
    await pc.close()


# -- the test's side ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class SeatProcess:
    """The seat's process, its JSON lines kept as they come."""

    proc: asyncio.subprocess.Process
    log: Path
    lines: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    async def until(self, done: Callable[[dict[str, Any]], bool], timeout_s: float) -> dict[str, Any]:
        """The first line from now on for which ``done`` holds (the test's patience is ``timeout_s``)."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout_s):
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    code = await self.proc.wait()
                    raise AssertionError(f"the seat exited ({code}): {self.log.read_text()[-2000:]}")
                line: dict[str, Any] = json.loads(raw)
                self.lines.append(line)
                if done(line):
                    return line

    async def close(self) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


@contextlib.asynccontextmanager
async def run(
    target: str, session_id: str, token: str, log: Path, prefix: Sequence[str] = (), mode: str = ""
) -> AsyncIterator[SeatProcess]:
    """This seat for a session, connected (the extension negotiated); ``prefix``: e.g. nsenter into a namespace;
    ``mode``: the seat's own playout mode (empty: the zone's)."""
    with log.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            *prefix, sys.executable, "-m", "tests.integration.playout_seat", target, session_id, token, mode,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    seat = SeatProcess(proc, log)
    try:
        connected = await seat.until(lambda line: "connected" in line, 60)
        assert connected["extension_id"] is not None, "the agent's answer must negotiate the extension"
        yield seat
    finally:
        await seat.close()


def receiving(line: dict[str, Any]) -> bool:
    """A line of a half second in which video packets arrived."""
    return bool(line.get("packets"))


def only(delay: str) -> Callable[[dict[str, Any]], bool]:
    """A line whose packets all carried ``delay``."""
    return lambda line: receiving(line) and set(line["delays"]) == {delay}


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
