"""Which ended sessions a seat may resume (StartSessionRequest.resume): the contract's rule, kept in one place so the
broker that enforces it (broker.lifecycle.check_resumable) and the seats that offer it (thin_client.seat) agree.

A session may be resumed when its end was not the seat's doing — its host was lost, drained, refused or failed it,
or it never started in time — within RESUME_WINDOW_S of that end. The resumed session goes to the front of the
queue. Reasons are the names of the contract's EndReason values without their `END_REASON_` prefix.
"""

from __future__ import annotations

RESUMABLE_REASONS: frozenset[str] = frozenset(
    {"HOST_LOST", "HOST_DRAINED", "REFUSED_BY_HOST", "START_TIMEOUT", "FAILED"}
)
RESUME_WINDOW_S = 300.0
