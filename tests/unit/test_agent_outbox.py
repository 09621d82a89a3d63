"""The agent's outbox (gpu_agent.link.Outbox): session events gathered over the window, everything in order."""

from __future__ import annotations

import asyncio

from cloudseat.v1 import agent_pb2, common_pb2

from gpu_agent.link import Outbox

S = common_pb2.SessionState


def _event(sid: str, state: common_pb2.SessionState, **kw: object) -> agent_pb2.AgentMessage:
    return agent_pb2.AgentMessage(
        session_event=agent_pb2.SessionEvent(session_id=sid, state=state, **kw)  # type: ignore[arg-type]
    )


def _drain(outbox: Outbox) -> list[tuple[str, str, int]]:
    out = []
    while not outbox.queue.empty():
        msg = outbox.queue.get_nowait()
        outbox.sent()
        kind = str(msg.WhichOneof("body"))
        if kind == "session_event":
            out.append((kind, msg.session_event.session_id, int(msg.session_event.state)))
        else:
            out.append((kind, "", 0))
    return out


async def test_a_moments_moves_go_as_one_report_per_session_when_the_window_ends() -> None:
    outbox = Outbox(window_s=0.05)
    outbox.put(_event("a", S.SESSION_STATE_STARTING))
    outbox.put(_event("b", S.SESSION_STATE_STARTING))
    outbox.put(_event("a", S.SESSION_STATE_READY))
    assert outbox.queue.empty() and not outbox.flushed.is_set()
    async with asyncio.timeout(5):
        while outbox.queue.empty():
            await asyncio.sleep(0.01)
    assert _drain(outbox) == [
        ("session_event", "a", S.SESSION_STATE_READY),
        ("session_event", "b", S.SESSION_STATE_STARTING),
    ]
    assert outbox.flushed.is_set()


async def test_another_message_lets_the_gathered_moves_go_first() -> None:
    outbox = Outbox(window_s=60)
    outbox.put(_event("a", S.SESSION_STATE_READY))
    outbox.put(agent_pb2.AgentMessage(negotiate_result=agent_pb2.NegotiateResult(correlation_id="c")))
    outbox.put(_event("a", S.SESSION_STATE_ENDED, end_reason=common_pb2.END_REASON_FAILED, detail="gone"))
    assert _drain(outbox) == [("session_event", "a", S.SESSION_STATE_READY), ("negotiate_result", "", 0)]
    assert not outbox.flushed.is_set()  # the ENDED is still gathered
    outbox.flush()  # as the agent does when it leaves
    msg = outbox.queue.get_nowait()
    outbox.sent()
    assert msg.session_event.end_reason == common_pb2.END_REASON_FAILED and msg.session_event.detail == "gone"
    assert outbox.flushed.is_set()
