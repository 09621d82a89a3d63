-- The consoles' history (migration 0018; broker.store.history): the leader's sampler writes a row per minute and
-- site and per minute and zone, and deletes those past the retention; the consoles read spans of them in buckets.

-- name: history_clock
SELECT clock_timestamp() AS now;

-- name: history_sample_sites
-- Each site's fleet as minute $1 ends (when it is sampled): hosts online and not drained, the slots of online hosts and those
-- in use. A minute already written (another leader, a restart) is left as it is.
INSERT INTO history_site_minutes (minute, site_id, provider_id, hosts_online, slots, slots_used)
SELECT $1::timestamptz, s.site_id, s.provider_id,
       count(h.host_id) FILTER (WHERE h.status = 'online' AND NOT h.drained)::integer,
       coalesce(sum(h.slots) FILTER (WHERE h.status = 'online'), 0)::integer,
       coalesce(sum(h.slots - h.free_slots) FILTER (WHERE h.status = 'online'), 0)::integer
FROM sites s
LEFT JOIN hosts h ON h.site_id = s.site_id
GROUP BY s.site_id, s.provider_id
ON CONFLICT (minute, site_id) DO NOTHING;

-- name: history_sample_zones
-- Each zone in minute [$1, $2): at $2, the sessions waiting and the oldest one's wait, the sessions served (READY or
-- STREAMING) and those within the latency cap they were promised; during it, the sessions placed and their waits.
WITH live AS (
    SELECT venue_id, zone_id, state, created_at, latency_ms, latency_cap_ms
    FROM sessions WHERE state <> 'ENDED'
),
placed AS (
    SELECT venue_id, zone_id, count(*)::integer AS n,
           sum(greatest(extract(epoch FROM placed_at - created_at), 0))::float8 AS wait_s
    FROM sessions WHERE placed_at >= $1 AND placed_at < $2
    GROUP BY venue_id, zone_id
),
now_in_zone AS (
    SELECT venue_id, zone_id,
           count(*) FILTER (WHERE state = 'PENDING')::integer AS queued,
           coalesce(greatest(extract(epoch FROM $2 - min(created_at) FILTER (WHERE state = 'PENDING')), 0), 0)::real
               AS oldest_wait_s,
           count(*) FILTER (WHERE state IN ('READY', 'STREAMING'))::integer AS serving,
           count(*) FILTER (WHERE state IN ('READY', 'STREAMING') AND latency_ms <= latency_cap_ms)::integer
               AS within_cap
    FROM live GROUP BY venue_id, zone_id
)
INSERT INTO history_zone_minutes (minute, venue_id, zone_id, queued, oldest_wait_s, placed, wait_s_sum, serving,
                                  within_cap)
SELECT $1::timestamptz, z.venue_id, z.zone_id, coalesce(n.queued, 0), coalesce(n.oldest_wait_s, 0),
       coalesce(p.n, 0), coalesce(p.wait_s, 0), coalesce(n.serving, 0), coalesce(n.within_cap, 0)
FROM zones z
LEFT JOIN now_in_zone n ON n.venue_id = z.venue_id AND n.zone_id = z.zone_id
LEFT JOIN placed p ON p.venue_id = z.venue_id AND p.zone_id = z.zone_id
ON CONFLICT (minute, venue_id, zone_id) DO NOTHING;

-- name: history_forget_sites
DELETE FROM history_site_minutes WHERE minute < $1;

-- name: history_forget_zones
DELETE FROM history_zone_minutes WHERE minute < $1;

-- name: history_sites
-- Sites' utilisation in buckets of $4 seconds over [$2, $3): of one provider ($1), or all. Utilisation is used
-- slots over slots summed across the bucket's minutes (a slot-minute weighted mean); hosts are the bucket's mean.
SELECT site_id, provider_id,
       date_bin(make_interval(secs => $4), minute, TIMESTAMPTZ '2000-01-01') AS at,
       count(*)::integer AS minutes,
       sum(slots)::bigint AS slot_minutes,
       sum(slots_used)::bigint AS used_slot_minutes,
       avg(hosts_online)::float8 AS hosts_online
FROM history_site_minutes
WHERE ($1::text IS NULL OR provider_id = $1) AND minute >= $2 AND minute < $3
GROUP BY site_id, provider_id, at
ORDER BY site_id, at;

-- name: history_zones
-- Zones' queue, waits, sessions and service level in buckets of $4 seconds over [$2, $3): of one venue ($1), or
-- all. Sums, so any mean over the bucket is exact (the caller divides).
SELECT venue_id, zone_id,
       date_bin(make_interval(secs => $4), minute, TIMESTAMPTZ '2000-01-01') AS at,
       count(*)::integer AS minutes,
       sum(queued)::bigint AS queued_sum,
       max(oldest_wait_s)::float8 AS oldest_wait_s,
       sum(placed)::bigint AS placed,
       sum(wait_s_sum)::float8 AS wait_s_sum,
       sum(serving)::bigint AS serving_sum,
       sum(within_cap)::bigint AS within_cap_sum
FROM history_zone_minutes
WHERE ($1::text IS NULL OR venue_id = $1) AND minute >= $2 AND minute < $3
GROUP BY venue_id, zone_id, at
ORDER BY venue_id, zone_id, at;
