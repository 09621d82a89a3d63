"""The seat's player: one patron's session at the seat, from the queue to the end, with its stream and input.

`Player` drives a `thin_client.seat.SeatSession` (start, follow the queue, negotiate, resume after a lost host,
end), plays the stream through a `thin_client.receiver.Receiver` into an SDL window (`thin_client.window`) or
headless, sends input (the window's, or `thin_client.scripted`'s pattern), prints live stats and reports the seat's
own stats windows to the broker for the SLA; `results()` is what `cloudseat-client play --json` writes.
`PlayOptions` is its configuration; `thin_client.play` is the command line around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from cloudseat.settings import above, setting

from thin_client import scripted
from thin_client.receiver import Receiver, ReceiverError, monotonic_us
from thin_client.seat import (
    S,
    SeatError,
    SeatSession,
    describe,
    reason_name,
    resumable,
    state_name,
    waiting,
)


@dataclass(frozen=True, slots=True)
class PlayOptions:
    """How `cloudseat-client play` plays (its flags; CLOUDSEAT_PLAY_* in the environment)."""

    game_id: str = setting(
        help="the game to play (a game id of the catalogue)",
        flag="--game",
        env="CLOUDSEAT_GAME",
        required=True,
    )
    headless: bool = setting(False, "no window: decode and measure only")
    duration_s: float | None = setting(
        None,
        "end the session after this many seconds of play (counted from the first frame)",
        flag="--duration",
        check=above(0),
    )
    json_path: Path | None = setting(None, "write the stats to this file at the end", flag="--json")
    scripted_input: bool = setting(
        False,
        "play a scripted input pattern (always on when headless; in a window it goes through the window's own "
        "input path)",
    )
    input_hz: float = setting(10.0, "scripted inputs per second", check=above(0))
    stats_every_s: float = setting(1.0, "seconds between stats lines", flag="--stats-every", check=above(0))
    # How often the seat sends the broker its own stats windows (SessionService.ReportStreamStats) for the SLA.
    report_every_s: float = setting(
        10.0,
        "seconds between the seat's stream stats reports to the broker, which count for the SLA",
        flag="--report-every",
        check=above(0),
    )
    expected_fps: float = setting(
        60.0, "the stream's frame rate, for freeze counting", flag="--fps", check=above(0)
    )
    connect_timeout_s: float = 10.0
    reconnect_after_s: float = setting(
        2.0, "seconds without video before reconnecting", flag="--reconnect-after", check=above(0)
    )
    # A network loss longer than this ends the session (the patron has gone, or the seat's network is down).
    give_up_after_s: float = 60.0
    # How long a session may wait in the queue and starting before the client gives up.
    start_timeout_s: float = 900.0
    max_resumes: int = 3
    # Save the last picture (the window, or the last decoded frame when headless) here at the end.
    screenshot: Path | None = setting(None, "save the last picture as PNG here at the end")


@dataclass(slots=True)
class Sample:
    """One stats line's figures, over the last stats interval."""

    at_s: float
    fps: float
    bitrate_kbps: float
    capture_to_decoded_ms: float
    input_to_photon_ms: float
    rtt_ms: float
    freezes: int

    def line(self) -> str:
        def ms(v: float) -> str:
            return "–" if math.isnan(v) else f"{v:.1f} ms"

        return (
            f"{self.fps:5.1f} fps  {self.bitrate_kbps / 1000:5.2f} Mb/s"
            f"  capture→decoded {ms(self.capture_to_decoded_ms)}"
            f"  input→photon {ms(self.input_to_photon_ms)}"
            f"  rtt {ms(self.rtt_ms)}  freezes {self.freezes}"
        )


@dataclass(slots=True)
class Outcome:
    """What happened, for the exit code and --json."""

    stopped_by_patron: bool = False
    final_state: str = ""
    end_reason: str = ""
    message: str = ""
    sessions: list[dict[str, Any]] = field(default_factory=list)
    session_ready_ms: list[float] = field(default_factory=list)
    reconnects: int = 0
    reconnect_ms: list[float] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)


_log = logging.getLogger(__name__)
# At most this many stats windows in one report (the broker takes up to 60).
_MAX_REPORT = 60


def _pct(values: list[float], q: float) -> float | None:
    clean = [v for v in values if not math.isnan(v)]
    return round(float(np.percentile(clean, q)), 2) if clean else None


class Player:
    """Plays one seat's session (and its resumes) until the patron stops or the session ends."""

    def __init__(
        self,
        seat: SeatSession,
        opts: PlayOptions,
        *,
        out: TextIO,
        window: Any | None = None,
    ) -> None:
        self.seat = seat
        self.opts = opts
        self.out = out
        self.window = window
        self.last_frame: Any | None = None
        self.receiver = Receiver(
            host_addresses=seat.cfg.ice_addresses or _all_addresses(),
            expected_fps=opts.expected_fps,
            on_frame=self._on_frame,
        )
        self.outcome = Outcome()
        self.stop = asyncio.Event()
        # Patron time as the broker last said it (None: unlimited, or not streaming yet).
        self.time_left_s: int | None = None
        self._tty = out.isatty()
        self._stats_shown = False
        self._input_n = 0
        self._started = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        # The last start's (or resume's) answer: the first step the patron is shown, before the watch says more.
        self._answer: Any | None = None
        # Stats windows not yet reported to the broker: (at, Unix seconds; fps; rtt ms or None). The RTT shown is
        # the host's own report, so it is not sent back as the seat's: the seat reports only what it measured.
        self._unreported: deque[tuple[float, float, float | None]] = deque(maxlen=_MAX_REPORT)
        self.reported = 0

    def _on_frame(self, frame: Any, stamp: Any) -> None:
        self.last_frame = frame
        if self.window is not None:
            self.window.show(frame, stamp)

    # -- output -------------------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        if self._stats_shown and self._tty:
            self.out.write("\r\x1b[K")
        self._stats_shown = False
        self.out.write(text + "\n")
        self.out.flush()

    def _on_wait(self, attempt: int, delay_s: float, reason: str) -> None:
        """StartSession was refused for now (the broker busy or out of reach): say so while the seat asks again."""
        self.say(waiting(reason, delay_s, self.seat.cfg))

    def _show_stats(self, sample: Sample) -> None:
        line = sample.line()
        if self._tty:
            self.out.write("\r\x1b[K" + line)
            self._stats_shown = True
        else:
            self.out.write(line + "\n")
        self.out.flush()
        if self.window is not None:
            self.window.set_overlay([line, describe_session(self.seat)])

    # -- the session --------------------------------------------------------------------------------------

    async def run(self) -> Outcome:
        try:
            await self._run()
        finally:
            if self._timer is not None:
                self._timer.cancel()
            await self.receiver.close()
            if self._stats_shown and self._tty:
                self.out.write("\n")
        return self.outcome

    async def _run(self) -> None:
        asked_us = monotonic_us()
        # A SeatError here is the seat's setup (or a broker too busy for it): the caller says so.
        self._answer = await self.seat.start(self.opts.game_id, on_wait=self._on_wait)
        self.say(f"session {self.seat.session_id} for {self.seat.cfg.seat_id} at {self.seat.cfg.venue_id}")
        try:
            await self._session_loop(asked_us)
        except SeatError as exc:
            self.outcome.message = str(exc)
            self.say(f"error: {exc}")
            await self._end("the seat gave up: " + str(exc)[:160])
            self.outcome.stopped_by_patron = False

    async def _session_loop(self, asked_us: int) -> None:
        while True:
            update = await self._follow_until_playable()
            if update is None:  # the patron stopped while waiting
                await self._end()
                return
            if update.session.state == S.SESSION_STATE_ENDED:
                if not await self._resume_after(update.session):
                    return
                asked_us = monotonic_us()
                continue
            if not await self._connect_first(asked_us):
                if self.stop.is_set():
                    await self._end()
                    return
                continue  # it ended while connecting: the loop decides (resume or not)
            ended = await self._play()
            if ended is None:
                await self._end()
                return
            if not await self._resume_after(ended):
                return
            asked_us = monotonic_us()

    async def _follow_until_playable(self) -> Any:
        """Print each step until the session can be negotiated or ends; None if the patron stopped first."""
        follow = asyncio.ensure_future(self._follow())
        stopped = asyncio.ensure_future(self.stop.wait())
        try:
            done, _ = await asyncio.wait(
                {follow, stopped}, timeout=self.opts.start_timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in (follow, stopped):
                task.cancel()
        if follow in done:
            return follow.result()
        if stopped in done:
            return None
        raise SeatError(f"the session did not start within {self.opts.start_timeout_s:.0f} s")

    async def _follow(self) -> Any:
        answer, self._answer = self._answer, None
        last = ""
        if answer is not None:
            # The start's answer is the first step: placed already, or the place in the queue, shown at once; a
            # session that is ready already goes on to negotiate without waiting for the watch to say so.
            last = describe(answer)
            self.say(last)
            if answer.session.state in (S.SESSION_STATE_READY, S.SESSION_STATE_STREAMING):
                return answer
        async def lost(text: str) -> None:
            nonlocal last
            last = text  # the broker's next update is said again, however like the last it is
            self.say(text)

        async for update in self.seat.updates(after=answer, on_lost=lost):
            text = describe(update)
            if text != last:
                self.say(text)
                last = text
            if update.session.state in (
                S.SESSION_STATE_READY,
                S.SESSION_STATE_STREAMING,
                S.SESSION_STATE_ENDED,
            ):
                return update
        raise SeatError("the broker stopped sending the session's updates")

    async def _connect_first(self, asked_us: int) -> bool:
        """Negotiate and wait for the first frame; records the session's ready time. False if it ended first."""
        try:
            await self.receiver.connect(self.seat.negotiate, timeout_s=self.opts.connect_timeout_s)
            await self.receiver.wait_frames(1, timeout_s=self.opts.connect_timeout_s)
        except (ReceiverError, SeatError, TimeoutError) as exc:
            self.say(f"could not connect the stream ({exc}); retrying")
            return await self._reconnect(first=True)
        self._record_ready(asked_us)
        return True

    def _record_ready(self, asked_us: int) -> None:
        ready_ms = ((self.receiver.last_frame_us or monotonic_us()) - asked_us) / 1000
        self.outcome.session_ready_ms.append(ready_ms)
        if self._timer is None and self.opts.duration_s:
            # --duration counts play time, so a slow queue or start does not eat into it.
            self._timer = asyncio.get_running_loop().call_later(self.opts.duration_s, self.stop.set)
        session = self.seat.session
        assert session is not None
        self.outcome.sessions.append(
            {
                "session_id": session.session_id,
                "resumes_session_id": session.resumes_session_id,
                "host_id": session.host_id,
                "site_id": session.site_id,
                "ready_ms": round(ready_ms, 1),
            }
        )
        self.say(
            f"playing {session.game_id} on {session.host_id} (first frame {ready_ms:.0f} ms after asking)"
        )

    async def _resume_after(self, ended: Any) -> bool:
        """The session ended under the patron: resume it if the host was at fault; False when play is over."""
        reason = reason_name(ended.end_reason)
        self.outcome.final_state, self.outcome.end_reason = state_name(ended.state), reason
        if self.stop.is_set():
            return False
        if resumable(ended) and self.seat.resumes < self.opts.max_resumes:
            self.say(f"{describe_update_text(ended)}; resuming at the front of the queue")
            self._answer = await self.seat.resume(on_wait=self._on_wait)
            self.say(f"session {self.seat.session_id} resumes {ended.session_id}")
            return True
        self.outcome.message = describe_update_text(ended)
        self.say(self.outcome.message)
        return False

    async def _play(self) -> Any:
        """Stream until the patron stops (None) or the session ends (the ended session)."""
        ended: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        tasks = [
            asyncio.ensure_future(self._watch(ended)),
            asyncio.ensure_future(self._keep_connected(ended)),
            asyncio.ensure_future(self._stats()),
            asyncio.ensure_future(self._report()),
            asyncio.ensure_future(self._input()),
        ]
        stopped: asyncio.Future[Any] = asyncio.ensure_future(self.stop.wait())
        try:
            done, _ = await asyncio.wait({ended, stopped, *tasks}, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                failure = task.exception() if task in done else None
                if failure is not None:
                    raise failure
        finally:
            for future in (*tasks, stopped):
                future.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        return ended.result() if ended.done() and not self.stop.is_set() else None

    async def _watch(self, ended: asyncio.Future[Any]) -> None:
        lost = False

        async def on_lost(text: str) -> None:
            nonlocal lost
            lost = True
            self.say(text)

        async for update in self.seat.updates(on_lost=on_lost):
            if lost:
                lost = False
                self.say(f"the broker at {self.seat.cfg.broker} answers again")
            if update.session.state == S.SESSION_STATE_ENDED:
                if not ended.done():
                    ended.set_result(update.session)
                return
            for warning in update.warnings:
                self.say(f"note: {warning}")
            if update.HasField("time_left_s") and update.time_left_s != self.time_left_s:
                # Patron time: said with each change and warning (the broker sends no ticks in between).
                self.time_left_s = update.time_left_s
                minutes, seconds = divmod(update.time_left_s, 60)
                self.say(f"time left: {minutes}:{seconds:02d}")

    async def _keep_connected(self, ended: asyncio.Future[Any]) -> None:
        """A network loss shows as no video: negotiate afresh on the same session until it flows again."""
        while not ended.done():
            await asyncio.sleep(0.1)
            last = self.receiver.last_frame_us or monotonic_us()
            silent_s = (monotonic_us() - last) / 1e6
            if silent_s < self.opts.reconnect_after_s and self.receiver.connection_state not in (
                "failed",
                "closed",
            ):
                continue
            self.say(
                f"no video for {silent_s:.1f} s (connection {self.receiver.connection_state}); reconnecting"
            )
            if not await self._reconnect(ended=ended):
                return

    async def _reconnect(self, *, first: bool = False, ended: asyncio.Future[Any] | None = None) -> bool:
        """Fresh negotiations with backoff until frames flow again. False when the session ended meanwhile or the
        loss outlasted give_up_after_s (then the session is ended)."""
        began = monotonic_us()
        delay = 0.25
        attempts = 0
        while (monotonic_us() - began) / 1e6 < self.opts.give_up_after_s:
            if (ended is not None and ended.done()) or self.stop.is_set():
                return False
            attempts += 1
            try:
                await self.receiver.connect(
                    self.seat.negotiate, timeout_s=min(3.0, self.opts.connect_timeout_s)
                )
                await self.receiver.wait_frames(1, timeout_s=3.0)
            except (ReceiverError, TimeoutError) as exc:
                reason = str(exc) or type(exc).__name__
            except SeatError as exc:
                # The session may have ended (its host lost): the watch decides what comes next.
                session = self.seat.session
                if session is not None and session.state == S.SESSION_STATE_ENDED:
                    return False
                state = await self._current_state()
                if state in (None, S.SESSION_STATE_ENDED):
                    return False
                reason = str(exc)
            else:
                took_ms = (monotonic_us() - began) / 1000
                if first:
                    self._record_ready(began)
                else:
                    self.outcome.reconnects += 1
                    self.outcome.reconnect_ms.append(took_ms)
                    self.say(f"reconnected after {took_ms:.0f} ms ({attempts} attempt{'s' * (attempts > 1)})")
                return True
            self.say(f"reconnect attempt {attempts} failed ({reason}); next in {delay:.2f} s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        self.outcome.message = f"the stream could not be reconnected within {self.opts.give_up_after_s:.0f} s"
        self.say(self.outcome.message)
        await self._end("the seat lost its connection")
        return False

    async def _current_state(self) -> int | None:
        with contextlib.suppress(SeatError):
            async with asyncio.timeout(5):
                async for update in self.seat.updates():
                    return int(update.session.state)
        return None

    async def _stats(self) -> None:
        every = self.opts.stats_every_s
        last_bytes = await self.receiver.bytes_received()
        rtt = float("nan")
        tick = 0
        while True:
            await asyncio.sleep(every)
            tick += 1
            now = monotonic_us()
            window = self.receiver.stats(since_us=now - int(every * 1e6))
            total = self.receiver.stats()
            current_bytes = await self.receiver.bytes_received()
            delta = current_bytes - last_bytes if current_bytes >= last_bytes else current_bytes
            last_bytes = current_bytes
            if tick % max(1, round(2.0 / every)) == 1 or every >= 2.0:
                host = await self.seat.stream_stats()
                rtt = host.rtt_ms if host is not None and host.rtt_ms > 0 else rtt
            fps = window.fps if window.frames >= 2 else 0.0
            sample = Sample(
                at_s=round(time.monotonic() - self._started, 2),
                fps=fps,
                bitrate_kbps=delta * 8 / 1000 / every,
                capture_to_decoded_ms=window.latency_p50_ms,
                input_to_photon_ms=window.input_to_photon_p50_ms,
                rtt_ms=rtt,
                freezes=total.freezes,
            )
            self.outcome.samples.append(sample)
            self._unreported.append((time.time(), fps, None))
            self._show_stats(sample)

    async def _report(self) -> None:
        """Every report_every_s, send the stats windows since the last report; a failure is logged and the play
        goes on (those windows are dropped: the SLA counts evidence, and stale evidence is refused anyway)."""
        while True:
            await asyncio.sleep(self.opts.report_every_s)
            batch = list(self._unreported)
            self._unreported.clear()
            if not batch:
                continue
            try:
                async with asyncio.timeout(5.0):
                    self.reported += await self.seat.report_stats(batch)
            except (SeatError, TimeoutError) as exc:
                _log.warning("stream stats not reported: %s", exc or "the broker did not answer in time")
            except Exception:  # reporting never interrupts play, whatever went wrong
                _log.exception("stream stats not reported")

    async def _input(self) -> None:
        interval = 1.0 / self.opts.input_hz
        while True:
            if self.window is not None:
                if self.opts.scripted_input and self._due(interval):
                    self.window.post(scripted.step(self._input_n))
                    self._input_n += 1
                messages = self.window.poll()
                if messages is None:  # the window was closed
                    self.stop.set()
                    return
                for msg in messages:
                    await self._send(msg)
                self.window.draw()
                await asyncio.sleep(0.004)
            else:
                if self.opts.scripted_input:
                    await self._send(scripted.step(self._input_n))
                    self._input_n += 1
                await asyncio.sleep(interval)

    def _due(self, interval: float) -> bool:
        now = time.monotonic()
        if now >= getattr(self, "_next_scripted", 0.0):
            self._next_scripted = now + interval
            return True
        return False

    async def _send(self, msg: Any) -> None:
        with contextlib.suppress(ReceiverError):  # the channel is down while reconnecting: the input is stale
            await self.receiver.send(msg)

    async def _end(self, detail: str = "the patron left the seat") -> None:
        if self.seat.session is None:
            return
        try:
            async with asyncio.timeout(10):
                ended = await self.seat.end(detail)
        except (SeatError, TimeoutError) as exc:
            self.say(f"could not end the session cleanly: {exc}")
            return
        if ended is not None:
            self.outcome.stopped_by_patron = reason_name(ended.end_reason) == "ENDED_BY_PATRON"
            self.outcome.final_state, self.outcome.end_reason = (
                state_name(ended.state),
                reason_name(ended.end_reason),
            )
            self.say(describe_update_text(ended))

    # -- results ------------------------------------------------------------------------------------------

    def results(self) -> dict[str, Any]:
        s = self.receiver.stats()
        o = self.outcome
        fps_samples = [x.fps for x in o.samples]
        steady = (
            fps_samples[1:] if len(fps_samples) > 2 else fps_samples
        )  # the first interval holds the start
        latencies = [f.latency_ms for f in self.receiver.frames]
        return {
            "venue_id": self.seat.cfg.venue_id,
            "seat_id": self.seat.cfg.seat_id,
            "game_id": self.opts.game_id,
            "sessions": o.sessions,
            "final_state": o.final_state,
            "end_reason": o.end_reason,
            "stopped_by_patron": o.stopped_by_patron,
            "message": o.message,
            "session_ready_ms": [round(v, 1) for v in o.session_ready_ms],
            "session_ready_ms_p50": _pct(o.session_ready_ms, 50),
            "session_ready_ms_p95": _pct(o.session_ready_ms, 95),
            "fps_p50": _pct(steady, 50),
            "fps": round(s.fps, 2),
            "frames": s.frames,
            "unreadable_frames": s.unreadable,
            "frames_skipped": s.frames_skipped,
            "capture_to_decoded_ms_p50": _pct(latencies, 50),
            "capture_to_decoded_ms_p95": _pct(latencies, 95),
            "capture_to_decoded_ms_p99": _pct(latencies, 99),
            "inputs_sent": s.inputs_sent,
            "inputs_shown": s.inputs_shown,
            "input_to_photon_ms_p50": _nan_none(s.input_to_photon_p50_ms),
            "input_to_photon_ms_p95": _nan_none(s.input_to_photon_p95_ms),
            "input_to_photon_ms_p99": _nan_none(s.input_to_photon_p99_ms),
            "freezes": s.freezes,
            "longest_gap_ms": round(s.longest_gap_ms, 1),
            "bitrate_kbps_p50": _pct([x.bitrate_kbps for x in o.samples[1:]] or [math.nan], 50),
            "rtt_ms_p50": _pct([x.rtt_ms for x in o.samples], 50),
            "stats_reported": self.reported,
            "reconnects": o.reconnects,
            "reconnect_ms": [round(v, 1) for v in o.reconnect_ms],
            "resumes": self.seat.resumes,
            "samples": [
                {
                    "at_s": x.at_s,
                    "fps": round(x.fps, 2),
                    "bitrate_kbps": round(x.bitrate_kbps, 1),
                    "capture_to_decoded_ms": _nan_none(x.capture_to_decoded_ms),
                    "input_to_photon_ms": _nan_none(x.input_to_photon_ms),
                    "rtt_ms": _nan_none(x.rtt_ms),
                    "freezes": x.freezes,
                }
                for x in o.samples
            ],
        }


def save_picture(path: Path, window: Any | None, frame: Any | None) -> None:
    import pygame

    if window is not None:
        window.save(path)
    elif frame is not None:
        rgb = frame.to_ndarray(format="rgb24")
        pygame.image.save(
            pygame.image.frombuffer(rgb.tobytes(), (frame.width, frame.height), "RGB"), str(path)
        )


def _nan_none(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 2)


def describe_update_text(session: Any) -> str:
    from cloudseat.v1 import session_pb2

    return describe(session_pb2.SessionUpdate(session=session))


def describe_session(seat: SeatSession) -> str:
    return describe_update_text(seat.session) if seat.session is not None else ""


def _all_addresses() -> tuple[str, ...]:
    """Every IPv4 address of this machine that WebRTC may offer (what a seat uses outside tests)."""
    import socket

    addresses: set[str] = set()
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            addresses.add(str(info[4][0]))
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(
            ("192.0.2.1", 9)
        )  # no packet is sent: this asks the routing table for the outgoing address
        addresses.add(probe.getsockname()[0])
    return tuple(sorted(addresses)) or ("127.0.0.1",)
