"""One session's updates as the kiosk page sees them: a single WatchSession stream per session (`SessionFeed`),
its latest update kept as JSON for every page (and every reloaded page) that asks, with no token in it."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from cloudseat.v1 import common_pb2, session_pb2

from thin_client import seat as seat_flow
from thin_client.seat import SeatError, SeatSession

log = structlog.get_logger(__name__)

S = common_pb2.SessionState


def session_json(update: session_pb2.SessionUpdate) -> dict[str, Any]:
    """What the page is told of a session: no token, and the patron-facing line from `seat.describe`."""
    s = update.session
    ended = s.state == S.SESSION_STATE_ENDED
    return {
        "session_id": s.session_id,
        "state": seat_flow.state_name(s.state),
        "game_id": s.game_id,
        "zone_id": s.zone_id,
        "tier": common_pb2.Tier.Name(s.tier).removeprefix("TIER_"),
        "host_id": s.host_id,
        "site_id": s.site_id,
        "end_reason": seat_flow.reason_name(s.end_reason) if ended else "",
        "end_detail": s.end_detail,
        "resumable": seat_flow.resumable(s),
        "resumes_session_id": s.resumes_session_id,
        "queue_position": update.queue_position,
        "queue_length": update.queue_length,
        "warnings": list(update.warnings),
        # Patron time: seconds left when the broker sent this (null: no limit, or not streaming yet).
        "time_left_s": update.time_left_s if update.HasField("time_left_s") else None,
        "time_up": update.time_up,
        "grace_left_s": update.grace_left_s,
        "text": seat_flow.describe(update),
        # False while the kiosk cannot reach the broker to follow the session ("text" then says so).
        "broker_reachable": True,
    }


class SessionFeed:
    """One session's updates from the broker (a single WatchSession), its latest kept for every page that asks."""

    def __init__(self, seat: SeatSession, first: session_pb2.SessionUpdate) -> None:
        self.seat = seat
        self.session_id = first.session.session_id
        self.latest = session_json(first)
        self.version = 1
        self.problem = ""  # the watch failed for good: why, in one line
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._run(first), name=f"feed-{self.session_id}")

    @property
    def ended(self) -> bool:
        return bool(self.latest["state"] == "ENDED") or self._task.done()

    async def _run(self, first: session_pb2.SessionUpdate) -> None:
        try:
            # `first` is the start's answer (with its queue position): the watch's repeat of it would lose that.
            async for update in self.seat.updates(after=first, on_lost=self._lost):
                await self._publish(session_json(update))
        except SeatError as exc:
            log.warning("session watch failed", session_id=self.session_id, error=str(exc))
            self.problem = str(exc)
        finally:
            async with self._changed:
                self.version += 1
                self._changed.notify_all()

    async def _lost(self, text: str) -> None:
        """The broker cannot be reached: the session as it was, with `seat.lost_contact`'s line, until it answers
        again (its next update replaces this)."""
        await self._publish({**self.latest, "text": text, "broker_reachable": False})

    async def settle(self, update: session_pb2.SessionUpdate) -> None:
        """The broker's own answer that ended the session (EndSession): the feed is over now, not when the watch
        brings the same news, so a start right after an end is not refused as a second session."""
        if update.session.state == S.SESSION_STATE_ENDED and not self.ended:
            await self._publish(session_json(update))

    async def _publish(self, latest: dict[str, Any]) -> None:
        async with self._changed:
            self.latest, self.version = latest, self.version + 1
            self._changed.notify_all()

    async def wait_change(self, seen: int, timeout_s: float) -> None:
        """Return once the version is past ``seen``, the feed is over, or ``timeout_s`` has passed."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(lambda: self.version > seen or self._task.done())

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
