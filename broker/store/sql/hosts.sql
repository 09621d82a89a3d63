-- name: lock_host
SELECT host_id, provider_id, site_id, gpu_class, epoch, status FROM hosts WHERE host_id = $1 FOR UPDATE;

-- name: held_slots
SELECT coalesce(sum(slots), 0)::integer FROM sessions
WHERE host_id = $1 AND state IN ('PLACED', 'STARTING', 'READY', 'STREAMING');

-- name: end_host_sessions
UPDATE sessions SET state = 'ENDED', end_reason = $2, end_detail = $3
WHERE host_id = $1 AND state IN ('PLACED', 'STARTING', 'READY', 'STREAMING')
RETURNING session_id;

-- name: upsert_host
-- $8: the images the agent holds (hosts_derive_games_cached derives games_cached from them). $13-$15: the link this
-- registration arrived on, the broker process holding it and where that process takes forwarded calls. $16: where
-- the agent serves image chunks to its site ('' when it does not).
INSERT INTO hosts (host_id, provider_id, site_id, gpu_class, slots, free_slots, declared_price_micros, images_cached,
                   gpus, media_addresses, agent_version, epoch, status, registered_at, last_heartbeat_at, link_id,
                   link_replica, broker_address, peer_address)
VALUES ($1, $2, $3, $4, $5::integer, $5::integer - $6::integer, $7, $8, $9, $10, $11, $12, 'online', now(), now(), $13,
        $14, $15, $16)
ON CONFLICT (host_id) DO UPDATE SET
    site_id = excluded.site_id, gpu_class = excluded.gpu_class, slots = excluded.slots,
    free_slots = excluded.free_slots, declared_price_micros = excluded.declared_price_micros,
    images_cached = excluded.images_cached, gpus = excluded.gpus, media_addresses = excluded.media_addresses,
    agent_version = excluded.agent_version, epoch = excluded.epoch, status = 'online', draining = false,
    registered_at = now(), last_heartbeat_at = now(), link_id = excluded.link_id,
    link_replica = excluded.link_replica, link_lost_at = NULL, broker_address = excluded.broker_address,
    peer_address = excluded.peer_address
RETURNING host_id, epoch, drained;

-- name: host_live_sessions
SELECT s.session_id, s.state, s.game_id, s.tier, s.slots, s.venue_id, s.seat_id FROM sessions s
WHERE s.host_id = $1 AND s.state IN ('PLACED', 'STARTING', 'READY', 'STREAMING');

-- name: host_reports
-- A batch of agents' load reports in one statement. Only a link that still holds its host counts: what it returns
-- are the links whose reports counted; a link missing there was replaced (a newer connection, a newer epoch) or its
-- host declared lost.
UPDATE hosts h SET last_heartbeat_at = now(), cpu_load = u.cpu, gpu_load = u.gpu, draining = u.draining
FROM unnest($1::text[], $2::uuid[], $3::real[], $4::real[], $5::boolean[]) AS u(host_id, link_id, cpu, gpu, draining)
WHERE h.host_id = u.host_id AND h.link_id = u.link_id AND h.status = 'online'
RETURNING h.link_id;

-- name: links_lost
-- Links that ended without a goodbye ($1 hosts, $2 their links, one per index): the moment each was seen dead, by
-- this clock (unless its host moved on since), in one statement: a site that loses power drops hundreds at once.
UPDATE hosts h SET link_lost_at = now()
FROM unnest($1::text[], $2::uuid[]) AS l(host_id, link_id)
WHERE h.host_id = l.host_id AND h.link_id = l.link_id AND h.status = 'online' AND h.link_lost_at IS NULL;

-- name: links_stale
-- Of these links, the ones that no longer hold their host (declared lost, or taken over by a newer link): usually
-- none, so a process holding 10,000 links reads back nothing rather than 10,000 rows every check.
SELECT l.link_id FROM unnest($1::uuid[]) AS l(link_id)
WHERE NOT EXISTS (SELECT 1 FROM hosts h WHERE h.link_id = l.link_id AND h.status = 'online');

-- name: replica_alive
-- A broker process that holds agents' links says it is alive (and, the first time, that it exists).
INSERT INTO broker_replicas (replica_id, address) VALUES ($1, $2)
ON CONFLICT (replica_id) DO UPDATE SET alive_at = now(), address = excluded.address;

-- name: replicas_forget
-- Processes silent for a day are gone for good (their hosts were declared lost long ago).
DELETE FROM broker_replicas WHERE alive_at < now() - interval '1 day';

-- name: set_games_cached
-- $3: the images the agent holds now (hosts_derive_games_cached derives games_cached from them).
UPDATE hosts SET images_cached = $3 WHERE host_id = $1 AND epoch = $2;

-- name: set_image_fetches
-- $3: the fetches under way or failed, as the agent reports them (a JSON array).
UPDATE hosts SET image_fetches = $3 WHERE host_id = $1 AND epoch = $2;

-- name: find_lost
-- A host is lost when its agent's link was seen dead more than $1 s ago (the grace left for a reconnect), or when the
-- broker process holding its link has not said it is alive for $2 s and the host has shown no sign of life since
-- (that process died or is cut off: its links are as good as dead, and their agents reconnect elsewhere).
SELECT h.host_id FROM hosts h
WHERE h.status = 'online'
  AND ((h.link_lost_at IS NOT NULL AND h.link_lost_at < now() - make_interval(secs => $1))
       OR (h.last_heartbeat_at < now() - make_interval(secs => $2)
           AND NOT EXISTS (SELECT 1 FROM broker_replicas r
                           WHERE r.replica_id = h.link_replica AND r.alive_at >= now() - make_interval(secs => $2))))
ORDER BY h.host_id;

-- name: mark_lost
-- find_lost's hosts $3, locked (with their sessions) since, that are lost still.
UPDATE hosts h SET status = 'lost'
WHERE h.host_id = ANY($3::text[]) AND h.status = 'online'
  AND ((h.link_lost_at IS NOT NULL AND h.link_lost_at < now() - make_interval(secs => $1))
       OR (h.last_heartbeat_at < now() - make_interval(secs => $2)
           AND NOT EXISTS (SELECT 1 FROM broker_replicas r
                           WHERE r.replica_id = h.link_replica AND r.alive_at >= now() - make_interval(secs => $2))))
RETURNING host_id, epoch;

-- name: lock_sessions_on_hosts
-- end_sessions_on_hosts's sessions, then the hosts, locked in order first (migration 0012).
SELECT lock_sessions_then_hosts(ARRAY(
    SELECT session_id FROM sessions
    WHERE host_id = ANY($1::text[]) AND state IN ('PLACED', 'STARTING', 'READY', 'STREAMING')), $1::text[]);

-- name: end_sessions_on_hosts
UPDATE sessions SET state = 'ENDED', end_reason = 'HOST_LOST', end_detail = 'the agent''s link was lost'
WHERE host_id = ANY($1::text[]) AND state IN ('PLACED', 'STARTING', 'READY', 'STREAMING')
RETURNING session_id;

-- name: gone_hosts_holding_sessions
-- Hosts no longer online that still hold live sessions: a placement commit that read its host online just before
-- mark_lost (or set_offline) committed places on it after their sessions were ended (the commit's slot update waits
-- for the host's row, then goes on). Few hosts are not online at a time, so this reads from them.
SELECT h.host_id FROM hosts h
WHERE h.status <> 'online'
  AND EXISTS (SELECT 1 FROM sessions s
              WHERE s.host_id = h.host_id AND s.state IN ('PLACED', 'STARTING', 'READY', 'STREAMING'))
ORDER BY h.host_id;

-- name: set_offline
-- The agent said goodbye: the host takes nothing new and is not judged lost later.
UPDATE hosts SET status = 'offline' WHERE host_id = $1 AND epoch = $2 AND status = 'online' RETURNING site_id;

-- name: lock_reported_sessions
-- The sessions a batch of agents' reports is about, locked in one order (so two batches never deadlock).
SELECT session_id, state, host_id FROM sessions WHERE session_id = ANY($1::uuid[])
ORDER BY session_id
FOR UPDATE;

-- name: advance_reported
-- One step of many sessions at once (locked above); the triggers record each session's move as usual.
UPDATE sessions SET state = $3 WHERE session_id = ANY($1::uuid[]) AND state = $2;

-- name: host_broker_address
SELECT broker_address FROM hosts WHERE host_id = $1;

-- name: site_peer_lists
-- The online hosts of each of the sites $1, with the address each serves chunks on ('' when it does not).
SELECT site_id, host_id, peer_address FROM hosts
WHERE site_id = ANY($1::text[]) AND status = 'online'
ORDER BY site_id, host_id;

-- name: site_peers
-- The online hosts of host $1's site, this one among them, with the address each serves chunks on ('' when it does
-- not): its agent fetches chunks from those with an address and serves them to all (gpu_agent.peers).
SELECT p.host_id, p.peer_address FROM hosts h JOIN hosts p ON p.site_id = h.site_id
WHERE h.host_id = $1 AND p.status = 'online'
ORDER BY p.host_id;

-- name: notify_site_peers
-- The hosts of sites $1 changed (host $2 registered there, left one of them, or went offline): one notification
-- for the change, not one per host of the site (a site of 250 registering after a restart made 250 × 250 of them).
-- Each broker process holding links of those sites reads each site's list once and sends it to them, all but $2
-- (broker.links.LinkRegistry.on_sites_change; channel cloudseat_hosts, without a host_id). Sent at commit.
SELECT pg_notify('cloudseat_hosts', json_build_object('site_peers', $1::text[], 'except', $2::text)::text);
