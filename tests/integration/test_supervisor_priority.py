"""`serve --tenant-nice N`: the tenant workers run N lower in the CPU's priority than the leader's and the agents'
processes, so a placement round does not wait for a core behind the tenant calls it serves
(docs/loadtest-fleet.md#the-notify-lock-and-quiet-pinned-cores). Read back from /proc, the real processes."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from broker.config import BrokerConfig
from broker.server import ALL_ROLES
from broker.supervisor import Supervisor, plan


def _nice(pid: int) -> int:
    # /proc/PID/stat: the 19th field is the niceness (the name in field 2 is in parentheses and may hold spaces).
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[16])


def test_the_plan_lowers_only_the_tenant_workers() -> None:
    parts = plan(ALL_ROLES, workers=2, tenant_nice=7)
    assert {p.name: p.nice for p in parts} == {"tenant-0": 7, "tenant-1": 7, "agents": 0, "leader": 0}
    assert all(p.nice == 0 for p in plan(ALL_ROLES, workers=2))


async def test_tenant_workers_run_at_the_niceness_asked(broker_config: BrokerConfig) -> None:
    config = dataclasses.replace(broker_config, agent_listen="127.0.0.1:0")
    sup = Supervisor(config, workers=1, tenant_nice=5)
    await sup.start()
    try:
        own = os.nice(0)
        pids = sup.pids()
        assert _nice(pids["tenant-0"]) == min(19, own + 5)
        assert _nice(pids["leader"]) == own and _nice(pids["agents"]) == own
    finally:
        await sup.stop()
