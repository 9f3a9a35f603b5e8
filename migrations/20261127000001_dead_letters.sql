-- Jobs that could not be delivered, with the reason and the fix (contract section 4).
CREATE TABLE IF NOT EXISTS dead_letters (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id            text        NOT NULL,
    channel           text        NOT NULL CHECK (channel IN ('email', 'sms')),
    provider          text        CHECK (provider IN ('migosmtp', 'telnxo')),
    error_code        text        NOT NULL,
    reason            text        NOT NULL,
    http_status       integer,
    provider_response text        CHECK (octet_length(provider_response) <= 4096),
    payload           jsonb,
    raw_payload       bytea,
    attempts          integer     NOT NULL CHECK (attempts >= 0),
    source_queue      text        NOT NULL,
    failed_at         timestamptz NOT NULL DEFAULT now(),
    replayed_at       timestamptz
);

-- A redelivered job never makes a second open row.
CREATE UNIQUE INDEX IF NOT EXISTS dead_letters_open_job
    ON dead_letters (channel, job_id) WHERE replayed_at IS NULL;

-- The dashboard's questions: newest failures; failures by code or channel over time.
CREATE INDEX IF NOT EXISTS dead_letters_failed_at ON dead_letters (failed_at DESC);
CREATE INDEX IF NOT EXISTS dead_letters_code_failed_at ON dead_letters (error_code, failed_at DESC);
CREATE INDEX IF NOT EXISTS dead_letters_channel_failed_at ON dead_letters (channel, failed_at DESC);
