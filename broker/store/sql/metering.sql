-- name: metering_due
-- Sessions with something to meter by $1 (at most $2), locked against a concurrent price change's close.
SELECT m.*, c.usage_until, c.sla_until
FROM metering_cursor c JOIN metered_sessions m USING (session_id)
WHERE NOT c.done AND c.next_due_at <= $1
ORDER BY c.next_due_at
LIMIT $2
FOR UPDATE OF c SKIP LOCKED;

-- name: metering_open_at_price
-- The live sessions on a site's GPU class, with the schedule in force until now, for a price change to close.
SELECT m.*, c.usage_until, c.sla_until
FROM metering_cursor c JOIN metered_sessions m USING (session_id)
WHERE NOT c.done AND m.site_id = $1 AND m.gpu_class = $2
FOR UPDATE OF c;

-- name: metering_live
-- The sessions of a venue or provider with usage not in the ledger yet, for the running accrual: those that run, and
-- those that ended but whose last entries the duty has not written (so a cost shown does not dip between a session's
-- end and its metering).
SELECT m.*, c.usage_until, c.sla_until
FROM metering_cursor c JOIN metered_sessions m USING (session_id)
WHERE NOT c.done
  AND ($1::text IS NULL OR m.venue_id = $1) AND ($2::text IS NULL OR m.provider_id = $2);

-- name: metering_clock
SELECT clock_timestamp() AS now;

-- name: stream_minutes_of
-- The stats of these sessions' minutes from $2 on: the means of the agent's heartbeats and of the seat's reports of
-- each minute, NULL where that side sent none.
SELECT session_id::text AS session_id, minute,
       rtt_ms_sum / nullif(samples, 0) AS rtt_ms, fps_sum / nullif(samples, 0) AS fps,
       seat_rtt_ms_sum / nullif(seat_rtt_samples, 0) AS seat_rtt_ms, seat_fps_sum / nullif(seat_samples, 0) AS seat_fps
FROM stream_minutes WHERE session_id = ANY($1::uuid[]) AND minute >= $2;

-- name: metering_advance
-- Move the cursors of these sessions, each only from where this writer read it (compare-and-set): a session another
-- writer metered meanwhile is left out of what this returns, and its entries are not written.
UPDATE metering_cursor c
SET usage_until = u.usage_until, sla_until = u.sla_until, next_due_at = u.next_due_at, done = u.done
FROM unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[], $4::timestamptz[], $5::timestamptz[],
            $6::timestamptz[], $7::boolean[])
    AS u(session_id, old_usage, old_sla, usage_until, sla_until, next_due_at, done)
WHERE c.session_id = u.session_id
  AND c.usage_until IS NOT DISTINCT FROM u.old_usage AND c.sla_until IS NOT DISTINCT FROM u.old_sla
RETURNING c.session_id::text;

-- name: ledger_append
INSERT INTO ledger (session_id, venue_id, provider_id, host_id, site_id, gpu_class, slots, kind, basis, lease_id,
                    price_micros, start_at, end_at, seconds, amount_micros, currency)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::integer[],
                     $8::text[], $9::text[], $10::text[], $11::bigint[], $12::timestamptz[], $13::timestamptz[],
                     $14::integer[], $15::bigint[], $16::text[]);

-- name: stream_minutes_add
-- Agents' stats of streaming sessions into their minute (database clock). Only a session on the reporting host
-- ($4) counts: an agent speaks for its own host's sessions and no other's.
INSERT INTO stream_minutes AS m (session_id, minute, samples, rtt_ms_sum, fps_sum)
SELECT u.session_id, date_trunc('minute', now()), count(*), sum(u.rtt_ms), sum(u.fps)
FROM unnest($1::uuid[], $2::float8[], $3::float8[], $4::text[]) AS u(session_id, rtt_ms, fps, host_id)
JOIN sessions s ON s.session_id = u.session_id AND s.state = 'STREAMING' AND s.host_id = u.host_id
GROUP BY u.session_id
ON CONFLICT (session_id, minute) DO UPDATE
SET samples = m.samples + excluded.samples, rtt_ms_sum = m.rtt_ms_sum + excluded.rtt_ms_sum,
    fps_sum = m.fps_sum + excluded.fps_sum;

-- name: stream_minutes_add_seat
-- A seat's samples ($2 at, $3 fps, $4 rtt ms or NULL) of session $1 into the minutes they were taken in, if it is
-- STREAMING; the minutes written.
INSERT INTO stream_minutes AS m (session_id, minute, samples, rtt_ms_sum, fps_sum, seat_samples, seat_fps_sum,
                                 seat_rtt_samples, seat_rtt_ms_sum)
SELECT s.session_id, date_trunc('minute', u.at), 0, 0, 0, count(*), sum(u.fps), count(u.rtt_ms),
       coalesce(sum(u.rtt_ms), 0)
FROM unnest($2::timestamptz[], $3::float8[], $4::float8[]) AS u(at, fps, rtt_ms)
JOIN sessions s ON s.session_id = $1 AND s.state = 'STREAMING'
GROUP BY s.session_id, date_trunc('minute', u.at)
ON CONFLICT (session_id, minute) DO UPDATE
SET seat_samples = m.seat_samples + excluded.seat_samples, seat_fps_sum = m.seat_fps_sum + excluded.seat_fps_sum,
    seat_rtt_samples = m.seat_rtt_samples + excluded.seat_rtt_samples,
    seat_rtt_ms_sum = m.seat_rtt_ms_sum + excluded.seat_rtt_ms_sum
RETURNING m.minute;

-- name: statement_lines
-- A statement's lines: the entries that start in [$3, $4) of a venue ($1) and/or a provider ($2).
SELECT site_id, gpu_class, basis, price_micros, currency,
       count(*)::integer AS entries,
       coalesce(sum(seconds) FILTER (WHERE kind = 'usage'), 0)::bigint AS seconds,
       coalesce(sum(seconds::bigint * slots) FILTER (WHERE kind = 'usage'), 0)::bigint AS slot_seconds,
       coalesce(sum(amount_micros) FILTER (WHERE kind = 'usage'), 0)::bigint AS usage_micros,
       coalesce(sum(seconds) FILTER (WHERE kind = 'sla_credit'), 0)::bigint AS credited_seconds,
       coalesce(sum(amount_micros) FILTER (WHERE kind = 'sla_credit'), 0)::bigint AS credit_micros
FROM ledger
WHERE ($1::text IS NULL OR venue_id = $1) AND ($2::text IS NULL OR provider_id = $2)
  AND start_at >= $3 AND start_at < $4
GROUP BY site_id, gpu_class, basis, price_micros, currency
ORDER BY site_id, gpu_class, basis, price_micros, currency;

-- name: ledger_page
-- The entries that start in [$3, $4) of a venue and/or a provider, in entry order after entry $5, at most $6.
SELECT entry_id, session_id::text AS session_id, venue_id, provider_id, host_id, site_id, gpu_class, slots, kind,
       basis, lease_id, price_micros, start_at, end_at, seconds, amount_micros, currency, written_at
FROM ledger
WHERE ($1::text IS NULL OR venue_id = $1) AND ($2::text IS NULL OR provider_id = $2)
  AND start_at >= $3 AND start_at < $4 AND entry_id > $5
ORDER BY entry_id
LIMIT $6;

-- name: metering_venue_exists
SELECT 1 FROM venues WHERE venue_id = $1;

-- name: metering_provider_exists
SELECT 1 FROM providers WHERE provider_id = $1;

-- name: stream_stats_set
-- The latest stats each agent reported for its sessions (what GetSession and the consoles show); as above, only
-- for sessions on the reporting host.
INSERT INTO session_stream_stats AS x (session_id, fps_sent, bitrate_kbps, rtt_ms, loss_pct, encode_ms, reported_at)
SELECT u.session_id, u.fps, u.kbps, u.rtt, u.loss, u.encode, now()
FROM unnest($1::uuid[], $2::text[], $3::real[], $4::integer[], $5::real[], $6::real[], $7::real[])
    AS u(session_id, host_id, fps, kbps, rtt, loss, encode)
JOIN sessions s ON s.session_id = u.session_id AND s.host_id = u.host_id
ON CONFLICT (session_id) DO UPDATE
SET fps_sent = excluded.fps_sent, bitrate_kbps = excluded.bitrate_kbps, rtt_ms = excluded.rtt_ms,
    loss_pct = excluded.loss_pct, encode_ms = excluded.encode_ms, reported_at = excluded.reported_at;

-- name: stream_stats_of
SELECT session_id, fps_sent, bitrate_kbps, rtt_ms, loss_pct, encode_ms, reported_at FROM session_stream_stats
WHERE session_id = ANY($1::uuid[]);
