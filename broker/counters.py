"""Counters that every process of one broker adds to and any of them reads whole: gRPC messages in and out, calls
shed, placements and how long they waited.

A broker runs its roles in several processes (broker.supervisor); /metrics is served by whichever tenant worker the
scrape reaches, and must show the broker's totals, not that worker's. So the counters live in one small shared file
(mmap): a row of 64-bit slots per process, each process writing only its own row, any process summing the rows.
A single writer per row needs no lock, and aligned 64-bit stores are whole on the machines we run on. A process that
restarts takes its row back and counts on from where it was, so totals never go down.

Without a file (tests, a one-process broker), the counters are an ordinary in-memory row.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Mapping
from pathlib import Path

from broker.threats import KINDS

# Upper bounds of the placement-wait histogram's buckets, in seconds (the last is +Inf).
PLACEMENT_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# The parts of a placement round the leader times (broker.scheduler): reading the batch, the hosts, latencies and
# leases; solving; committing the placements and the reasons. Buckets in seconds (the last is +Inf).
ROUND_PHASES = ("read", "solve", "commit")
ROUND_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

NAMES: tuple[str, ...] = (
    "grpc_messages_in",
    "grpc_messages_out",
    "calls_shed",
    "placements",
    # broker.threats' kinds: refusals seen, and alerts raised.
    *(f"security_events_{kind}" for kind in KINDS),
    *(f"security_alerts_{kind}" for kind in KINDS),
    "placement_wait_ms_sum",
    *(f"placement_wait_le_{i}" for i in range(len(PLACEMENT_BUCKETS_S))),
    "placement_rounds",
    *(f"round_{phase}_us_sum" for phase in ROUND_PHASES),
    *(f"round_{phase}_le_{i}" for phase in ROUND_PHASES for i in range(len(ROUND_BUCKETS_S))),
)
_INDEX = {name: i for i, name in enumerate(NAMES)}
_WIDTH = 8  # bytes per counter


class Counters:
    """This process's row of the broker's counters, and the sums of all rows."""

    def __init__(self, path: Path | None = None, *, row: int = 0, rows: int = 1) -> None:
        self._row = row
        self._rows = rows
        size = len(NAMES) * rows * _WIDTH
        if path is None:
            self._buffer: mmap.mmap | bytearray = bytearray(size)
        else:
            fd = os.open(path, os.O_RDWR)
            try:
                self._buffer = mmap.mmap(fd, size)
            finally:
                os.close(fd)
        self._view = memoryview(self._buffer).cast("q")
        self._base = row * len(NAMES)

    @staticmethod
    def create(path: Path, rows: int) -> None:
        """Make the shared file for `rows` processes, all counters at zero."""
        with open(path, "wb") as f:
            f.truncate(len(NAMES) * rows * _WIDTH)

    def add(self, name: str, n: int = 1) -> None:
        self._view[self._base + _INDEX[name]] += n

    def placed(self, waited_s: float) -> None:
        """One placement that waited `waited_s` (by the database clock) from its request."""
        self.add("placements")
        self.add("placement_wait_ms_sum", round(waited_s * 1000))
        for i, bound in enumerate(PLACEMENT_BUCKETS_S):
            if waited_s <= bound:
                self.add(f"placement_wait_le_{i}")
                break

    def round_phases(self, seconds: Mapping[str, float]) -> None:
        """One placement round (or one attempt of it) that spent `seconds[phase]` in each of ROUND_PHASES."""
        self.add("placement_rounds")
        for phase in ROUND_PHASES:
            value = seconds.get(phase, 0.0)
            self.add(f"round_{phase}_us_sum", round(value * 1e6))
            for i, bound in enumerate(ROUND_BUCKETS_S):
                if value <= bound:
                    self.add(f"round_{phase}_le_{i}")
                    break

    def totals(self) -> Mapping[str, int]:
        """Every counter summed over all processes' rows."""
        width = len(NAMES)
        return {name: sum(self._view[r * width + i] for r in range(self._rows)) for name, i in _INDEX.items()}
