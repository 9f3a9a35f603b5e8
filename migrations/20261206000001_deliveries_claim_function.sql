-- A ledger claim in one statement: `deliveries_claim` takes the batch's
-- advisory locks (one per job, in the order given: the caller sorts them,
-- so two batches cannot deadlock), then looks for the jobs' rows, takes
-- over lapsed claims and inserts new ones. The worker used to send BEGIN,
-- the locks, this statement and COMMIT: four round trips a batch, now one.
--
-- The look-up still sees every claim committed by a lock's last holder:
-- in READ COMMITTED each statement of a VOLATILE function takes its own
-- snapshot, after the PERFORM that took the locks. The locks are held to
-- the end of the caller's transaction (here: this statement).
--
-- Parameters: $1 the batch's numbers, $2 channels, $3 job ids, $4
-- providers, $5 recipients, $6 oldest claim time a row of the job can
-- have, $7 replay (a dead letter may be claimed again), $8 expires_at, $9
-- the worker, $10 the lease in ms, $11 a new row's claim time, $12 the
-- lock keys (sorted). Answers only the jobs that had a row (rare): a job
-- not answered for was inserted with the claim time given ($11).
CREATE FUNCTION deliveries_claim(int4[], text[], text[], text[], text[], timestamptz[],
                                 bool[], timestamptz[], text, int8, timestamptz[], int8[])
RETURNS TABLE (n int4, at timestamptz, status text, holder text, lease_left float8, taken bool)
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
BEGIN
    PERFORM count(pg_advisory_xact_lock(k)) FROM unnest($12) k;
    RETURN QUERY
WITH input AS (
    SELECT * FROM unnest($1::int4[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::timestamptz[], $7::bool[], $8::timestamptz[], $11::timestamptz[])
        AS i(n, channel, job_id, provider, recipient, not_before, replay, expires_at, new_at)
),
found AS (
    SELECT i.*, d.claimed_at AS at, d.status, d.claimed_by AS holder, d.lease_until
    FROM input i
    LEFT JOIN LATERAL (
        SELECT claimed_at, status, claimed_by, lease_until FROM deliveries d
        WHERE d.channel = i.channel AND d.job_id = i.job_id AND d.claimed_at >= i.not_before
        ORDER BY d.claimed_at DESC LIMIT 1
    ) d ON true
),
taken AS (
    UPDATE deliveries d
    SET status = 'claimed', claimed_by = $9, lease_until = now() + $10 * interval '1 millisecond',
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
    SELECT f.job_id, f.channel, f.provider, 'claimed', f.recipient, $9,
           now() + $10 * interval '1 millisecond', f.expires_at, f.new_at
    FROM found f WHERE f.at IS NULL
)
-- Only jobs that had a row come back (rare): a job not answered for was
-- inserted with the claim time the worker gave (new_at). taken: the found
-- row was taken over.
SELECT f.n, f.at, f.status, f.holder,
       greatest(extract(epoch FROM f.lease_until - now()), 0)::float8 AS lease_left,
       false AS taken
FROM found f WHERE f.at IS NOT NULL
UNION ALL SELECT n, NULL, NULL, NULL, NULL, true FROM taken;
END
$fn$;
