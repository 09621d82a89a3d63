-- cloudseat schema, version 16: a price has a currency and a venue has a time zone. Money was always an integer of
-- micros, but of what was nowhere said; a venue's "today" was UTC's. Rows from before default to CNY and UTC, which
-- is what the amounts and days meant then.
-- Invariants:
--   * a currency is an ISO 4217 code: three capital letters          (check prices_currency_iso4217)
--   * a venue's time zone is a name, checked against the IANA database by the broker before it is written
--     (PostgreSQL's own zone list may differ from Python's; a bad name never gets this far)

ALTER TABLE prices
    ADD COLUMN currency text NOT NULL DEFAULT 'CNY',
    ADD CONSTRAINT prices_currency_iso4217 CHECK (currency ~ '^[A-Z]{3}$');

ALTER TABLE venues
    ADD COLUMN time_zone text NOT NULL DEFAULT 'UTC',
    ADD CONSTRAINT venues_time_zone_named CHECK (time_zone ~ '^[A-Za-z0-9_+/-]{1,64}$');
