-- cloudseat schema, version 18: money in its currency, live money, and the consoles' history (a row per minute,
-- kept 48 hours).
-- Invariants:
--   * every ledger entry carries the currency of the price it was charged at, an ISO 4217 code (check
--     ledger_currency_iso4217; rows from before are CNY, what every amount meant then), and is audited with it
--   * one row per minute and site, one per minute and zone: the sampler may run twice for a minute (a new leader,
--     a restart) and writes it once (primary keys; the sampler inserts ON CONFLICT DO NOTHING)
--   * a minute is a whole minute; counts are never negative; used slots never exceed slots, sessions within the cap
--     never exceed those served (checks)
--   * every committed ledger insert tells the consoles which venues' and providers' money moved (trigger
--     ledger_notify, channel cloudseat_ledger), so "today's cost" and statements follow it without polling
--
-- No foreign keys to sites or zones: history outlives what it describes (a zone removed today still had its
-- evening), and the sampler's rows are deleted by age (broker.history_duty), never by cascade.

-- A site's fleet at the end of each minute: hosts online (and not drained), slots, slots used.
CREATE TABLE history_site_minutes (
    minute        timestamptz NOT NULL CHECK (minute = date_trunc('minute', minute)),
    site_id       text NOT NULL,
    provider_id   text NOT NULL,
    hosts_online  integer NOT NULL CHECK (hosts_online >= 0),
    slots         integer NOT NULL CHECK (slots >= 0),
    slots_used    integer NOT NULL CHECK (slots_used BETWEEN 0 AND slots),
    PRIMARY KEY (minute, site_id)
);
CREATE INDEX history_site_minutes_provider ON history_site_minutes (provider_id, minute);

-- A venue's zone in each minute [minute, minute + 1 min): at its end, the sessions waiting for placement, how long
-- the oldest of them had waited, the sessions served (READY or STREAMING) and those within the zone's latency cap;
-- during it, the sessions placed and their waits (request to placement) summed, so a mean over any span is exact.
CREATE TABLE history_zone_minutes (
    minute           timestamptz NOT NULL CHECK (minute = date_trunc('minute', minute)),
    venue_id         text NOT NULL,
    zone_id          text NOT NULL,
    queued           integer NOT NULL CHECK (queued >= 0),
    oldest_wait_s    real NOT NULL CHECK (oldest_wait_s >= 0),
    placed           integer NOT NULL CHECK (placed >= 0),
    wait_s_sum       double precision NOT NULL CHECK (wait_s_sum >= 0),
    serving          integer NOT NULL CHECK (serving >= 0),
    within_cap       integer NOT NULL CHECK (within_cap BETWEEN 0 AND serving),
    PRIMARY KEY (minute, venue_id, zone_id),
    CONSTRAINT history_zone_waits CHECK (placed > 0 OR wait_s_sum = 0)
);
CREATE INDEX history_zone_minutes_venue ON history_zone_minutes (venue_id, minute);

-- Money moved: once per statement, the venues and providers whose ledger rows were just written (the consoles
-- re-read their cost and statements; broker.hub listens on cloudseat_ledger).
CREATE FUNCTION ledger_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cloudseat_ledger', json_build_object(
        'venues', (SELECT coalesce(json_agg(DISTINCT venue_id), '[]') FROM written),
        'providers', (SELECT coalesce(json_agg(DISTINCT provider_id), '[]') FROM written))::text);
    RETURN NULL;
END $$;
CREATE TRIGGER ledger_notify AFTER INSERT ON ledger REFERENCING NEW TABLE AS written
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_notify();

-- Money in its currency: the price's, carried by each entry (broker.metering.Entry.currency). A host without a price
-- row is billed at its declared price, in CNY. Adding a column with a constant default rewrites no row, so the
-- append-only trigger is not touched.
ALTER TABLE ledger
    ADD COLUMN currency text NOT NULL DEFAULT 'CNY',
    ADD CONSTRAINT ledger_currency_iso4217 CHECK (currency ~ '^[A-Z]{3}$');

CREATE OR REPLACE FUNCTION ledger_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit_log (actor, tenant, action, target, detail)
    VALUES ('system:metering', 'venue:' || NEW.venue_id,
            CASE NEW.kind WHEN 'usage' THEN 'billing.usage' ELSE 'billing.credit' END,
            'ledger:' || NEW.entry_id,
            jsonb_build_object('session_id', NEW.session_id, 'provider_id', NEW.provider_id, 'host_id', NEW.host_id,
                               'site_id', NEW.site_id, 'gpu_class', NEW.gpu_class, 'slots', NEW.slots,
                               'basis', NEW.basis, 'lease_id', NEW.lease_id, 'price_micros', NEW.price_micros,
                               'start_at', NEW.start_at, 'end_at', NEW.end_at, 'seconds', NEW.seconds,
                               'amount_micros', NEW.amount_micros, 'currency', NEW.currency));
    RETURN NULL;
END $$;

-- The meter's view of a session gains its price's currency (new columns go last: CREATE OR REPLACE VIEW).
CREATE OR REPLACE VIEW metered_sessions AS
SELECT s.session_id, s.state, s.venue_id, h.provider_id, s.host_id, s.site_id, h.gpu_class, s.slots,
       s.lease_id, s.lease_slots, s.latency_cap_ms, s.tier,
       date_trunc('second', s.placed_at) AS placed_at, date_trunc('second', s.ended_at) AS ended_at,
       coalesce(p.price_micros, h.declared_price_micros) AS base_micros,
       coalesce(p.bands, '[]'::jsonb) AS bands, coalesce(p.utc_offset_minutes, 0) AS utc_offset_minutes,
       coalesce(p.currency, 'CNY') AS currency
FROM sessions s
JOIN hosts h ON h.host_id = s.host_id
LEFT JOIN prices p ON p.site_id = s.site_id AND p.gpu_class = h.gpu_class;

-- The sampler counts each minute's placements and their waits: sessions placed in [minute, minute + 1 min), most of
-- them ended by the time it asks. Sessions gain an index row per update anyway (sessions_waiting indexes updated_at,
-- so no update of a session is a HOT one); this adds one more, only from placement on.
CREATE INDEX sessions_placed_at ON sessions (placed_at) WHERE placed_at IS NOT NULL;
