-- cloudseat schema, version 9: the seat's own stream stats (SessionService.ReportStreamStats) beside the agent's in
-- stream_minutes, so the SLA judges what the patron saw too (broker/metering.py minute_flagged).
-- Invariants:
--   * a minute row holds evidence from at least one side: agent heartbeats (samples) or seat reports
--     (seat_samples)                                                            (check stream_minutes_has_samples)
--   * the seat's RTT is summed over the samples that carried one, a subset of its samples
--                                                                              (check stream_minutes_seat_rtt_subset)
--   * sums are never negative                                                  (checks on the columns)

-- A seat may report a minute the agent has not (yet): the agent's side of that row is then zero samples.
ALTER TABLE stream_minutes DROP CONSTRAINT stream_minutes_samples_check;
ALTER TABLE stream_minutes
    ADD COLUMN seat_samples     integer NOT NULL DEFAULT 0,
    ADD COLUMN seat_fps_sum     double precision NOT NULL DEFAULT 0 CHECK (seat_fps_sum >= 0),
    ADD COLUMN seat_rtt_samples integer NOT NULL DEFAULT 0,
    ADD COLUMN seat_rtt_ms_sum  double precision NOT NULL DEFAULT 0 CHECK (seat_rtt_ms_sum >= 0);
ALTER TABLE stream_minutes
    ADD CONSTRAINT stream_minutes_has_samples
        CHECK (samples >= 0 AND seat_samples >= 0 AND samples + seat_samples > 0),
    ADD CONSTRAINT stream_minutes_seat_rtt_subset CHECK (seat_rtt_samples BETWEEN 0 AND seat_samples);
