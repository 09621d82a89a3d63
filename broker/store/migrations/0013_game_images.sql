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

-- A placed session's change names the game's current image, so the start command lets a host that lacks it fetch
-- it before the session is ready (a cold start). Only on PLACED, and only for games with an image: the other
-- changes stay as small as before.
CREATE OR REPLACE FUNCTION session_change(s sessions) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'session_id', s.session_id, 'seq', s.seq, 'state', s.state, 'venue_id', s.venue_id, 'seat_id', s.seat_id,
        'host_id', s.host_id, 'game_id', s.game_id, 'tier', s.tier, 'slots', s.slots, 'end_reason', s.end_reason,
        'pending_reason', s.pending_reason, 'resumed', s.resumes IS NOT NULL,
        'waited_ms', CASE WHEN s.placed_at IS NOT NULL
                          THEN round(extract(epoch FROM s.placed_at - s.created_at) * 1000) END)
    || CASE WHEN s.state = 'PLACED' THEN coalesce(
           (SELECT jsonb_build_object('version', g.version, 'image_ref', g.image_ref, 'image_digest', g.image_digest)
            FROM games g WHERE g.game_id = s.game_id AND g.image_ref <> ''), '{}'::jsonb)
       ELSE '{}'::jsonb END
$$;

-- [{"image": "arena@2", "bytes_done": 1, "bytes_total": 2, "error": ""}], as the agent last reported them.
ALTER TABLE hosts ADD COLUMN image_fetches jsonb NOT NULL DEFAULT '[]'
    CHECK (jsonb_typeof(image_fetches) = 'array');
