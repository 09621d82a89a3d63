-- cloudseat schema, version 6: venues lease slots of a GPU class from a provider, at a site, for a term, once or in a
-- daily window, at an agreed price (LeaseService; broker/leasing.py has the window rules).
-- Invariants:
--   * a lease's site is its provider's                          (foreign key lease_site_of_provider)
--   * a lease is never oversold: at every instant, the slots leased of a GPU class at a site never exceed the
--     slots of that class the provider has registered there     (trigger lease_windows_within_capacity, which
--     serialises writers of one (site, class) with an advisory transaction lock, so two concurrent leases cannot
--     both win; a latency-bound lease is resolved to one site when it is made, so the same rule holds for it)
--   * a session placed under a lease names it, with how many of its slots the lease pays
--     (sessions.lease_id, lease_slots; check session_lease_slots)
--
-- A lease's windows in force are stored one row each (lease_windows, at most one a day over a term of at most 366
-- days), computed by broker/leasing.py when the lease is made; cancelling removes the windows still to come and cuts
-- the one running at the cancel time.

ALTER TABLE sites ADD CONSTRAINT site_of_provider UNIQUE (site_id, provider_id);

CREATE TABLE leases (
    lease_id                text PRIMARY KEY,
    provider_id             text NOT NULL,
    venue_id                text NOT NULL REFERENCES venues,
    site_id                 text NOT NULL,
    gpu_class               text NOT NULL,
    slots                   integer NOT NULL CHECK (slots BETWEEN 1 AND 100000),
    -- Set for a lease asked "anywhere within this round trip of the venue": site_id is the site chosen then.
    max_latency_ms          integer CHECK (max_latency_ms BETWEEN 1 AND 500),
    starts_at               timestamptz NOT NULL,
    ends_at                 timestamptz NOT NULL,
    -- A daily window (local time in time_zone), or NULL for one window over the whole term.
    daily_start_minute      integer CHECK (daily_start_minute BETWEEN 0 AND 1439),
    daily_duration_minutes  integer CHECK (daily_duration_minutes BETWEEN 1 AND 1440),
    time_zone               text NOT NULL DEFAULT 'UTC',
    price_micros            bigint NOT NULL CHECK (price_micros >= 0),   -- agreed, per leased slot-hour
    note                    text NOT NULL DEFAULT '',
    created_by              text NOT NULL,
    created_at              timestamptz NOT NULL DEFAULT now(),
    cancelled_at            timestamptz,
    cancelled_by            text,
    CONSTRAINT lease_site_of_provider FOREIGN KEY (site_id, provider_id) REFERENCES sites (site_id, provider_id),
    CONSTRAINT lease_term CHECK (starts_at < ends_at AND ends_at - starts_at <= interval '366 days'),
    CONSTRAINT lease_daily_whole CHECK ((daily_start_minute IS NULL) = (daily_duration_minutes IS NULL)),
    CONSTRAINT lease_cancel_whole CHECK ((cancelled_at IS NULL) = (cancelled_by IS NULL))
);
CREATE INDEX leases_venue ON leases (venue_id, starts_at);
CREATE INDEX leases_provider ON leases (provider_id, starts_at);

CREATE TABLE lease_windows (
    lease_id   text NOT NULL REFERENCES leases,
    site_id    text NOT NULL,
    gpu_class  text NOT NULL,
    slots      integer NOT NULL CHECK (slots > 0),
    during     tstzrange NOT NULL CHECK (NOT isempty(during) AND lower_inc(during) AND NOT upper_inc(during)),
    PRIMARY KEY (lease_id, during)
);
CREATE INDEX lease_windows_site_class ON lease_windows (site_id, gpu_class);
CREATE INDEX lease_windows_during ON lease_windows USING gist (during);

-- After windows are written: no instant of any of them may hold more leased slots of the class at the site than
-- the provider's hosts of that class there have. The load over a window is highest at the start of some window
-- overlapping it, so only those instants are checked.
CREATE FUNCTION lease_windows_within_capacity() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    capacity  integer;
    peak      integer;
    peak_at   timestamptz;
BEGIN
    -- One writer per (site, class) at a time; held to the end of the transaction, so the next writer's check
    -- (a new snapshot per statement) sees this one's windows once it commits.
    PERFORM pg_advisory_xact_lock(hashtext('cloudseat.lease'), hashtext(NEW.site_id || '/' || NEW.gpu_class));
    SELECT coalesce(sum(h.slots), 0) INTO capacity
    FROM hosts h WHERE h.site_id = NEW.site_id AND h.gpu_class = NEW.gpu_class;
    SELECT p.at, sum(w.slots) INTO peak_at, peak
    FROM (SELECT DISTINCT greatest(lower(o.during), lower(NEW.during)) AS at
          FROM lease_windows o
          WHERE o.site_id = NEW.site_id AND o.gpu_class = NEW.gpu_class AND o.during && NEW.during) p
    JOIN lease_windows w ON w.site_id = NEW.site_id AND w.gpu_class = NEW.gpu_class AND w.during @> p.at
    GROUP BY p.at
    ORDER BY 2 DESC, 1
    LIMIT 1;
    IF peak > capacity THEN
        RAISE EXCEPTION 'lease oversold: % slots of % at % at %, the site has %',
                peak, NEW.gpu_class, NEW.site_id, peak_at, capacity
            USING ERRCODE = 'check_violation', CONSTRAINT = 'lease_capacity', TABLE = 'lease_windows';
    END IF;
    RETURN NULL;
END $$;

-- Windows are only ever added or cut short (a cancel), so only an insert can oversell.
CREATE TRIGGER lease_windows_within_capacity AFTER INSERT ON lease_windows
    FOR EACH ROW EXECUTE FUNCTION lease_windows_within_capacity();

ALTER TABLE sessions
    ADD COLUMN lease_id text REFERENCES leases,
    ADD COLUMN lease_slots integer NOT NULL DEFAULT 0,
    ADD CONSTRAINT session_lease_slots CHECK (
        (lease_id IS NULL AND lease_slots = 0) OR (lease_id IS NOT NULL AND lease_slots BETWEEN 1 AND slots)
    );
CREATE INDEX sessions_lease ON sessions (lease_id) WHERE lease_id IS NOT NULL;

-- A lease as callers see it: its state and whether a window runs now, by the database clock.
CREATE VIEW lease_view AS
SELECT l.*,
       CASE WHEN l.cancelled_at IS NOT NULL THEN 'CANCELLED' WHEN l.ends_at <= now() THEN 'EXPIRED' ELSE 'ACTIVE' END
           AS state,
       EXISTS (SELECT 1 FROM lease_windows w WHERE w.lease_id = l.lease_id AND w.during @> now()) AS in_force
FROM leases l;
