-- name: create_provider
INSERT INTO providers (provider_id, name) VALUES ($1, $2) RETURNING *;

-- name: create_site
INSERT INTO sites (site_id, provider_id, name, region) VALUES ($1, $2, $3, $4) RETURNING *;

-- name: put_game
INSERT INTO games (game_id, name, image_size_bytes) VALUES ($1, $2, $3)
ON CONFLICT (game_id) DO UPDATE
    SET name = excluded.name, image_size_bytes = excluded.image_size_bytes, updated_at = now()
RETURNING *;

-- name: set_price
INSERT INTO prices (site_id, gpu_class, price_micros) VALUES ($1, $2, $3)
ON CONFLICT (site_id, gpu_class) DO UPDATE SET price_micros = excluded.price_micros, updated_at = now()
RETURNING *;

-- name: get_host
SELECT * FROM host_view WHERE host_id = $1;

-- name: list_hosts
SELECT * FROM host_view
WHERE ($1::text IS NULL OR provider_id = $1) AND ($2::text IS NULL OR site_id = $2)
ORDER BY host_id;

-- name: set_drained
UPDATE hosts SET drained = $2 WHERE host_id = $1 RETURNING host_id;

-- name: site_exists
SELECT provider_id FROM sites WHERE site_id = $1;

-- name: host_provider
SELECT provider_id FROM hosts WHERE host_id = $1;

-- name: drained_of_hosts
SELECT host_id, drained FROM hosts WHERE host_id = ANY($1::text[]);
