"""Browser seats for `cloudseat-loadtest stream --client browser`: the kiosk page in headless Chromium, via Playwright.

`BrowserSeats` is what `loadtest.stream` calls once a broker runs and an agent is online:

    seats = BrowserSeats(target, venue_id, cfg, fps, tmp)        # cfg: loadtest.stream.StreamRunConfig
    ready_ms = await seats.probe_ready("probe", 10)               # session ready, one session after another
    per_seat, cpu_s = await seats.play(["s0", "s1"])              # all seats at once, warm-up + duration

Each seat is what a cafe seat runs: a kiosk server (`thin_client.kiosk.server.Kiosk`, here in this process, on
127.0.0.1 port 0, ICE limited to 127.0.0.1) and its page in the distribution's Chromium (``/usr/bin/chromium``, or
``CLOUDSEAT_CHROMIUM``; Playwright drives it through ``executable_path``, its own browser download is never used).
All seats' pages share one headless browser, one browser context (profile) per seat. Everything goes through the
page as a patron's would: ``window.cloudseat.start(game)`` is the game picker's click, keys are Playwright key
events into the page (press and release of ``ArrowRight`` every ``cfg.input_every_s``), ``cloudseat.end()`` the end
button.

Per seat (``play``), over the window after the warm-up:

    session_ready_ms            [StartSession asked → first frame presented], as the page measures it
    fps_p50, fps_samples        getStats framesDecoded per second, one sample a second
    frames                      frames decoded in the window
    capture_to_decoded_ms_p50/_p99
                                capture time → the decoded frame handed to the compositor (rVFC
                                presentationTime): encode, network, jitter buffer, decode, and the wait for the
                                compositor's next frame (it picks up frames at the display rate); the capture
                                time from the frame's stamp, or from its RTP timestamp (docs/kiosk.md)
    frames_measured, measured_pct
                                frames timed of those decoded (getStats framesDecoded, read at the window's
                                start and end): each by its presentation (rVFC) when a callback came for it,
                                else by its arrival, decoded, at the page's worker (thin_client/kiosk/static/
                                decoded.js, a MediaStreamTrackProcessor), both from its RTP timestamp
    capture_to_frame_ms_p50/_p99
                                capture → that time, over every frame timed
    frames_timed_presented      of those, the frames timed by their presentation (the rest by the worker)
    capture_to_processed_ms_p50/_p99
                                capture → arrival at the worker, every decoded frame
    presented_minus_processed_ms_p50
                                for frames timed both ways: presentation - arrival at the worker
    frames_processed            frames the worker got (all decoded frames, unless its queue overflowed)
    frames_presented, presented_measured_pct
                                frames the page presented (rVFC presentedFrames, less those the video element
                                replaced before the compositor drew them: frames_superseded), and the share of
                                them that a callback timed (the figure before the worker)
    capture_to_received_ms_p50  → its last packet received (rVFC receiveTime): encode and network
    capture_to_display_ms_p50   → its expected display time
    input_to_photon_ms_p50/_p99 key sent → presentation of the first frame whose stamp shows it applied
    freezes, freezes_per_min    getStats freezeCount over the window
    jitter_ms                   getStats jitter (the network's, RFC 3550) at the end of the window
    inputs_sent, inputs_shown, stamps_read, stamps_unreadable, jitter_buffer_ms, decode_ms, codec, decoder,
    resolution, reconnects

``play`` also returns the CPU seconds the browser's processes used in the window (all seats together); the kiosk
servers run in the caller's process and are not in it.

Clocks: the stamp's capture time is the agent's CLOCK_MONOTONIC; the page measures in ``performance.now()`` and
estimates the offset from round trips to its kiosk's ``/api/clock`` (the shortest of five; error at most half of it,
well under a millisecond on loopback). Like the Python client's figures, capture→decoded means something only with
the agent and the seat on one machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import statistics
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

    from loadtest.stream import StreamRunConfig
    from thin_client.kiosk.server import Kiosk

CHROMIUM: Final = os.environ.get("CLOUDSEAT_CHROMIUM", "/usr/bin/chromium")
# On top of thin_client.kiosk.CHROMIUM_FLAGS: headless on a machine without a GPU or a user-namespace sandbox.
HEADLESS_FLAGS: Final = ("--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage")
KEY: Final = "ArrowRight"  # the demo game moves the player while it is held


# -- Chromium ---------------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def chromium(executable: str = CHROMIUM, extra_flags: Sequence[str] = ()) -> AsyncIterator[Browser]:
    """Headless Chromium from the distribution (a fresh temporary profile), launched by Playwright, with the seat's
    flags and ``extra_flags`` after them (a later flag wins where two set one switch)."""
    from playwright.async_api import async_playwright

    from thin_client.kiosk import CHROMIUM_FLAGS

    if not os.access(executable, os.X_OK):
        raise RuntimeError(f"no Chromium at {executable}: install the distribution's chromium package")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=executable, headless=True, args=[*CHROMIUM_FLAGS, *HEADLESS_FLAGS, *extra_flags]
        )
        try:
            yield browser
        finally:
            await browser.close()


async def seat_page(browser: Browser, origin: str, *, width: int = 1280, height: int = 720) -> Page:
    """A page in a context of its own, allowed to offer loopback ICE candidates to ``origin``: Chromium lists
    every interface, loopback included, only for an origin that holds the camera or microphone permission;
    otherwise it offers the default route's address alone."""
    context = await browser.new_context(viewport={"width": width, "height": height})
    await context.grant_permissions(["camera", "microphone"], origin=origin.rstrip("/"))
    return await context.new_page()


async def wait_state(page: Page, states: Sequence[str], timeout_s: float) -> str:
    """Wait until ``window.cloudseat.state`` is one of ``states``; the state. The page's "error" state ends the wait
    with its message (a RuntimeError), unless "error" is among ``states``."""
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    try:
        await page.wait_for_function(
            "(states) => window.cloudseat && (states.includes(cloudseat.state) || cloudseat.state === 'error')",
            arg=list(states),
            timeout=timeout_s * 1000,
        )
    except PlaywrightTimeout:
        now = await page.evaluate("window.cloudseat && [cloudseat.state, cloudseat.message]")
        raise RuntimeError(f"the page did not reach {'/'.join(states)} in {timeout_s} s; it is at {now}") from None
    state: str = await page.evaluate("cloudseat.state")
    if state not in states:
        raise RuntimeError(f"the page is in state {state}: {await page.evaluate('cloudseat.message')}")
    return state


def chromium_cpu_seconds(executable: str = CHROMIUM) -> float:
    """CPU seconds of the Chromium processes this process started (directly or through Playwright's driver)."""
    from loadtest.stream_media import cpu_seconds

    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                with open(f"/proc/{entry.name}/stat") as f:
                    parents[int(entry.name)] = int(f.read().rsplit(")", 1)[1].split()[1])
    mine, grew = {os.getpid()}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in mine} - mine
        mine |= more
        grew = bool(more)
    home = os.path.dirname(os.path.realpath(executable))
    home = (
        home if home != "/usr/bin" else "/usr/lib/chromium"
    )  # Debian's /usr/bin/chromium is a launcher script
    total = 0.0
    for pid in mine - {os.getpid()}:
        with contextlib.suppress(OSError):
            if os.path.realpath(f"/proc/{pid}/exe").startswith(home + "/"):
                total += cpu_seconds(pid)
    return total


# -- the seats --------------------------------------------------------------------------------------------------


def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return round(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo), 2)


class BrowserSeats:
    """Seats that run the kiosk page in headless Chromium (see the module docstring)."""

    def __init__(
        self,
        target: str,
        venue_id: str,
        cfg: StreamRunConfig,
        fps: int,
        tmp: Path,
        *,
        game_id: str = "demo",
        executable: str = CHROMIUM,
        ice_addresses: tuple[str, ...] = ("127.0.0.1",),
        ready_timeout_s: float = 60.0,
    ) -> None:
        self.target, self.venue_id, self.cfg, self.fps, self.tmp = target, venue_id, cfg, fps, tmp
        self.game_id, self.executable, self.ice_addresses = game_id, executable, ice_addresses
        self.ready_timeout_s = ready_timeout_s
        self.chromium_version = ""

    @contextlib.asynccontextmanager
    async def _seats(self, seats: Sequence[str]) -> AsyncIterator[list[Page]]:
        """A kiosk and a loaded page per seat, in one browser."""
        from thin_client.kiosk.server import Kiosk, KioskConfig
        from thin_client.seat import SeatConfig

        async with contextlib.AsyncExitStack() as stack:
            browser = await stack.enter_async_context(
                chromium(self.executable, shlex.split(self.cfg.chromium_flags))
            )
            self.chromium_version = browser.version
            pages = []
            for seat in seats:
                kiosk: Kiosk = await stack.enter_async_context(
                    Kiosk(
                        KioskConfig(
                            seat=SeatConfig(
                                broker=self.target,
                                venue_id=self.venue_id,
                                seat_id=seat,
                                ice_addresses=self.ice_addresses,
                            ),
                            listen="127.0.0.1:0",
                        )
                    )
                )
                page = await seat_page(browser, kiosk.url)
                query = self.cfg.page_query.lstrip("?")
                await page.goto(f"{kiosk.url}{'&' if '?' in kiosk.url else '?'}{query}" if query else kiosk.url)
                await wait_state(page, ["idle"], 30)
                pages.append(page)
            yield pages

    async def _start(self, page: Page) -> float:
        """Start a session from the page and wait until it plays; its session-ready time in ms."""
        await page.evaluate("(game) => cloudseat.start(game)", self.game_id)
        await wait_state(page, ["playing"], self.ready_timeout_s)
        return float(await page.evaluate("cloudseat.stats.sessionReadyMs"))

    async def _end(self, page: Page) -> None:
        await page.evaluate("cloudseat.end()")
        await wait_state(page, ["ended"], 30)

    async def probe_ready(self, seat: str, count: int) -> list[float]:
        """Start ``count`` sessions one after another at ``seat``, each ended once it plays; their session-ready
        times in ms."""
        ready: list[float] = []
        async with self._seats([seat]) as (page,):
            for _ in range(count):
                ready.append(await self._start(page))
                await self._end(page)
        return ready

    async def play(self, seats: list[str]) -> tuple[list[dict[str, Any]], float]:
        """All seats at once: start, warm up, play ``cfg.duration_s`` with scripted keys, end. The figures per seat
        and the browser's CPU seconds in the window."""
        cfg = self.cfg
        async with self._seats(seats) as pages:
            ready = await asyncio.gather(*(self._start(p) for p in pages))
            await asyncio.sleep(cfg.warmup_s)
            # getStats read at the window's start and end, so its frame counters cover the frames timed.
            bases = [await p.evaluate(_RESET) for p in pages]
            cpu0 = chromium_cpu_seconds(self.executable)
            every = cfg.input_every_s
            keys = [
                asyncio.create_task(_press_keys(p, i * every / len(pages), every))
                for i, p in enumerate(pages)
            ]
            try:
                await asyncio.sleep(cfg.duration_s)
            finally:
                for task in keys:
                    task.cancel()
                await asyncio.gather(*keys, return_exceptions=True)
            cpu = chromium_cpu_seconds(self.executable) - cpu0
            ends = await asyncio.gather(*(p.evaluate(_END) for p in pages))
            results = []
            for got, base, ready_ms in zip(ends, bases, ready, strict=True):
                results.append(_figures(got, base, ready_ms, cfg.duration_s))
                results[-1]["chromium"] = self.chromium_version
            await asyncio.gather(*(self._end(p) for p in pages))
        return results, cpu


_RESET: Final = "cloudseat.pollStats().then(() => (cloudseat.resetMeasurements(), {...cloudseat.stats}))"
_END: Final = "cloudseat.endMeasurements().then((m) => ({...m, receiver: cloudseat.receiver}))"


async def _press_keys(page: Page, offset_s: float, every_s: float) -> None:
    """Press and release KEY every ``every_s``, starting after ``offset_s`` (seats staggered), until cancelled."""
    await asyncio.sleep(offset_s)
    down = False
    try:
        while True:
            down = not down
            await (page.keyboard.down(KEY) if down else page.keyboard.up(KEY))
            await asyncio.sleep(every_s)
    finally:
        if down:
            with contextlib.suppress(Exception):
                await page.keyboard.up(KEY)


def _figures(got: dict[str, Any], base: dict[str, Any], ready_ms: float, window_s: float) -> dict[str, Any]:
    """One seat's figures from ``cloudseat.measurements()`` at the end of the ``window_s`` window and its stats at
    the start."""
    stats = got["stats"]
    fps = [float(x) for x in got["fps"]]
    c2d: list[float] = got["captureToDecodedMs"]
    i2p: list[float] = got["inputToPhotonMs"]

    def delta(name: str) -> int:
        return int(stats[name] - base[name])

    # Presented and on screen: those the video element did not replace before the compositor drew them.
    presented, measured = delta("framesPresented") - delta("framesSuperseded"), delta("framesMeasured")
    # Every frame decoded, timed by its presentation when a callback came, else by its arrival at the page's worker.
    decoded, timed = delta("framesDecoded"), int(got.get("framesTimed", 0))
    every: list[float] = got.get("captureToFrameMs", [])
    return {
        "session_ready_ms": [round(ready_ms, 1)],
        "fps_p50": round(statistics.median(fps), 2) if fps else float("nan"),
        "fps_samples": [round(x, 2) for x in fps],
        "frames": delta("framesDecoded"),
        "capture_to_decoded_ms_p50": _pct(c2d, 50),
        "capture_to_decoded_ms_p99": _pct(c2d, 99),
        "capture_to_received_ms_p50": _pct(got["captureToReceivedMs"], 50),
        "capture_to_display_ms_p50": _pct(got["captureToDisplayMs"], 50),
        "input_to_photon_ms_p50": _pct(i2p, 50),
        "input_to_photon_ms_p99": _pct(i2p, 99),
        "frames_presented": presented,
        "frames_superseded": delta("framesSuperseded"),
        "frames_measured": timed,
        "measured_pct": round(100 * timed / decoded, 2) if decoded else float("nan"),
        "frames_timed_presented": int(got.get("framesTimedPresented", 0)),
        "frames_processed": int(got.get("framesProcessedInWindow", 0)),
        "presented_measured_pct": round(100 * measured / presented, 2) if presented else float("nan"),
        "capture_to_frame_ms_p50": _pct(every, 50),
        "capture_to_frame_ms_p99": _pct(every, 99),
        "capture_to_processed_ms_p50": _pct(got.get("captureToProcessedMs", []), 50),
        "capture_to_processed_ms_p99": _pct(got.get("captureToProcessedMs", []), 99),
        "presented_minus_processed_ms_p50": _pct(got.get("presentedMinusProcessedMs", []), 50),
        "freezes": delta("freezes"),
        "freezes_per_min": round(delta("freezes") * 60 / window_s, 2) if window_s > 0 else float("nan"),
        "jitter_ms": round(float(stats["jitterMs"]), 2),
        "frames_dropped": delta("framesDropped"),
        "inputs_sent": delta("inputsSent"),
        "inputs_shown": len(i2p),
        "stamps_read": delta("stampsRead"),
        "stamps_unreadable": delta("stampsUnreadable"),
        "stamps_disagreeing": delta("stampsDisagreeing"),
        "stamps_rebased": delta("stampsRebased"),
        "receiver": got.get("receiver"),
        "jitter_buffer_ms": round(float(stats["jitterBufferDelayMs"]), 2),
        "decode_ms": round(float(stats["decodeMsPerFrame"]), 2),
        "codec": stats["codec"],
        "decoder": stats["decoder"],
        "resolution": f"{stats['width']}x{stats['height']}",
        "reconnects": delta("reconnects"),
    }
