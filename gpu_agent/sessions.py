"""The sessions this host runs: start a workload and its media on the broker's command, answer offers, report.

Every state change goes to the broker as a SessionEvent through `report` (the link's outbox gathers a moment's
moves into one report per session, gpu_agent.reports); the broker is the authority, so a repeated or late report is
harmless there.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import structlog
from cloudseat.images.errors import ImageError
from cloudseat.v1 import agent_pb2, common_pb2

from gpu_agent import workloads
from gpu_agent.config import AgentConfig
from gpu_agent.media import InvalidOffer, MediaConfig, MediaError, MediaSession
from gpu_agent.media.playout_delay import Mode

log = structlog.get_logger(__name__)

S = common_pb2.SessionState
R = common_pb2.EndReason
# A seat whose connection has been gone this long, without a new negotiation, has left: the session ends.
SEAT_GONE_AFTER_S = 60.0

Report = Callable[[agent_pb2.AgentMessage], None]


@dataclasses.dataclass
class RunningSession:
    session_id: str
    game_id: str
    state: common_pb2.SessionState
    media: MediaSession | None = None
    gone_timer: asyncio.TimerHandle | None = None


class SessionManager:
    def __init__(self, config: AgentConfig, media_config: MediaConfig, report: Report) -> None:
        self._config = config
        self._media_config = media_config
        self._report = report
        self.sessions: dict[str, RunningSession] = {}
        # Two reasons to take nothing new, kept apart: the provider drained the host (FleetService.DrainHost; the
        # broker's DrainCommand, cleared by an undrain) — running sessions go on, and the broker moves them at the
        # drain's deadline, never this agent —; and this agent is shutting down (SIGTERM: shut_down), which no
        # undrain reverses and which heartbeats report as `draining`.
        self.drained = False
        self.draining = False
        self._tasks: set[asyncio.Task[None]] = set()
        # The installed image tree of a game, if the host holds one, and fetching one for a cold start (the link
        # sets both: gpu_agent.images).
        self.assets: Callable[[str], Path | None] = lambda _game_id: None
        self.fetch_image: Callable[[agent_pb2.StartSessionCommand], Coroutine[Any, Any, None]] | None = None

    # -- commands ---------------------------------------------------------------------------------------------

    def start(self, cmd: agent_pb2.StartSessionCommand) -> None:
        sid = cmd.session_id
        if sid in self.sessions:
            return  # the broker resends a start after a reconnect; it is running already
        if self.draining or self.drained:
            why = "the host is shutting down" if self.draining else "the host is drained by its provider"
            self._end(sid, R.END_REASON_REFUSED_BY_HOST, why)
            return
        if len(self.sessions) >= self._config.slots:
            self._end(sid, R.END_REASON_REFUSED_BY_HOST, "no free slot on the host")
            return
        session = RunningSession(sid, cmd.game_id, S.SESSION_STATE_STARTING)
        self.sessions[sid] = session
        self._event(sid, S.SESSION_STATE_STARTING)
        self._spawn(self._bring_up(session, cmd))

    async def _bring_up(self, session: RunningSession, cmd: agent_pb2.StartSessionCommand) -> None:
        sid = session.session_id
        if cmd.image_ref and self.fetch_image is not None:
            # A cold start: the session stays STARTING while the host fetches the game's image.
            try:
                await self.fetch_image(cmd)
            except ImageError as exc:
                self._drop(sid)
                self._end(sid, R.END_REASON_FAILED, f"the game's image could not be fetched: {exc.message}")
                return
            if sid not in self.sessions:  # stopped while fetching
                return
        try:
            source = workloads.make_source(
                cmd.game_id,
                cmd.tier.width,
                cmd.tier.height,
                cmd.tier.fps,
                dict(self._config.sources),
                self.assets(cmd.game_id),
            )
        except workloads.UnknownGame as exc:
            self._drop(sid)
            self._end(sid, R.END_REASON_UNKNOWN_GAME, str(exc))
            return
        except workloads.WorkloadError as exc:
            self._drop(sid)
            self._end(sid, R.END_REASON_FAILED, f"workload failed to start: {exc}")
            return
        playout = playout_mode(cmd.playout)
        session.media = MediaSession(
            sid,
            source,
            bitrate_kbps=cmd.tier.bitrate_kbps,
            config=self._media_config,
            on_streaming=lambda: self._streaming(sid),
            on_closed=lambda reason: self._seat_left(sid, reason),
            playout=playout,
        )
        if sid not in self.sessions:  # stopped while starting
            await session.media.close()
            return
        session.state = S.SESSION_STATE_READY
        self._event(sid, S.SESSION_STATE_READY)
        log.info(
            "session ready",
            session_id=sid,
            game_id=cmd.game_id,
            tier=f"{cmd.tier.width}x{cmd.tier.height}@{cmd.tier.fps}",
            playout=playout.value,
        )

    def stop(self, session_id: str, reason: common_pb2.EndReason) -> None:
        """The broker ended the session: let go of it (no report: the broker knows)."""
        session = self.sessions.pop(session_id, None)
        if session is None:
            return
        log.info(
            "session stopped by the broker", session_id=session_id, reason=common_pb2.EndReason.Name(reason)
        )
        self._spawn(self._close(session))

    async def negotiate(self, cmd: agent_pb2.NegotiateCommand) -> agent_pb2.NegotiateResult:
        result = agent_pb2.NegotiateResult(correlation_id=cmd.correlation_id)
        session = self.sessions.get(cmd.session_id)
        if session is None or session.media is None:
            result.error = "no such session on this host"
            return result
        try:
            answer = await session.media.answer(cmd.offer.sdp)
        except InvalidOffer as exc:
            log.warning("offer refused", session_id=cmd.session_id, error=str(exc))
            result.error = f"malformed offer: {exc}"
            return result
        except MediaError as exc:
            log.warning("negotiation failed", session_id=cmd.session_id, error=str(exc))
            result.error = f"negotiation failed: {exc}"
            return result
        if session.gone_timer is not None:
            session.gone_timer.cancel()
            session.gone_timer = None
        result.answer.CopyFrom(common_pb2.SessionDescription(type="answer", sdp=answer))
        return result

    # -- media callbacks -------------------------------------------------------------------------------------

    def _streaming(self, session_id: str) -> None:
        session = self.sessions.get(session_id)
        if session is not None and session.state != S.SESSION_STATE_STREAMING:
            session.state = S.SESSION_STATE_STREAMING
            self._event(session_id, S.SESSION_STATE_STREAMING)

    def _seat_left(self, session_id: str, reason: str) -> None:
        """The seat's connection closed or failed. A seat may come back (ICE restart, a fresh Negotiate); only a
        seat gone for SEAT_GONE_AFTER_S ends the session."""
        session = self.sessions.get(session_id)
        if session is None or session.gone_timer is not None:
            return
        log.info("seat connection lost; waiting for it to come back", session_id=session_id, reason=reason)
        session.gone_timer = asyncio.get_running_loop().call_later(
            SEAT_GONE_AFTER_S, lambda: self.fail(session_id, f"the seat did not come back ({reason})")
        )

    # -- ending -----------------------------------------------------------------------------------------------

    def fail(self, session_id: str, detail: str, reason: common_pb2.EndReason = R.END_REASON_FAILED) -> None:
        """End a session from this side (the workload failed, the seat is gone, the host drains)."""
        session = self.sessions.pop(session_id, None)
        if session is None:
            return
        self._end(session_id, reason, detail)
        self._spawn(self._close(session))

    async def shut_down(self, grace_s: float) -> None:
        """The agent is leaving (SIGTERM): take nothing new; let running sessions go on for grace_s (the config's
        drain_grace_s), then hand the rest back (HOST_DRAINED), for their seats to resume elsewhere. A provider's
        drain does not come here: it only sets `drained`."""
        self.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        # Sessions end by several paths (patron, broker, seat gone); a short poll bounded by the grace period is
        # simpler than an event each of them would have to set.
        while self.sessions and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(min(0.5, max(0.0, deadline - loop.time())))
        for sid in list(self.sessions):
            self.fail(sid, "the host is shutting down", R.END_REASON_HOST_DRAINED)
        await self.close()

    async def close(self) -> None:
        for session in list(self.sessions.values()):
            await self._close(session)
        self.sessions.clear()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def running(self) -> list[agent_pb2.RunningSession]:
        return [
            agent_pb2.RunningSession(session_id=s.session_id, state=s.state) for s in self.sessions.values()
        ]

    def stats(self) -> list[agent_pb2.SessionStats]:
        out = []
        for s in self.sessions.values():
            if s.media is None:
                continue
            st = s.media.stats()
            out.append(
                agent_pb2.SessionStats(
                    session_id=s.session_id,
                    fps_sent=st.fps_sent,
                    bitrate_kbps=int(st.bitrate_kbps),
                    rtt_ms=st.rtt_ms,
                    loss_pct=st.loss_pct,
                    encode_ms=st.encode_ms,
                )
            )
        return out

    # -- helpers ----------------------------------------------------------------------------------------------

    def _drop(self, session_id: str) -> None:
        self.sessions.pop(session_id, None)

    async def _close(self, session: RunningSession) -> None:
        if session.gone_timer is not None:
            session.gone_timer.cancel()
        if session.media is not None:
            with contextlib.suppress(Exception):
                await session.media.close()

    def _event(
        self,
        session_id: str,
        state: common_pb2.SessionState,
        reason: common_pb2.EndReason = R.END_REASON_UNSPECIFIED,
        detail: str = "",
    ) -> None:
        self._report(
            agent_pb2.AgentMessage(
                session_event=agent_pb2.SessionEvent(
                    session_id=session_id, state=state, end_reason=reason, detail=detail[:200]
                )
            )
        )

    def _end(self, session_id: str, reason: common_pb2.EndReason, detail: str) -> None:
        log.info(
            "session ended here",
            session_id=session_id,
            reason=common_pb2.EndReason.Name(reason),
            detail=detail,
        )
        self._event(session_id, S.SESSION_STATE_ENDED, reason, detail)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def playout_mode(value: int) -> Mode:
    """The start command's playout mode; AUTO for UNSPECIFIED (an older broker) and for a value this agent does not
    know (a newer broker's), which is logged."""
    if value == common_pb2.PLAYOUT_MODE_UNSPECIFIED:
        return Mode.AUTO
    try:
        return Mode(common_pb2.PlayoutMode.Name(value).removeprefix("PLAYOUT_MODE_"))
    except ValueError:
        log.warning("unknown playout mode, AUTO used", playout=value)
        return Mode.AUTO
