-- Views for dashboards (Grafana's PostgreSQL data source, psql).

-- Dead letters not yet replayed, newest first.
CREATE OR REPLACE VIEW dead_letters_open AS
SELECT id, failed_at, channel, provider, error_code, http_status, attempts,
       job_id, reason, source_queue
FROM dead_letters
WHERE replayed_at IS NULL
ORDER BY failed_at DESC;

-- Failures per hour, channel and error code.
CREATE OR REPLACE VIEW dead_letters_hourly AS
SELECT date_trunc('hour', failed_at) AS hour, channel, error_code,
       count(*) AS failures,
       count(*) FILTER (WHERE replayed_at IS NOT NULL) AS replayed
FROM dead_letters
GROUP BY 1, 2, 3;
