"""The hosts as the columns a frame is made of, kept between rounds so a round costs the changes, not the fleet.

`build_frame` turns every host into NumPy columns one Python object at a time: at 10,000 hosts that was about 6 ms
of every round, most of a small batch's solve, although a round changes a few dozen hosts. A `HostTable` keeps the
columns and rewrites only the row of a host that changed; `snapshot` hands a round copies it may keep while the
table moves on. The names in the columns (sites, GPU classes, what hosts hold) are numbered once and keep their
number; `replace` (a full read) numbers them afresh, so names no host uses any more do not pile up.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from broker.placement.coldstart import Holding
from broker.placement.model import Host

I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class HostColumns:
    """One value per host, by position in the host list they were made with; names are indexes into the lists."""

    site: I64  # index into `sites`
    gpu_class: I64  # index into `classes`
    games: I64  # index into `gamesets`
    price: I64
    free: I64
    total: I64
    usable: B  # online and not drained
    sites: list[str]
    classes: list[str]
    #: what hosts hold, each once: (warm games, images held); hosts holding the same versions pool together
    gamesets: list[Holding]

    @property
    def n_hosts(self) -> int:
        return int(self.site.size)


def positions(values: Sequence[K], index: dict[K, int]) -> I64:
    """Positions of `values` in `index`, adding new ones in order of first appearance."""
    for value in dict.fromkeys(values):
        index.setdefault(value, len(index))
    return np.fromiter(map(index.__getitem__, values), dtype=np.int64, count=len(values))


def holding(host: Host) -> Holding:
    """What `host` holds, as placement tells hosts apart by it."""
    return host.games, host.images


def host_columns(hosts: Sequence[Host]) -> HostColumns:
    """The columns of `hosts`, made from scratch."""
    sites: dict[str, int] = {}
    classes: dict[str, int] = {}
    n = len(hosts)
    # A holding is a pair of sets: number each kind of set apart (a frozenset caches its hash, a pair does not),
    # then the pairs that occur.
    warm: dict[frozenset[str], int] = {}
    held: dict[frozenset[str], int] = {}
    warm_at = positions([h.games for h in hosts], warm)
    held_at = positions([h.images for h in hosts], held)
    _, first, gameset = np.unique(warm_at * max(len(held), 1) + held_at, return_index=True, return_inverse=True)
    return HostColumns(
        site=positions([h.site_id for h in hosts], sites),
        gpu_class=positions([h.gpu_class for h in hosts], classes),
        games=gameset.reshape(-1).astype(np.int64),
        price=np.fromiter([h.price_micros for h in hosts], dtype=np.int64, count=n),
        free=np.fromiter([h.free_slots for h in hosts], dtype=np.int64, count=n),
        total=np.fromiter([h.total_slots for h in hosts], dtype=np.int64, count=n),
        usable=np.fromiter([h.online and not h.drained for h in hosts], dtype=np.bool_, count=n),
        sites=list(sites),
        classes=list(classes),
        gamesets=[holding(hosts[i]) for i in first.tolist()],
    )


class HostTable:
    """Hosts by id and their columns, changed one host at a time.

    A removed host's row is filled with the last row (so positions stay dense); positions are therefore only
    meaningful within one `snapshot`.
    """

    def __init__(self) -> None:
        self._hosts: list[Host] = []
        self._position: dict[str, int] = {}
        self._sites: dict[str, int] = {}
        self._classes: dict[str, int] = {}
        self._gamesets: dict[Holding, int] = {}
        self._rows = np.zeros((7, 0), dtype=np.int64)  # site, class, games, price, free, total, usable

    def __len__(self) -> int:
        return len(self._hosts)

    def __contains__(self, host_id: object) -> bool:
        return host_id in self._position

    def get(self, host_id: str) -> Host | None:
        at = self._position.get(host_id)
        return None if at is None else self._hosts[at]

    def replace(self, hosts: Iterable[Host]) -> None:
        """Hold exactly `hosts`, in that order, with the names numbered afresh."""
        self._hosts = list(hosts)
        self._position = {h.id: i for i, h in enumerate(self._hosts)}
        cols = host_columns(self._hosts)
        self._sites = {name: i for i, name in enumerate(cols.sites)}
        self._classes = {name: i for i, name in enumerate(cols.classes)}
        self._gamesets = {games: i for i, games in enumerate(cols.gamesets)}
        self._rows = np.vstack(
            [cols.site, cols.gpu_class, cols.games, cols.price, cols.free, cols.total, cols.usable.astype(np.int64)]
        )

    def put(self, host: Host) -> None:
        """Add `host`, or replace the host of its id."""
        at = self._position.get(host.id)
        if at is None:
            at = len(self._hosts)
            self._hosts.append(host)
            self._position[host.id] = at
            if at >= self._rows.shape[1]:
                grown = np.zeros((7, max(16, 2 * self._rows.shape[1])), dtype=np.int64)
                grown[:, :at] = self._rows[:, :at]
                self._rows = grown
        else:
            self._hosts[at] = host
        self._rows[:, at] = (
            self._sites.setdefault(host.site_id, len(self._sites)),
            self._classes.setdefault(host.gpu_class, len(self._classes)),
            self._gamesets.setdefault(holding(host), len(self._gamesets)),
            host.price_micros,
            host.free_slots,
            host.total_slots,
            int(host.online and not host.drained),
        )

    def remove(self, host_id: str) -> None:
        """Forget the host of `host_id` (nothing when there is none)."""
        at = self._position.pop(host_id, None)
        if at is None:
            return
        last = len(self._hosts) - 1
        moved = self._hosts.pop()
        if at != last:
            self._hosts[at] = moved
            self._position[moved.id] = at
            self._rows[:, at] = self._rows[:, last]

    def snapshot(self) -> tuple[list[Host], HostColumns]:
        """The hosts and their columns as they are now: copies, which later changes to the table leave alone."""
        n = len(self._hosts)
        rows = self._rows[:, :n].copy()
        return list(self._hosts), HostColumns(
            site=rows[0],
            gpu_class=rows[1],
            games=rows[2],
            price=rows[3],
            free=rows[4],
            total=rows[5],
            usable=rows[6].astype(np.bool_),
            sites=list(self._sites),
            classes=list(self._classes),
            gamesets=list(self._gamesets),
        )
