-- name: create_venue
INSERT INTO venues (venue_id, name, time_zone) VALUES ($1, $2, $3) RETURNING *;

-- name: get_venue
SELECT * FROM venues WHERE venue_id = $1;

-- name: venue_zones
SELECT * FROM zones WHERE venue_id = $1 ORDER BY zone_id;

-- name: venue_latencies
SELECT site_id, rtt_ms, measured_at FROM venue_site_latency WHERE venue_id = $1 ORDER BY site_id;

-- name: put_zone
-- $5: the playout mode, NULL to keep the zone's (the column's default for a new zone).
INSERT INTO zones (venue_id, zone_id, tier, latency_cap_ms, playout)
VALUES ($1, $2, $3, $4, coalesce($5, 'AUTO'))
ON CONFLICT (venue_id, zone_id) DO UPDATE
    SET tier = excluded.tier, latency_cap_ms = excluded.latency_cap_ms,
        playout = coalesce($5, zones.playout), updated_at = now()
RETURNING *;

-- name: put_seat
INSERT INTO seats (venue_id, seat_id, zone_id) VALUES ($1, $2, $3)
ON CONFLICT (venue_id, seat_id) DO UPDATE SET zone_id = excluded.zone_id
RETURNING *;

-- name: report_latency
INSERT INTO venue_site_latency (venue_id, site_id, rtt_ms)
SELECT $1, u.site_id, u.rtt_ms FROM unnest($2::text[], $3::integer[]) AS u(site_id, rtt_ms)
ON CONFLICT (venue_id, site_id) DO UPDATE SET rtt_ms = excluded.rtt_ms, measured_at = now();

-- name: unknown_sites
SELECT u.site_id FROM unnest($1::text[]) AS u(site_id)
WHERE NOT EXISTS (SELECT 1 FROM sites s WHERE s.site_id = u.site_id);

-- name: list_seats
SELECT st.venue_id, st.seat_id, st.zone_id, to_jsonb(se) - 'token' AS session
FROM seats st
LEFT JOIN sessions se ON se.venue_id = st.venue_id AND se.seat_id = st.seat_id AND se.state <> 'ENDED'
WHERE st.venue_id = $1
ORDER BY st.seat_id;

-- name: list_sessions
SELECT * FROM sessions
WHERE venue_id = $1 AND (NOT $2 OR state <> 'ENDED')
ORDER BY created_at DESC, session_id
LIMIT $3;
