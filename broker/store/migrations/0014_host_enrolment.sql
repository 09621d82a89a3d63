-- cloudseat schema, version 14: host enrolment. A provider enrols the hosts that may join its sites, one host id at a
-- time (in batches) or by a prefix of the host ids (one row for a whole site's fleet).
-- Invariants:
--   * an enrolment names a site of its own provider             (foreign key host_enrolments_site)
--   * exactly one of host_id and host_prefix; prefixes of 3+    (checks host_enrolments_one_kind, _prefix_long)
--   * a host id is enrolled once, a prefix once                 (unique host_enrolments_host, host_enrolments_prefix)
-- Prefixes of two providers must not overlap; the store checks that under a transaction lock (store.fleet).

ALTER TABLE sites ADD CONSTRAINT sites_of_provider UNIQUE (site_id, provider_id);

CREATE TABLE host_enrolments (
    enrolment_id  bigserial PRIMARY KEY,
    provider_id   text NOT NULL,
    site_id       text NOT NULL,
    gpu_class     text NOT NULL DEFAULT '',          -- '' : any class
    host_id       text,
    host_prefix   text,
    enrolled_at   timestamptz NOT NULL DEFAULT now(),
    enrolled_by   text NOT NULL,
    CONSTRAINT host_enrolments_site FOREIGN KEY (site_id, provider_id) REFERENCES sites (site_id, provider_id),
    CONSTRAINT host_enrolments_one_kind CHECK ((host_id IS NULL) <> (host_prefix IS NULL)),
    CONSTRAINT host_enrolments_prefix_long CHECK (host_prefix IS NULL OR length(host_prefix) >= 3)
);
CREATE UNIQUE INDEX host_enrolments_host ON host_enrolments (host_id) WHERE host_id IS NOT NULL;
CREATE UNIQUE INDEX host_enrolments_prefix ON host_enrolments (host_prefix) WHERE host_prefix IS NOT NULL;
