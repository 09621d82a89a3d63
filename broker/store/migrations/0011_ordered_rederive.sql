-- cloudseat schema, version 11: a new game version re-derives the hosts' warm games without deadlocking.
--   games_version_rederive (migration 0008) touched every host caching the game in whatever order the scan found
--   them, so two versions published at once (a catalogue seeded in parallel) could each hold hosts the other waited
--   for: PostgreSQL broke the tie by failing one call. Now the hosts are locked in one order (by host id) first.

CREATE OR REPLACE FUNCTION games_version_rederive() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM hosts
    WHERE NEW.game_id = ANY(games_cached)
       OR EXISTS (SELECT 1 FROM unnest(images_cached) i WHERE split_part(i, '@', 1) = NEW.game_id)
    ORDER BY host_id
    FOR UPDATE;
    UPDATE hosts SET images_cached = images_cached
    WHERE NEW.game_id = ANY(games_cached)
       OR EXISTS (SELECT 1 FROM unnest(images_cached) i WHERE split_part(i, '@', 1) = NEW.game_id);
    RETURN NULL;
END $$;
