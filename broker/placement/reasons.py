"""Why a request is still pending, judged on the batch's starting state (before anything in it was placed).

The checks run from the most basic to the most transient, so the first one that fails names the reason:

1. no site with latency data within the hard cap            -> NO_SITE_WITHIN_CAP
   (every measured site counts, also one with no hosts at all: then the answer is NO_CAPACITY_WITHIN_CAP)
2. within the cap, a usable host with room for this venue    -> else: a drained/offline host with room?
                                                                   CANDIDATES_DRAINED : NO_CAPACITY_WITHIN_CAP
3. such a host within the current target                     -> else WAITING_FOR_LOOSER_CAP
4. otherwise the room went to requests ahead in the batch    -> QUEUED

"Room for this venue" counts a host's open slots plus the slots reserved there for the venue's own lease; slots
reserved for another venue are not room. A k-slot request needs k on one host.
"""

from __future__ import annotations

import numpy as np

from broker.placement.frame import I64, Frame, build_frame
from broker.placement.model import UNREACHABLE_MS, LatencyMatrix, PendingReason, Problem, RequestId


def _site_max(frame: Frame, values: I64, hosts_mask: np.ndarray) -> I64:
    """Per site, the largest value among the masked hosts (0 where none)."""
    out = np.zeros(len(frame.sites), dtype=np.int64)
    np.maximum.at(out, frame.host_site[hosts_mask], values[hosts_mask])
    return out


def pending_reasons(frame: Frame, reqs: I64) -> list[PendingReason]:
    """The pending reason of each request in `reqs` (positions in the problem)."""
    if reqs.size == 0:
        return []
    usable = frame.host_usable
    room_open = _site_max(frame, frame.open, usable)
    room_down = _site_max(frame, frame.host_free, ~usable)
    lessee_room: dict[int, I64] = {}
    nearest_measured: dict[str, int] = {}
    out: list[PendingReason] = []
    for r in reqs.tolist():
        venue = int(frame.req_venue[r])
        k = int(frame.req_slots[r])
        lat = frame.lat[venue]
        within_cap = lat <= frame.req_cap[r]
        if not (within_cap & (lat < UNREACHABLE_MS)).any():
            venue_id = frame.venues[venue]
            nearest = nearest_measured.get(venue_id)
            if nearest is None:
                nearest = nearest_measured[venue_id] = _nearest_measured_site(frame, venue_id)
            out.append(
                PendingReason.NO_CAPACITY_WITHIN_CAP
                if nearest <= frame.req_cap[r]
                else PendingReason.NO_SITE_WITHIN_CAP
            )
            continue
        room = lessee_room.get(venue)
        if room is None:
            rows = frame.lessee_rows(venue)
            if (rows >= 0).any():
                own = np.where(rows >= 0, frame.res_count[np.maximum(rows, 0)], 0)
                room = _site_max(frame, frame.open + own, usable)
            else:
                room = room_open
            lessee_room[venue] = room
        fits = room >= k
        if not (fits & within_cap).any():
            drained = (room_down >= k) & within_cap
            out.append(
                PendingReason.CANDIDATES_DRAINED if drained.any() else PendingReason.NO_CAPACITY_WITHIN_CAP
            )
        elif not (fits & (lat <= frame.req_target[r])).any():
            out.append(PendingReason.WAITING_FOR_LOOSER_CAP)
        else:
            out.append(PendingReason.QUEUED)
    return out


def _nearest_measured_site(frame: Frame, venue_id: str) -> int:
    """The venue's lowest latency to any measured site, hosts or not (the frame only holds sites with hosts).
    Only reached for requests with no host site within their cap, so the scan over the mapping stays off the
    common path."""
    latency = frame.problem.latency
    if isinstance(latency, LatencyMatrix):
        row = latency.venue_index.get(venue_id)
        return UNREACHABLE_MS if row is None else int(np.asarray(latency.ms)[row].min(initial=UNREACHABLE_MS))
    return min((ms for (v, _), ms in latency.items() if v == venue_id), default=UNREACHABLE_MS)


def pending_reason(problem: Problem, request_id: RequestId) -> PendingReason:
    """Why `request_id` would stay pending if nothing in its batch were placed ahead of it."""
    frame = build_frame(problem)
    for r, request in enumerate(problem.requests):
        if request.id == request_id:
            return pending_reasons(frame, np.array([r], dtype=np.int64))[0]
    raise KeyError(request_id)
