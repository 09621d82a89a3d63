"""Real WebRTC between processes: a MediaSession here, the thin client's Receiver in a child process, over 127.0.0.1.

The child runs a scripted seat and speaks JSON lines on its stdin/stdout: it sends ``{"offer": sdp}`` and gets
``{"answer": sdp}`` (the test answers with the session), asks the test to do something at a point of the script
with ``{"poke": name}``, and ends with ``{"result": {...}}``. Small frames (320x240 at 30 fps) keep the CPU low;
the benchmark (`loadtest.stream_media`) runs 720p60.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import struct
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from cloudseat import seat_protocol as sp

from gpu_agent import workloads
from gpu_agent.media import InvalidOffer, MediaConfig, MediaSession, NoCommonCodec
from gpu_agent.media.feedback import BitrateController, reception_report
from gpu_agent.media.offer import parse_offer
from gpu_agent.media.pacing import Pacer
from gpu_agent.media.playout_delay import Mode

ROOT = Path(__file__).resolve().parents[2]
W, H, FPS, KBPS = 320, 240, 30, 1000
KEY_RIGHT = 0x4F
PREFIX = "@@"  # protocol lines start with this; anything else on stdout is noise


# -- the child: a scripted seat --------------------------------------------------------------------------------


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(PREFIX + json.dumps(obj) + "\n")
    sys.stdout.flush()


async def _ask(loop_reader: asyncio.StreamReader, obj: dict[str, Any]) -> dict[str, Any]:
    _emit(obj)
    reply: dict[str, Any] = json.loads(await loop_reader.readline())
    return reply


def _seat_main() -> None:
    import logging

    import structlog

    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    asyncio.run(_seat(sys.argv[1]))


async def _seat(scenario: str) -> None:
    from thin_client.receiver import Receiver

    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    offers: list[str] = []

    async def negotiate(offer: str) -> str:
        offers.append(offer)
        return str((await _ask(stdin, {"offer": offer}))["answer"])

    receiver = Receiver(host_addresses=("127.0.0.1",), expected_fps=FPS)
    shown: dict[str, float | None] = {}
    await receiver.connect(negotiate)
    await receiver.wait_frames(10)
    if scenario == "full":
        # Malformed input on both channels: dropped by the agent, which keeps streaming.
        receiver.send_raw(sp.RELIABLE_CHANNEL, bytes(sp.MAX_INPUT_BYTES + 1))
        receiver.send_raw(sp.RELIABLE_CHANNEL, struct.pack("!BBIQ", 1, 99, 1, 0))
        receiver.send_raw(sp.MOTION_CHANNEL, "not binary")
        key = await receiver.send(sp.KeyInput(0, 0, KEY_RIGHT, down=True))
        shown["key"] = (await receiver.wait_shown(key) - key.sent_us) / 1000
        await _ask(stdin, {"poke": "bad-offer"})
        await receiver.wait_frames(10)
        await receiver.renegotiate(negotiate)  # same ICE credentials: renegotiated in place
        await receiver.wait_frames(10)
        move = await receiver.send(sp.MouseMove(0, 0, 5, 5))
        with contextlib.suppress(TimeoutError):  # the motion channel may lose it; on loopback it should not
            shown["move"] = (await receiver.wait_shown(move, timeout_s=5) - move.sent_us) / 1000
        await receiver.connect(negotiate)  # a fresh peer connection: what a seat does after a network blip
        await receiver.wait_frames(10)
        release = await receiver.send(sp.KeyInput(0, 0, KEY_RIGHT, down=False))
        shown["after-restart"] = (await receiver.wait_shown(release) - release.sent_us) / 1000
    result = {
        "stats": asdict(receiver.stats()),
        "frames": [[f.frame_number, f.capture_us, f.last_input_id, f.decoded_us] for f in receiver.frames],
        "inputs": [[i.input_id, i.channel, i.sent_us, i.photon_us] for i in receiver.inputs],
        "shown_ms": shown,
        "offers": offers,
    }
    await receiver.close()
    _emit({"result": result})


# -- the test side ----------------------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.streaming = 0
        self.closed: list[str] = []

    def on_streaming(self) -> None:
        self.streaming += 1

    def on_closed(self, reason: str) -> None:
        self.closed.append(reason)


def _session(recorder: Recorder, codec: str = "auto") -> MediaSession:
    return MediaSession(
        "test-session",
        workloads.make_source("demo", W, H, FPS, {}),
        bitrate_kbps=KBPS,
        config=MediaConfig(("127.0.0.1",), codec=codec, encoder_threads=1),
        on_streaming=recorder.on_streaming,
        on_closed=recorder.on_closed,
    )


async def _run_seat(
    scenario: str, session: MediaSession, answers: list[str], pokes: dict[str, Callable[[], Awaitable[None]]]
) -> dict[str, Any]:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from tests.integration.test_media_stream import _seat_main; _seat_main()", scenario,
        cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        limit=1 << 22,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    try:
        async with asyncio.timeout(60):
            while True:
                line = (await child.stdout.readline()).decode()
                if not line:
                    err = (await child.stderr.read()).decode()
                    raise AssertionError(f"the seat process ended early:\n{err[-3000:]}")
                if not line.startswith(PREFIX):
                    continue
                msg = json.loads(line[len(PREFIX) :])
                if "offer" in msg:
                    answer = await session.answer(msg["offer"])
                    answers.append(answer)
                    reply: dict[str, Any] = {"answer": answer}
                elif "poke" in msg:
                    await pokes[msg["poke"]]()
                    reply = {"ok": True}
                else:
                    result: dict[str, Any] = msg["result"]
                    return result
                child.stdin.write(json.dumps(reply).encode() + b"\n")
                await child.stdin.drain()
    finally:
        if child.returncode is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await child.wait()
        if child.returncode is None:
            child.kill()
            await child.wait()


def _candidate_addresses(sdp: str) -> list[str]:
    return [line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")]


def _video_codecs(sdp: str) -> set[str]:
    return {m.group(1).lower() for m in re.finditer(r"a=rtpmap:\d+ ([A-Za-z0-9]+)/90000", sdp)} - {"rtx"}


async def _wait_for(predicate: Callable[[], bool], timeout_s: float = 15) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.05)


async def test_a_seat_in_another_process_plays_sends_input_and_comes_back() -> None:
    recorder = Recorder()
    session = _session(recorder)
    answers: list[str] = []
    refused: list[Exception] = []

    async def bad_offer() -> None:
        with pytest.raises(InvalidOffer) as caught:
            await session.answer("v=0\r\nthis is not an offer\r\n")
        refused.append(caught.value)

    try:
        result = await _run_seat("full", session, answers, {"bad-offer": bad_offer})
        stats = session.stats()
        await _wait_for(lambda: bool(recorder.closed))  # the seat closed its connection at the end
    finally:
        await session.close()

    # Frames arrived, every one stamped and readable, in order.
    frames = result["frames"]
    assert len(frames) >= 40
    assert result["stats"]["unreadable"] == 0
    numbers = [f[0] for f in frames]
    assert numbers == sorted(numbers)
    assert all(decoded >= captured for _, captured, _, decoded in frames)  # one clock, one machine

    # Input: each id appears in a later frame's stamp; malformed input was dropped and streaming went on.
    by_id = {i[0]: i for i in result["inputs"]}
    key_id, release_id = min(by_id), max(by_id)
    assert by_id[key_id][3] is not None and by_id[release_id][3] is not None
    first_with_key = next(f for f in frames if f[2] >= key_id)
    assert first_with_key[3] >= by_id[key_id][2]
    assert all(f[2] < key_id for f in frames if f[3] < by_id[key_id][2])
    assert stats.inputs_dropped >= 3
    assert stats.inputs_applied >= 2
    assert set(result["shown_ms"]) >= {"key", "after-restart"}

    # A malformed offer was refused while the session kept streaming; renegotiation and a fresh connection worked.
    assert len(refused) == 1
    assert len(answers) == 3
    assert recorder.streaming == 1

    # ICE: host candidates on 127.0.0.1 only, both ways; H.264 only in our answers.
    for sdp in answers + result["offers"]:
        addresses = _candidate_addresses(sdp)
        assert addresses and set(addresses) == {"127.0.0.1"}
    assert all(_video_codecs(a) == {"h264"} for a in answers)


async def test_vp8_streams_too() -> None:
    recorder = Recorder()
    session = _session(recorder, codec="vp8")
    answers: list[str] = []
    try:
        result = await _run_seat("short", session, answers, {})
        stats = session.stats()
    finally:
        await session.close()
    assert result["stats"]["frames"] >= 10 and result["stats"]["unreadable"] == 0
    assert _video_codecs(answers[0]) == {"vp8"}
    assert stats.codec == "libvpx"


# -- offers refused without a peer ------------------------------------------------------------------------------


async def _offer(codec: str | None = None) -> str:
    """A real offer from an aiortc peer, as the seat makes it."""
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver
    from cloudseat import ice

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        transceiver = pc.addTransceiver("video", direction="recvonly")
        if codec is not None:
            caps = RTCRtpReceiver.getCapabilities("video")
            assert caps is not None
            transceiver.setCodecPreferences(
                [c for c in caps.codecs if c.mimeType.lower() == f"video/{codec}"]
            )
        pc.createDataChannel(sp.RELIABLE_CHANNEL)
        with ice.host_addresses(["127.0.0.1"]):
            await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


def _with_playout(sdp: str, mode: str) -> str:
    """The seat's own playout mode, as the kiosk page's ?playout= adds it (gpu_agent/media/offer.py)."""
    return re.sub(r"^(t=.*\r\n)", rf"\1a=x-cloudseat-playout:{mode}\r\n", sdp, count=1, flags=re.M)


async def test_the_seats_playout_mode_is_read_from_its_offer_and_an_offer_without_one_has_none() -> None:
    offer = await _offer()
    assert parse_offer(offer).playout is None
    assert parse_offer(_with_playout(offer, "SMOOTH")).playout is Mode.SMOOTH
    assert parse_offer(_with_playout(offer, "LOW_LATENCY")).playout is Mode.LOW_LATENCY


def _without_video(sdp: str) -> str:
    sections = re.split(r"(?=^m=)", sdp, flags=re.M)
    return "".join(s for s in sections if not s.startswith("m=video"))


@pytest.mark.parametrize(
    ("make", "codec", "error"),
    [
        (lambda offer: "", "auto", InvalidOffer),
        (lambda offer: "hello", "auto", InvalidOffer),
        (lambda offer: "v=0\r\nm=video banana\r\n", "auto", InvalidOffer),
        (lambda offer: offer[: len(offer) // 3], "auto", InvalidOffer),
        (_without_video, "auto", InvalidOffer),
        (lambda offer: offer.replace("a=recvonly", "a=sendonly"), "auto", InvalidOffer),
        (lambda offer: re.sub(r"a=ice-ufrag:.*\r\n", "", offer), "auto", InvalidOffer),
        (lambda offer: re.sub(r"a=fingerprint:.*\r\n", "", offer), "auto", InvalidOffer),
        (lambda offer: offer + "x" * 70_000, "auto", InvalidOffer),
        (lambda offer: _with_playout(offer, "FAST"), "auto", InvalidOffer),  # not a playout mode
        (lambda offer: _with_playout(_with_playout(offer, "AUTO"), "SMOOTH"), "auto", InvalidOffer),
        (lambda offer: offer, "h264", NoCommonCodec),  # the offer has VP8 only
    ],
)
async def test_a_malformed_offer_is_refused(
    make: Callable[[str], str], codec: str, error: type[Exception]
) -> None:
    recorder = Recorder()
    session = _session(recorder, codec=codec)
    try:
        with pytest.raises(error):
            await session.answer(make(await _offer("vp8")))
        # The session still answers a good offer afterwards.
        answer = await session.answer(await _offer())
        assert set(_candidate_addresses(answer)) == {"127.0.0.1"}
    finally:
        await session.close()
    assert recorder.closed == []


# -- the pure parts of the media package ------------------------------------------------------------------------


def test_the_pacer_gives_slots_at_the_rate_and_never_a_backlog() -> None:
    pacer = Pacer(60, start_us=1_000_000)
    assert [pacer.next_slot(1_000_000) for _ in range(3)] == [(0, 1_000_000), (1, 1_016_666), (2, 1_033_333)]
    # 100 ms late: the slot due now, not the six missed ones.
    index, due = pacer.next_slot(1_150_000)
    assert (index, due) == (9, 1_150_000)
    assert pacer.skipped == 6
    assert pacer.next_slot(1_150_001) == (10, 1_166_666)


def test_remb_steers_the_bitrate_within_the_tier() -> None:
    control = BitrateController(10_000_000)
    assert control.on_remb(30_000_000, 0) is None  # above the tier: stays at the tier
    assert control.on_remb(9_500_000, 1) is None  # under 10%: not worth a change
    assert control.on_remb(6_000_000, 2) == 6_000_000  # a decrease applies at once
    assert control.on_remb(100_000, 3) == control.min_bps == 1_000_000  # never below the floor
    assert control.on_remb(8_000_000, 4) == 8_000_000
    assert control.on_remb(10_000_000, 5) is None  # an increase at most once a second
    assert control.on_remb(12_000_000, 1_000_004) == 10_000_000


def test_a_receiver_report_gives_rtt_and_loss() -> None:
    now_ntp = (1000 << 32) | (1 << 31)  # 1000.5 s
    lsr = ((1000 << 16) | (1 << 15)) - 65536 // 10  # sent 100 ms before
    report = reception_report(now_ntp, lsr, dlsr=65536 // 20, fraction_lost=64, packets_lost=3)  # held 50 ms
    assert report.rtt_s is not None and abs(report.rtt_s - 0.05) < 1e-3
    assert report.loss_fraction == 0.25
    assert reception_report(now_ntp, 0, 0, 0, 0).rtt_s is None  # no sender report seen yet
