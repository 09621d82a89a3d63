"""`--site-loss SITE@SECONDS`: a whole site loses power during the window, and the region's answer is measured.

At SECONDS into the window the orchestrator picks the site (a site id, or `auto`: the one holding the most sessions
at that moment) and sends ("site_down", site) to every agent worker: each cuts that site's hosts off at once, as a
power loss would (no goodbye, nothing more on their links), and answers ("site_down", {"site", "dropped", "at"}),
`at` on the monotonic clock every process here shares. Then the patron workers hear ("site_down", site) too: the
seats whose sessions were there lost their stream, and each watches its session end and resumes it
(loadtest.fleet_patrons). The patrons are told only once the agents have cut the hosts, so no seat resumes a
session whose host still runs; the figures count from the agents' `at`, not from the telling.

`SiteLoss.parse` and `pick` are pure; `cut` is the orchestrator's side during the window.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loadtest import fleet_agents

#: How long the orchestrator waits for every agent worker to say it cut the site's hosts.
ANSWER_TIMEOUT_S = 30.0


@dataclasses.dataclass(frozen=True)
class SiteLoss:
    """Which site goes down (None: `auto`, the one holding the most sessions then) and when, in seconds into the
    measured window."""

    site: str | None
    at_s: float

    @classmethod
    def parse(cls, text: str) -> SiteLoss:
        """`SITE@SECONDS` (`auto@20`, `site-007@12.5`); ValueError saying what is wrong."""
        site, sep, seconds = text.strip().rpartition("@")
        if not sep or not site.strip():
            raise ValueError(f"{text!r} is not SITE@SECONDS (SITE a site id or auto)")
        try:
            at = float(seconds)
        except ValueError:
            raise ValueError(f"{seconds!r} is not a number of seconds") from None
        if not math.isfinite(at) or at < 0:
            raise ValueError(f"{seconds!r}: the seconds into the window must be 0 or more")
        site = site.strip()
        return cls(None if site == "auto" else site, at)

    def __str__(self) -> str:
        return f"{self.site or 'auto'}@{self.at_s:g}"


def pick(held: Mapping[str, float], sites: Sequence[str]) -> str | None:
    """`auto`: the site of `sites` holding the most (sessions or busy slots, by site); the first by id of those
    tied; None when nothing is held anywhere."""
    best = max(sorted(sites), key=lambda s: held.get(s, 0), default=None)  # max keeps the first of equals
    return best if best is not None and held.get(best, 0) > 0 else None


def _held_now(workers: fleet_agents.Workers) -> tuple[Counter[str], str]:
    """What each site holds now, and who said so: the agent processes' busy slots when their live stats carry
    them, else the patrons' live sessions (their progress messages)."""
    held: Counter[str] = Counter()
    for (_, kind), value in workers.latest.items():
        if kind == "stats" and isinstance(value, dict) and isinstance(value.get("busy"), dict):
            held.update(value["busy"])
    if held:
        return held, "the agent processes' busy slots"
    for (_, kind), value in workers.latest.items():
        if kind == "progress" and isinstance(value, dict):
            held.update(value.get("live_by_site", {}))
    return held, "the patrons' live sessions"


async def cut(
    loss: SiteLoss,
    workers: fleet_agents.Workers,
    sites: Sequence[str],
    t_zero: float,
) -> dict[str, Any]:
    """At `loss.at_s` into the window: cut the site's hosts in every agent worker, then tell the patrons. Returns
    what happened (seconds relative to `t_zero`). The answers arrive while another wait reads the workers' messages
    (the window's "final"), which files them in `workers.latest`: they are looked for there."""
    agents, patrons = workers.names("agents-"), workers.names("patrons-")
    await asyncio.sleep(max(0.0, t_zero + loss.at_s - time.monotonic()))
    held, source = _held_now(workers)
    site, chosen_by = loss.site, "given"
    if site is None:
        site, chosen_by = pick(held, sites), f"auto: the most held, by {source}"
    out: dict[str, Any] = {
        "site": site,
        "chosen_by": chosen_by,
        "at_s": round(time.monotonic() - t_zero, 3),
        "held_by_site_then": held.get(site, 0) if site and held else None,
        "hosts_dropped": None,
        "cut_at_s": None,
        "note": "",
    }
    if site is None:
        out["note"] = "auto: no site held anything at that moment; nothing was cut"
        return out
    workers.send(agents, ("site_down", site))
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    while time.monotonic() < deadline:
        answers = [workers.latest.get((a, "site_down")) for a in agents]
        if all(isinstance(x, dict) for x in answers):
            break
        await asyncio.sleep(0.01)
    answered = [x for x in (workers.latest.get((a, "site_down")) for a in agents) if isinstance(x, dict)]
    if len(answered) < len(agents):
        out["note"] = (
            f"{len(agents) - len(answered)} of {len(agents)} agent processes did not answer site_down within "
            f"{ANSWER_TIMEOUT_S:g} s (simulated hosts that cannot lose a site?): the patrons were not told"
        )
    if answered:
        out["hosts_dropped"] = sum(int(x.get("dropped", 0)) for x in answered)
        # The earliest answer: every host of that worker was cut by then, and the others' a moment later, so the
        # detection times counted from it err long, never short.
        out["cut_at_s"] = round(min(float(x["at"]) for x in answered) - t_zero, 4)
    if len(answered) == len(agents):
        workers.send(patrons, ("site_down", site))
    return out
