-- cloudseat schema, version 7: time-of-day prices, the metering ledger, SLA minutes (broker/metering.py has the model).
-- Invariants:
--   * nothing in ledger is ever changed or removed                    (triggers ledger_append_only, ledger_no_truncate)
--   * an entry is whole seconds, its seconds match its interval, usage never negative, credits never positive
--     (checks on ledger)
--   * a session's entries of one kind and basis never overlap: no second of a part (its leased slots, its slots on
--     demand) is billed (or credited) twice; entries of the two parts of a partly leased session cover the same
--     seconds, but never more slots than the session holds (trigger ledger_no_overlap, and the metering cursor's
--     compare-and-set in broker/store/metering.py: one cursor per session, both parts written with it)
--   * every ledger entry is audited, atomically with it (trigger ledger_audit)
--   * every placed session has a metering cursor from the moment it is placed (trigger sessions_metering)

-- Time-of-day bands: [[start_minute, end_minute, price_micros], ...] of the day in a fixed UTC offset; minutes
-- outside every band cost price_micros (the base).
ALTER TABLE prices
    ADD COLUMN bands jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN utc_offset_minutes integer NOT NULL DEFAULT 0 CHECK (utc_offset_minutes BETWEEN -720 AND 840);

-- The price in force at `at` (broker.metering.Schedule.price_at is the same rule).
CREATE FUNCTION price_in_force(base bigint, bands jsonb, utc_offset_minutes integer, at timestamptz)
RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(
        (SELECT (b ->> 2)::bigint
         FROM jsonb_array_elements(bands) AS b,
              LATERAL (SELECT (extract(hour FROM t) * 60 + extract(minute FROM t))::integer AS m
                       FROM (SELECT (at AT TIME ZONE 'UTC') + make_interval(mins => utc_offset_minutes) AS t) l) lm
         WHERE CASE WHEN (b ->> 0)::integer < (b ->> 1)::integer
                    THEN lm.m >= (b ->> 0)::integer AND lm.m < (b ->> 1)::integer
                    ELSE lm.m >= (b ->> 0)::integer OR lm.m < (b ->> 1)::integer END
         LIMIT 1),
        base)
$$;

-- A host's price is the one in force now (placement, GetHost, ListHosts, the consoles), as metering uses it.
CREATE OR REPLACE VIEW host_view AS
SELECT h.host_id, h.provider_id, h.site_id, h.gpu_class, h.slots, h.free_slots, h.games_cached, h.gpus,
       h.media_addresses, h.agent_version, h.epoch, h.status, h.drained, h.draining, h.cpu_load, h.gpu_load,
       h.registered_at, h.last_heartbeat_at, h.declared_price_micros,
       coalesce(price_in_force(p.price_micros, p.bands, p.utc_offset_minutes, now()), h.declared_price_micros)
           AS price_micros,
       (SELECT count(*) FROM sessions s
         WHERE s.host_id = h.host_id AND s.state IN ('PLACED', 'STARTING', 'READY', 'STREAMING'))::integer
           AS live_sessions
FROM hosts h
LEFT JOIN prices p ON p.site_id = h.site_id AND p.gpu_class = h.gpu_class;

CREATE TABLE ledger (
    entry_id       bigserial PRIMARY KEY,
    session_id     uuid NOT NULL REFERENCES sessions,
    venue_id       text NOT NULL,
    provider_id    text NOT NULL,
    host_id        text NOT NULL,
    site_id        text NOT NULL,
    gpu_class      text NOT NULL,
    slots          integer NOT NULL CHECK (slots > 0),
    kind           text NOT NULL CHECK (kind IN ('usage', 'sla_credit')),
    basis          text NOT NULL CHECK (basis IN ('on_demand', 'lease')),
    lease_id       text,
    price_micros   bigint NOT NULL CHECK (price_micros >= 0),   -- per slot-hour, in force over the interval
    start_at       timestamptz NOT NULL,
    end_at         timestamptz NOT NULL,
    seconds        integer NOT NULL,
    amount_micros  bigint NOT NULL,
    written_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT ledger_whole_seconds CHECK (
        start_at = date_trunc('second', start_at) AND end_at = date_trunc('second', end_at)
        AND seconds > 0 AND seconds = extract(epoch FROM end_at - start_at)),
    CONSTRAINT ledger_sign CHECK ((kind = 'usage' AND amount_micros >= 0) OR (kind = 'sla_credit' AND amount_micros <= 0)),
    CONSTRAINT ledger_basis CHECK ((basis = 'lease') = (lease_id IS NOT NULL))
);
CREATE INDEX ledger_venue_start ON ledger (venue_id, start_at);
CREATE INDEX ledger_provider_start ON ledger (provider_id, start_at);
CREATE INDEX ledger_session_start ON ledger (session_id, kind, basis, start_at);

CREATE FUNCTION ledger_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger is append-only' USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE ON ledger
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse();
CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON ledger
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse();

-- A session placed partly on a lease (sessions.lease_slots < slots) has two parts, each metered on its own basis:
-- its leased slots (`lease`) and the rest (`on_demand`). Each part's entries tile its time; together, the entries
-- of one kind covering a second never hold more slots than the session (so no slot is billed on both bases).
CREATE FUNCTION ledger_no_overlap() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM ledger l
               WHERE l.session_id = NEW.session_id AND l.kind = NEW.kind AND l.basis = NEW.basis
                 AND l.start_at < NEW.end_at AND l.end_at > NEW.start_at) THEN
        RAISE EXCEPTION 'ledger: session % already has a % % entry overlapping [%, %)',
            NEW.session_id, NEW.basis, NEW.kind, NEW.start_at, NEW.end_at
            USING ERRCODE = 'exclusion_violation', CONSTRAINT = 'ledger_no_overlap';
    END IF;
    -- The other basis's entries overlapping this one do not overlap each other (the rule above), so the most slots
    -- billed at any second of it is this entry's plus the largest of theirs.
    IF NEW.slots + coalesce((SELECT max(l.slots) FROM ledger l
                             WHERE l.session_id = NEW.session_id AND l.kind = NEW.kind AND l.basis <> NEW.basis
                               AND l.start_at < NEW.end_at AND l.end_at > NEW.start_at), 0)
       > (SELECT s.slots FROM sessions s WHERE s.session_id = NEW.session_id) THEN
        RAISE EXCEPTION 'ledger: session % would hold more slots in % entries than it has over [%, %)',
            NEW.session_id, NEW.kind, NEW.start_at, NEW.end_at
            USING ERRCODE = 'exclusion_violation', CONSTRAINT = 'ledger_no_overlap';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER ledger_no_overlap BEFORE INSERT ON ledger FOR EACH ROW EXECUTE FUNCTION ledger_no_overlap();

CREATE FUNCTION ledger_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit_log (actor, tenant, action, target, detail)
    VALUES ('system:metering', 'venue:' || NEW.venue_id,
            CASE NEW.kind WHEN 'usage' THEN 'billing.usage' ELSE 'billing.credit' END,
            'ledger:' || NEW.entry_id,
            jsonb_build_object('session_id', NEW.session_id, 'provider_id', NEW.provider_id, 'host_id', NEW.host_id,
                               'site_id', NEW.site_id, 'gpu_class', NEW.gpu_class, 'slots', NEW.slots,
                               'basis', NEW.basis, 'lease_id', NEW.lease_id, 'price_micros', NEW.price_micros,
                               'start_at', NEW.start_at, 'end_at', NEW.end_at, 'seconds', NEW.seconds,
                               'amount_micros', NEW.amount_micros));
    RETURN NULL;
END $$;
CREATE TRIGGER ledger_audit AFTER INSERT ON ledger FOR EACH ROW EXECUTE FUNCTION ledger_audit();

-- How far each placed session is metered (usage) and judged (SLA); NULL: from its placement. `next_due_at` is when
-- the metering duty next has something to write for it; `done` once it ended and everything is written.
CREATE TABLE metering_cursor (
    session_id   uuid PRIMARY KEY REFERENCES sessions,
    usage_until  timestamptz,
    sla_until    timestamptz,
    next_due_at  timestamptz NOT NULL,
    done         boolean NOT NULL DEFAULT false
);
CREATE INDEX metering_cursor_due ON metering_cursor (next_due_at) WHERE NOT done;

CREATE FUNCTION sessions_metering() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state = 'PLACED' AND OLD.state IS DISTINCT FROM 'PLACED' THEN
        INSERT INTO metering_cursor (session_id, next_due_at) VALUES (NEW.session_id, NEW.placed_at)
        ON CONFLICT (session_id) DO NOTHING;
    ELSIF NEW.state = 'ENDED' AND OLD.state <> 'ENDED' THEN
        UPDATE metering_cursor SET next_due_at = NEW.ended_at WHERE session_id = NEW.session_id AND NOT done;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER sessions_metering AFTER UPDATE OF state ON sessions
    FOR EACH ROW EXECUTE FUNCTION sessions_metering();

-- Sessions live when this migration runs are metered from their placement.
INSERT INTO metering_cursor (session_id, next_due_at)
SELECT session_id, placed_at FROM sessions
WHERE state IN ('PLACED', 'STARTING', 'READY', 'STREAMING') AND placed_at IS NOT NULL
ON CONFLICT DO NOTHING;

-- A streaming session's stats per UTC minute, summed from the agents' heartbeats (broker/agents.py); the SLA judge
-- reads the means.
CREATE TABLE stream_minutes (
    session_id  uuid NOT NULL REFERENCES sessions,
    minute      timestamptz NOT NULL CHECK (minute = date_trunc('minute', minute)),
    samples     integer NOT NULL CHECK (samples > 0),
    rtt_ms_sum  double precision NOT NULL CHECK (rtt_ms_sum >= 0),
    fps_sum     double precision NOT NULL CHECK (fps_sum >= 0),
    PRIMARY KEY (session_id, minute)
);

-- A placed session as the meter sees it (broker.metering.Metered): who pays whom, its slots and lease share, its
-- zone's promise, and its site's price schedule (the host's declared price where the site has none).
CREATE VIEW metered_sessions AS
SELECT s.session_id, s.state, s.venue_id, h.provider_id, s.host_id, s.site_id, h.gpu_class, s.slots,
       s.lease_id, s.lease_slots, s.latency_cap_ms, s.tier,
       date_trunc('second', s.placed_at) AS placed_at, date_trunc('second', s.ended_at) AS ended_at,
       coalesce(p.price_micros, h.declared_price_micros) AS base_micros,
       coalesce(p.bands, '[]'::jsonb) AS bands, coalesce(p.utc_offset_minutes, 0) AS utc_offset_minutes
FROM sessions s
JOIN hosts h ON h.host_id = s.host_id
LEFT JOIN prices p ON p.site_id = s.site_id AND p.gpu_class = h.gpu_class;
