-- cloudseat schema, version 8: patron time (paid seconds, a deadline the liveness duty ends sessions at) and game
-- image versions (a catalogue version per game; hosts report the images they hold; warm = the current version).
-- Invariants:
--   * paid time is 0 (unlimited) or 1 s - 30 days in all                      (check paid_time_in_range)
--   * the deadline is set iff the session has a limit and has streamed:
--     paid_until = streaming_at + paid_time_s, by the database clock        (trigger sessions_stamp_paid_until;
--                                                                            check paid_until_iff_limited_streamed)
--   * adding time moves the deadline with it, in one UPDATE                 (trigger sessions_stamp_paid_until)
--   * every change of the deadline reaches every replica's watchers         (trigger sessions_paid_until_notify)
--   * a host's games_cached is exactly the catalogue games whose current
--     version is among the images it reports (a bare id counts as current) (trigger hosts_derive_games_cached,
--                                                                            trigger games_version_rederive)

-- Patron time -------------------------------------------------------------------------------------------------

ALTER TABLE sessions
    ADD COLUMN paid_time_s integer NOT NULL DEFAULT 0,
    ADD COLUMN paid_until timestamptz;
ALTER TABLE sessions
    ADD CONSTRAINT paid_time_in_range CHECK (paid_time_s BETWEEN 0 AND 2592000),
    ADD CONSTRAINT paid_until_iff_limited_streamed
        CHECK ((paid_until IS NOT NULL) = (paid_time_s > 0 AND streaming_at IS NOT NULL));

-- Runs after sessions_stamp (BEFORE triggers fire in name order), so streaming_at is already stamped.
CREATE FUNCTION sessions_stamp_paid_until() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.paid_time_s > 0 AND NEW.streaming_at IS NOT NULL THEN
        NEW.paid_until := NEW.streaming_at + make_interval(secs => NEW.paid_time_s);
    ELSE
        NEW.paid_until := NULL;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER sessions_stamp_paid_until BEFORE INSERT OR UPDATE ON sessions
    FOR EACH ROW EXECUTE FUNCTION sessions_stamp_paid_until();

-- sessions_after_change notifies state and pending-reason changes; added time changes neither, so say it here.
CREATE FUNCTION sessions_paid_until_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cloudseat_sessions', (to_jsonb(NEW) - 'token')::text);
    RETURN NULL;
END $$;

CREATE TRIGGER sessions_paid_until_notify AFTER UPDATE OF paid_time_s ON sessions
    FOR EACH ROW WHEN (OLD.paid_time_s IS DISTINCT FROM NEW.paid_time_s AND OLD.state = NEW.state)
    EXECUTE FUNCTION sessions_paid_until_notify();

-- What the liveness duty scans: streaming sessions with a deadline.
CREATE INDEX sessions_paid_until ON sessions (paid_until) WHERE state = 'STREAMING' AND paid_until IS NOT NULL;

-- Game image versions -----------------------------------------------------------------------------------------

ALTER TABLE games ADD COLUMN version text NOT NULL DEFAULT '1' CHECK (version ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$');

-- What the agent reports (GAME_ID@VERSION or a bare GAME_ID); games_cached is derived from it.
ALTER TABLE hosts ADD COLUMN images_cached text[] NOT NULL DEFAULT '{}';
UPDATE hosts SET images_cached = games_cached;

CREATE FUNCTION hosts_derive_games_cached() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.games_cached := ARRAY(
        SELECT g.game_id FROM games g
        WHERE g.game_id = ANY(NEW.images_cached) OR g.game_id || '@' || g.version = ANY(NEW.images_cached)
        ORDER BY g.game_id);
    RETURN NEW;
END $$;

CREATE TRIGGER hosts_derive_games_cached BEFORE INSERT OR UPDATE OF images_cached, games_cached ON hosts
    FOR EACH ROW EXECUTE FUNCTION hosts_derive_games_cached();

-- A new version (or a new game) changes which hosts are warm for it.
CREATE FUNCTION games_version_rederive() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE hosts SET images_cached = images_cached
    WHERE NEW.game_id = ANY(games_cached)
       OR EXISTS (SELECT 1 FROM unnest(images_cached) i WHERE split_part(i, '@', 1) = NEW.game_id);
    RETURN NULL;
END $$;

CREATE TRIGGER games_version_rederive AFTER INSERT OR UPDATE OF version ON games
    FOR EACH ROW EXECUTE FUNCTION games_version_rederive();

UPDATE hosts SET images_cached = images_cached;

-- Pre-warm requests, kept: which site was asked to fetch which image, when, by whom.
CREATE TABLE prewarms (
    seq           bigserial PRIMARY KEY,
    site_id       text NOT NULL REFERENCES sites,
    game_id       text NOT NULL REFERENCES games,
    version       text NOT NULL,
    host_ids      text[] NOT NULL,
    requested_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
