-- Yesterday's partition too. A claim is placed in its day by the worker's
-- clock, and the database's clock decides which days exist: just after
-- midnight (UTC) a worker whose clock is a little behind the database's
-- claims into yesterday, and on a database created that day there was no
-- such partition (the claim was refused). Found by a test whose rows span
-- the 20 s before now, run by CI just after midnight.
--
-- Restated whole (an applied migration is never edited); only the first
-- day differs. Creates the partitions of yesterday, today and the next
-- `ahead_days` days (UTC) and drops those whose day ended more than
-- `keep_days` days ago (keep_days is at least 1, so never yesterday's).
-- Returns what it did. Safe to run at any time, by anyone; the worker runs
-- it at start and hourly, one replica at a time (an advisory lock).
CREATE OR REPLACE FUNCTION deliveries_maintain(keep_days integer, ahead_days integer DEFAULT 3)
RETURNS TABLE (action text, partition_name text)
LANGUAGE plpgsql AS $$
DECLARE
    today date := (now() AT TIME ZONE 'UTC')::date;
    day date;
    name text;
    part record;
BEGIN
    FOR i IN -1..ahead_days LOOP
        day := today + i;
        name := 'deliveries_' || to_char(day, 'YYYYMMDD');
        IF to_regclass(name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF deliveries FOR VALUES FROM (%L) TO (%L) WITH (fillfactor = 45)',
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

-- Yesterday's partition now, dropping nothing (whatever the retention).
SELECT count(*) FROM deliveries_maintain(36600);
