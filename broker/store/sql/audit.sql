-- name: audit_write
-- $5: the detail as JSON text (text, so that a pool's jsonb codec does not encode it a second time).
INSERT INTO audit_log (actor, tenant, action, target, detail, peer) VALUES ($1, $2, $3, $4, $5::text::jsonb, $6);

-- name: audit_read
SELECT seq, at, actor, tenant, action, target, detail, peer FROM audit_log
WHERE ($1::text IS NULL OR tenant = $1)
ORDER BY seq DESC
LIMIT $2;

-- name: audit_seal_lock
-- One sealer at a time, whichever broker process: the chain's order is the order it seals in.
SELECT pg_try_advisory_xact_lock(hashtext('cloudseat.audit_chain'));

-- name: audit_chain_head
SELECT chain_no, hash FROM audit_log WHERE chain_no IS NOT NULL ORDER BY chain_no DESC LIMIT 1;

-- name: audit_unsealed
-- The committed rows not yet in the chain, oldest first, with their fields in the chain's canonical form.
SELECT seq, (extract(epoch FROM at) * 1000000)::bigint AS at_us, actor, tenant, action, target, detail::text AS detail,
       peer
FROM audit_log WHERE chain_no IS NULL ORDER BY seq LIMIT $1;

-- name: audit_seal
UPDATE audit_log a SET chain_no = u.chain_no, prev_hash = u.prev_hash, hash = u.hash
FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[]) AS u(seq, chain_no, prev_hash, hash)
WHERE a.seq = u.seq AND a.chain_no IS NULL;

-- name: audit_chain_page
-- The sealed rows after chain number $1, in chain order, at most $2.
SELECT chain_no, prev_hash, hash, seq, (extract(epoch FROM at) * 1000000)::bigint AS at_us, actor, tenant, action,
       target, detail::text AS detail, peer
FROM audit_log WHERE chain_no > $1 ORDER BY chain_no LIMIT $2;

-- name: audit_page
-- Rows of tenant $1 (NULL: all) in [$2, $3) (NULL: open), by actor $4, action $5, target $6 (NULL: any), after seq
-- $7, oldest first, at most $8.
SELECT seq, at, actor, tenant, action, target, detail::text AS detail, peer, chain_no, prev_hash, hash
FROM audit_log
WHERE ($1::text IS NULL OR tenant = $1) AND ($2::timestamptz IS NULL OR at >= $2)
  AND ($3::timestamptz IS NULL OR at < $3) AND ($4::text IS NULL OR actor = $4)
  AND ($5::text IS NULL OR action = $5) AND ($6::text IS NULL OR target = $6) AND seq > $7
ORDER BY seq
LIMIT $8;
