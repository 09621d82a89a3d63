"""The browser client end to end: the kiosk page in headless Chromium plays a real session from a real agent.

Real parts throughout: the broker on a fresh PostgreSQL database (the `world` fixture), the agent as its own process
(`python -m gpu_agent run`, the demo game), the kiosk server, and the distribution's Chromium driven by Playwright;
everything on 127.0.0.1 (the kiosk keeps only 127.0.0.1 candidates in the browser's offers, the agent offers only
127.0.0.1). Also here: the page's protocol codec against cloudseat.seat_protocol, the one-line messages the page
shows, the kiosk's JSON API on bad input, and the kiosk against a broker with authentication on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cloudseat import tls
from cloudseat.client import BrokerClient
from cloudseat.v1 import common_pb2, fleet_pb2, venue_pb2

from broker.config import BrokerConfig
from broker.server import Broker
from tests.integration import browser as b
from tests.integration.conftest import FAST

pytestmark = pytest.mark.slow
S = common_pb2.SessionState

# The demo game's player: a square at the frame's centre, coloured by the last key pressed.
PLAYER_PROBE = """() => {
  const v = document.getElementById('video');
  const c = document.createElement('canvas');
  c.width = v.videoWidth; c.height = v.videoHeight;
  const ctx = c.getContext('2d');
  ctx.drawImage(v, 0, 0);
  const size = 8, x = Math.floor(v.videoWidth / 2) - size / 2, y = Math.floor(v.videoHeight / 2) - size / 2;
  const d = ctx.getImageData(x, y, size, size).data;
  const rgb = [0, 0, 0];
  for (let i = 0; i < d.length; i += 4) { rgb[0] += d[i]; rgb[1] += d[i + 1]; rgb[2] += d[i + 2]; }
  return rgb.map((v) => v / (size * size));
}"""


@pytest.fixture
def broker_config(db_url: str) -> BrokerConfig:
    """FAST, but a host stays "alive" for 10 s without heartbeats: the loss test stops the agent for a few seconds
    and must not see it declared lost (the host-loss test replaces the agent, which is immediate)."""
    return dataclasses.replace(FAST, database_url=db_url, host_lost_after_s=10.0)


async def _stats(page: Any) -> dict[str, Any]:
    stats: dict[str, Any] = await page.evaluate("({...cloudseat.stats})")
    return stats


async def _grows(page: Any, name: str, *, by: int = 1, timeout_s: float = 15) -> int:
    """Wait until ``cloudseat.stats[name]`` has grown by ``by``; its new value."""
    start = (await _stats(page))[name]
    await page.wait_for_function(
        "([name, target]) => cloudseat.stats[name] >= target",
        arg=[name, start + by],
        timeout=timeout_s * 1000,
    )
    value: int = (await _stats(page))[name]
    return value


async def test_the_page_plays_takes_keys_recovers_resumes_and_ends(
    world: BrokerClient, broker: Broker, tmp_path: Path, artifacts_dir: Path
) -> None:
    """One seat's evening, in order (one scenario, to keep the agent and browser start-ups few):

    1. the patron picks the demo in the page's picker; the stream plays (getStats framesDecoded grows, stamps read);
    2. a key recolours the game's player (pixels of the picture compared before and after); a screenshot of the
       playing page goes to the test artifacts;
    3. a short network loss: the agent process is stopped (SIGSTOP) for about 4 s, so from the browser's side no
       packet and no ICE answer arrives, as when the network drops them; the page notices the stall, builds a new
       peer connection and negotiates again, and plays on in the same session;
    4. the host is lost: the agent process dies (SIGKILL) and the host comes back as a new process (a newer
       epoch), so the broker ends the session HOST_LOST; the page resumes into a new session at the front of the
       queue by itself;
    5. the page is reloaded withholding the playout-delay extension (``?playout_delay_ext=0``): it picks the live
       session up, negotiates without the extension, and plays;
    6. the End button ends the session: the broker records ENDED_BY_PATRON and the picker is back.

    Throughout, the agent answers Chromium's offer with the playout-delay RTP header extension (its sender writes
    min = max = 0 into every video packet) unless the page withheld it, and the page times presented frames from
    their RTP timestamps beside the stamps it reads.
    """
    await b.kiosk_seat(world)
    agent = await b.start_agent(tmp_path, broker.port)
    successor = None
    try:
        epoch = await b.online(world, "agent-1")
        async with b.kiosk(f"127.0.0.1:{broker.port}") as kiosk, b.chromium() as chromium:
            page = await b.seat_page(chromium, kiosk.url)
            # The page reports its stats every second, and sets a receiver knob (docs/kiosk.md#latency-knobs).
            await page.goto(f"{kiosk.url}?report_every_ms=1000&jitter_target_ms=0")
            await b.wait_state(page, ["idle"], 15)

            # 1. Through the picker to a playing stream.
            await page.click('button[data-game-id="demo"]')
            await b.wait_state(page, ["playing"], 30)
            receiver = await page.evaluate("cloudseat.receiver")
            assert receiver["jitterBufferTarget"] == 0
            assert receiver["playoutDelayExtension"] is True  # Chromium offered it, the agent answered it
            session_id = await page.evaluate("cloudseat.session.session_id")
            await _grows(page, "framesDecoded", by=20)
            stats = await _stats(page)
            assert stats["stampsRead"] > 0 and stats["sessionReadyMs"] > 0
            # Timed from RTP timestamps: more frames than stamps were read from.
            assert stats["framesMeasured"] > stats["stampsRead"] and stats["framesPresented"] >= 20
            # Every decoded frame reaches the page's worker (decoded.js) with its RTP timestamp, and is timed there.
            await page.wait_for_function("() => cloudseat.stats.framesProcessedTimed >= 20")
            window = await page.evaluate("cloudseat.endMeasurements()")
            assert window["framesTimed"] >= window["framesTimedPresented"] > 0
            assert window["framesProcessedInWindow"] >= 20 and window["captureToFrameMs"]
            assert (
                stats["codec"] == "H264"
            )  # the agent's "auto" answers Chromium's offer with H.264, and it decodes
            # The page's own fps and RTT reached the broker through the kiosk, for the SLA.
            await page.wait_for_function("() => cloudseat.stats.statsReported > 0")
            assert broker.pool is not None
            seat_minutes = await broker.pool.fetch(
                "SELECT seat_samples, seat_fps_sum, seat_rtt_samples FROM stream_minutes"
                " WHERE session_id = $1::uuid AND seat_samples > 0",
                session_id,
            )
            assert seat_minutes and all(r["seat_fps_sum"] > 0 for r in seat_minutes), seat_minutes

            # 2. A key changes the picture: the player takes the key's colour.
            before = await page.evaluate(PLAYER_PROBE)
            await page.keyboard.press("KeyK")  # down and up: two inputs, shown once a frame's stamp has them
            await page.wait_for_function(
                "(n) => cloudseat.stats.inputsShown >= n", arg=stats["inputsShown"] + 2
            )
            await _grows(page, "framesDecoded", by=3)
            after = await page.evaluate(PLAYER_PROBE)
            assert max(abs(x - y) for x, y in zip(before, after, strict=True)) > 40, (before, after)
            assert (await _stats(page))["inputToPhotonMsP50"] is not None
            # The mouse over the picture (absolute motion, unreliable channel) and the wheel: applied by the agent.
            sent = (await _stats(page))["inputsSent"]
            await page.mouse.move(400, 300)
            await page.mouse.move(500, 350)
            await page.mouse.wheel(0, -100)
            await page.wait_for_function("(n) => cloudseat.stats.lastInputApplied >= n", arg=sent + 3)
            await page.screenshot(path=str(artifacts_dir / "kiosk-playing.png"))

            # 3. A short loss: nothing from the host for about 4 s; the same session plays on.
            assert agent.pid is not None
            os.kill(agent.pid, signal.SIGSTOP)
            try:
                await b.wait_state(page, ["reconnecting"], 10)
                await asyncio.sleep(1)
            finally:
                os.kill(agent.pid, signal.SIGCONT)
            await b.wait_state(page, ["playing"], 30)
            assert await page.evaluate("cloudseat.session.session_id") == session_id
            assert (await _stats(page))["reconnects"] == 1
            await _grows(page, "framesDecoded", by=10)
            live = await world.wait_for(session_id, S.SESSION_STATE_STREAMING)
            assert live.state == S.SESSION_STATE_STREAMING

            # 4. The host is lost; the page resumes into a new session.
            await b.stop(agent)
            successor = await b.start_agent(tmp_path, broker.port)
            await b.online(world, "agent-1", epoch_above=epoch)
            lost = await world.wait_for(session_id, S.SESSION_STATE_ENDED, timeout_s=15)
            assert lost.end_reason == common_pb2.END_REASON_HOST_LOST
            await page.wait_for_function(
                "(lost) => cloudseat.session.resumes_session_id === lost && cloudseat.state === 'playing'",
                arg=session_id,
                timeout=30_000,
            )
            resumed_id = await page.evaluate("cloudseat.session.session_id")
            assert resumed_id != session_id
            assert (await _stats(page))["resumes"] == 1
            messages = [h["message"] for h in await page.evaluate("cloudseat.history")]
            assert any("host was lost" in m for m in messages), messages
            await _grows(page, "framesDecoded", by=10)

            # 5. Reloaded without the extension in its offer: the same session, a new connection without it.
            await page.goto(f"{kiosk.url}?playout_delay_ext=0")
            await b.wait_state(page, ["playing"], 30)
            assert await page.evaluate("cloudseat.session.session_id") == resumed_id
            assert (await page.evaluate("cloudseat.receiver"))["playoutDelayExtension"] is False
            await _grows(page, "framesDecoded", by=10)

            # 5b. Reloaded choosing its own playout mode: the offer says so, and the agent answers in that mode.
            await page.goto(f"{kiosk.url}?playout=smooth")
            await b.wait_state(page, ["playing"], 30)
            receiver = await page.evaluate("cloudseat.receiver")
            assert receiver["playoutMode"] == "SMOOTH" and receiver["playoutDelayExtension"] is True
            await _grows(page, "framesDecoded", by=10)
            answers = _agent_answers(tmp_path)
            assert answers and answers[-1].get("playout") == "SMOOTH", answers[-3:]

            # 6. The End button.
            await page.click("#end")
            await b.wait_state(page, ["ended"], 15)
            ended = await world.wait_for(resumed_id, S.SESSION_STATE_ENDED)
            assert ended.end_reason == common_pb2.END_REASON_ENDED_BY_PATRON
            assert await page.is_visible('button[data-game-id="demo"]')  # the picker is back
    finally:
        await b.stop(agent)
        if successor is not None:
            await b.stop(successor)


def _agent_answers(folder: Path) -> list[dict[str, Any]]:
    """The agents' "answered" log entries (browser.start_agent logs to FOLDER/<host>.log), oldest first."""
    entries = [
        json.loads(line)
        for log in folder.glob("*.log")
        for line in log.read_text().splitlines()
        if '"event": "answered"' in line
    ]
    return sorted(entries, key=lambda e: str(e.get("timestamp", "")))


# -- one protocol, two codecs: the page's JavaScript against cloudseat.seat_protocol --------------------------------

CONFORMANCE = """async ({frames, messages, outOfRange}) => {
  const { SeatProtocol } = await import('/static/protocol.js');
  const p = new SeatProtocol(await (await fetch('/api/protocol')).json());
  const canvas = document.createElement('canvas');
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  const stamps = [];
  for (const url of frames) {
    const img = new Image();
    img.src = url;
    await img.decode();
    canvas.width = img.width; canvas.height = img.height;
    ctx.drawImage(img, 0, 0);
    stamps.push(p.readStamp(ctx.getImageData(0, 0, p.stampWidth, p.stampHeight).data));
  }
  const encoded = messages.map(([kind, id, sentUs, fields]) =>
    Object.assign(p.encode(kind, id, BigInt(sentUs), fields), {}));
  const refused = outOfRange.map(([kind, fields]) => {
    try { p.encode(kind, 1, 0n, fields); return null; } catch (e) { return e.name; }
  });
  return {
    stamps,
    messages: encoded.map(({ channel, data }) => [channel, Array.from(new Uint8Array(data))]),
    refused,
    keys: { KeyA: p.keyUsage('KeyA'), ArrowRight: p.keyUsage('ArrowRight'), Nope: p.keyUsage('Nope') ?? null },
    ranges: { abs: p.range('MOUSE_ABS', 'x'), button: p.range('MOUSE_BUTTON', 'button'),
              axis: p.range('GAMEPAD', 'left_x') },
  };
}"""


def _png(frame: Any, fmt: str = "PNG", **kw: Any) -> str:
    import base64
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(frame).save(out, format=fmt, **kw)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(out.getvalue()).decode()


async def test_the_page_codec_reads_agent_stamps_and_writes_agent_input() -> None:
    """protocol.js, built only from /api/protocol, against cloudseat.seat_protocol: stamps the agent writes are read
    by the page (and a frame without one, or with one cell flipped, reads as nothing); every message the page
    encodes is what the agent decodes, byte for byte what Python encodes; out-of-range fields are refused."""
    import numpy as np
    from cloudseat import seat_protocol as sp

    rng = np.random.default_rng(7)
    stamps = [
        sp.Stamp(0, 0, 0),
        sp.Stamp(2**32 - 1, 2**53 - 1, 2**32 - 1),  # capture_us: µs since boot stay below 2**53 (a Number)
        sp.Stamp(123_456, 9_876_543_210_123, 77),
    ]
    frames, expected = [], []
    for stamp in stamps:
        frame = rng.integers(0, 256, (96, 400, 3), dtype=np.uint8)
        sp.write_stamp(frame, stamp)
        frames.append(_png(frame))
        expected.append(stamp)
    lossy = rng.integers(60, 200, (96, 400, 3), dtype=np.uint8)
    sp.write_stamp(lossy, stamps[2])
    frames.append(_png(lossy, "JPEG", quality=75))  # the browser's own JPEG decoder, 4:2:0 chroma
    expected.append(stamps[2])
    frames.append(_png(rng.integers(0, 256, (96, 400, 3), dtype=np.uint8)))  # no stamp
    expected.append(None)
    flipped = np.zeros((96, 400, 3), dtype=np.uint8)
    sp.write_stamp(flipped, stamps[2])
    flipped[8:16, 24:32] = 255 - flipped[8:16, 24:32]  # one cell of the second row
    frames.append(_png(flipped))
    expected.append(None)

    messages: list[sp.InputMessage] = [
        sp.KeyInput(1, 1_000, key=sp.KEY_CODES["KeyA"], down=True),
        sp.KeyInput(2, 2**64 - 1, key=0xFFFF, down=False, repeat=True),
        sp.MouseMove(3, 3_000, dx=-32768, dy=32767),
        sp.MouseAbs(4, 4_000, x=0, y=65535),
        sp.MouseButton(5, 5_000, button=sp.MAX_MOUSE_BUTTON, down=True),
        sp.Wheel(6, 6_000, dx=0, dy=-120),
        sp.Gamepad(2**32 - 1, 7_000, pad=15, buttons=2**32 - 1, axes=(-32768, 32767, 0, -1, 32767, 0)),
    ]
    fields: list[tuple[str, dict[str, int]]] = [
        ("KEY", {"key": sp.KEY_CODES["KeyA"], "flags": sp.KEY_DOWN}),
        ("KEY", {"key": 0xFFFF, "flags": sp.KEY_REPEAT}),
        ("MOUSE_MOVE", {"dx": -32768, "dy": 32767}),
        ("MOUSE_ABS", {"x": 0, "y": 65535}),
        ("MOUSE_BUTTON", {"button": sp.MAX_MOUSE_BUTTON, "down": 1}),
        ("WHEEL", {"dx": 0, "dy": -120}),
        ("GAMEPAD", {"pad": 15, "buttons": 2**32 - 1, "left_x": -32768, "left_y": 32767, "right_x": 0,
                     "right_y": -1, "left_trigger": 32767, "right_trigger": 0}),
    ]  # fmt: skip
    js_messages = [
        [kind, m.input_id, str(m.sent_us), f] for (kind, f), m in zip(fields, messages, strict=True)
    ]
    out_of_range = [
        ["MOUSE_MOVE", {"dx": 32768, "dy": 0}],  # past int16
        ["KEY", {"key": -1, "flags": 1}],  # below uint16
        ["MOUSE_BUTTON", {"button": sp.MAX_MOUSE_BUTTON + 1, "down": 1}],  # past the protocol's narrower range
        ["GAMEPAD", {"pad": 0, "buttons": 0, "left_x": 0, "left_y": 0, "right_x": 0, "right_y": 0,
                     "left_trigger": -1, "right_trigger": 0}],
        ["WHEEL", {"dx": 1}],  # dy missing
    ]  # fmt: skip

    async with b.kiosk("127.0.0.1:1") as kiosk, b.chromium() as chromium:  # no broker needed
        page = await b.seat_page(chromium, kiosk.url)
        await page.goto(kiosk.url)
        got = await page.evaluate(
            CONFORMANCE, {"frames": frames, "messages": js_messages, "outOfRange": out_of_range}
        )

    read = [
        None if s is None else sp.Stamp(s["frameNumber"], s["captureUs"], s["lastInputId"])
        for s in got["stamps"]
    ]
    assert read == expected
    for (channel, data), msg in zip(got["messages"], messages, strict=True):
        assert bytes(data) == sp.encode_input(msg)
        assert sp.decode_input(bytes(data)) == msg
        assert channel == sp.channel_for(msg)
    assert got["refused"] == ["RangeError", "RangeError", "RangeError", "RangeError", "Error"]
    assert got["ranges"] == {"abs": [0, 65535], "button": [0, sp.MAX_MOUSE_BUTTON], "axis": [-32768, 32767]}
    assert got["keys"] == {"KeyA": 0x04, "ArrowRight": 0x4F, "Nope": None}


# -- what the patron is told ------------------------------------------------------------------------------------


async def _cli_kiosk(broker: str, *extra: str) -> tuple[asyncio.subprocess.Process, str]:
    """The real program, `cloudseat-client kiosk` (as `python -m thin_client`), on a free port; (process, URL)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "thin_client", "kiosk", "--broker", broker, "--venue", b.VENUE, "--seat", b.SEAT,
        "--listen", "127.0.0.1:0", "--log-format", "json", *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        line = (await proc.stdout.readline()).decode()
    assert line.startswith("kiosk: http://127.0.0.1:"), line
    return proc, line.split(" ", 1)[1].strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_the_page_says_what_to_fix_in_one_line(world: BrokerClient, broker: Broker) -> None:
    """An unknown venue, an unknown seat, a game the broker does not know and a broker that cannot be reached each
    show one line on the page that says what to fix (thin_client.seat.explain's words), never a traceback."""
    await b.kiosk_seat(world)
    target = f"127.0.0.1:{broker.port}"
    nobody = f"127.0.0.1:{_free_port()}"  # nothing listens there
    proc, unreachable_url = await _cli_kiosk(nobody)
    try:
        async with (
            b.kiosk(target, venue="nowhere") as no_venue,
            b.kiosk(target, seat="nope") as no_seat,
            b.kiosk(target) as good,
            b.chromium() as chromium,
        ):

            async def shown_on(url: str, start: str = "") -> str:
                page = await b.seat_page(chromium, url)
                await page.goto(url)
                if start:
                    await b.wait_state(page, ["idle"], 15)
                    with contextlib.suppress(Exception):  # start() rejects; the page shows why
                        await page.evaluate("(game) => cloudseat.start(game)", start)
                await b.wait_state(page, ["error"], 30)
                assert await page.is_visible("#retry")
                text = await page.inner_text("#error-text")
                assert text == await page.evaluate("cloudseat.message")
                assert "\n" not in text.strip() and "Traceback" not in await page.content()
                return text

            venue, seat, unreachable, game = await asyncio.gather(
                shown_on(no_venue.url),
                shown_on(no_seat.url),
                shown_on(unreachable_url),
                shown_on(good.url, start="no-such-game"),
            )
    finally:
        proc.terminate()
        await proc.wait()
    assert venue == "venue_id: no venue 'nowhere'; check --venue"
    assert seat == "seat_id: venue 'cafe' has no seat 'nope'; check --seat"
    assert unreachable == (
        f"cannot reach the broker at {nobody}: nothing listens there (connection refused); check the broker "
        "address (--broker) and that the broker is running"
    )
    assert game == "game_id: no game 'no-such-game'; pick one of the games shown"
    assert proc.returncode == 0  # SIGTERM: a clean stop


def test_kiosk_flags_are_checked_before_it_starts(capsys: pytest.CaptureFixture[str]) -> None:
    from thin_client import cli

    for args, text in [
        (["--listen", "nowhere"], "--listen: 'nowhere' is not HOST:PORT"),
        (["--listen", "127.0.0.1:70000"], "--listen: port 70000 is above 65535"),
        (["--ice-address", "localhost"], "--ice-address: 'localhost' is not an IP address"),
        (["--broker", "no port"], "--broker: 'no port' is not HOST:PORT (or unix:/PATH)"),
        (["--seat", "two words"], "--seat: must be 1-64 characters of letters, digits, '.', '_', ':' or '-', "
         "starting with a letter or digit"),
    ]:  # fmt: skip
        assert cli.main(["kiosk", "--broker", "127.0.0.1:1", "--venue", "cafe", "--seat", "k1", *args]) == 2
        assert capsys.readouterr().err.strip() == f"cloudseat-client kiosk: error: {text}", args


# -- the kiosk's API --------------------------------------------------------------------------------------------

OFFER = (
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\na=rtpmap:96 VP8/90000\r\n"
    "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:sha-256 "
    + ":".join(["AB"] * 32)
    + "\r\na=setup:actpass\r\n"
    "a=candidate:1 1 udp 2122194687 127.0.0.1 50000 typ host generation 0\r\n"
    "a=candidate:2 1 udp 2122063615 192.0.2.2 50001 typ host generation 0\r\n"
    "a=candidate:3 1 tcp 1518214911 127.0.0.1 9 typ host tcptype active generation 0\r\n"
    "a=candidate:4 1 udp 2122267903 ::1 50002 typ host generation 0\r\n"
)


def test_only_udp_candidates_on_the_ice_addresses_are_relayed() -> None:
    from thin_client.kiosk.api import filter_candidates

    kept, total, count = filter_candidates(OFFER, ("127.0.0.1",))
    assert (total, count) == (4, 1)
    assert [line for line in kept.split("\r\n") if line.startswith("a=candidate")] == [
        "a=candidate:1 1 udp 2122194687 127.0.0.1 50000 typ host generation 0"
    ]
    assert kept.replace(
        "a=candidate:1 1 udp 2122194687 127.0.0.1 50000 typ host generation 0\r\n", ""
    ) == "".join(line + "\r\n" for line in OFFER.split("\r\n") if line and not line.startswith("a=candidate"))
    assert filter_candidates(OFFER, ()) == (OFFER, 4, 4)  # no --ice-address: the offer as the browser made it
    assert filter_candidates(OFFER, ("10.0.0.1",))[2] == 0


async def test_the_kiosk_api_refuses_bad_input_naming_the_field_and_writes_nothing(
    world: BrokerClient, broker: Broker
) -> None:

    from cloudseat import seat_protocol as sp

    await b.kiosk_seat(world)

    async def sessions() -> list[Any]:
        listed = await world.venues.ListSessions(venue_pb2.ListSessionsRequest(venue_id=b.VENUE))
        return list(listed.sessions)

    async with b.kiosk(f"127.0.0.1:{broker.port}") as kiosk, aiohttp.ClientSession(kiosk.url) as http:

        async def call(method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
            if body is not None:
                kw["json"] = body
            async with http.request(method, path, **kw) as r:
                return r.status, await r.json()

        # What the page reads.
        assert await call("GET", "/api/protocol") == (200, json.loads(json.dumps(sp.protocol_description())))
        status, clock = await call("GET", "/api/clock")
        assert status == 200 and isinstance(clock["monotonic_us"], int)
        status, seat = await call("GET", "/api/seat")
        assert status == 200 and seat["zone_id"] == b.ZONE and seat["session"] is None
        assert [g["game_id"] for g in seat["games"]] == ["demo"]
        async with http.get("/") as r:
            assert r.status == 200 and "kiosk.js" in await r.text()
            assert "default-src 'self'" in r.headers["Content-Security-Policy"]

        # Refused before the broker is asked: the field is named, nothing is written.
        refusals = [
            (("POST", "/api/sessions", {"game_id": "has space"}), 400, "game_id"),
            (("POST", "/api/sessions", {"game_id": 5}), 400, "game_id"),
            (("POST", "/api/sessions", {}), 400, "game_id"),
            (("POST", "/api/sessions", ["demo"]), 400, "body"),
            (("POST", "/api/sessions", None, {"data": "{not json", "headers": {"Content-Type": "application/json"}}),
             400, "body"),
            (("POST", "/api/sessions", None, {"data": "game_id=demo"}), 415, "body"),
            (("POST", "/api/sessions", {"game_id": "demo", "pad": "x" * 5000}), 413, "body"),
            (("POST", "/api/sessions", {"game_id": "demo"}, {"headers": {"Origin": "http://evil.example"}}),
             403, "origin"),
            (("POST", "/api/sessions", {"game_id": "no-such-game"}), 404, "game_id"),
            (("GET", "/api/sessions/not-a-uuid/events"), 400, "session_id"),
            (("GET", f"/api/sessions/{uuid.uuid4()}/events"), 404, "session_id"),
            (("POST", f"/api/sessions/{uuid.uuid4()}/end", {}), 404, "session_id"),
            (("GET", "/api/nothing"), 404, "path"),
            (("DELETE", "/api/sessions"), 405, "path"),
        ]  # fmt: skip
        for request, code, field in refusals:
            method, path, *rest = request
            status, error = await call(method, path, *rest[:1], **(rest[1] if len(rest) > 1 else {}))
            assert (status, error["field"]) == (code, field), (request, error)
            assert error["error"] and "\n" not in error["error"]
        assert await sessions() == []

        # A session (no agent: it waits in the queue), then what may and may not be done with it.
        status, started = await call("POST", "/api/sessions", {"game_id": "demo"})
        assert status == 201 and started["session"]["state"] == "PENDING" and "session_token" not in started
        sid = started["session"]["session_id"]
        status, error = await call("POST", "/api/sessions", {"game_id": "demo"})
        assert status == 409 and "already plays" in error["error"]
        status, seat = await call("GET", "/api/seat")
        assert seat["session"]["session_id"] == sid  # a reloaded page picks it up
        for body, code, text in [
            ({"sdp": "hello"}, 400, "sdp: is not an SDP offer"),
            (
                {"sdp": OFFER.replace("127.0.0.1 50000", "192.0.2.9 50000")},
                400,
                "no UDP candidate on 127.0.0.1",
            ),
            ({"sdp": "v=0\r\n" + "a" * (70 * 1024)}, 413, "more than"),
            ({"sdp": OFFER}, 409, "negotiate once it is READY"),  # the broker's refusal, in explain()'s words
        ]:
            status, error = await call("POST", f"/api/sessions/{sid}/negotiate", body)
            assert status == code and text in error["error"], (status, error)
        status, error = await call("POST", f"/api/sessions/{sid}/resume", {})
        assert status == 409 and "only a session its host lost" in error["error"]
        async with http.get(f"/api/sessions/{sid}/events") as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            first = await r.content.readuntil(b"\n\n") + await r.content.readuntil(b"\n\n")
            assert b"event: update" in first and b'"state": "PENDING"' in first
        status, ended = await call("POST", f"/api/sessions/{sid}/end", {"detail": "bye"})
        assert status == 200 and ended["session"]["end_reason"] == "ENDED_BY_PATRON"
        assert [s.session_id for s in await sessions()] == [sid]
        # The patron picks again at once: the end's own answer freed the seat, the watch need not catch up first.
        status, again = await call("POST", "/api/sessions", {"game_id": "demo"})
        assert status == 201 and again["session"]["session_id"] != sid, again
        status, _ = await call("POST", f"/api/sessions/{again['session']['session_id']}/end", {})
        assert status == 200

    async with (
        b.kiosk(f"127.0.0.1:{broker.port}", zone_id="std") as elsewhere,
        aiohttp.ClientSession() as http,
    ):
        async with http.get(f"{elsewhere.url}api/seat") as r:
            assert r.status == 409
            assert await r.json() == {
                "error": "zone_id: seat 'k1' is in zone 'kiosk', not 'std'; check --zone",
                "field": "zone_id",
            }


async def test_with_authentication_on_the_kiosk_presents_the_seat_token(db_url: str, tmp_path: Path) -> None:
    """A broker with TLS and tenant tokens: the kiosk holding a seat token (over TLS, trusting the broker's CA)
    lists the games and starts a session for its seat; a token the broker does not accept shows the page one line
    that says what to fix; a token for another seat is refused at start."""
    from broker import issuing
    from broker.config import SecurityConfig

    creds = issuing.make(tmp_path / "creds", [])
    security = SecurityConfig(
        cert=creds.broker.cert, key=creds.broker.key, client_ca=creds.ca, token_key=creds.token_key
    )
    cfg = dataclasses.replace(
        FAST, database_url=db_url, insecure=False, security=security, agent_listen="127.0.0.1:0"
    )

    def token(role: str, **claims: str) -> str:
        return issuing.issue_token(creds.token_key, role, ttl_s=600, **claims)

    secured = Broker(cfg)
    await secured.start()
    try:
        target = f"127.0.0.1:{secured.port}"
        async with BrokerClient(
            target, token=token("operator", subject="test"), credentials=tls.client_credentials(creds.ca)
        ) as op:
            await op.fleet.PutGame(fleet_pb2.PutGameRequest(game_id="demo", name="Demo"))
            await op.venues.CreateVenue(venue_pb2.CreateVenueRequest(venue_id=b.VENUE, name="Cafe"))
            await b.kiosk_seat(op)
        mine = token("seat", venue_id=b.VENUE, seat_id=b.SEAT)
        other = token("seat", venue_id=b.VENUE, seat_id="k2")
        ghost = token("seat", venue_id="nowhere", seat_id=b.SEAT)  # its venue is not in the broker's database
        async with (
            b.kiosk(target, token=mine, ca=creds.ca) as good,
            b.kiosk(target, token="not-a-token", ca=creds.ca) as bad,
            b.kiosk(target, token=other, ca=creds.ca) as wrong_seat,
            b.kiosk(target, token=mine) as no_ca,
            b.kiosk(target, venue="nowhere", token=ghost, ca=creds.ca) as no_venue,
            aiohttp.ClientSession() as http,
        ):
            # Plaintext to a TLS broker: said as TLS, with the flag that fixes it.
            async with http.get(f"{no_ca.url}api/seat") as r:
                assert r.status == 503 and await r.json() == {
                    "error": f"TLS: the broker at {target} speaks TLS and this seat connects without it: give the "
                    "CA bundle that signed the broker's certificate with --ca FILE (CLOUDSEAT_CA)",
                    "field": "broker",
                }
            # A seat token may not list its venue's seats, so the start says the venue is unknown.
            async with http.post(f"{no_venue.url}api/sessions", json={"game_id": "demo"}) as r:
                assert r.status == 404 and await r.json() == {
                    "error": "venue_id: no venue 'nowhere'; check --venue",
                    "field": "venue_id",
                }
            async with http.get(f"{good.url}api/seat") as r:
                assert r.status == 200 and [g["game_id"] for g in (await r.json())["games"]] == ["demo"]
            async with http.post(f"{good.url}api/sessions", json={"game_id": "demo"}) as r:
                assert r.status == 201
                sid = (await r.json())["session"]["session_id"]
            async with http.post(f"{good.url}api/sessions/{sid}/end", json={}) as r:
                assert r.status == 200 and (await r.json())["session"]["end_reason"] == "ENDED_BY_PATRON"
            async with http.post(f"{wrong_seat.url}api/sessions", json={"game_id": "demo"}) as r:
                refused = await r.json()
                assert r.status == 403 and refused["error"] == (
                    f"--seat {b.SEAT!r} is not the seat of this seat's token (--token is for seat 'k2' of venue "
                    f"{b.VENUE!r}): check --seat, or give the token of this seat"
                )

            async with b.chromium() as chromium:
                page = await b.seat_page(chromium, bad.url)
                await page.goto(bad.url)
                await b.wait_state(page, ["error"], 15)
                text = await page.inner_text("#error-text")
        assert text.startswith("the broker did not accept this seat's credentials (") and text.endswith(
            "; check --token"
        ), text
    finally:
        await secured.stop(grace_s=1)
