-- name: seconds_until
-- By the database clock, which stamped the deadline: negative once it has passed.
SELECT extract(epoch FROM $1::timestamptz - now())::float8;

-- name: add_patron_time
-- $1: the session (locked by the caller, live and limited); $2: seconds to add. The trigger
-- sessions_stamp_paid_until moves the deadline, sessions_paid_until_notify tells the watchers.
UPDATE sessions SET paid_time_s = paid_time_s + $2
WHERE session_id = $1 AND state <> 'ENDED'
RETURNING *, extract(epoch FROM paid_until - now())::float8 AS left_s;

-- name: end_time_up
-- The liveness duty: every streaming session whose deadline passed more than $1 seconds ago (the grace) ends
-- TIME_UP, by the database clock.
UPDATE sessions
SET state = 'ENDED', ended_by = 'system:patron-time', end_reason = 'TIME_UP',
    end_detail = 'the paid time ran out'
WHERE state = 'STREAMING' AND paid_until IS NOT NULL AND paid_until < now() - make_interval(secs => $1::float8)
RETURNING session_id, host_id;
