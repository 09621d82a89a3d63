-- name: pending_batch
-- The head of the queue (resumes first, then oldest first), with how long each has waited by the database clock.
SELECT session_id, venue_id, game_id, latency_cap_ms, slots, pending_reason, resumes IS NOT NULL AS resumed,
       (extract(epoch FROM now() - created_at) * 1000)::bigint AS waited_ms
FROM sessions WHERE state = 'PENDING'
ORDER BY resumes IS NULL, created_at, session_id
LIMIT $1;

-- name: candidate_hosts
-- The columns are broker.scheduler_store.HostRow's, in its order (here and in hosts_by_id). The price is the host's
-- declared one: the scheduler works out the site's price in force from `prices` itself, once per price; through
-- host_view (once per host) it was 110 of a full read's 128 ms at 10,000 hosts.
SELECT host_id, site_id, gpu_class, free_slots, slots, declared_price_micros, games_cached,
       drained OR draining AS drained, images_cached, link_lost_at IS NOT NULL AS link_lost
FROM hosts WHERE status = 'online';

-- name: hosts_by_id
SELECT host_id, site_id, gpu_class, free_slots, slots, declared_price_micros, games_cached,
       drained OR draining AS drained, images_cached, link_lost_at IS NOT NULL AS link_lost
FROM hosts WHERE status = 'online' AND host_id = ANY($1::text[]);

-- name: games_stamp
-- Changes whenever a game is put (a put stamps its row, and writes what earlier versions lack in the same
-- transaction; games are never removed).
SELECT count(*) AS n, max(updated_at) AS updated_at FROM games;

-- name: game_images
-- Each game's current version, its image's stored size, and what each earlier version lacks of it (placement prices
-- a cold start by these; broker.placement.coldstart). Games without a size are left out: a cold start costs the
-- flat penalty for them.
SELECT g.game_id, g.version, g.image_size_bytes,
       coalesce(array_agg(l.from_version ORDER BY l.from_version) FILTER (WHERE l.from_version IS NOT NULL),
                '{}') AS from_versions,
       coalesce(array_agg(l.bytes ORDER BY l.from_version) FILTER (WHERE l.from_version IS NOT NULL),
                '{}') AS lacking_bytes
FROM games g
LEFT JOIN game_version_lacking l ON l.game_id = g.game_id AND l.version = g.version
WHERE g.image_size_bytes > 0
GROUP BY g.game_id;

-- name: price_stamp
-- Changes whenever a price is set (a set stamps its row; prices are never removed).
SELECT now() AS now, count(*) AS n, max(updated_at) AS updated_at FROM prices;

-- name: prices
SELECT site_id, gpu_class, price_micros, bands, utc_offset_minutes FROM prices;

-- name: venue_latency
SELECT venue_id, site_id, rtt_ms FROM venue_site_latency WHERE venue_id = ANY($1::text[]);

-- name: venue_latency_stamps
-- When each venue's measurements last changed (a report stamps every row it writes; rows are never removed).
SELECT venue_id, max(measured_at) AS measured_at FROM venue_site_latency WHERE venue_id = ANY($1::text[])
GROUP BY venue_id;

-- name: commit_placements
-- The slot trigger refuses the whole statement if any host would go below zero free slots. A session whose host is
-- not online, is drained or draining, or whose agent's link was seen dead, by now is skipped (the scheduler's view
-- of the host was older).
-- A session placed under a lease names it, with how many of its slots the lease pays ($6, $7: NULL and 0 for none).
UPDATE sessions s
SET state = 'PLACED', host_id = u.host_id, site_id = u.site_id, latency_ms = u.latency_ms, price_micros = u.price,
    lease_id = u.lease_id, lease_slots = u.lease_slots
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::integer[], $5::bigint[], $6::text[], $7::integer[])
    AS u(session_id, host_id, site_id, latency_ms, price, lease_id, lease_slots)
JOIN hosts h ON h.host_id = u.host_id
WHERE s.session_id = u.session_id AND s.state = 'PENDING'
  AND h.status = 'online' AND NOT h.drained AND NOT h.draining AND h.link_lost_at IS NULL
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
