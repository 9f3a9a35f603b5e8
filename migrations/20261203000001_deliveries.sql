-- Delivery ledger (contract section 7): one row per (channel, job_id),
-- claimed before the first provider call and settled before the ack. No
-- message body (no OTP code) is stored.
--
-- Daily partitions on claimed_at (UTC days), created ahead and dropped
-- after NOTIFY_LEDGER_RETENTION by deliveries_maintain(): retention never
-- runs a bulk DELETE. A partitioned table cannot have a unique index
-- without the partition key, so "one row per job" is kept by the claim
-- itself (an advisory lock per job, then a look-up across partitions).
CREATE TABLE deliveries (
    job_id              text        NOT NULL,
    channel             text        NOT NULL,
    provider            text,
    status              text        NOT NULL,
    attempts            integer     NOT NULL DEFAULT 0,
    http_status         integer,
    provider_message_id text,
    recipient           text,
    -- First claim; never changed (it places the row in its partition).
    claimed_at          timestamptz NOT NULL DEFAULT now(),
    settled_at          timestamptz,
    -- The worker process holding the claim, and until when.
    claimed_by          text,
    lease_until         timestamptz,
    -- Why a job ended dead_lettered or expired (the dead letter's code).
    error_code          text,
    expires_at          timestamptz,
    CONSTRAINT deliveries_status CHECK (status IN ('claimed', 'sent', 'dead_lettered', 'expired')),
    PRIMARY KEY (channel, job_id, claimed_at)
) PARTITION BY RANGE (claimed_at);

-- "Was the OTP to +9198... sent?" and `deliveries list --to`.
CREATE INDEX deliveries_recipient ON deliveries (recipient, claimed_at DESC);
-- `deliveries list` newest first, `--since`.
CREATE INDEX deliveries_newest ON deliveries (claimed_at DESC);

-- Creates the partitions of today and the next `ahead_days` days (UTC) and
-- drops those whose day ended more than `keep_days` days ago. Returns what
-- it did. Safe to run at any time, by anyone; the worker runs it at start
-- and hourly, one replica at a time (an advisory lock).
CREATE FUNCTION deliveries_maintain(keep_days integer, ahead_days integer DEFAULT 3)
RETURNS TABLE (action text, partition_name text)
LANGUAGE plpgsql AS $$
DECLARE
    today date := (now() AT TIME ZONE 'UTC')::date;
    day date;
    name text;
    part record;
BEGIN
    FOR i IN 0..ahead_days LOOP
        day := today + i;
        name := 'deliveries_' || to_char(day, 'YYYYMMDD');
        IF to_regclass(name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF deliveries FOR VALUES FROM (%L) TO (%L) WITH (fillfactor = 80)',
                name, day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
            action := 'created';
            partition_name := name;
            RETURN NEXT;
        END IF;
    END LOOP;
    FOR part IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'deliveries'::regclass AND c.relname ~ '^deliveries_[0-9]{8}$'
        ORDER BY c.relname
    LOOP
        IF to_date(substr(part.relname, 12), 'YYYYMMDD') < today - keep_days THEN
            EXECUTE format('DROP TABLE %I', part.relname);
            action := 'dropped';
            partition_name := part.relname;
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;

SELECT count(*) FROM deliveries_maintain(7);
