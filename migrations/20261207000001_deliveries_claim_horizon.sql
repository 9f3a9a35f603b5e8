-- A ledger claim that looks at fewer partitions, and a claim time the
-- database checks: `deliveries_claim_near`. `deliveries_claim` stays for
-- workers of the previous version during a rolling upgrade.
--
-- The look-up for a job without a UUIDv7 id searched every partition,
-- the three made ahead of time included, which cannot hold a row unless a
-- worker's clock ran days ahead. Here a new row's claim time must be within
-- an hour of the database's clock (the worker's clock gives it), or the
-- claim fails and names the clock: jobs are held, none is sent unrecorded
-- (SQLSTATE P0001 is not about the row). So no row is more than an hour
-- ahead of the transaction that wrote it, and the look-up stops an hour
-- past a clock read after the batch's locks: after the start of every
-- claim committed by a lock's last holder. The hour below was already
-- assumed for UUIDv7 ids (their time less an hour is the lower bound).
--
-- Parameters as `deliveries_claim` less the batch's numbers (the position
-- in the arrays, from 0, answers instead) and the new rows' claim times:
-- $10 is the first, each next one a microsecond later, as the worker made
-- them. $1 channels, $2 job ids, $3 providers, $4 recipients, $5 oldest
-- claim time a row of the job can have, $6 replay, $7 expires_at, $8 the
-- worker, $9 the lease in ms, $10 the first claim time, $11 the lock keys
-- (sorted).
CREATE FUNCTION deliveries_claim_near(text[], text[], text[], text[], timestamptz[], bool[],
                                      timestamptz[], text, int8, timestamptz, int8[])
RETURNS TABLE (n int4, at timestamptz, status text, holder text, lease_left float8, taken bool)
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    horizon timestamptz;
    skew constant interval := interval '1 hour';
BEGIN
    IF $10 NOT BETWEEN now() - skew AND now() + skew THEN
        RAISE EXCEPTION 'ledger claim time % is more than an hour from the database clock (%): check the worker''s clock (NTP)', $10, now();
    END IF;
    PERFORM count(pg_advisory_xact_lock(k)) FROM unnest($11) k;
    horizon := clock_timestamp() + skew;
    RETURN QUERY
WITH input AS (
    SELECT (i.ord - 1)::int4 AS n, i.channel, i.job_id, i.provider, i.recipient, i.not_before,
           i.replay, i.expires_at, $10 + (i.ord - 1) * interval '1 microsecond' AS new_at
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::bool[],
                $7::timestamptz[]) WITH ORDINALITY
        AS i(channel, job_id, provider, recipient, not_before, replay, expires_at, ord)
),
found AS (
    SELECT i.*, d.claimed_at AS at, d.status, d.claimed_by AS holder, d.lease_until
    FROM input i
    LEFT JOIN LATERAL (
        SELECT claimed_at, status, claimed_by, lease_until FROM deliveries d
        WHERE d.channel = i.channel AND d.job_id = i.job_id
          AND d.claimed_at >= i.not_before AND d.claimed_at <= horizon
        ORDER BY d.claimed_at DESC LIMIT 1
    ) d ON true
),
taken AS (
    UPDATE deliveries d
    SET status = 'claimed', claimed_by = $8, lease_until = now() + $9 * interval '1 millisecond',
        settled_at = NULL, error_code = NULL
    FROM found f
    WHERE f.at IS NOT NULL
      AND d.channel = f.channel AND d.job_id = f.job_id AND d.claimed_at = f.at
      AND ((d.status = 'claimed' AND (d.lease_until IS NULL OR d.lease_until <= now()))
           OR (f.replay AND d.status IN ('dead_lettered', 'expired')))
    RETURNING f.n
),
inserted AS (
    -- Runs whether or not it is read; the statement fails if any row does.
    INSERT INTO deliveries (job_id, channel, provider, status, recipient, claimed_by, lease_until,
                            expires_at, claimed_at)
    SELECT f.job_id, f.channel, f.provider, 'claimed', f.recipient, $8,
           now() + $9 * interval '1 millisecond', f.expires_at, f.new_at
    FROM found f WHERE f.at IS NULL
)
-- As deliveries_claim: only jobs that had a row come back.
SELECT f.n, f.at, f.status, f.holder,
       greatest(extract(epoch FROM f.lease_until - now()), 0)::float8 AS lease_left,
       false AS taken
FROM found f WHERE f.at IS NOT NULL
UNION ALL SELECT n, NULL, NULL, NULL, NULL, true FROM taken;
END
$fn$;
