-- Game images in a registry (issue 16): where each game's current version is held, what an update adds, and the
-- fetches a host reports under way.

ALTER TABLE games
    ADD COLUMN image_ref    text   NOT NULL DEFAULT '',
    ADD COLUMN image_digest text   NOT NULL DEFAULT '',
    ADD COLUMN update_bytes bigint NOT NULL DEFAULT 0,
    -- REPOSITORY@sha256:HEX, its digest the manifest's; both or neither.
    ADD CONSTRAINT games_image_ref_form CHECK (
        image_ref = '' OR image_ref ~ '^[a-z0-9]+([._/-][a-z0-9]+)*@sha256:[0-9a-f]{64}$'),
    ADD CONSTRAINT games_image_digest_form CHECK (image_digest = '' OR image_digest ~ '^[0-9a-f]{64}$'),
    ADD CONSTRAINT games_image_both CHECK ((image_ref = '') = (image_digest = '')),
    ADD CONSTRAINT games_image_ref_matches CHECK (image_digest = '' OR image_ref LIKE '%@sha256:' || image_digest),
    ADD CONSTRAINT games_update_bytes_range CHECK (update_bytes >= 0);

-- HOST:PORT where the agent serves image chunks to its site (PeerService); '' when it does not.
ALTER TABLE hosts ADD COLUMN peer_address text NOT NULL DEFAULT '' CHECK (length(peer_address) <= 262);

-- [{"image": "arena@2", "bytes_done": 1, "bytes_total": 2, "error": ""}], as the agent last reported them.
ALTER TABLE hosts ADD COLUMN image_fetches jsonb NOT NULL DEFAULT '[]'
    CHECK (jsonb_typeof(image_fetches) = 'array');
