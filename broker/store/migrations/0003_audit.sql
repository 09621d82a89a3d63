-- cloudseat schema, version 3: the audit log — who did what, when, from where — append-only.
-- Invariants:
--   * nothing in audit_log is ever changed or removed   (triggers audit_log_append_only, audit_log_no_truncate)
--   * every session start and end is audited, atomically with it, whichever writer made it
--     (trigger sessions_audit; the writer's identity rides on the row: started_by, ended_by, by_peer)

CREATE TABLE audit_log (
    seq      bigserial PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor    text NOT NULL,                 -- the caller: 'venue:cafe', 'seat:cafe/s1', 'agent:host-1', 'system:...'
    tenant   text NOT NULL,                 -- whose business it is: 'venue:cafe', 'provider:p', 'operator:...'
    action   text NOT NULL,                 -- 'session.start', 'host.drain', 'price.set', ...
    target   text NOT NULL,                 -- 'session:<uuid>', 'host:<id>', 'site:<id>/<gpu class>', ...
    detail   jsonb NOT NULL DEFAULT '{}',
    peer     text NOT NULL DEFAULT ''       -- where the call came from (gRPC peer), '' for the broker itself
);
CREATE INDEX audit_log_tenant_at ON audit_log (tenant, at);

CREATE FUNCTION audit_log_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only' USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse();

ALTER TABLE sessions
    ADD COLUMN started_by text NOT NULL DEFAULT 'system',
    ADD COLUMN ended_by text,
    ADD COLUMN by_peer text NOT NULL DEFAULT '';

CREATE FUNCTION sessions_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
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
    RETURN NULL;
END $$;

CREATE TRIGGER sessions_audit AFTER INSERT OR UPDATE OF state ON sessions
    FOR EACH ROW EXECUTE FUNCTION sessions_audit();
