"""Which sites look like they are failing whole: many of their hosts' agent links seen dead within a short time.

A site that loses power, or its uplink, drops every host's link at once, but the broker sees each link die at its
own keepalive ping (broker.links: up to `--link-ping` plus `--link-ping-timeout` apart), and declares each host lost
only after the grace for a reconnect. Until then the site's other hosts look healthy, and the sessions resumed from
the first hosts seen dead were placed on them, to be ended again seconds later (docs/loadtest-fleet.md, a site
lost). The placement leader therefore places nothing on a site while it is failing: at least `min_hosts` of its
hosts, and at least `share` of them, had their links seen dead within the last `window_s`, and have not come back.

One host's agent crashing does not make its site fail; a host whose link comes back (a new connection) no longer
counts. A site stops failing `window_s` after the last of its links was seen dead: by then every dead host of it has
been declared lost (the window is the broker's `--host-lost-after`), and what is left is alive.

Pure: the caller passes the clock (seconds, monotonic) and says what it saw.
"""

from __future__ import annotations

import math
from collections.abc import Mapping


class SiteWatch:
    def __init__(self, window_s: float, *, min_hosts: int = 3, share: float = 0.25) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        if min_hosts < 1:
            raise ValueError("min_hosts must be at least 1")
        if not 0 < share <= 1:
            raise ValueError("share must be in (0, 1]")
        self.window_s = window_s
        self.min_hosts = min_hosts
        self.share = share
        # site -> host -> when its link was first seen dead (the caller's clock)
        self._lost: dict[str, dict[str, float]] = {}
        self._failing: frozenset[str] = frozenset()

    @property
    def watching(self) -> bool:
        """Whether any site has a link seen dead within the window (else no site can be failing)."""
        return bool(self._lost)

    def link_lost(self, site_id: str, host_id: str, now: float) -> None:
        """`host_id` of `site_id` has its agent's link seen dead (again: the first sighting counts)."""
        self._lost.setdefault(site_id, {}).setdefault(host_id, now)

    def link_back(self, site_id: str, host_id: str) -> None:
        """`host_id`'s agent is linked again: it no longer counts against its site."""
        hosts = self._lost.get(site_id)
        if hosts is not None:
            hosts.pop(host_id, None)
            if not hosts:
                del self._lost[site_id]

    def failing(self, now: float, site_hosts: Mapping[str, int]) -> frozenset[str]:
        """The sites failing at `now`; `site_hosts` is how many hosts each site has (online ones, those whose links
        were seen dead among them). A site that was failing stays so while any of its sightings is recent.
        Sightings older than the window are forgotten."""
        failing = set()
        for site_id in list(self._lost):
            recent = {h: t for h, t in self._lost[site_id].items() if now - t < self.window_s}
            if not recent:
                del self._lost[site_id]
                continue
            self._lost[site_id] = recent
            size = max(site_hosts.get(site_id, 0), len(recent))
            if site_id in self._failing or len(recent) >= max(self.min_hosts, math.ceil(self.share * size)):
                failing.add(site_id)
        self._failing = frozenset(failing)
        return self._failing
