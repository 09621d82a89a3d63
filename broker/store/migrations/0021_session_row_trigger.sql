-- cloudseat schema, version 21: a session's move costs the database one row trigger, not three row triggers and a
-- statement trigger over transition tables.
--   Measured (cloudseat-loadtest lifecycle, rounds of 4 as the broker's group commit makes them below capacity): of
--   the ~1.9 ms of PostgreSQL CPU a whole session took (start, place, the agent's report, end), ~0.5 ms went to the
--   statement triggers that told the changes (PostgreSQL building the old and new transition tables for every
--   UPDATE of sessions, joining them and building the JSON), and each row trigger call has a cost of its own.
--   * the row trigger sessions_after_change now does all a move needs: the host's free slots, the transition row,
--     the audit row (was sessions_audit), the metering cursor (was sessions_metering) and the change's notification
--     text, which it gathers in a transaction-local setting, sending a full chunk (~7000 bytes; NOTIFY takes 8000)
--     as soon as it fills;
--   * a statement trigger without transition tables sends what is left at the end of each statement. So listeners
--     hear the same thing as before: JSON arrays of session_change objects, each statement's changes in chunks;
--     a rolled-back statement's gathered text goes with it (the setting is transaction-local and a failed
--     statement aborts its transaction or savepoint, which restores it).
-- Nothing a caller sees changes: the same rows are written in the same transaction, with the same invariants.

DROP TRIGGER sessions_notify_inserted ON sessions;
DROP TRIGGER sessions_notify_updated ON sessions;
DROP FUNCTION sessions_notify_inserted();
DROP FUNCTION sessions_notify_updated();
DROP TRIGGER sessions_audit ON sessions;
DROP FUNCTION sessions_audit();
DROP TRIGGER sessions_metering ON sessions;
DROP FUNCTION sessions_metering();

-- What a session change says, as before (migration 0020: 0013's and the playout mode on PLACED), now in PL/pgSQL:
-- called from a row trigger, a SQL function is planned again on every call; PL/pgSQL keeps its plans for the
-- connection.
CREATE OR REPLACE FUNCTION session_change(s sessions) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    change jsonb := jsonb_build_object(
        'session_id', s.session_id, 'seq', s.seq, 'state', s.state, 'venue_id', s.venue_id, 'seat_id', s.seat_id,
        'host_id', s.host_id, 'game_id', s.game_id, 'tier', s.tier, 'slots', s.slots, 'end_reason', s.end_reason,
        'pending_reason', s.pending_reason, 'resumed', s.resumes IS NOT NULL,
        'waited_ms', CASE WHEN s.placed_at IS NOT NULL
                          THEN round(extract(epoch FROM s.placed_at - s.created_at) * 1000) END);
    image jsonb;
BEGIN
    IF s.state = 'PLACED' THEN
        change := change || jsonb_build_object('playout', s.playout);
        SELECT jsonb_build_object('version', g.version, 'image_ref', g.image_ref, 'image_digest', g.image_digest)
        INTO image FROM games g WHERE g.game_id = s.game_id AND g.image_ref <> '';
        IF image IS NOT NULL THEN
            change := change || image;
        END IF;
    END IF;
    RETURN change;
END $$;

-- Add one change to the text gathered for the current statement; send the gathered text first when the change
-- would not fit beside it in one notification.
CREATE FUNCTION session_changes_gather(change text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    gathered text := coalesce(current_setting('cloudseat.session_changes', true), '');
BEGIN
    IF gathered <> '' AND length(gathered) + length(change) + 2 > 7000 THEN
        PERFORM pg_notify('cloudseat_sessions', '[' || gathered || ']');
        gathered := '';
    END IF;
    PERFORM set_config('cloudseat.session_changes',
                       CASE WHEN gathered = '' THEN change ELSE gathered || ', ' || change END, true);
END $$;

-- At the end of each statement on sessions: send what its rows gathered.
CREATE FUNCTION session_changes_send() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    gathered text := coalesce(current_setting('cloudseat.session_changes', true), '');
BEGIN
    IF gathered <> '' THEN
        PERFORM pg_notify('cloudseat_sessions', '[' || gathered || ']');
        PERFORM set_config('cloudseat.session_changes', '', true);
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION sessions_after_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    inserted boolean := TG_OP = 'INSERT';
    moved boolean := TG_OP = 'INSERT' OR NEW.state IS DISTINCT FROM OLD.state;
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

    IF moved THEN
        INSERT INTO session_transitions (session_id, seq, from_state, to_state, end_reason, detail, at)
        VALUES (NEW.session_id, NEW.seq, CASE WHEN NOT inserted THEN OLD.state END, NEW.state,
                NEW.end_reason, CASE WHEN NEW.state = 'ENDED' THEN NEW.end_detail ELSE '' END, NEW.updated_at);

        -- The audit trail: who started it, who ended it and why (the writer's identity rides on the row).
        IF inserted THEN
            INSERT INTO audit_log (actor, tenant, action, target, detail, peer)
            VALUES (NEW.started_by, 'venue:' || NEW.venue_id, 'session.start', 'session:' || NEW.session_id,
                    jsonb_build_object('seat_id', NEW.seat_id, 'game_id', NEW.game_id, 'patron_id', NEW.patron_id,
                                       'slots', NEW.slots, 'resumes', NEW.resumes),
                    NEW.by_peer);
        ELSIF NEW.state = 'ENDED' AND OLD.state <> 'ENDED' THEN
            INSERT INTO audit_log (actor, tenant, action, target, detail, peer)
            VALUES (coalesce(NEW.ended_by, 'system'), 'venue:' || NEW.venue_id, 'session.end',
                    'session:' || NEW.session_id,
                    jsonb_build_object('reason', NEW.end_reason, 'detail', NEW.end_detail, 'host_id', NEW.host_id,
                                       'from_state', OLD.state),
                    CASE WHEN NEW.ended_by IS NULL THEN '' ELSE NEW.by_peer END);
        END IF;

        -- Metering: every placed session has a cursor from its placement; an end makes it due at once.
        IF NOT inserted AND NEW.state = 'PLACED' AND OLD.state IS DISTINCT FROM 'PLACED' THEN
            INSERT INTO metering_cursor (session_id, next_due_at) VALUES (NEW.session_id, NEW.placed_at)
            ON CONFLICT (session_id) DO NOTHING;
        ELSIF NOT inserted AND NEW.state = 'ENDED' AND OLD.state <> 'ENDED' THEN
            UPDATE metering_cursor SET next_due_at = NEW.ended_at WHERE session_id = NEW.session_id AND NOT done;
        END IF;
    END IF;

    -- Tell the change (a move, a new pending reason, or added paid time) at the statement's end.
    IF moved OR NEW.pending_reason IS DISTINCT FROM OLD.pending_reason
       OR NEW.paid_time_s IS DISTINCT FROM OLD.paid_time_s THEN
        PERFORM session_changes_gather(session_change(NEW)::text);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER sessions_changes_send AFTER INSERT OR UPDATE ON sessions
    FOR EACH STATEMENT EXECUTE FUNCTION session_changes_send();
