"""The consoles' history: what the leader's sampler writes each minute and how a span of it becomes chart series.
Pure (no asyncio, asyncpg or aiohttp): time comes in as an argument.

The sampler (broker.history_duty) wakes a little after each minute ends and writes that minute: per site, its hosts
and slots at the minute's end; per zone of a venue, its queue and the oldest wait at the end, the sessions served
and those within the latency cap, and the placements during the minute with their waits summed (migration 0018).
Rows older than `RETENTION` are deleted. A chart reads the last `SPAN` in buckets of `BUCKET_S`; a bucket's figure
is exact over its minutes (sums divided, never means of means), and a bucket with no minute sampled is a gap (None),
never a zero: the broker was down, not idle.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

MINUTE = dt.timedelta(minutes=1)
# Kept twice what a chart shows, so yesterday evening is still there to compare with.
RETENTION = dt.timedelta(hours=48)
SPAN = dt.timedelta(hours=24)
# 24 h in 5-minute buckets: 288 points a series, what a chart a page wide can show.
BUCKET_S = 300
# The sampler waits this long after a minute ends, so what committed in its last second is in.
SETTLE = dt.timedelta(seconds=2)


def minute_to_sample(now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The last whole minute that has ended by `now` (less the settle time): [start, end)."""
    end = (now - SETTLE).replace(second=0, microsecond=0)
    return end - MINUTE, end


def next_wake(now: dt.datetime) -> dt.datetime:
    """When the sampler next has a minute to write: the settle time after the next minute ends."""
    _, end = minute_to_sample(now)
    return end + MINUTE + SETTLE


def forget_before(now: dt.datetime) -> dt.datetime:
    """Rows of minutes before this are past the retention."""
    return now - RETENTION


@dataclasses.dataclass(frozen=True, slots=True)
class Span:
    """The buckets a chart shows: `buckets` starts, `bucket_s` apart, the last one holding `now`."""

    start: dt.datetime
    end: dt.datetime
    bucket_s: int

    @classmethod
    def last(cls, now: dt.datetime, span: dt.timedelta = SPAN, bucket_s: int = BUCKET_S) -> Span:
        # Buckets on multiples of bucket_s since 2000-01-01 UTC, as the SQL's date_bin puts them.
        origin = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
        step = dt.timedelta(seconds=bucket_s)
        end = origin + ((now - origin) // step + 1) * step
        return cls(end - span, end, bucket_s)

    def starts(self) -> list[dt.datetime]:
        step = dt.timedelta(seconds=self.bucket_s)
        out, at = [], self.start
        while at < self.end:
            out.append(at)
            at += step
        return out


def _ms(at: dt.datetime) -> int:
    return int(at.timestamp() * 1000)


def _series(
    span: Span, name: str, values: Mapping[dt.datetime, float | None]
) -> dict[str, Any]:
    """A chart series: its name and [epoch ms, value or None] for every bucket of the span."""
    return {"name": name, "points": [[_ms(at), values.get(at)] for at in span.starts()]}


def _share(part: float, whole: float) -> float | None:
    return None if whole <= 0 else part / whole


def site_series(span: Span, rows: Iterable[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Utilisation (used over total slot-minutes; None where no slots were online) and hosts online per site, from
    store.history.sites rows."""
    util: dict[str, dict[dt.datetime, float | None]] = {}
    hosts: dict[str, dict[dt.datetime, float | None]] = {}
    for r in rows:
        util.setdefault(r["site_id"], {})[r["at"]] = _share(r["used_slot_minutes"], r["slot_minutes"])
        hosts.setdefault(r["site_id"], {})[r["at"]] = r["hosts_online"]
    return {
        "utilisation": [_series(span, site, util[site]) for site in sorted(util)],
        "hosts_online": [_series(span, site, hosts[site]) for site in sorted(hosts)],
    }


def zone_series(
    span: Span, rows: Iterable[Mapping[str, Any]], key: str = "zone"
) -> dict[str, list[dict[str, Any]]]:
    """Per zone (`key` "zone": named by zone; "venue": zones summed per venue, for the region), from
    store.history.zones rows: queue length (mean over the bucket), the longest wait of a queued session, the mean
    wait of the sessions placed, sessions served (mean) and the service level (the share of served session-minutes
    within the latency cap)."""
    acc: dict[str, dict[dt.datetime, list[float]]] = {}
    for r in rows:
        name = r["zone_id"] if key == "zone" else r["venue_id"]
        a = acc.setdefault(name, {}).setdefault(r["at"], [0, 0, 0, 0, 0, 0, 0])
        a[0] = max(a[0], r["minutes"])  # zones of a venue share their minutes
        a[1] += r["queued_sum"]
        a[2] = max(a[2], r["oldest_wait_s"])
        a[3] += r["placed"]
        a[4] += r["wait_s_sum"]
        a[5] += r["serving_sum"]
        a[6] += r["within_cap_sum"]
    figures: dict[str, list[dict[str, Any]]] = {
        "queue_length": [], "oldest_wait_s": [], "mean_wait_s": [], "sessions": [], "service_level": [],
    }  # fmt: skip
    for name in sorted(acc):
        buckets = acc[name]
        figures["queue_length"].append(_series(span, name, {at: a[1] / a[0] for at, a in buckets.items()}))
        figures["oldest_wait_s"].append(_series(span, name, {at: a[2] for at, a in buckets.items()}))
        figures["mean_wait_s"].append(_series(span, name, {at: _share(a[4], a[3]) for at, a in buckets.items()}))
        figures["sessions"].append(_series(span, name, {at: a[5] / a[0] for at, a in buckets.items()}))
        figures["service_level"].append(_series(span, name, {at: _share(a[6], a[5]) for at, a in buckets.items()}))
    return figures
