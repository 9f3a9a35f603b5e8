//! Recording outcomes in the ledger, many in one statement, and renewing
//! the leases of claims still in progress.

use super::{Held, LedgerError};
use crate::domain::Channel;
use sqlx::PgPool;
use std::time::Duration;
use time::OffsetDateTime;

/// A ledger row's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Claimed,
    Sent,
    DeadLettered,
    Expired,
}

impl Status {
    pub(crate) const ALL: [Status; 4] = [
        Status::Claimed,
        Status::Sent,
        Status::DeadLettered,
        Status::Expired,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Claimed => "claimed",
            Status::Sent => "sent",
            Status::DeadLettered => "dead_lettered",
            Status::Expired => "expired",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// The outcome of one claim. `Status::Claimed` gives the claim up (the job
/// goes back to the broker; the next delivery may claim it at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) channel: Channel,
    pub(crate) job_id: String,
    pub(crate) claimed_at: OffsetDateTime,
    pub(crate) status: Status,
    /// Provider calls made under this claim (added to the row's count).
    pub(crate) attempts: u32,
    pub(crate) http_status: Option<u16>,
    pub(crate) provider_message_id: Option<String>,
    pub(crate) error_code: Option<String>,
}

pub(super) const RECORD: &str = r"
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::int4[],
                         $6::int4[], $7::text[], $8::text[])
        WITH ORDINALITY
        AS i(channel, job_id, claimed_at, status, attempts, http_status, provider_message_id, error_code, n)
),
written AS (
    UPDATE deliveries d
    SET status = i.status,
        attempts = d.attempts + i.attempts,
        http_status = coalesce(i.http_status, d.http_status),
        provider_message_id = coalesce(i.provider_message_id, d.provider_message_id),
        error_code = i.error_code,
        settled_at = CASE WHEN i.status = 'claimed' THEN NULL ELSE now() END,
        lease_until = NULL,
        claimed_by = CASE WHEN i.status = 'claimed' THEN NULL ELSE d.claimed_by END
    FROM input i
    WHERE d.channel = i.channel AND d.job_id = i.job_id AND d.claimed_at = i.claimed_at
      -- Giving a claim up touches only a claim still ours; an outcome is
      -- written whoever holds the row now (the call was made).
      AND (i.status <> 'claimed' OR (d.status = 'claimed' AND d.claimed_by = $9))
    RETURNING i.n
)
-- One row holding the numbers written, not one row a job to decode.
SELECT coalesce(array_agg(n), '{}')::int8[] FROM written
";

/// Writes `batch`; per record, whether a row took it, or why not. One
/// record the table refuses does not hold up the others: they are then
/// written one by one. A database that is away fails them all at once.
pub(super) async fn record_many(
    pool: &PgPool,
    worker: &str,
    batch: Vec<Record>,
) -> Result<Vec<Result<bool, LedgerError>>, LedgerError> {
    match record_all(pool, worker, &batch).await {
        Ok(written) => Ok(written.into_iter().map(Ok).collect()),
        Err(e) if e.about_the_row && batch.len() > 1 => {
            let mut each = Vec::with_capacity(batch.len());
            for r in &batch {
                each.push(
                    record_all(pool, worker, std::slice::from_ref(r))
                        .await
                        .map(|w| w.first().copied().unwrap_or(false)),
                );
            }
            Ok(each)
        }
        Err(e) => Err(e),
    }
}

/// Writes `batch` in one statement.
async fn record_all(
    pool: &PgPool,
    worker: &str,
    batch: &[Record],
) -> Result<Vec<bool>, LedgerError> {
    let text = |f: &dyn Fn(&Record) -> &str| -> Vec<&str> { batch.iter().map(f).collect() };
    let int = |v: Option<u32>| v.map(|v| i32::try_from(v).unwrap_or(i32::MAX));
    let written: Vec<i64> = sqlx::query_scalar(RECORD)
        .bind(text(&|r| r.channel.as_str()))
        .bind(text(&|r| &r.job_id))
        .bind(batch.iter().map(|r| r.claimed_at).collect::<Vec<_>>())
        .bind(text(&|r| r.status.as_str()))
        .bind(
            batch
                .iter()
                .map(|r| int(Some(r.attempts)))
                .collect::<Vec<_>>(),
        )
        .bind(
            batch
                .iter()
                .map(|r| int(r.http_status.map(u32::from)))
                .collect::<Vec<_>>(),
        )
        .bind(
            batch
                .iter()
                .map(|r| r.provider_message_id.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            batch
                .iter()
                .map(|r| r.error_code.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(worker)
        .fetch_one(pool)
        .await
        .map_err(|e| LedgerError::sql("record", &e))?;
    // ORDINALITY counts from 1.
    let mut matched = vec![false; batch.len()];
    for n in written {
        if let Some(m) = usize::try_from(n - 1).ok().and_then(|i| matched.get_mut(i)) {
            *m = true;
        }
    }
    Ok(matched)
}

/// Extends the lease of `claims`, those still this worker's.
pub(super) async fn renew(
    pool: &PgPool,
    worker: &str,
    lease: Duration,
    claims: &[Held],
) -> Result<(), LedgerError> {
    sqlx::query(
        "UPDATE deliveries d SET lease_until = now() + $4 * interval '1 millisecond' \
         FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS i(channel, job_id, claimed_at) \
         WHERE d.channel = i.channel AND d.job_id = i.job_id AND d.claimed_at = i.claimed_at \
         AND d.status = 'claimed' AND d.claimed_by = $5",
    )
    .bind(
        claims
            .iter()
            .map(|h| h.channel.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(claims.iter().map(|h| h.job_id.as_str()).collect::<Vec<_>>())
    .bind(claims.iter().map(|h| h.claimed_at).collect::<Vec<_>>())
    .bind(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
    .bind(worker)
    .execute(pool)
    .await
    .map_err(|e| LedgerError::sql("lease renewal", &e))?;
    Ok(())
}
