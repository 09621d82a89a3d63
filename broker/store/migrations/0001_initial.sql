-- cloudseat schema, version 1: fleet, venues, sessions and their history.
-- Invariants live here as constraints and triggers, so every writer (any broker replica, any tool) keeps them:
--   * at most one live session per seat                 (partial unique index one_live_session_per_seat)
--   * one session per (venue, request id)               (unique constraint one_session_per_request)
--   * a host's free slots never below zero or above its slots (check free_slots_in_range; the trigger
--     sessions_hold_slots moves free_slots as sessions take and release them, so no writer can forget)
--   * every state change is recorded with the database clock (trigger sessions_record_transition)

CREATE TABLE providers (
    provider_id  text PRIMARY KEY,
    name         text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sites (
    site_id      text PRIMARY KEY,
    provider_id  text NOT NULL REFERENCES providers,
    name         text NOT NULL,
    region       text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE games (
    game_id           text PRIMARY KEY,
    name              text NOT NULL,
    image_size_bytes  bigint NOT NULL DEFAULT 0 CHECK (image_size_bytes >= 0),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- The on-demand price of a GPU class at a site; overrides what the hosts declare.
CREATE TABLE prices (
    site_id       text NOT NULL REFERENCES sites,
    gpu_class     text NOT NULL,
    price_micros  bigint NOT NULL CHECK (price_micros >= 0),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, gpu_class)
);

CREATE TABLE hosts (
    host_id                text PRIMARY KEY,
    provider_id            text NOT NULL REFERENCES providers,
    site_id                text NOT NULL REFERENCES sites,
    gpu_class              text NOT NULL,
    slots                  integer NOT NULL CHECK (slots > 0),
    free_slots             integer NOT NULL,
    declared_price_micros  bigint NOT NULL CHECK (declared_price_micros >= 0),
    games_cached           text[] NOT NULL DEFAULT '{}',
    gpus                   jsonb NOT NULL DEFAULT '[]',
    media_addresses        text[] NOT NULL DEFAULT '{}',
    agent_version          text NOT NULL DEFAULT '',
    epoch                  bigint NOT NULL CHECK (epoch >= 0),
    status                 text NOT NULL CHECK (status IN ('online', 'lost', 'offline')),
    drained                boolean NOT NULL DEFAULT false,   -- by the provider (FleetService.DrainHost)
    draining               boolean NOT NULL DEFAULT false,   -- by the agent itself, while it shuts down
    cpu_load               real NOT NULL DEFAULT 0,
    gpu_load               real NOT NULL DEFAULT 0,
    registered_at          timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT free_slots_in_range CHECK (free_slots >= 0 AND free_slots <= slots)
);
CREATE INDEX hosts_site ON hosts (site_id);
CREATE INDEX hosts_online_heartbeat ON hosts (last_heartbeat_at) WHERE status = 'online';

CREATE TABLE venues (
    venue_id    text PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE zones (
    venue_id        text NOT NULL REFERENCES venues,
    zone_id         text NOT NULL,
    tier            text NOT NULL CHECK (tier IN ('720P30', '720P60', '1080P60', '1080P120')),
    latency_cap_ms  integer NOT NULL CHECK (latency_cap_ms BETWEEN 1 AND 500),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (venue_id, zone_id)
);

CREATE TABLE seats (
    venue_id  text NOT NULL,
    seat_id   text NOT NULL,
    zone_id   text NOT NULL,
    PRIMARY KEY (venue_id, seat_id),
    FOREIGN KEY (venue_id, zone_id) REFERENCES zones
);

-- Latest measured round trip from a venue to a site.
CREATE TABLE venue_site_latency (
    venue_id     text NOT NULL REFERENCES venues,
    site_id      text NOT NULL REFERENCES sites,
    rtt_ms       integer NOT NULL CHECK (rtt_ms BETWEEN 0 AND 10000),
    measured_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (venue_id, site_id)
);

CREATE TABLE sessions (
    session_id      uuid PRIMARY KEY,
    venue_id        text NOT NULL,
    seat_id         text NOT NULL,
    zone_id         text NOT NULL,
    request_id      text NOT NULL,
    game_id         text NOT NULL REFERENCES games,
    patron_id       text NOT NULL DEFAULT '',
    slots           integer NOT NULL DEFAULT 1 CHECK (slots BETWEEN 1 AND 8),
    tier            text NOT NULL,
    latency_cap_ms  integer NOT NULL,
    state           text NOT NULL
        CHECK (state IN ('PENDING', 'PLACED', 'STARTING', 'READY', 'STREAMING', 'ENDED')),
    end_reason      text,
    end_detail      text NOT NULL DEFAULT '',
    pending_reason  text,
    host_id         text REFERENCES hosts,
    site_id         text,
    latency_ms      integer,
    price_micros    bigint,
    token           text NOT NULL,
    seq             integer NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    placed_at       timestamptz,
    ready_at        timestamptz,
    streaming_at    timestamptz,
    ended_at        timestamptz,
    FOREIGN KEY (venue_id, seat_id) REFERENCES seats,
    CONSTRAINT one_session_per_request UNIQUE (venue_id, request_id),
    CONSTRAINT ended_iff_reason CHECK ((state = 'ENDED') = (end_reason IS NOT NULL)),
    CONSTRAINT on_host_has_host CHECK (state IN ('PENDING', 'ENDED') OR host_id IS NOT NULL)
);
CREATE UNIQUE INDEX one_live_session_per_seat ON sessions (venue_id, seat_id) WHERE state <> 'ENDED';
CREATE INDEX sessions_pending ON sessions (created_at, session_id) WHERE state = 'PENDING';
CREATE INDEX sessions_live_on_host ON sessions (host_id) WHERE state IN ('PLACED', 'STARTING', 'READY', 'STREAMING');
CREATE INDEX sessions_waiting ON sessions (updated_at) WHERE state IN ('PENDING', 'PLACED', 'STARTING', 'READY');
CREATE INDEX sessions_venue_created ON sessions (venue_id, created_at DESC);

CREATE TABLE session_transitions (
    session_id  uuid NOT NULL REFERENCES sessions ON DELETE CASCADE,
    seq         integer NOT NULL,
    from_state  text,
    to_state    text NOT NULL,
    end_reason  text,
    detail      text NOT NULL DEFAULT '',
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (session_id, seq)
);

-- Before a state change: number it and stamp it with the database clock.
CREATE FUNCTION sessions_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.state IS DISTINCT FROM OLD.state THEN
        NEW.seq := OLD.seq + 1;
        NEW.updated_at := clock_timestamp();
        IF NEW.state = 'PLACED' THEN NEW.placed_at := NEW.updated_at; NEW.pending_reason := NULL; END IF;
        IF NEW.state = 'READY' THEN NEW.ready_at := NEW.updated_at; END IF;
        IF NEW.state = 'STREAMING' THEN NEW.streaming_at := NEW.updated_at; END IF;
        IF NEW.state = 'ENDED' THEN NEW.ended_at := NEW.updated_at; NEW.pending_reason := NULL; END IF;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER sessions_stamp BEFORE UPDATE ON sessions FOR EACH ROW EXECUTE FUNCTION sessions_stamp();

-- After a change: keep the host's free slots, record the transition, and tell every broker replica.
CREATE FUNCTION sessions_after_change() RETURNS trigger LANGUAGE plpgsql AS $$
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

    IF TG_OP = 'INSERT' OR NEW.state IS DISTINCT FROM OLD.state
       OR NEW.pending_reason IS DISTINCT FROM OLD.pending_reason THEN
        PERFORM pg_notify('cloudseat_sessions', (to_jsonb(NEW) - 'token')::text);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER sessions_after_change AFTER INSERT OR UPDATE ON sessions
    FOR EACH ROW EXECUTE FUNCTION sessions_after_change();

-- A host as callers see it: the price in force and how many sessions it holds.
CREATE VIEW host_view AS
SELECT h.host_id, h.provider_id, h.site_id, h.gpu_class, h.slots, h.free_slots, h.games_cached, h.gpus,
       h.media_addresses, h.agent_version, h.epoch, h.status, h.drained, h.draining, h.cpu_load, h.gpu_load,
       h.registered_at, h.last_heartbeat_at, h.declared_price_micros,
       coalesce(p.price_micros, h.declared_price_micros) AS price_micros,
       (SELECT count(*) FROM sessions s
         WHERE s.host_id = h.host_id AND s.state IN ('PLACED', 'STARTING', 'READY', 'STREAMING'))::integer
           AS live_sessions
FROM hosts h
LEFT JOIN prices p ON p.site_id = h.site_id AND p.gpu_class = h.gpu_class;
