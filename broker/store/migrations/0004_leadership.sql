-- cloudseat schema, version 4: the placement lease expires. A replica that holds it renews it every second; one that
-- stops renewing (killed, frozen, cut off) loses it a few seconds later, by the database clock, and another takes it.
-- Invariants:
--   * one row per lease, so one holder at a time                (primary key; takers lock the row, FOR UPDATE)
--   * every take starts a new term; a holder renews only its own (term, bumped by each take, checked by each renewal)
--   * the expiry is the database's clock, never a replica's      (expires_at set with clock_timestamp())

CREATE TABLE leadership (
    name         text PRIMARY KEY,
    holder       text NOT NULL DEFAULT '',              -- the replica (host, process, instance); '' never taken
    term         bigint NOT NULL DEFAULT 0 CHECK (term >= 0),
    backend_pid  integer NOT NULL DEFAULT 0,            -- the holder's lease connection (pg_backend_pid())
    taken_at     timestamptz NOT NULL DEFAULT '-infinity',
    expires_at   timestamptz NOT NULL DEFAULT '-infinity'
);

INSERT INTO leadership (name) VALUES ('placement');
