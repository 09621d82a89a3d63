-- Applying a region file (broker.region): read what the database holds of the objects the file names, and the few
-- updates no servicer makes (a provider's name, a site's place and region, a venue's name and time zone).

-- name: region_apply_lock
-- One apply at a time: each reads what is held and writes what differs, so two at once must not interleave.
SELECT pg_advisory_xact_lock(hashtext('cloudseat.region_apply'));

-- name: region_providers
SELECT provider_id, name FROM providers WHERE provider_id = ANY($1::text[]);

-- name: region_sites
SELECT site_id, provider_id, name, region FROM sites WHERE site_id = ANY($1::text[]);

-- name: region_prices
SELECT site_id, gpu_class, price_micros, bands, utc_offset_minutes, currency FROM prices
WHERE site_id = ANY($1::text[]);

-- name: region_enrolled_hosts
SELECT host_id, provider_id, site_id FROM host_enrolments WHERE host_id = ANY($1::text[]);

-- name: region_enrolled_prefixes
SELECT host_prefix, provider_id, site_id FROM host_enrolments WHERE host_prefix = ANY($1::text[]);

-- name: region_bound_hosts
SELECT host_id, provider_id FROM hosts WHERE host_id = ANY($1::text[]);

-- name: region_games
SELECT game_id, name, version, image_size_bytes, image_ref FROM games WHERE game_id = ANY($1::text[]);

-- name: region_venues
SELECT venue_id, name, time_zone FROM venues WHERE venue_id = ANY($1::text[]);

-- name: region_zones
SELECT venue_id, zone_id, tier, latency_cap_ms, playout FROM zones WHERE venue_id = ANY($1::text[]);

-- name: region_seats
SELECT venue_id, seat_id, zone_id FROM seats WHERE venue_id = ANY($1::text[]);

-- name: region_latencies
SELECT venue_id, site_id, rtt_ms FROM venue_site_latency WHERE venue_id = ANY($1::text[]);

-- name: region_leases
SELECT lease_id, venue_id, site_id, gpu_class, slots, starts_at, ends_at, daily_start_minute, daily_duration_minutes,
       time_zone, price_micros, note, cancelled_at IS NOT NULL AS cancelled
FROM leases WHERE lease_id = ANY($1::text[]);

-- name: region_update_provider
UPDATE providers SET name = $2 WHERE provider_id = $1;

-- name: region_update_site
UPDATE sites SET name = $2, region = $3 WHERE site_id = $1;

-- name: region_update_venue
UPDATE venues SET name = $2, time_zone = $3 WHERE venue_id = $1;

-- name: region_get_venues
SELECT v.venue_id, v.name, v.time_zone,
       (SELECT count(*) FROM zones z WHERE z.venue_id = v.venue_id)::integer AS zones,
       (SELECT count(*) FROM seats s WHERE s.venue_id = v.venue_id)::integer AS seats,
       (SELECT count(*) FROM sessions se WHERE se.venue_id = v.venue_id AND se.state <> 'ENDED')::integer AS live_sessions
FROM venues v ORDER BY v.venue_id;

-- name: region_get_seats
SELECT st.venue_id, st.seat_id, st.zone_id, z.tier, z.latency_cap_ms, z.playout, se.state, se.host_id, se.game_id
FROM seats st
JOIN zones z ON z.venue_id = st.venue_id AND z.zone_id = st.zone_id
LEFT JOIN sessions se ON se.venue_id = st.venue_id AND se.seat_id = st.seat_id AND se.state <> 'ENDED'
WHERE $1::text IS NULL OR st.venue_id = $1
ORDER BY st.venue_id, st.seat_id;

-- name: region_get_sites
SELECT s.site_id, s.provider_id, s.name AS place, s.region,
       (SELECT count(*) FROM hosts h WHERE h.site_id = s.site_id AND h.status = 'online')::integer AS hosts_online,
       (SELECT count(*) FROM hosts h WHERE h.site_id = s.site_id)::integer AS hosts,
       coalesce((SELECT jsonb_agg(jsonb_build_object('gpu_class', p.gpu_class, 'price_micros', p.price_micros,
                                                      'currency', p.currency, 'bands', p.bands,
                                                      'utc_offset_minutes', p.utc_offset_minutes)
                                  ORDER BY p.gpu_class)
                 FROM prices p WHERE p.site_id = s.site_id), '[]'::jsonb) AS prices
FROM sites s ORDER BY s.site_id;

-- name: region_get_hosts
-- drain_deadline: when a drained host's sessions left move (migration 0017), NULL for none.
SELECT v.host_id, v.provider_id, v.site_id, v.gpu_class, v.status, v.slots, v.free_slots, v.drained, v.draining,
       v.live_sessions, v.price_micros, v.agent_version, v.last_heartbeat_at, h.drain_deadline
FROM host_view v JOIN hosts h USING (host_id) ORDER BY v.host_id;

-- name: region_get_sessions
-- Newest first; $1: live ones only.
SELECT session_id, venue_id, seat_id, zone_id, game_id, state, host_id, site_id, latency_ms, created_at, end_reason
FROM sessions WHERE NOT $1 OR state <> 'ENDED'
ORDER BY created_at DESC, session_id
LIMIT $2;

-- name: region_get_games
SELECT game_id, name, version, image_size_bytes, image_ref, updated_at FROM games ORDER BY game_id;
