"""The store as the scheduler sees it: what a placement round reads before it solves and writes after.

The scheduler's own logic (resumes first, re-planning a refused batch, the host and latency caches) talks to this
protocol rather than to asyncpg, as Nomad's scheduler talks to its `State` and `Planner`, so that logic is unit-tested
against a plain in-memory store (tests/unit/test_scheduler_logic.py). The PostgreSQL implementation is
broker.store.placement.PostgresSchedulerStore, a thin class over that module's queries, and is tested against a
real database in tests/integration/test_scheduler.py.

Requests carry one id type throughout, `placement.RequestId` (a session id as text): what `pending_batch` returns is
what the solver answers with and what `commit` and `set_pending_reasons` take back. The records are plain rows,
typed; turning them into the placement problem is the scheduler's job.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol

from broker import placement


class PendingRequest(NamedTuple):
    """A PENDING session at the head of the queue."""

    session_id: placement.RequestId
    venue_id: str
    game_id: str
    latency_cap_ms: int
    slots: int
    #: It resumes a session a lost host took from its seat: placed first, anywhere within the cap.
    resumed: bool
    #: How long it has waited, by the store's clock (so every replica loosens targets alike).
    waited_ms: int
    #: Why it waits, as last recorded ("" before its first round): a round writes only the reasons that changed.
    pending_reason: str = ""


class HostRow(NamedTuple):
    """An online host as the scheduler reads it. Compared whole: the host cache rebuilds a `placement.Host` only
    when its row changed."""

    host_id: str
    site_id: str
    gpu_class: str
    free_slots: int
    slots: int
    #: Per slot-hour, what the host's agent declared: its price where its site has no price for its class
    #: (the site's price in force comes from `SchedulerStore.prices`, worked out once per price, not per host).
    declared_price_micros: int
    games_cached: Sequence[str]
    #: Drained or draining: nothing new may go there, but an unplaced request can be told why.
    drained: bool
    #: Every image the host holds, GAME_ID@VERSION (older versions too): what a cold start there still lacks.
    images_cached: Sequence[str] = ()
    #: Its agent's link was seen dead and has not come back (the host is declared lost after the grace): nothing
    #: new goes there meanwhile.
    link_lost: bool = False


class PriceRow(NamedTuple):
    """A site's price for a GPU class, as set (FleetService.SetPrice): base, time-of-day bands, their UTC offset."""

    site_id: str
    gpu_class: str
    base_micros: int
    #: [[start_minute, end_minute, price_micros], ...] as stored (jsonb: text or decoded; broker.metering reads both)
    bands: object
    utc_offset_minutes: int


class LatencyRow(NamedTuple):
    """One measured venue→site round trip."""

    venue_id: str
    site_id: str
    rtt_ms: int


class Placement(NamedTuple):
    """One session of a batch to commit, with the site, latency and price it is placed at."""

    session_id: placement.RequestId
    host_id: str
    site_id: str
    latency_ms: int
    price_micros: int


class SchedulerStore(Protocol):
    """What a placement round reads and writes. Implementations: broker.store.placement.PostgresSchedulerStore,
    and the in-memory one of tests/unit/test_scheduler_logic.py."""

    async def pending_batch(self, limit: int) -> Sequence[PendingRequest]:
        """The head of the queue, at most `limit`: resumes first, then oldest first (then by session id)."""
        ...

    async def online_hosts(self) -> Sequence[HostRow]:
        """Every online host, drained ones too."""
        ...

    async def hosts_by_id(self, host_ids: Sequence[str]) -> Sequence[HostRow]:
        """The given hosts as `online_hosts` reads them; those no longer online are left out."""
        ...

    async def price_stamp(self) -> tuple[dt.datetime, object]:
        """The store's clock now, and any value that changes when a price is set."""
        ...

    async def prices(self) -> Sequence[PriceRow]:
        """Every site's price of every GPU class."""
        ...

    async def venue_latency_stamps(self, venue_ids: Sequence[str]) -> Mapping[str, object]:
        """When each venue's measurements last changed: any value that changes when they do (venues without any
        measurement are left out)."""
        ...

    async def venue_latency(self, venue_ids: Sequence[str]) -> Sequence[LatencyRow]:
        """The measurements of the given venues."""
        ...

    async def games_stamp(self) -> object:
        """Any value that changes when a game is put (a new version, what earlier versions lack of it)."""
        ...

    async def game_images(self) -> Mapping[str, placement.GameImage]:
        """Each game's current image by game id, with what each earlier version lacks of it (games whose image
        size is unknown are left out)."""
        ...

    async def leases_in_force(self) -> Sequence[placement.Lease]:
        """Every lease with a window running now, with what its live sessions leave unused."""
        ...

    async def commit(
        self, placements: Sequence[Placement], leased: Mapping[placement.RequestId, tuple[str, int]]
    ) -> Sequence[placement.RequestId]:
        """Place a batch at once; `leased` names the sessions placed under a lease: id -> (lease id, slots it pays).

        Sessions no longer PENDING, and sessions whose host is no longer online or is drained or draining, are
        skipped: the ids returned are those placed. If any host would go below zero free slots, nothing is placed
        and `cloudseat.errors.FailedPrecondition` is raised (someone else took slots the plan counted on)."""
        ...

    async def set_pending_reasons(
        self, reasons: Mapping[placement.RequestId, placement.PendingReason]
    ) -> None:
        """Record why each unplaced request still waits. Only requests still PENDING whose reason changed are
        written (a write notifies the session's watchers), so a round may hand over every reason, every time."""
        ...
