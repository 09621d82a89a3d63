-- Placement knows the bytes (issue 16, item 7): for each game version, the stored bytes of it that a host holding
-- an earlier version still lacks, recorded when the version is published (cloudseat-images push compares it with
-- every earlier version it finds). Placement prices a cold start by the least of these over the versions a host
-- holds, else by the whole image (games.image_size_bytes).

CREATE TABLE game_version_lacking (
    game_id      text   NOT NULL REFERENCES games ON DELETE CASCADE,
    version      text   NOT NULL CHECK (version ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$'),
    from_version text   NOT NULL CHECK (from_version ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$'),
    bytes        bigint NOT NULL CHECK (bytes >= 0),
    PRIMARY KEY (game_id, version, from_version),
    CHECK (from_version <> version)
);
