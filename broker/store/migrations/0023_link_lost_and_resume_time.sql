-- cloudseat schema, version 23: a host whose agent's link was seen dead takes nothing new, and a seat's resume
-- goes into the grouped insert of new starts.
--
-- * A link seen dead (hosts.link_lost_at set: the agent's transport stopped answering, migration 0010) is told on
--   cloudseat_hosts, so the placement leader stops placing there at once rather than when the host is declared
--   lost after the grace for a reconnect (broker.scheduler.HostCache). A site that loses power drops its hosts'
--   links one by one over a keepalive interval; before this, the resumes of the first were placed on the others,
--   and ended again HOST_LOST seconds later (docs/loadtest-fleet.md). The notification carries
--   {"host_id", "link_lost"}: no "status", so the agents' links do nothing with it.
-- * The paid seconds a resumed session keeps (what the lost one had left when it ended, at least 1, 0 for an
--   unlimited one) are worked out here, once, for the grouped insert and the one-by-one resume alike.

CREATE FUNCTION hosts_link_lost_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cloudseat_hosts', json_build_object(
        'host_id', NEW.host_id, 'link_lost', NEW.link_lost_at IS NOT NULL)::text);
    RETURN NULL;
END $$;

CREATE TRIGGER hosts_link_lost_notify AFTER UPDATE OF link_lost_at ON hosts
    FOR EACH ROW WHEN (OLD.link_lost_at IS DISTINCT FROM NEW.link_lost_at)
    EXECUTE FUNCTION hosts_link_lost_notify();

-- The lost session's paid seconds, its paid-until and end: what a resume of it carries over (all of it if it never
-- streamed; at least 1 s so that a limited session never resumes unlimited; 0 for an unlimited one).
CREATE FUNCTION resume_paid_time(paid_time_s integer, paid_until timestamptz, ended_at timestamptz)
RETURNS integer LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN paid_time_s <= 0 THEN 0
        WHEN paid_until IS NULL OR ended_at IS NULL THEN paid_time_s
        ELSE greatest(1, ceil(extract(epoch FROM paid_until - ended_at)))::integer
    END
$$;
