-- name: create_provider
INSERT INTO providers (provider_id, name) VALUES ($1, $2) RETURNING *;

-- name: create_site
INSERT INTO sites (site_id, provider_id, name, region) VALUES ($1, $2, $3, $4) RETURNING *;

-- name: set_price
INSERT INTO prices (site_id, gpu_class, price_micros, bands, utc_offset_minutes) VALUES ($1, $2, $3, $4::jsonb, $5)
ON CONFLICT (site_id, gpu_class) DO UPDATE
    SET price_micros = excluded.price_micros, bands = excluded.bands,
        utc_offset_minutes = excluded.utc_offset_minutes, updated_at = now()
RETURNING *, price_in_force(price_micros, bands, utc_offset_minutes, now()) AS price_now_micros;

-- name: get_host
SELECT v.*, h.images_cached, h.image_fetches FROM host_view v JOIN hosts h USING (host_id) WHERE v.host_id = $1;

-- name: list_hosts
SELECT v.*, h.images_cached, h.image_fetches FROM host_view v JOIN hosts h USING (host_id)
WHERE ($1::text IS NULL OR v.provider_id = $1) AND ($2::text IS NULL OR v.site_id = $2)
ORDER BY v.host_id;

-- name: set_drained
UPDATE hosts SET drained = $2 WHERE host_id = $1 RETURNING host_id;

-- name: site_exists
SELECT provider_id FROM sites WHERE site_id = $1;

-- name: host_provider
SELECT provider_id FROM hosts WHERE host_id = $1;

-- name: drained_of_hosts
SELECT host_id, drained FROM hosts WHERE host_id = ANY($1::text[]);
