-- cloudseat schema, version 17: a drain a provider can plan with. A drained host takes nothing new; its running
-- sessions go on until they end, or until the drain's deadline when it has one. At the deadline (this database's
-- clock) the placement leader's liveness duty ends what is left HOST_DRAINED, and each seat resumes its session on
-- another host, ahead of the queue, with the paid time it had left (store/sql/drains.sql, broker.drain).
-- Invariants:
--   * only a drained host has a deadline; an undrain clears it             (check hosts_drain_deadline_drained)
--   * a new, moved or cleared deadline reaches the watchers of the host's   (trigger hosts_drain_deadline_notify)
--     READY and STREAMING sessions, so they can warn their patrons. Sessions still starting read it with their next
--     step; they are not told now, since a PLACED session's change would send its agent the start command again.
--   * and every replica, as a drain does (trigger hosts_drain_notify, now on either column, with the deadline), so
--     the providers' consoles show it; the agent's link holder repeats the drain command, which changes nothing.

ALTER TABLE hosts
    ADD COLUMN drain_deadline timestamptz,
    ADD CONSTRAINT hosts_drain_deadline_drained CHECK (drain_deadline IS NULL OR drained);
CREATE INDEX hosts_drain_due ON hosts (drain_deadline) WHERE drain_deadline IS NOT NULL;

CREATE FUNCTION hosts_drain_deadline_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM notify_session_changes(ARRAY(
        SELECT session_change(s) FROM sessions s
        WHERE s.host_id = NEW.host_id AND s.state IN ('READY', 'STREAMING')
        ORDER BY s.session_id));
    RETURN NULL;
END $$;

CREATE TRIGGER hosts_drain_deadline_notify AFTER UPDATE OF drain_deadline ON hosts
    FOR EACH ROW WHEN (OLD.drain_deadline IS DISTINCT FROM NEW.drain_deadline)
    EXECUTE FUNCTION hosts_drain_deadline_notify();

CREATE OR REPLACE FUNCTION hosts_drain_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cloudseat_hosts', json_build_object(
        'host_id', NEW.host_id, 'drained', NEW.drained, 'drain_deadline', NEW.drain_deadline)::text);
    RETURN NULL;
END $$;

DROP TRIGGER hosts_drain_notify ON hosts;
CREATE TRIGGER hosts_drain_notify AFTER UPDATE OF drained, drain_deadline ON hosts
    FOR EACH ROW WHEN (OLD.drained IS DISTINCT FROM NEW.drained OR OLD.drain_deadline IS DISTINCT FROM NEW.drain_deadline)
    EXECUTE FUNCTION hosts_drain_notify();
