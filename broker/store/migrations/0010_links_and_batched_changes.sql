-- cloudseat schema, version 10: a broker that holds a region's evening on every core.
--   * session changes are told once per statement, not once per row. A placement batch of a thousand sessions was a
--     thousand notifications, each parsed by every broker process; now it is a few dozen, each a JSON array of the
--     changes' essentials (session_change). A reader that needs the whole row reads it.
--   * a host is alive while its agent's link is, not while it heartbeats. The broker process holding the link
--     records it (link_id, link_replica) and, when the link dies without a goodbye, the moment it was seen dead
--     (link_lost_at); every such process says it is alive every second (broker_replicas.alive_at). The placement
--     leader declares a host lost when its link has been dead, or its broker process silent, for too long, by this
--     database's clock (store/sql/hosts.sql, mark_lost).
--   * the latest stream stats of each session live here (session_stream_stats), so any broker process shows them.
--   * host changes that placement and the agents' links act on (online, lost, offline, a new epoch, other cached
--     games) are told on cloudseat_hosts, as drains are.

CREATE TABLE broker_replicas (
    replica_id  text PRIMARY KEY,
    address     text NOT NULL DEFAULT '',
    started_at  timestamptz NOT NULL DEFAULT now(),
    alive_at    timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE hosts
    ADD COLUMN link_id uuid,
    ADD COLUMN link_replica text,
    ADD COLUMN link_lost_at timestamptz;
CREATE INDEX hosts_link_replica ON hosts (link_replica) WHERE status = 'online';

CREATE TABLE session_stream_stats (
    session_id    uuid PRIMARY KEY REFERENCES sessions ON DELETE CASCADE,
    fps_sent      real NOT NULL CHECK (fps_sent >= 0),
    bitrate_kbps  integer NOT NULL CHECK (bitrate_kbps >= 0),
    rtt_ms        real NOT NULL CHECK (rtt_ms >= 0),
    loss_pct      real NOT NULL CHECK (loss_pct >= 0),
    encode_ms     real NOT NULL CHECK (encode_ms >= 0),
    reported_at   timestamptz NOT NULL
);

-- What a session change says: enough for the agents' links (start and stop commands), the scheduler (new requests,
-- freed slots), the consoles and the placement metrics to act, in a few hundred bytes.
CREATE FUNCTION session_change(s sessions) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'session_id', s.session_id, 'seq', s.seq, 'state', s.state, 'venue_id', s.venue_id, 'seat_id', s.seat_id,
        'host_id', s.host_id, 'game_id', s.game_id, 'tier', s.tier, 'slots', s.slots, 'end_reason', s.end_reason,
        'pending_reason', s.pending_reason, 'resumed', s.resumes IS NOT NULL,
        'waited_ms', CASE WHEN s.placed_at IS NOT NULL
                          THEN round(extract(epoch FROM s.placed_at - s.created_at) * 1000) END)
$$;

-- NOTIFY takes at most 8000 bytes: the changes go out in arrays of at most about 7000.
CREATE FUNCTION notify_session_changes(changes jsonb[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    payload text;
BEGIN
    FOR payload IN
        SELECT jsonb_agg(c ORDER BY i)::text
        FROM (SELECT c, i, (sum(length(c::text) + 2) OVER (ORDER BY i)) / 7000 AS chunk
              FROM unnest(changes) WITH ORDINALITY AS u(c, i)) x
        GROUP BY chunk
        ORDER BY chunk
    LOOP
        PERFORM pg_notify('cloudseat_sessions', payload);
    END LOOP;
END $$;

CREATE FUNCTION sessions_notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM notify_session_changes(ARRAY(SELECT session_change(n) FROM new_rows n));
    RETURN NULL;
END $$;

-- A move, a new pending reason, or added paid time.
CREATE FUNCTION sessions_notify_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM notify_session_changes(ARRAY(
        SELECT session_change(n) FROM new_rows n JOIN old_rows o ON o.session_id = n.session_id
        WHERE n.state IS DISTINCT FROM o.state OR n.pending_reason IS DISTINCT FROM o.pending_reason
           OR n.paid_time_s IS DISTINCT FROM o.paid_time_s
        ORDER BY n.session_id));
    RETURN NULL;
END $$;

CREATE TRIGGER sessions_notify_inserted AFTER INSERT ON sessions
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION sessions_notify_inserted();
CREATE TRIGGER sessions_notify_updated AFTER UPDATE ON sessions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION sessions_notify_updated();

-- The row trigger keeps the slots and the history; it no longer notifies (the statement triggers above do).
CREATE OR REPLACE FUNCTION sessions_after_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    old_holds boolean := TG_OP = 'UPDATE'
        AND OLD.host_id IS NOT NULL AND OLD.state IN ('PLACED', 'STARTING', 'READY', 'STREAMING');
    new_holds boolean := NEW.host_id IS NOT NULL AND NEW.state IN ('PLACED', 'STARTING', 'READY', 'STREAMING');
BEGIN
    -- Slot accounting: free_slots_in_range refuses the whole transaction on oversubscription.
    IF old_holds AND (NOT new_holds OR NEW.host_id IS DISTINCT FROM OLD.host_id) THEN
        UPDATE hosts SET free_slots = free_slots + OLD.slots WHERE host_id = OLD.host_id;
    END IF;
    IF new_holds AND (NOT old_holds OR NEW.host_id IS DISTINCT FROM OLD.host_id) THEN
        UPDATE hosts SET free_slots = free_slots - NEW.slots WHERE host_id = NEW.host_id;
    END IF;

    IF TG_OP = 'INSERT' OR NEW.state IS DISTINCT FROM OLD.state THEN
        INSERT INTO session_transitions (session_id, seq, from_state, to_state, end_reason, detail, at)
        VALUES (NEW.session_id, NEW.seq, CASE WHEN TG_OP = 'UPDATE' THEN OLD.state END, NEW.state,
                NEW.end_reason, CASE WHEN NEW.state = 'ENDED' THEN NEW.end_detail ELSE '' END, NEW.updated_at);
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER sessions_paid_until_notify ON sessions;
DROP FUNCTION sessions_paid_until_notify();

CREATE FUNCTION hosts_state_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cloudseat_hosts', json_build_object(
        'host_id', NEW.host_id, 'status', NEW.status, 'epoch', NEW.epoch,
        'link_id', NEW.link_id)::text);
    RETURN NULL;
END $$;

CREATE TRIGGER hosts_state_notify_inserted AFTER INSERT ON hosts
    FOR EACH ROW EXECUTE FUNCTION hosts_state_notify();
CREATE TRIGGER hosts_state_notify_updated AFTER UPDATE OF status, epoch, link_id, images_cached ON hosts
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.epoch IS DISTINCT FROM NEW.epoch
                       OR OLD.link_id IS DISTINCT FROM NEW.link_id
                       OR OLD.images_cached IS DISTINCT FROM NEW.images_cached)
    EXECUTE FUNCTION hosts_state_notify();
