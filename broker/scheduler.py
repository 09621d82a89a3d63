"""The placement loop: gather pending requests, solve a batch off the event loop, commit it in one transaction.

Runs only on the replica that holds the placement lease (broker.leader). A commit the database refuses (another
writer took a slot this round counted on) re-plans from fresh host state instead of failing the patrons.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import asyncpg
import structlog

from broker import errors, placement
from broker.store import placement as placement_store

log = structlog.get_logger(__name__)

# Even with nothing happening, a round runs this often: waiting requests' latency targets loosen with time.
_TICK_S = 0.5
# A refused commit is re-planned this many times in one round before the round gives up (the next round retries).
_REPLANS = 3

Solver = Callable[[placement.Problem], placement.Solution]


def build_problem(
    pending: Sequence[Mapping[str, Any]],
    hosts: Sequence[Mapping[str, Any]],
    latencies: Sequence[Mapping[str, Any]],
    params: placement.Params,
) -> placement.Problem:
    """Turn database rows into the pure placement problem (targets loosened by how long each request waited)."""
    requests = [
        placement.Request(
            id=str(r["session_id"]),
            venue_id=r["venue_id"],
            game_id=r["game_id"],
            cap_ms=r["latency_cap_ms"],
            # A resume was playing a moment ago: anywhere within the cap beats waiting for a near host.
            target_ms=(
                r["latency_cap_ms"]
                if r["resumed"]
                else params.latency_policy.target_ms(r["latency_cap_ms"], r["waited_ms"])
            ),
            arrival_ms=-r["waited_ms"],
            slots=r["slots"],
        )
        for r in pending
    ]
    host_list = [
        placement.Host(
            id=h["host_id"],
            site_id=h["site_id"],
            gpu_class=h["gpu_class"],
            free_slots=h["free_slots"],
            total_slots=h["slots"],
            price_micros=h["price_micros"],
            games=frozenset(h["games_cached"]),
            drained=h["drained"],
            online=True,
        )
        for h in hosts
    ]
    latency = {(r["venue_id"], r["site_id"]): r["rtt_ms"] for r in latencies}
    return placement.Problem(requests=requests, hosts=host_list, latency=latency, params=params)


class Scheduler:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        solver: Solver,
        window_s: float,
        batch_max: int,
        params: placement.Params | None = None,
    ) -> None:
        self._pool = pool
        self._solver = solver
        self._window_s = window_s
        self._batch_max = batch_max
        self._params = params or placement.Params()
        self._wake = asyncio.Event()
        self.rounds = 0
        self.replans = 0

    def wake(self) -> None:
        self._wake.set()

    def on_change(self, change: Mapping[str, Any]) -> None:
        """A new request arrived, or a session let go of its host's slots: a round may place something."""
        if (change["state"] == "PENDING" and change["seq"] == 1) or (
            change["state"] == "ENDED" and change.get("host_id")
        ):
            self._wake.set()

    async def run(self) -> None:
        """Place until cancelled (the caller cancels when this replica loses the lease)."""
        while True:
            try:
                async with asyncio.timeout(_TICK_S):
                    await self._wake.wait()
                # Gather: let a burst of requests join the same batch.
                await asyncio.sleep(self._window_s)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                while await self.round() >= self._batch_max:
                    pass
            except errors.CloudseatError as exc:
                log.warning("placement round failed", error=str(exc))
                await asyncio.sleep(_TICK_S)

    async def round(self) -> int:
        """One batch: returns how many pending requests it considered.

        Resumes (sessions a lost host took from their seats) are placed first, on their own: a joint solve would
        weigh them against the rest by cost alone, and they must win any scarce slot."""
        pending = await placement_store.pending_batch(self._pool, self._batch_max)
        if not pending:
            return 0
        self.rounds += 1
        resumes = [r for r in pending if r["resumed"]]
        others = [r for r in pending if not r["resumed"]]
        for part in (resumes, others):
            if part:
                await self._place(part)
        return len(pending)

    async def _place(self, pending: Sequence[Mapping[str, Any]]) -> None:
        venues = sorted({r["venue_id"] for r in pending})
        for attempt in range(_REPLANS):
            hosts = await placement_store.candidate_hosts(self._pool)
            latencies = await placement_store.venue_latency(self._pool, venues)
            problem = build_problem(pending, hosts, latencies, self._params)
            started = time.perf_counter()
            solution = await asyncio.to_thread(self._solver, problem)
            solve_ms = (time.perf_counter() - started) * 1000
            try:
                placed = await placement_store.commit(self._pool, self._placements(problem, solution))
            except errors.FailedPrecondition:
                self.replans += 1
                log.info("batch refused by the database; re-planning", attempt=attempt + 1)
                continue
            await placement_store.set_pending_reasons(
                self._pool, [(uuid.UUID(rid), reason.value) for rid, reason in solution.unplaced.items()]
            )
            log.debug(
                "placement round",
                pending=len(pending),
                placed=len(placed),
                solve_ms=round(solve_ms, 2),
            )
            return
        log.warning("batch refused repeatedly; leaving it for the next round", pending=len(pending))

    @staticmethod
    def _placements(
        problem: placement.Problem, solution: placement.Solution
    ) -> list[tuple[uuid.UUID, str, str, int, int]]:
        hosts = {h.id: h for h in problem.hosts}
        venue_of = {r.id: r.venue_id for r in problem.requests}
        out = []
        for rid, host_id in solution.assignments.items():
            host = hosts[host_id]
            out.append(
                (
                    uuid.UUID(rid),
                    host_id,
                    host.site_id,
                    problem.latency[(venue_of[rid], host.site_id)],
                    host.price_micros,
                )
            )
        return out
