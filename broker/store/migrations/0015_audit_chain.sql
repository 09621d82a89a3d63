-- cloudseat schema, version 15: the audit log hash-chained. Rows are written as before, by any writer, without a
-- lock; a single sealer (store.audit.seal, under an advisory lock) then gives the unsealed rows, in seq order, the
-- next chain numbers, each with the previous row's hash and its own: chain order is seal order, well defined
-- whatever order concurrent writers commit in. An edit shows as a hash that no longer matches its row; a removed
-- row as a gap in chain_no or a prev_hash that matches nothing (`cloudseat-broker audit verify`).
-- Invariants:
--   * a row's chain fields are written once, and nothing else ever changes   (trigger audit_log_append_only)
--   * one row per chain number                                               (unique audit_log_chain_no)

ALTER TABLE audit_log
    ADD COLUMN chain_no  bigint,
    ADD COLUMN prev_hash text,
    ADD COLUMN hash      text,
    ADD CONSTRAINT audit_log_sealed_whole CHECK ((chain_no IS NULL) = (hash IS NULL) AND (hash IS NULL) = (prev_hash IS NULL));
CREATE UNIQUE INDEX audit_log_chain_no ON audit_log (chain_no);
CREATE INDEX audit_log_unsealed ON audit_log (seq) WHERE chain_no IS NULL;
CREATE INDEX audit_log_at ON audit_log (at);

CREATE OR REPLACE FUNCTION audit_log_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- The one change allowed: sealing an unsealed row, nothing else of it touched.
    IF TG_OP = 'UPDATE' AND OLD.chain_no IS NULL AND NEW.chain_no IS NOT NULL
       AND (NEW.seq, NEW.at, NEW.actor, NEW.tenant, NEW.action, NEW.target, NEW.detail, NEW.peer)
           IS NOT DISTINCT FROM (OLD.seq, OLD.at, OLD.actor, OLD.tenant, OLD.action, OLD.target, OLD.detail, OLD.peer)
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only' USING ERRCODE = 'insufficient_privilege';
END $$;
