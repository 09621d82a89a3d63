"""The placement problem as data: requests, hosts, leases, parameters, and the answer.

Everything here is a frozen value. Money is integer micros (1e-6 of the currency unit), time and latency are
integer milliseconds, and time is always passed in, never read from a clock, so a batch can be replayed exactly.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from broker.placement.host_table import HostColumns

#: Latency stored for a (venue, site) pair with no measurement. Larger than any cap, so "latency <= target" is
#: simply false for it and no special case is needed in the vectorised code.
UNREACHABLE_MS = 1 << 40

#: A request's id. In the broker it is a session id in its text form, carried unchanged from the pending batch
#: through a `Solution` to the commit (broker.scheduler_store). Text rather than uuid.UUID: the solvers only compare
#: and sort ids, and the benchmarks and tests give their requests readable names.
RequestId: TypeAlias = str


class PendingReason(enum.StrEnum):
    """Why a request stayed pending after a batch; the wire contract maps these 1:1."""

    #: Feasible candidates exist within the target, but their capacity went to requests ahead in this batch.
    QUEUED = "QUEUED"
    #: No site with latency data is within the zone's hard cap.
    NO_SITE_WITHIN_CAP = "NO_SITE_WITHIN_CAP"
    #: Sites within the cap exist, but every online, non-drained host there is full (for this venue).
    NO_CAPACITY_WITHIN_CAP = "NO_CAPACITY_WITHIN_CAP"
    #: Every host within the cap that has room is drained or offline.
    CANDIDATES_DRAINED = "CANDIDATES_DRAINED"
    #: Room exists within the hard cap, but not yet within the current (tighter) target.
    WAITING_FOR_LOOSER_CAP = "WAITING_FOR_LOOSER_CAP"


@dataclass(frozen=True, slots=True)
class Request:
    """A seat asking for a session: `slots` slots on one host at a site within `target_ms` of the venue."""

    id: RequestId
    venue_id: str
    game_id: str
    cap_ms: int
    target_ms: int
    arrival_ms: int
    slots: int = 1

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError(f"request {self.id}: slots must be >= 1")
        if not 0 <= self.target_ms <= self.cap_ms:
            raise ValueError(f"request {self.id}: need 0 <= target_ms <= cap_ms")


@dataclass(frozen=True, slots=True)
class Host:
    """A GPU host as the broker sees it now; `price_micros` is the on-demand price per slot-hour in force."""

    id: str
    site_id: str
    gpu_class: str
    free_slots: int
    total_slots: int
    price_micros: int
    games: frozenset[str]
    drained: bool = False
    online: bool = True
    #: Every image the host holds, as GAME_ID@VERSION, older versions of a game too: a host holding an older
    #: version lacks only the bytes the current one added since (`GameImage.lacking_from`). A game in `games`
    #: is warm whatever this says.
    images: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not 0 <= self.free_slots <= self.total_slots:
            raise ValueError(f"host {self.id}: need 0 <= free_slots <= total_slots")
        if self.price_micros < 0:
            raise ValueError(f"host {self.id}: price_micros must be >= 0")

    @property
    def usable(self) -> bool:
        """Whether new sessions may go here: online and not drained."""
        return self.online and not self.drained


@dataclass(frozen=True, slots=True)
class Lease:
    """Slots of one GPU class reserved for one venue: at one site, or at any site within `max_latency_ms`.

    Leased slots are already paid, so they cost the lessee nothing, and no other venue may use them while the
    lease runs. `unused_slots` is what is left of the lease now (the lessee's running leased sessions excluded).
    """

    id: str
    venue_id: str
    gpu_class: str
    unused_slots: int
    site_id: str | None = None
    max_latency_ms: int | None = None

    def __post_init__(self) -> None:
        if self.unused_slots < 0:
            raise ValueError(f"lease {self.id}: unused_slots must be >= 0")


@dataclass(frozen=True, slots=True)
class GameImage:
    """What a host has to fetch to start a game: its current version's image, and what that adds to older ones.

    `size_bytes` is the image's stored size (all of it for a host holding no version; 0: unknown, so a cold
    start costs the flat `Params.cold_start_penalty_micros`). `lacking_from[v]` is how many of those bytes a host
    holding version v still lacks (cloudseat-images push records it per earlier version it finds); a version not
    named there counts as holding nothing of the current one.
    """

    version: str
    size_bytes: int
    lacking_from: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.size_bytes < 0:
            raise ValueError(f"game image {self.version}: size_bytes must be >= 0")
        if any(b < 0 for b in self.lacking_from.values()):
            raise ValueError(f"game image {self.version}: lacking_from bytes must be >= 0")


@dataclass(frozen=True, slots=True)
class LatencyPolicy:
    """How a waiting request's latency target loosens toward the zone's hard cap (GameLift PlayerLatencyPolicy).

    `steps` is ((waited_ms, percent_of_cap), ...) in increasing waited_ms, starting at 0 ms. The default starts at
    half the cap, so a fresh request goes to a near site when one has room, and reaches the full cap after 5 s,
    so nobody waits long for a host that the zone's promise allows.
    """

    steps: tuple[tuple[int, int], ...] = ((0, 50), (2_000, 75), (5_000, 100))

    def __post_init__(self) -> None:
        if not self.steps or self.steps[0][0] != 0:
            raise ValueError("latency policy: the first step must be at 0 ms waited")
        waits = [w for w, _ in self.steps]
        if waits != sorted(waits) or len(set(waits)) != len(waits):
            raise ValueError("latency policy: step times must increase")
        if any(not 0 < p <= 100 for _, p in self.steps):
            raise ValueError("latency policy: percentages must be in 1..100")

    def target_ms(self, cap_ms: int, waited_ms: int) -> int:
        """The latency target after waiting `waited_ms`: a step's percentage of `cap_ms`, never above the cap."""
        percent = self.steps[0][1]
        for wait, step_percent in self.steps:
            if waited_ms >= wait:
                percent = step_percent
            else:
                break
        return min(cap_ms, cap_ms * percent // 100)


@dataclass(frozen=True, slots=True)
class Params:
    """Weights of the objective, all integer micros.

    The defaults are set against on-demand prices of about 1-3 units per slot-hour (1,000,000-3,000,000 micros):

    - `latency_weight_micros_per_ms` 20,000: 10 ms more round trip weighs 0.2 units, about a tenth of a
      slot-hour, so a cheaper site a few ms farther wins but a far one does not.
    - `cold_start_penalty_micros` 400,000: a game not cached on the host means pulling tens of GB before the
      first frame (minutes of a patron waiting at a paid seat) plus the transfer; worth about a third of a
      slot-hour, so a warm host is preferred unless the cold one is much cheaper or nearer. It is what a cold
      start costs when the game's image size is unknown, and the most any cold start costs.
    - `cold_start_micros_per_gib` 10,000: where the image is known (`Problem.images`), a cold start costs this
      per GiB the host still lacks, rounded up to a grade (a sixteenth of `cold_start_penalty_micros`), and at
      most `cold_start_penalty_micros`: a full fetch of 40 GiB or more costs the flat penalty, a host holding
      the previous version of a game whose update added 2 GiB costs 25,000 (one grade).
    - `stay_pending_cost_micros` 1,000,000,000: several hundred times the dearest placement, so leaving a
      request pending is only chosen when no feasible host is left for it; being far above any placement's
      cost also makes the solver place as many requests as it can before it looks at prices.
    """

    latency_weight_micros_per_ms: int = 20_000
    cold_start_penalty_micros: int = 400_000
    cold_start_micros_per_gib: int = 10_000
    stay_pending_cost_micros: int = 1_000_000_000
    latency_policy: LatencyPolicy = field(default_factory=LatencyPolicy)

    def __post_init__(self) -> None:
        if min(self.latency_weight_micros_per_ms, self.cold_start_penalty_micros, self.cold_start_micros_per_gib) < 0:
            raise ValueError("params: weights must be >= 0")
        if self.stay_pending_cost_micros <= 0:
            raise ValueError("params: stay_pending_cost_micros must be > 0")


class LatencyMatrix(Mapping[tuple[str, str], int]):
    """Venue→site round-trip times as a dense integer matrix; a `Mapping[(venue_id, site_id), int]`.

    Any mapping works as `Problem.latency`; this one also hands the solvers whole rows as NumPy arrays, which
    keeps graph building vectorised. Build it once when measurements change, not per batch. Pairs without a
    measurement hold `UNREACHABLE_MS` internally and are absent from the mapping view.
    """

    __slots__ = ("_len", "ms", "site_index", "sites", "venue_index", "venues")

    def __init__(self, venues: Sequence[str], sites: Sequence[str], ms: npt.ArrayLike) -> None:
        self.venues: tuple[str, ...] = tuple(venues)
        self.sites: tuple[str, ...] = tuple(sites)
        self.venue_index: dict[str, int] = {v: i for i, v in enumerate(self.venues)}
        self.site_index: dict[str, int] = {s: i for i, s in enumerate(self.sites)}
        matrix = np.asarray(ms, dtype=np.int64)
        if matrix.shape != (len(self.venues), len(self.sites)):
            raise ValueError("latency matrix: shape must be (venues, sites)")
        if (matrix < 0).any():
            raise ValueError("latency matrix: latencies must be >= 0")
        matrix = matrix.copy()
        matrix.setflags(write=False)
        self.ms: npt.NDArray[np.int64] = matrix
        self._len = int((matrix < UNREACHABLE_MS).sum())

    @classmethod
    def from_mapping(cls, latency: Mapping[tuple[str, str], int]) -> LatencyMatrix:
        """Build the dense form of any latency mapping."""
        venues = sorted({v for v, _ in latency})
        sites = sorted({s for _, s in latency})
        vi = {v: i for i, v in enumerate(venues)}
        si = {s: i for i, s in enumerate(sites)}
        ms = np.full((len(venues), len(sites)), UNREACHABLE_MS, dtype=np.int64)
        for (venue, site), value in latency.items():
            ms[vi[venue], si[site]] = value
        return cls(venues, sites, ms)

    def __getitem__(self, key: tuple[str, str]) -> int:
        venue, site = key
        value = int(self.ms[self.venue_index[venue], self.site_index[site]])
        if value >= UNREACHABLE_MS:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[tuple[str, str]]:
        rows, cols = np.nonzero(self.ms < UNREACHABLE_MS)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            yield self.venues[r], self.sites[c]

    def __len__(self) -> int:
        return self._len

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, tuple) or len(key) != 2:
            return False
        venue, site = key
        v = self.venue_index.get(venue)
        s = self.site_index.get(site)
        return v is not None and s is not None and int(self.ms[v, s]) < UNREACHABLE_MS


@dataclass(frozen=True, slots=True)
class Problem:
    """One batch: pending requests (with their current targets), the hosts as they are now, and the leases."""

    requests: Sequence[Request]
    hosts: Sequence[Host]
    latency: Mapping[tuple[str, str], int]
    leases: Sequence[Lease] = ()
    params: Params = field(default_factory=Params)
    #: `hosts` as columns already (a HostTable's snapshot, same order); None: made from `hosts` when solving.
    host_columns: HostColumns | None = None
    #: The games' current images by game id, to price a cold start by the bytes a host lacks; a game not here
    #: costs the flat `Params.cold_start_penalty_micros` on a host that lacks it.
    images: Mapping[str, GameImage] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Solution:
    """A batch's answer.

    `cost_micros` is the objective value (placements plus `stay_pending_cost_micros` per unplaced request), so
    solvers are comparable. `lease_use` names the lease a placed request draws from and `lease_slots` how many of
    its slots that lease pays (the rest are on-demand, on the same host). `proven_optimal` is true only when the
    solver proved that no cheaper answer exists.
    """

    assignments: dict[RequestId, str]
    unplaced: dict[RequestId, PendingReason]
    cost_micros: int
    lease_use: dict[RequestId, str] = field(default_factory=dict)
    lease_slots: dict[RequestId, int] = field(default_factory=dict)
    solver: str = ""
    proven_optimal: bool = False
