-- name: lock_host
SELECT host_id, provider_id, epoch, status FROM hosts WHERE host_id = $1 FOR UPDATE;

-- name: held_slots
SELECT coalesce(sum(slots), 0)::integer FROM sessions
WHERE host_id = $1 AND state IN ('PLACED', 'STARTING', 'READY', 'STREAMING');

-- name: end_host_sessions
UPDATE sessions SET state = 'ENDED', end_reason = $2, end_detail = $3
WHERE host_id = $1 AND state IN ('PLACED', 'STARTING', 'READY', 'STREAMING')
RETURNING session_id;

-- name: upsert_host
-- $8: the images the agent holds (hosts_derive_games_cached derives games_cached from them).
INSERT INTO hosts (host_id, provider_id, site_id, gpu_class, slots, free_slots, declared_price_micros, images_cached,
                   gpus, media_addresses, agent_version, epoch, status, registered_at, last_heartbeat_at)
VALUES ($1, $2, $3, $4, $5::integer, $5::integer - $6::integer, $7, $8, $9, $10, $11, $12, 'online', now(), now())
ON CONFLICT (host_id) DO UPDATE SET
    site_id = excluded.site_id, gpu_class = excluded.gpu_class, slots = excluded.slots,
    free_slots = excluded.free_slots, declared_price_micros = excluded.declared_price_micros,
    images_cached = excluded.images_cached, gpus = excluded.gpus, media_addresses = excluded.media_addresses,
    agent_version = excluded.agent_version, epoch = excluded.epoch, status = 'online', draining = false,
    registered_at = now(), last_heartbeat_at = now()
RETURNING host_id, epoch, drained;

-- name: host_live_sessions
SELECT s.session_id, s.state, s.game_id, s.tier, s.slots, s.venue_id, s.seat_id FROM sessions s
WHERE s.host_id = $1 AND s.state IN ('PLACED', 'STARTING', 'READY', 'STREAMING');

-- name: heartbeats
-- A batch of heartbeats in one statement; the epoch guard ignores a replaced agent process. What it returns are the
-- beats that counted: a beat missing there comes from a process whose host was declared lost or replaced. Each beat
-- also says which replica holds the link ($6), so a record overwritten in a race heals within one heartbeat.
UPDATE hosts h SET last_heartbeat_at = now(), cpu_load = u.cpu, gpu_load = u.gpu, draining = u.draining,
    broker_address = coalesce($6::text, h.broker_address)
FROM unnest($1::text[], $2::bigint[], $3::real[], $4::real[], $5::boolean[])
    AS u(host_id, epoch, cpu, gpu, draining)
WHERE h.host_id = u.host_id AND h.epoch = u.epoch AND h.status = 'online'
RETURNING h.host_id, h.epoch;

-- name: set_games_cached
-- $3: the images the agent holds now (hosts_derive_games_cached derives games_cached from them).
UPDATE hosts SET images_cached = $3 WHERE host_id = $1 AND epoch = $2;

-- name: mark_lost
UPDATE hosts SET status = 'lost'
WHERE status = 'online' AND last_heartbeat_at < now() - make_interval(secs => $1)
RETURNING host_id, epoch;

-- name: end_sessions_on_hosts
UPDATE sessions SET state = 'ENDED', end_reason = 'HOST_LOST', end_detail = 'host missed its heartbeats'
WHERE host_id = ANY($1::text[]) AND state IN ('PLACED', 'STARTING', 'READY', 'STREAMING')
RETURNING session_id;

-- name: set_offline
-- The agent said goodbye: the host takes nothing new and is not judged lost later.
UPDATE hosts SET status = 'offline' WHERE host_id = $1 AND epoch = $2 AND status = 'online' RETURNING host_id;

-- name: lock_reported_sessions
-- The sessions a batch of agents' reports is about, locked in one order (so two batches never deadlock).
SELECT session_id, state, host_id FROM sessions WHERE session_id = ANY($1::uuid[])
ORDER BY session_id
FOR UPDATE;

-- name: advance_reported
-- One step of many sessions at once (locked above); the triggers record each session's move as usual.
UPDATE sessions SET state = $3 WHERE session_id = ANY($1::uuid[]) AND state = $2;

-- name: link_host
-- The replica at $3 holds the link of the host's agent of epoch $2 (where calls needing the agent are forwarded).
UPDATE hosts SET broker_address = $3 WHERE host_id = $1 AND epoch = $2;

-- name: host_broker_address
SELECT broker_address FROM hosts WHERE host_id = $1;
