-- A zone chooses how its seats trade latency for smoothness (issue 18): the playout delay the agent asks a seat's
-- receiver for (gpu_agent.media.playout_delay). AUTO: zero while the link delivers, the receiver's adaptive delay
-- while it loses packets; LOW_LATENCY: always zero; SMOOTH: always adaptive.
--   * zones.playout is the zone's mode, set by PutZone;
--   * sessions.playout is the mode a session started with (as tier and latency cap are): a zone changed meanwhile
--     changes the next session, not the running one;
--   * a placed session's change carries it, so the start command tells the agent without reading the row again.

ALTER TABLE zones ADD COLUMN playout text NOT NULL DEFAULT 'AUTO'
    CONSTRAINT zones_playout_known CHECK (playout IN ('AUTO', 'LOW_LATENCY', 'SMOOTH'));

ALTER TABLE sessions ADD COLUMN playout text NOT NULL DEFAULT 'AUTO'
    CONSTRAINT sessions_playout_known CHECK (playout IN ('AUTO', 'LOW_LATENCY', 'SMOOTH'));

-- 0013's session change, plus the playout mode on PLACED (the only change a start command is built from).
CREATE OR REPLACE FUNCTION session_change(s sessions) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'session_id', s.session_id, 'seq', s.seq, 'state', s.state, 'venue_id', s.venue_id, 'seat_id', s.seat_id,
        'host_id', s.host_id, 'game_id', s.game_id, 'tier', s.tier, 'slots', s.slots, 'end_reason', s.end_reason,
        'pending_reason', s.pending_reason, 'resumed', s.resumes IS NOT NULL,
        'waited_ms', CASE WHEN s.placed_at IS NOT NULL
                          THEN round(extract(epoch FROM s.placed_at - s.created_at) * 1000) END)
    || CASE WHEN s.state = 'PLACED' THEN jsonb_build_object('playout', s.playout) || coalesce(
           (SELECT jsonb_build_object('version', g.version, 'image_ref', g.image_ref, 'image_digest', g.image_digest)
            FROM games g WHERE g.game_id = s.game_id AND g.image_ref <> ''), '{}'::jsonb)
       ELSE '{}'::jsonb END
$$;
