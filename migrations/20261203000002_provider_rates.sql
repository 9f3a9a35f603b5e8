-- A provider's call ceiling shared by every replica (NOTIFY_RATE_SCOPE=fleet):
-- one GCRA row per provider. A replica claims a block of about 100 ms of
-- calls in one statement by moving `tat` (the theoretical arrival time)
-- forward; `hold_until` is a provider's Retry-After, shared the same way.
CREATE TABLE IF NOT EXISTS provider_rates (
    provider   text PRIMARY KEY,
    tat        timestamptz NOT NULL DEFAULT now(),
    hold_until timestamptz NOT NULL DEFAULT '-infinity'
);
