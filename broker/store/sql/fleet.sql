-- name: create_provider
INSERT INTO providers (provider_id, name) VALUES ($1, $2) RETURNING *;

-- name: create_site
INSERT INTO sites (site_id, provider_id, name, region) VALUES ($1, $2, $3, $4) RETURNING *;

-- name: set_price
INSERT INTO prices (site_id, gpu_class, price_micros, bands, utc_offset_minutes, currency)
VALUES ($1, $2, $3, $4::jsonb, $5, $6)
ON CONFLICT (site_id, gpu_class) DO UPDATE
    SET price_micros = excluded.price_micros, bands = excluded.bands,
        utc_offset_minutes = excluded.utc_offset_minutes, currency = excluded.currency, updated_at = now()
RETURNING *, price_in_force(price_micros, bands, utc_offset_minutes, now()) AS price_now_micros;

-- name: get_host
SELECT v.*, h.images_cached, h.image_fetches, h.drain_deadline FROM host_view v JOIN hosts h USING (host_id)
WHERE v.host_id = $1;

-- name: list_hosts
SELECT v.*, h.images_cached, h.image_fetches, h.drain_deadline FROM host_view v JOIN hosts h USING (host_id)
WHERE ($1::text IS NULL OR v.provider_id = $1) AND ($2::text IS NULL OR v.site_id = $2)
ORDER BY v.host_id;

-- name: site_exists
SELECT provider_id FROM sites WHERE site_id = $1;

-- name: host_provider
SELECT provider_id FROM hosts WHERE host_id = $1;

-- name: drained_of_hosts
SELECT host_id, drained FROM hosts WHERE host_id = ANY($1::text[]);

-- name: enrolment_lock
-- Enrolments are checked against each other's prefixes: one enrolling transaction at a time.
SELECT pg_advisory_xact_lock(hashtext('cloudseat.host_enrolments'));

-- name: enrolment_prefix_clash
-- Would prefix $1 of provider $2 reach hosts another provider enrolled or runs?
SELECT EXISTS (
    SELECT 1 FROM host_enrolments e WHERE e.provider_id <> $2
      AND ((e.host_prefix IS NOT NULL AND (starts_with(e.host_prefix, $1) OR starts_with($1, e.host_prefix)))
           OR (e.host_id IS NOT NULL AND starts_with(e.host_id, $1)))
    UNION ALL
    SELECT 1 FROM hosts h WHERE h.provider_id <> $2 AND starts_with(h.host_id, $1)
);

-- name: enrolment_hosts_clash
-- The first of host ids $1 (1-based) that another provider than $2 enrolled or runs; none: no row.
SELECT u.i FROM unnest($1::text[]) WITH ORDINALITY AS u(host_id, i)
WHERE EXISTS (SELECT 1 FROM host_enrolments e WHERE e.provider_id <> $2 AND e.host_id = u.host_id)
   OR EXISTS (SELECT 1 FROM host_enrolments e WHERE e.provider_id <> $2 AND e.host_prefix IS NOT NULL
                                                AND starts_with(u.host_id, e.host_prefix))
   OR EXISTS (SELECT 1 FROM hosts h WHERE h.host_id = u.host_id AND h.provider_id <> $2)
ORDER BY u.i
LIMIT 1;

-- name: enrol_hosts
-- One row per host id; a host id the provider enrolled before moves to this site and class.
INSERT INTO host_enrolments AS e (provider_id, site_id, gpu_class, host_id, enrolled_by)
SELECT $1, $2, $3, u.host_id, $5 FROM unnest($4::text[]) AS u(host_id)
ON CONFLICT (host_id) WHERE host_id IS NOT NULL DO UPDATE
SET site_id = excluded.site_id, gpu_class = excluded.gpu_class, enrolled_at = now(), enrolled_by = excluded.enrolled_by
WHERE e.provider_id = excluded.provider_id;

-- name: enrol_prefix
INSERT INTO host_enrolments AS e (provider_id, site_id, gpu_class, host_prefix, enrolled_by)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (host_prefix) WHERE host_prefix IS NOT NULL DO UPDATE
SET site_id = excluded.site_id, gpu_class = excluded.gpu_class, enrolled_at = now(), enrolled_by = excluded.enrolled_by
WHERE e.provider_id = excluded.provider_id;

-- name: enrolment_of
-- The enrolment that admits host $1: its own (by id) before any prefix, the longest prefix first.
(SELECT provider_id, site_id, gpu_class, 0 AS rank FROM host_enrolments WHERE host_id = $1)
UNION ALL
(SELECT provider_id, site_id, gpu_class, 1 FROM host_enrolments
 WHERE host_prefix IS NOT NULL AND starts_with($1, host_prefix)
 ORDER BY length(host_prefix) DESC LIMIT 1)
ORDER BY rank
LIMIT 1;
