-- cloudseat schema, version 12: writers of many sessions at once lock in one order.
--   A session's move that takes or frees slots updates its host's row (trigger sessions_after_change), so a
--   statement that moves many sessions locks sessions and hosts interleaved, in whatever order it meets them. One
--   such writer at a time (the leader's placements) never deadlocked; grouped ends from every tenant worker
--   (broker.store.session_batches) would. So writers of many sessions or hosts first call lock_sessions_then_hosts:
--   its sessions in id order, then their hosts (and any others it names) in id order. A writer of one session locks
--   it before its host as well; no two of them can then wait on each other in a circle. The leader's placement
--   commit does not (measured: locking first made its rounds slower, docs/loadtest-fleet.md#group-commit); the
--   rare crossing with it is undone by PostgreSQL, and the loser (an agents' load report, a batch of ends, a round)
--   is simply tried again. The lock is the one an
--   UPDATE takes (NO KEY UPDATE): a foreign key's check from another table (stream stats) is not held up by it.

CREATE FUNCTION lock_sessions_then_hosts(session_ids uuid[], host_ids text[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM sessions WHERE session_id = ANY(session_ids) ORDER BY session_id FOR NO KEY UPDATE;
    PERFORM 1 FROM hosts
    WHERE host_id = ANY(host_ids || ARRAY(SELECT host_id FROM sessions
                                          WHERE session_id = ANY(session_ids) AND host_id IS NOT NULL))
    ORDER BY host_id
    FOR NO KEY UPDATE;
END $$;
