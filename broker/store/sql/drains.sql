-- name: set_drain
-- A drain replaces the one in force: drained with the deadline $3 seconds from now (database clock), or none when
-- $3 is NULL; an undrain ($2 false) clears the deadline (check hosts_drain_deadline_drained).
UPDATE hosts
SET drained = $2,
    drain_deadline = CASE WHEN $2 AND $3::float8 IS NOT NULL THEN now() + make_interval(secs => $3::float8) END
WHERE host_id = $1
RETURNING host_id, drain_deadline;

-- name: drain_due_hosts
-- The drained hosts whose deadline has passed and that still hold live sessions.
SELECT h.host_id FROM hosts h
WHERE h.drain_deadline IS NOT NULL AND h.drain_deadline <= now() AND h.drained
  AND EXISTS (SELECT 1 FROM sessions s
              WHERE s.host_id = h.host_id AND s.state IN ('PLACED', 'STARTING', 'READY', 'STREAMING'))
ORDER BY h.host_id;

-- name: end_drain_due
-- The liveness duty: every live session on hosts $1 whose drain deadline has passed by now ends HOST_DRAINED (the
-- caller locked them, then the hosts, first: migration 0012). $2: the detail kept in the history.
UPDATE sessions s
SET state = 'ENDED', ended_by = 'system:drain', end_reason = 'HOST_DRAINED', end_detail = $2
FROM hosts h
WHERE h.host_id = s.host_id AND h.host_id = ANY($1::text[])
  AND h.drained AND h.drain_deadline IS NOT NULL AND h.drain_deadline <= now()
  AND s.state IN ('PLACED', 'STARTING', 'READY', 'STREAMING')
RETURNING s.session_id, s.host_id;

-- name: watched_session
-- A session as WatchSession shows it: the row, and while it holds a host, that host's drain deadline and the
-- seconds until it by the database clock (negative once passed), for the patron's warnings (broker.drain).
SELECT s.*,
       CASE WHEN s.state IN ('PLACED', 'STARTING', 'READY', 'STREAMING') THEN h.drain_deadline END AS moves_at,
       CASE WHEN s.state IN ('PLACED', 'STARTING', 'READY', 'STREAMING')
            THEN extract(epoch FROM h.drain_deadline - now())::float8 END AS moves_in_s
FROM sessions s LEFT JOIN hosts h ON h.host_id = s.host_id
WHERE s.session_id = $1;
