-- The W3C `traceparent` of the job's trace when it was dead-lettered, so
-- a replay's new trace can link back to it (an extra column: contract
-- section 4 leaves them to the project).
ALTER TABLE dead_letters
    ADD COLUMN trace_parent text
    CHECK (trace_parent IS NULL OR length(trace_parent) <= 128);
