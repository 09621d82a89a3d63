-- name: put_game
-- $4: the image's version ('' keeps the current one; '1' for a new game). A new version re-derives which hosts are
-- warm for the game (trigger games_version_rederive).
-- $5-$7: the version's image (reference, manifest digest, bytes new since the previous version); an update that
-- keeps the version and names no image keeps the image too.
INSERT INTO games (game_id, name, image_size_bytes, version, image_ref, image_digest, update_bytes)
VALUES ($1, $2, $3, coalesce(nullif($4, ''), '1'), $5, $6, $7)
ON CONFLICT (game_id) DO UPDATE
    SET name = excluded.name, image_size_bytes = excluded.image_size_bytes,
        version = CASE WHEN $4 = '' THEN games.version ELSE $4 END,
        image_ref = CASE WHEN $5 = '' AND ($4 = '' OR $4 = games.version) THEN games.image_ref ELSE $5 END,
        image_digest = CASE WHEN $5 = '' AND ($4 = '' OR $4 = games.version) THEN games.image_digest ELSE $6 END,
        update_bytes = CASE WHEN $5 = '' AND ($4 = '' OR $4 = games.version) THEN games.update_bytes ELSE $7 END,
        updated_at = now()
RETURNING *;

-- name: clear_game_lacking
DELETE FROM game_version_lacking WHERE game_id = $1 AND version = $2;

-- name: put_game_lacking
-- What each earlier version ($3, $4: versions and bytes) lacks of version $2 (after clear_game_lacking).
INSERT INTO game_version_lacking (game_id, version, from_version, bytes)
SELECT $1, $2, f, b FROM unnest($3::text[], $4::bigint[]) AS u(f, b);

-- name: game_lacking
SELECT from_version, bytes FROM game_version_lacking WHERE game_id = $1 AND version = $2 ORDER BY from_version;

-- name: game_image
SELECT game_id, version, image_size_bytes, image_ref, image_digest FROM games WHERE game_id = $1;

-- name: prewarm_hosts
-- Tell the replica holding each online host's agent link of the site to have it fetch the image (channel
-- cloudseat_hosts, as drains), skipping hosts that hold the current version already. Sent at commit. The site's
-- peers are not in it: every agent holds its site's list already (SitePeersCommand), and a list per host made a
-- site of ~200 serving hosts pass NOTIFY's 8000 bytes and the queue carry the list once per host.
SELECT host_id,
       pg_notify('cloudseat_hosts', json_build_object(
           'host_id', host_id,
           'prewarm', json_build_object('game_id', $2::text, 'version', $3::text, 'image_size_bytes', $4::bigint,
                                        'image_ref', $5::text, 'image_digest', $6::text)
       )::text)
FROM hosts
WHERE site_id = $1 AND status = 'online' AND NOT ($2::text = ANY(games_cached))
ORDER BY host_id;

-- name: record_prewarm
INSERT INTO prewarms (site_id, game_id, version, host_ids) VALUES ($1, $2, $3, $4);

-- name: prewarms_missed
-- Images pre-warmed at the host's site, in the game's current version, that the host does not hold: a host that was
-- offline when the provider asked, or joined the site since, fetches them when it registers.
-- peers: the site's online hosts that serve chunks, as [host_id, address] pairs.
SELECT DISTINCT g.game_id, g.version, g.image_size_bytes, g.image_ref, g.image_digest,
       (SELECT coalesce(jsonb_agg(jsonb_build_array(s.host_id, s.peer_address) ORDER BY s.host_id), '[]')
        FROM hosts s WHERE s.site_id = h.site_id AND s.status = 'online' AND s.peer_address <> '') AS peers
FROM prewarms p
JOIN hosts h ON h.site_id = p.site_id
JOIN games g ON g.game_id = p.game_id AND g.version = p.version
WHERE h.host_id = $1 AND NOT (g.game_id = ANY(h.games_cached))
ORDER BY g.game_id;
