-- name: begin_notifying
-- A transaction whose commit does not wait for its WAL to reach the disk (broker.store.database.notifying: the
-- flush follows, outside PostgreSQL's notify lock). One round trip for both.
BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL synchronous_commit TO off;

-- name: commit_then_flush
-- The commit, then a transaction of its own that commits synchronously again. It must write WAL to wait for the
-- flush (a transaction that only took an id commits asynchronously whatever the setting), so it writes a
-- transactional logical-decoding message: a few bytes of WAL, no table, no lock, nothing any subscriber
-- reads unless it asks for messages. Its commit record lies after the first one's, so when it returns that one is
-- on disk (and on a synchronous standby) too; concurrent flushes share one fsync. One round trip for both.
COMMIT; SELECT pg_logical_emit_message(true, 'cloudseat.flush', '');

-- name: rollback
ROLLBACK;
