-- The web consoles' reads (broker.console.queries): venue seat maps, zones' service level, provider sites, and the
-- tenant-free aggregates /metrics exposes.

-- name: console_venues
SELECT venue_id, name, time_zone FROM venues WHERE ($1::text IS NULL OR venue_id = $1) ORDER BY venue_id;

-- name: console_providers
SELECT provider_id, name FROM providers WHERE ($1::text IS NULL OR provider_id = $1) ORDER BY provider_id;

-- name: console_seats
-- A venue's seats (or one of them) with the live session each holds, as JSON so columns added by later migrations
-- (patron time) reach the console without a change here; the database clock comes along for time left.
SELECT st.seat_id, st.zone_id, z.tier AS zone_tier, z.latency_cap_ms AS zone_latency_cap_ms,
       to_jsonb(se) - 'token' AS session, clock_timestamp() AS now
FROM seats st
JOIN zones z ON z.venue_id = st.venue_id AND z.zone_id = st.zone_id
LEFT JOIN sessions se ON se.venue_id = st.venue_id AND se.seat_id = st.seat_id AND se.state <> 'ENDED'
WHERE st.venue_id = $1 AND ($2::text IS NULL OR st.seat_id = $2)
ORDER BY st.seat_id;

-- name: console_zone_service
-- Today (from midnight by the database clock) per zone: the sessions that reached READY and their seconds since,
-- and how many of each were within the latency cap the session was promised (its zone's cap when it started).
WITH today AS (SELECT date_trunc('day', now()) AS since),
served AS (
    SELECT s.zone_id, s.latency_ms <= s.latency_cap_ms AS within,
           greatest(extract(epoch FROM coalesce(s.ended_at, now()) - greatest(s.ready_at, t.since)), 0)
               AS seconds
    FROM sessions s, today t
    WHERE s.venue_id = $1 AND s.ready_at IS NOT NULL AND coalesce(s.ended_at, now()) >= t.since
)
SELECT z.zone_id, z.tier, z.latency_cap_ms, z.playout,
       count(sv.zone_id)::bigint AS sessions,
       count(sv.zone_id) FILTER (WHERE sv.within)::bigint AS sessions_within,
       coalesce(sum(sv.seconds), 0)::float8 AS seconds,
       coalesce(sum(sv.seconds) FILTER (WHERE sv.within), 0)::float8 AS seconds_within
FROM zones z
LEFT JOIN served sv ON sv.zone_id = z.zone_id
WHERE z.venue_id = $1
GROUP BY z.zone_id, z.tier, z.latency_cap_ms, z.playout
ORDER BY z.zone_id;

-- name: console_provider_sites
SELECT s.site_id, s.name, s.region,
       count(h.host_id)::bigint AS hosts,
       count(h.host_id) FILTER (WHERE h.status = 'online' AND NOT h.drained)::bigint AS hosts_serving,
       coalesce(sum(h.slots), 0)::bigint AS slots,
       coalesce(sum(h.slots - h.free_slots), 0)::bigint AS slots_used
FROM sites s
LEFT JOIN hosts h ON h.site_id = s.site_id
WHERE s.provider_id = $1
GROUP BY s.site_id, s.name, s.region
ORDER BY s.site_id;

-- name: console_metrics_sessions
-- Live sessions only: ended ones grow without bound and are history, not state.
SELECT state, count(*)::bigint AS n FROM sessions WHERE state <> 'ENDED' GROUP BY state;

-- name: console_metrics_hosts
SELECT status, drained, count(*)::bigint AS n FROM hosts GROUP BY status, drained;

-- name: console_metered_seconds
-- Slot-seconds of usage in the metering ledger (append-only, so the sum only grows: a Prometheus counter).
SELECT coalesce(sum(seconds::bigint * slots), 0)::float8 FROM ledger WHERE kind = 'usage';

-- name: console_region_sites
-- Every site of the region with its provider, hosts counted and slots in use (the operator's view).
SELECT s.site_id, s.name, s.region, s.provider_id,
       count(h.host_id)::bigint AS hosts,
       count(h.host_id) FILTER (WHERE h.status = 'online' AND NOT h.drained)::bigint AS hosts_serving,
       coalesce(sum(h.slots), 0)::bigint AS slots,
       coalesce(sum(h.slots - h.free_slots), 0)::bigint AS slots_used
FROM sites s
LEFT JOIN hosts h ON h.site_id = s.site_id
GROUP BY s.site_id, s.name, s.region, s.provider_id
ORDER BY s.site_id;

-- name: console_region_venues
-- Every venue of the region now: its seats, live sessions, those waiting, and those served within their cap.
WITH live AS (
    SELECT venue_id, state, latency_ms, latency_cap_ms FROM sessions WHERE state <> 'ENDED'
)
SELECT v.venue_id, v.name, v.time_zone,
       (SELECT count(*) FROM seats st WHERE st.venue_id = v.venue_id)::bigint AS seats,
       count(l.venue_id)::bigint AS sessions,
       count(l.venue_id) FILTER (WHERE l.state = 'PENDING')::bigint AS queued,
       count(l.venue_id) FILTER (WHERE l.state IN ('READY', 'STREAMING'))::bigint AS serving,
       count(l.venue_id) FILTER (WHERE l.state IN ('READY', 'STREAMING') AND l.latency_ms <= l.latency_cap_ms)::bigint
           AS within_cap
FROM venues v
LEFT JOIN live l ON l.venue_id = v.venue_id
GROUP BY v.venue_id, v.name, v.time_zone
ORDER BY v.venue_id;
