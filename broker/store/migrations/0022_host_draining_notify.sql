-- cloudseat schema, version 22: an agent's own draining flag (it shuts down: its heartbeat says so) is told on
-- cloudseat_hosts like every other change placement reads of a host, so the placement leader no longer needs to
-- read every host every two seconds to see it (broker.scheduler.HostCache: a full read cost ~200 ms of the
-- leader's CPU at 10,000 hosts and held up the round it fell in).
-- The notification carries {"host_id", "draining"}: no "status" and no "drained", so the agents' links do nothing
-- with it; the placement leader reads the host again, and the consoles' live views show it.

CREATE FUNCTION hosts_draining_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cloudseat_hosts', json_build_object('host_id', NEW.host_id, 'draining', NEW.draining)::text);
    RETURN NULL;
END $$;

CREATE TRIGGER hosts_draining_notify AFTER UPDATE OF draining ON hosts
    FOR EACH ROW WHEN (OLD.draining IS DISTINCT FROM NEW.draining)
    EXECUTE FUNCTION hosts_draining_notify();
