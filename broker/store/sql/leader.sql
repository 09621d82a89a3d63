-- name: ensure_lease
INSERT INTO leadership (name) VALUES ($1) ON CONFLICT (name) DO NOTHING;

-- name: lock_lease
-- The lease as a taker judges it, locked until the taker's transaction ends; nothing when another taker is judging
-- it now (it tries again later). The holder is still connected when the backend that took the lease is alive (not
-- a pid reused by a backend started after taken_at; where this role may not see another role's backend_start, the
-- pid alone decides).
SELECT holder, term, backend_pid,
       expires_at <= clock_timestamp() AS expired,
       EXISTS (
           SELECT 1 FROM pg_stat_activity a
           WHERE a.pid = leadership.backend_pid AND (a.backend_start IS NULL OR a.backend_start <= leadership.taken_at)
       ) AS holder_connected
FROM leadership WHERE name = $1
FOR UPDATE OF leadership SKIP LOCKED;

-- name: take_lease
UPDATE leadership
SET holder = $2, term = term + 1, backend_pid = pg_backend_pid(), taken_at = clock_timestamp(),
    expires_at = clock_timestamp() + make_interval(secs => $3)
WHERE name = $1
RETURNING term;

-- name: renew_lease
-- Nothing returned: another replica took the lease (a new term).
UPDATE leadership SET expires_at = clock_timestamp() + make_interval(secs => $4)
WHERE name = $1 AND holder = $2 AND term = $3
RETURNING term;

-- name: release_lease
UPDATE leadership SET expires_at = clock_timestamp() WHERE name = $1 AND holder = $2 AND term = $3;

-- name: end_backend
SELECT pg_terminate_backend($1);
