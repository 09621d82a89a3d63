-- name: pending_batch
-- The head of the queue (resumes first, then oldest first), with how long each has waited by the database clock.
SELECT session_id, venue_id, game_id, latency_cap_ms, slots, pending_reason, resumes IS NOT NULL AS resumed,
       (extract(epoch FROM now() - created_at) * 1000)::bigint AS waited_ms
FROM sessions WHERE state = 'PENDING'
ORDER BY resumes IS NULL, created_at, session_id
LIMIT $1;

-- name: candidate_hosts
-- price_micros: the site's class price in force now, its time-of-day band (as host_view, migration 0007), else the
-- host's declared price. The price in force is worked out once per price (a few hundred), not once per host: through
-- host_view it was 110 of a full read's 128 ms at 10,000 hosts. The columns are broker.scheduler_store.HostRow's, in
-- its order (here and in hosts_by_id).
WITH price_now AS MATERIALIZED (
    SELECT site_id, gpu_class, price_in_force(price_micros, bands, utc_offset_minutes, now()) AS price_micros
    FROM prices
)
SELECT h.host_id, h.site_id, h.gpu_class, h.free_slots, h.slots,
       coalesce(p.price_micros, h.declared_price_micros) AS price_micros, h.games_cached,
       h.drained OR h.draining AS drained
FROM hosts h LEFT JOIN price_now p ON p.site_id = h.site_id AND p.gpu_class = h.gpu_class
WHERE h.status = 'online';

-- name: hosts_by_id
-- As candidate_hosts, for some hosts: only their prices are worked out.
WITH chosen AS MATERIALIZED (
    SELECT host_id, site_id, gpu_class, free_slots, slots, declared_price_micros, games_cached,
           drained OR draining AS drained
    FROM hosts WHERE status = 'online' AND host_id = ANY($1::text[])
), price_now AS MATERIALIZED (
    SELECT site_id, gpu_class, price_in_force(price_micros, bands, utc_offset_minutes, now()) AS price_micros
    FROM prices WHERE (site_id, gpu_class) IN (SELECT site_id, gpu_class FROM chosen)
)
SELECT h.host_id, h.site_id, h.gpu_class, h.free_slots, h.slots,
       coalesce(p.price_micros, h.declared_price_micros) AS price_micros, h.games_cached, h.drained
FROM chosen h LEFT JOIN price_now p ON p.site_id = h.site_id AND p.gpu_class = h.gpu_class;

-- name: venue_latency
SELECT venue_id, site_id, rtt_ms FROM venue_site_latency WHERE venue_id = ANY($1::text[]);

-- name: venue_latency_stamps
-- When each venue's measurements last changed (a report stamps every row it writes; rows are never removed).
SELECT venue_id, max(measured_at) AS measured_at FROM venue_site_latency WHERE venue_id = ANY($1::text[])
GROUP BY venue_id;

-- name: commit_placements
-- The slot trigger refuses the whole statement if any host would go below zero free slots. A session whose host is
-- not online, or is drained or draining, by now is skipped (the scheduler's view of the host was older).
-- A session placed under a lease names it, with how many of its slots the lease pays ($6, $7: NULL and 0 for none).
UPDATE sessions s
SET state = 'PLACED', host_id = u.host_id, site_id = u.site_id, latency_ms = u.latency_ms, price_micros = u.price,
    lease_id = u.lease_id, lease_slots = u.lease_slots
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::integer[], $5::bigint[], $6::text[], $7::integer[])
    AS u(session_id, host_id, site_id, latency_ms, price, lease_id, lease_slots)
JOIN hosts h ON h.host_id = u.host_id
WHERE s.session_id = u.session_id AND s.state = 'PENDING'
  AND h.status = 'online' AND NOT h.drained AND NOT h.draining
RETURNING s.session_id;

-- name: set_pending_reasons
UPDATE sessions s SET pending_reason = u.reason
FROM unnest($1::uuid[], $2::text[]) AS u(session_id, reason)
WHERE s.session_id = u.session_id AND s.state = 'PENDING' AND s.pending_reason IS DISTINCT FROM u.reason;


-- name: active_leases
-- The leases in force now (a window running by the database clock), each with what the live sessions placed under
-- it leave unused.
SELECT l.lease_id, l.venue_id, l.gpu_class, l.site_id,
       greatest(w.slots - coalesce(u.used, 0), 0)::integer AS unused_slots
FROM lease_windows w
JOIN leases l ON l.lease_id = w.lease_id
LEFT JOIN LATERAL (
    SELECT sum(s.lease_slots) AS used FROM sessions s
    WHERE s.lease_id = l.lease_id AND s.state IN ('PLACED', 'STARTING', 'READY', 'STREAMING')
) u ON true
WHERE w.during @> now() AND l.cancelled_at IS NULL;
