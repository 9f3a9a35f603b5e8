//! Claiming jobs before their provider call, many in one transaction.
//!
//! A partitioned table has no unique index on (channel, job_id), so two
//! claims of one job are kept apart by an advisory lock per job, taken in
//! key order (no deadlock between batches) before the statement that looks
//! for the job's row. In READ COMMITTED that statement's snapshot is taken
//! after the lock, so it sees any claim committed by the lock's last holder.

use super::{LedgerError, records::Status};
use crate::domain::{Channel, Provider};
use sqlx::PgPool;
use std::{collections::HashMap, time::Duration};
use time::OffsetDateTime;

/// What the claim of one job needs.
#[derive(Debug, Clone)]
pub(crate) struct ClaimRequest {
    pub(crate) channel: Channel,
    pub(crate) job_id: String,
    pub(crate) recipient: String,
    /// No row of this job can be older (a UUIDv7 id's time), which spares
    /// the look-up the older partitions.
    pub(crate) minted_after: Option<OffsetDateTime>,
    /// A replayed dead letter may be claimed again once dead-lettered.
    pub(crate) replay: bool,
    pub(crate) expires_at: Option<OffsetDateTime>,
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Ours: send it. `taken_over` names the worker whose claim lapsed (it
    /// may have called the provider already; the same `Idempotency-Key`
    /// lets the provider drop the second call).
    Granted {
        claimed_at: OffsetDateTime,
        taken_over: Option<String>,
    },
    /// Another live worker holds it: ask again after `retry_in`.
    Held { by: String, retry_in: Duration },
    /// Already settled: never sent again.
    Settled(Status),
}

/// The key of a job's advisory lock: FNV-1a over channel and id, the same
/// in every replica and version.
fn lock_key(channel: Channel, job_id: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in channel.as_str().bytes().chain([0]).chain(job_id.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}

/// How long a second delivery of a job claimed twice in one batch waits.
const SAME_BATCH_RETRY: Duration = Duration::from_millis(200);

/// One row per job from one look-up (`found`), the takeovers and inserts
/// driven from it, and no join between the parts: the answers are put
/// together by job in Rust. (The ledger's connections plan no hash joins,
/// so a join here would be a nested loop over the batch, O(batch²).)
const CLAIM: &str = r"
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
UNION ALL SELECT n, NULL, NULL, NULL, NULL, true FROM taken
";

/// n, claimed_at, status, claimed_by, lease left (s), taken.
type Row = (
    i32,
    Option<OffsetDateTime>,
    Option<String>,
    Option<String>,
    Option<f64>,
    bool,
);

/// Claims `batch` for `worker` with a lease of `lease`: one answer per
/// request, in order. One claim the table refuses for its content does not
/// fail the others: they are then claimed one by one.
pub(super) async fn claim_many(
    pool: &PgPool,
    worker: &str,
    lease: Duration,
    batch: Vec<ClaimRequest>,
) -> Result<Vec<Result<Claim, LedgerError>>, LedgerError> {
    match claim_all(pool, worker, lease, &batch).await {
        Ok(claims) => Ok(claims.into_iter().map(Ok).collect()),
        Err(e) if e.about_the_row && batch.len() > 1 => {
            let mut each = Vec::with_capacity(batch.len());
            for r in &batch {
                each.push(
                    claim_all(pool, worker, lease, std::slice::from_ref(r))
                        .await
                        .and_then(|mut c| c.pop().ok_or_else(|| e.clone())),
                );
            }
            Ok(each)
        }
        Err(e) => Err(e),
    }
}

/// Claims `batch` in one transaction.
async fn claim_all(
    pool: &PgPool,
    worker: &str,
    lease: Duration,
    batch: &[ClaimRequest],
) -> Result<Vec<Claim>, LedgerError> {
    // A job twice in one batch (two deliveries at once): the first is
    // claimed, the others wait and ask again.
    let mut first: HashMap<(Channel, &str), usize> = HashMap::new();
    let mut answers: Vec<Option<Claim>> = vec![None; batch.len()];
    let mut asked = Vec::with_capacity(batch.len());
    for (n, r) in batch.iter().enumerate() {
        if first.insert((r.channel, r.job_id.as_str()), n).is_some() {
            answers[n] = Some(Claim::Held {
                by: worker.to_owned(),
                retry_in: SAME_BATCH_RETRY,
            });
        } else {
            asked.push(n);
        }
    }
    let mut keys: Vec<i64> = asked
        .iter()
        .map(|&n| lock_key(batch[n].channel, &batch[n].job_id))
        .collect();
    keys.sort_unstable();
    let col = |f: &dyn Fn(&ClaimRequest) -> &str| -> Vec<&str> {
        asked.iter().map(|&n| f(&batch[n])).collect()
    };
    let ns: Vec<i32> = asked
        .iter()
        .map(|&n| i32::try_from(n).unwrap_or(i32::MAX))
        .collect();
    let not_before: Vec<Option<OffsetDateTime>> =
        asked.iter().map(|&n| batch[n].minted_after).collect();
    let replay: Vec<bool> = asked.iter().map(|&n| batch[n].replay).collect();
    let expires: Vec<Option<OffsetDateTime>> = asked.iter().map(|&n| batch[n].expires_at).collect();
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    // A new row's claim time: the worker's clock (it only places the row in
    // its day and orders a job's rows; leases are timed by the database's),
    // one apart per row, so a look-up by claimed_at finds one row.
    // Whole microseconds, as PostgreSQL keeps them.
    let now = OffsetDateTime::now_utc();
    let now = now
        .replace_nanosecond(now.nanosecond() / 1000 * 1000)
        .unwrap_or(now);
    let new_at: Vec<OffsetDateTime> = (0..asked.len())
        .map(|k| now + time::Duration::microseconds(i64::try_from(k).unwrap_or(0)))
        .collect();

    let fail = |e: sqlx::Error| LedgerError::sql("claim", &e);
    let mut tx = pool.begin().await.map_err(fail)?;
    sqlx::query("SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::int8[]) k")
        .bind(&keys)
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
    // A NULL not_before looks at every partition.
    let rows: Vec<Row> = sqlx::query_as(CLAIM)
        .bind(&ns)
        .bind(col(&|r| r.channel.as_str()))
        .bind(col(&|r| &r.job_id))
        .bind(col(&|r| Provider::for_channel(r.channel).as_str()))
        .bind(col(&|r| &r.recipient))
        .bind(
            not_before
                .iter()
                .map(|t| t.unwrap_or(OffsetDateTime::UNIX_EPOCH))
                .collect::<Vec<_>>(),
        )
        .bind(&replay)
        .bind(&expires)
        .bind(worker)
        .bind(lease_ms)
        .bind(&new_at)
        .fetch_all(&mut *tx)
        .await
        .map_err(fail)?;
    tx.commit().await.map_err(fail)?;

    let mut found = HashMap::new();
    let mut taken = std::collections::HashSet::new();
    for (n, at, status, holder, lease_left, was_taken) in rows {
        if was_taken {
            taken.insert(n);
        } else {
            found.insert(n, (at, status, holder, lease_left));
        }
    }
    for ((&i, n), &new_at) in asked.iter().zip(&ns).zip(&new_at) {
        let Some((at, status, holder, lease_left)) = found.remove(n) else {
            answers[i] = Some(Claim::Granted {
                claimed_at: new_at,
                taken_over: None,
            });
            continue;
        };
        answers[i] = Some(match (at, status.as_deref()) {
            (Some(at), _) if taken.contains(n) => Claim::Granted {
                claimed_at: at,
                // None when the claim was given up rather than lapsed.
                taken_over: holder,
            },
            (_, Some("claimed")) => Claim::Held {
                by: holder.unwrap_or_default(),
                // Ask again within a second: the holder may settle sooner.
                retry_in: Duration::from_secs_f64(lease_left.unwrap_or(1.0).clamp(0.05, 1.0)),
            },
            (_, other) => match other.and_then(Status::parse) {
                Some(status) => Claim::Settled(status),
                None => {
                    return Err(LedgerError::new(format!("ledger claim: status {other:?}")));
                }
            },
        });
    }
    answers
        .into_iter()
        .map(|a| a.ok_or_else(|| LedgerError::new("ledger claim: a job got no answer".into())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_tell_channels_apart() {
        assert_eq!(
            lock_key(Channel::Sms, "otp-1"),
            lock_key(Channel::Sms, "otp-1")
        );
        assert_ne!(
            lock_key(Channel::Sms, "otp-1"),
            lock_key(Channel::Email, "otp-1")
        );
        assert_ne!(
            lock_key(Channel::Sms, "otp-1"),
            lock_key(Channel::Sms, "otp-2")
        );
        // Fixed forever: replicas of different versions must agree.
        assert_eq!(lock_key(Channel::Sms, "a"), 326_181_611_743_261_613);
    }
}
