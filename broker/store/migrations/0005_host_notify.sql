-- cloudseat schema, version 5: what one broker replica must learn about hosts linked to another.
--   * every committed change of a host's drain is told to every replica (trigger hosts_drain_notify, channel
--     cloudseat_hosts), so the replica holding the host's agent link sends the command, whichever served the call
--   * a host records the address of the replica holding its agent's link (broker_address), so a call that needs
--     the agent (Negotiate) reaching another replica is forwarded there

ALTER TABLE hosts ADD COLUMN broker_address text;

CREATE FUNCTION hosts_drain_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cloudseat_hosts', json_build_object('host_id', NEW.host_id, 'drained', NEW.drained)::text);
    RETURN NULL;
END $$;

CREATE TRIGGER hosts_drain_notify AFTER UPDATE OF drained ON hosts
    FOR EACH ROW WHEN (OLD.drained IS DISTINCT FROM NEW.drained) EXECUTE FUNCTION hosts_drain_notify();
