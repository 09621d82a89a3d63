-- name: insert_session
-- One round trip on the happy path: the seat's zone fixes tier and cap; no row back means the seat (or venue) is
-- unknown, or request_id was used before (ON CONFLICT), and the caller finds out which.
-- $9: the zone the seat believes it is in ('' = any); $10: the lost session this one resumes (NULL = none), which
-- the caller has checked in the same transaction; $11, $12: who asks, from where (for the audit trigger); $13: the
-- patron's paid seconds (0 = unlimited).
INSERT INTO sessions (session_id, venue_id, seat_id, zone_id, request_id, game_id, patron_id, slots, tier,
                      latency_cap_ms, state, token, resumes, started_by, by_peer, paid_time_s, playout)
SELECT $1, st.venue_id, st.seat_id, st.zone_id, $4, $5, $6, $7, z.tier, z.latency_cap_ms, 'PENDING', $8, $10,
       $11, $12, $13, z.playout
FROM seats st JOIN zones z ON z.venue_id = st.venue_id AND z.zone_id = st.zone_id
WHERE st.venue_id = $2 AND st.seat_id = $3 AND ($9 = '' OR st.zone_id = $9)
ON CONFLICT (venue_id, request_id) DO NOTHING
RETURNING *;

-- name: insert_sessions
-- Many new starts and resumes in one statement: insert_session's rows, one per array index. A start that conflicts
-- (its request id used before, its seat busy, its lost session resumed already) or whose seat or zone does not match
-- gets no row back, as does a resume whose lost session ($13) is not this seat's, not ended by one of the
-- resumable reasons $15 within $16 seconds, or not the one its token ($14; NULL: checked by signature before) opens;
-- an unknown game fails the whole statement. Either way the start is then inserted alone, which tells why
-- (broker.store.session_batches). Of two starts for one seat, the one that arrived first gets it. A resume that names
-- no paid time carries the lost session's over (resume_paid_time, migration 0023).
INSERT INTO sessions (session_id, venue_id, seat_id, zone_id, request_id, game_id, patron_id, slots, tier,
                      latency_cap_ms, state, token, started_by, by_peer, paid_time_s, playout, resumes)
SELECT r.session_id, st.venue_id, st.seat_id, st.zone_id, r.request_id, r.game_id, r.patron_id, r.slots, z.tier,
       z.latency_cap_ms, 'PENDING', r.token, r.started_by, r.by_peer,
       CASE WHEN r.resumes IS NULL OR r.paid_time_s > 0 THEN r.paid_time_s
            ELSE resume_paid_time(l.paid_time_s, l.paid_until, l.ended_at) END,
       z.playout, r.resumes
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[], $8::text[],
            $9::text[], $10::text[], $11::text[], $12::int[], $13::uuid[], $14::text[]) WITH ORDINALITY
     AS r(session_id, venue_id, seat_id, request_id, game_id, patron_id, slots, token, zone_id, started_by,
          by_peer, paid_time_s, resumes, lost_token, arrived)
JOIN seats st ON st.venue_id = r.venue_id AND st.seat_id = r.seat_id
JOIN zones z ON z.venue_id = st.venue_id AND z.zone_id = st.zone_id
LEFT JOIN sessions l ON l.session_id = r.resumes
WHERE (r.zone_id = '' OR st.zone_id = r.zone_id)
  AND (r.resumes IS NULL
       OR (l.venue_id = st.venue_id AND l.seat_id = st.seat_id AND l.state = 'ENDED'
           AND l.end_reason = ANY($15::text[]) AND l.ended_at >= now() - make_interval(secs => $16::float8)
           AND (r.lost_token IS NULL OR l.token = r.lost_token)))
ORDER BY r.venue_id, r.seat_id, r.arrived
ON CONFLICT DO NOTHING
RETURNING *;

-- name: end_sessions
-- Many end_session compare-and-sets in one statement, one per array index (session ids distinct): a session moved
-- since it was read gets no row back, and its caller reads it again.
UPDATE sessions s
SET state = 'ENDED', end_reason = e.reason, end_detail = e.detail, ended_by = e.ended_by, by_peer = e.by_peer
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
     AS e(session_id, expected, reason, detail, ended_by, by_peer)
WHERE s.session_id = e.session_id AND s.state = e.expected
RETURNING s.*;

-- name: session_by_request
SELECT * FROM sessions WHERE venue_id = $1 AND request_id = $2;

-- name: venue_exists
SELECT 1 FROM venues WHERE venue_id = $1;

-- name: seat_zone
SELECT zone_id FROM seats WHERE venue_id = $1 AND seat_id = $2;

-- name: lock_session
SELECT * FROM sessions WHERE session_id = $1 FOR UPDATE;

-- name: seconds_since
-- By the database clock, which stamped the time.
SELECT extract(epoch FROM now() - $1::timestamptz)::float8;

-- name: resume_paid_time
SELECT resume_paid_time($1, $2, $3);

-- name: resumed_by
SELECT * FROM sessions WHERE resumes = $1;

-- name: list_games
SELECT * FROM games ORDER BY name, game_id;

-- name: get_session
SELECT * FROM sessions WHERE session_id = $1;

-- name: session_history
SELECT seq, from_state, to_state, end_reason, detail, at FROM session_transitions
WHERE session_id = $1 ORDER BY seq;

-- name: advance
-- Compare-and-set: the move applies only if nobody moved the session since it was read.
UPDATE sessions SET state = $3 WHERE session_id = $1 AND state = $2 RETURNING *;

-- name: end_session
-- $5, $6: who ends it, from where (for the audit trigger).
UPDATE sessions SET state = 'ENDED', end_reason = $3, end_detail = $4, ended_by = $5, by_peer = $6
WHERE session_id = $1 AND state = $2
RETURNING *;

-- name: queue_positions
SELECT session_id, pos, total FROM (
    SELECT session_id,
           row_number() OVER (ORDER BY resumes IS NULL, created_at, session_id) AS pos,
           count(*) OVER () AS total
    FROM sessions WHERE state = 'PENDING'
) q
WHERE session_id = ANY($1::uuid[]);

-- name: queue_position
-- One session's place: the PENDING sessions ahead of it in the queue's order (resumes first, then oldest first),
-- counted along index sessions_queue, and the queue's length.
SELECT 1 + (SELECT count(*) FROM sessions q
            WHERE q.state = 'PENDING'
              AND (q.resumes IS NULL, q.created_at, q.session_id) < (s.resumes IS NULL, s.created_at, s.session_id))
           AS pos,
       (SELECT count(*) FROM sessions WHERE state = 'PENDING') AS total
FROM sessions s WHERE s.session_id = $1 AND s.state = 'PENDING';

-- name: lock_timed_out
-- end_timed_out's sessions and their hosts, locked in order first (migration 0012); same parameters.
SELECT lock_sessions_then_hosts(ARRAY(
    SELECT session_id FROM sessions
    WHERE state IN ('PENDING', 'PLACED', 'STARTING', 'READY')
      AND updated_at < now() - make_interval(secs => CASE state
            WHEN 'PENDING' THEN $1::float8 WHEN 'PLACED' THEN $2::float8 WHEN 'STARTING' THEN $3::float8
            ELSE $4::float8 END)), '{}');

-- name: lock_sessions_then_hosts
-- Before a write of many sessions: them, then their hosts and the hosts $2, each in id order (migration 0012).
SELECT lock_sessions_then_hosts($1::uuid[], $2::text[]);

-- name: end_timed_out
-- Ends every session that sat too long in a waiting state. $1..$4: the limits in seconds for PENDING, PLACED,
-- STARTING and READY; $5, $6: the end reasons for a pending and for a starting session. broker.lifecycle.Timeouts
-- decides all six.
UPDATE sessions
SET state = 'ENDED',
    ended_by = 'system:liveness',
    end_reason = CASE WHEN state = 'PENDING' THEN $5 ELSE $6 END,
    end_detail = 'no progress from ' || state || ' within the time limit'
WHERE state IN ('PENDING', 'PLACED', 'STARTING', 'READY')
  AND updated_at < now() - make_interval(secs => CASE state
        WHEN 'PENDING' THEN $1::float8 WHEN 'PLACED' THEN $2::float8 WHEN 'STARTING' THEN $3::float8
        ELSE $4::float8 END)
RETURNING session_id, host_id, end_reason, end_detail;

-- name: held_or_claimed
-- For a reconnecting agent: the sessions its host holds live ($1) and the sessions the agent says it runs ($2),
-- whatever their state or host, read together.
SELECT session_id, state, host_id, end_reason, game_id, tier, slots, venue_id, seat_id, playout FROM sessions
WHERE (host_id = $1 AND state IN ('PLACED', 'STARTING', 'READY', 'STREAMING')) OR session_id = ANY($2::uuid[])
ORDER BY updated_at, session_id;
