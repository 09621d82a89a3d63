-- name: lease_now
SELECT now();

-- name: lease_site_provider
SELECT provider_id FROM sites WHERE site_id = $1;

-- name: lease_candidate_sites
-- The provider's sites that have hosts of the class and that the venue measured within the bound: nearest first.
SELECT l.site_id, l.rtt_ms
FROM venue_site_latency l
JOIN sites s ON s.site_id = l.site_id
WHERE l.venue_id = $1 AND s.provider_id = $2 AND l.rtt_ms <= $4
  AND EXISTS (SELECT 1 FROM hosts h WHERE h.site_id = l.site_id AND h.gpu_class = $3)
ORDER BY l.rtt_ms, l.site_id;

-- name: lease_lock_sites
-- The same advisory locks the capacity trigger takes, for several sites at once, in one global order (so two
-- latency-bound leases trying overlapping sets of sites cannot deadlock).
SELECT count(pg_advisory_xact_lock(hashtext('cloudseat.lease'), k))
FROM (SELECT DISTINCT hashtext(s || '/' || $2) AS k FROM unnest($1::text[]) AS s ORDER BY k) AS keys;

-- name: lease_insert
INSERT INTO leases (lease_id, provider_id, venue_id, site_id, gpu_class, slots, max_latency_ms, starts_at, ends_at,
                    daily_start_minute, daily_duration_minutes, time_zone, price_micros, note, created_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15);

-- name: lease_windows_insert
-- The capacity trigger checks every row (and refuses the whole statement on an oversell).
INSERT INTO lease_windows (lease_id, site_id, gpu_class, slots, during)
SELECT $1, $2, $3, $4, tstzrange(w.lo, w.hi, '[)')
FROM unnest($5::timestamptz[], $6::timestamptz[]) AS w(lo, hi);

-- name: lease_get
SELECT * FROM lease_view WHERE lease_id = $1;

-- name: lease_list
SELECT * FROM lease_view
WHERE ($1::text IS NULL OR venue_id = $1) AND ($2::text IS NULL OR provider_id = $2)
  AND (NOT $3 OR state = 'ACTIVE')
ORDER BY starts_at, lease_id
LIMIT 10000;

-- name: lease_cancel
UPDATE leases SET cancelled_at = now(), cancelled_by = $2 WHERE lease_id = $1 AND cancelled_at IS NULL
RETURNING lease_id;

-- name: lease_windows_drop_coming
DELETE FROM lease_windows WHERE lease_id = $1 AND lower(during) >= now();

-- name: lease_windows_cut_running
UPDATE lease_windows SET during = tstzrange(lower(during), now(), '[)') WHERE lease_id = $1 AND during @> now();

-- name: lease_ids_of_venue
SELECT lease_id FROM leases WHERE venue_id = $1;

-- name: lease_use_windows
SELECT lease_id, lower(during) AS lo, upper(during) AS hi, slots FROM lease_windows
WHERE lease_id = ANY($1::text[]) AND during && tstzrange($2, $3, '[)');

-- name: lease_use_sessions
-- Sessions under the leases that held slots in the period (a live one up to now).
SELECT lease_id, placed_at AS lo, coalesce(ended_at, now()) AS hi, lease_slots FROM sessions
WHERE lease_id = ANY($1::text[]) AND placed_at IS NOT NULL AND placed_at < $3
  AND coalesce(ended_at, 'infinity') > $2;
