-- name: audit_write
INSERT INTO audit_log (actor, tenant, action, target, detail, peer) VALUES ($1, $2, $3, $4, $5::jsonb, $6);

-- name: audit_read
SELECT seq, at, actor, tenant, action, target, detail, peer FROM audit_log
WHERE ($1::text IS NULL OR tenant = $1)
ORDER BY seq DESC
LIMIT $2;
