"""Check any solution against the hard constraints, independently of the solver that produced it.

Written with plain loops over the problem's objects (not the solvers' arrays), so a bug in the shared vectorised
code cannot hide itself here. Only the lease reservation comes from `frame.reserve_leases`, because where a
lease's slots are reserved is part of the problem's definition, not of any solver.
"""

from __future__ import annotations

from collections import Counter

from broker.placement.coldstart import cold_start_micros
from broker.placement.frame import reserve_leases
from broker.placement.model import Host, PendingReason, Problem, Request, Solution


def placement_cost(problem: Problem, request: Request, host: Host, leased_slots: int) -> int:
    """Objective term of one placement: what the venue pays, plus latency and cold-start terms."""
    params = problem.params
    latency = problem.latency[(request.venue_id, host.site_id)]
    cold = cold_start_micros(params, problem.images, request.game_id, host.games, host.images)
    paid = host.price_micros * (request.slots - leased_slots)
    return paid + params.latency_weight_micros_per_ms * latency + cold


def evaluate(problem: Problem, solution: Solution) -> int:
    """The objective value of `solution` recomputed from the problem (requests missing from it count as pending)."""
    hosts = {h.id: h for h in problem.hosts}
    total = 0
    for request in problem.requests:
        host = hosts.get(solution.assignments.get(request.id, ""))
        if host is None:
            total += problem.params.stay_pending_cost_micros
        else:
            total += placement_cost(problem, request, host, solution.lease_slots.get(request.id, 0))
    return total


def validate_solution(problem: Problem, solution: Solution) -> list[str]:
    """Every broken hard constraint of `solution`, one line each; an empty list means it is valid.

    Checked: each request placed or pending exactly once; hosts exist, are online and not drained; latency
    measured and within the request's target (so within its cap); per host, slots used within free slots; other
    venues only on open slots (free minus reserved), lessees on their own reserved slots; lease use only by the
    lessee, within the lease; the reported cost equals the objective.
    """
    errors: list[str] = []
    hosts = {h.id: h for h in problem.hosts}
    leases = {lease.id: lease for lease in problem.leases}
    reserved = reserve_leases(problem)
    reserved_on_host: Counter[str] = Counter()
    for by_host in reserved.values():
        for host_id, slots in by_host.items():
            reserved_on_host[host_id] += slots

    ids = [r.id for r in problem.requests]
    for rid, count in Counter(ids).items():
        if count > 1:
            errors.append(f"request {rid}: id appears {count} times in the batch")
    known = set(ids)
    for rid in (set(solution.assignments) | set(solution.unplaced)) - known:
        errors.append(f"request {rid}: not in the batch")
    for rid in sorted(set(solution.assignments) & set(solution.unplaced)):
        errors.append(f"request {rid}: both placed and pending")
    for rid in sorted(known - set(solution.assignments) - set(solution.unplaced)):
        errors.append(f"request {rid}: neither placed nor pending")
    for rid, reason in solution.unplaced.items():
        if not isinstance(reason, PendingReason):
            errors.append(f"request {rid}: pending reason {reason!r} is not a PendingReason")

    used: Counter[str] = Counter()
    leased_on: Counter[tuple[str, str]] = Counter()  # (lease, host) -> slots
    leased_total: Counter[str] = Counter()
    open_used: Counter[str] = Counter()
    for request in problem.requests:
        if request.id not in solution.assignments:
            continue
        host_id = solution.assignments[request.id]
        host = hosts.get(host_id)
        if host is None:
            errors.append(f"request {request.id}: unknown host {host_id}")
            continue
        if not host.online:
            errors.append(f"request {request.id}: host {host_id} is offline")
        if host.drained:
            errors.append(f"request {request.id}: host {host_id} is drained")
        latency = problem.latency.get((request.venue_id, host.site_id))
        if latency is None:
            errors.append(f"request {request.id}: no latency from {request.venue_id} to {host.site_id}")
        elif latency > request.cap_ms:
            errors.append(f"request {request.id}: latency {latency} ms above cap {request.cap_ms} ms")
        elif latency > request.target_ms:
            errors.append(f"request {request.id}: latency {latency} ms above target {request.target_ms} ms")
        used[host_id] += request.slots
        leased = solution.lease_slots.get(request.id, 0)
        lease_id = solution.lease_use.get(request.id)
        if leased and lease_id is None:
            errors.append(f"request {request.id}: leased slots without a lease")
        if lease_id is not None:
            lease = leases.get(lease_id)
            if lease is None:
                errors.append(f"request {request.id}: unknown lease {lease_id}")
            elif lease.venue_id != request.venue_id:
                errors.append(f"request {request.id}: uses lease {lease_id} of venue {lease.venue_id}")
            if not 0 < leased <= request.slots:
                errors.append(f"request {request.id}: {leased} leased slots out of {request.slots}")
            leased_on[(lease_id, host_id)] += leased
            leased_total[lease_id] += leased
        open_used[host_id] += request.slots - leased

    for host_id, slots in used.items():
        host = hosts[host_id]
        if slots > host.free_slots:
            errors.append(f"host {host_id}: {slots} slots placed, {host.free_slots} free")
        open_slots = host.free_slots - reserved_on_host[host_id]
        if open_used[host_id] > open_slots:
            errors.append(
                f"host {host_id}: {open_used[host_id]} unleased slots placed, {open_slots} not reserved"
            )
    for (lease_id, host_id), slots in leased_on.items():
        held = reserved.get(lease_id, {}).get(host_id, 0)
        if slots > held:
            errors.append(f"lease {lease_id}: {slots} slots used on host {host_id}, {held} reserved there")
    for lease_id, slots in leased_total.items():
        lease = leases.get(lease_id)
        if lease is not None and slots > lease.unused_slots:
            errors.append(f"lease {lease_id}: {slots} slots used, {lease.unused_slots} unused")

    if not errors:
        expected = evaluate(problem, solution)
        if expected != solution.cost_micros:
            errors.append(f"cost: reported {solution.cost_micros}, objective is {expected}")
    return errors
