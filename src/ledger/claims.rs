//! Claiming jobs before their provider call, many in one statement.
//!
//! A partitioned table has no unique index on (channel, job_id), so two
//! claims of one job are kept apart by an advisory lock per job, taken in
//! key order (no deadlock between batches) before the statement that looks
//! for the job's row. Both run in one round trip, inside the database
//! function `deliveries_claim` (its migration says how the look-up still
//! sees any claim committed by the lock's last holder).

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

/// The claim (migration `deliveries_claim_function`): one row per job
/// that had a row, with whether it was taken over; a job not answered for
/// was inserted with the claim time given. The answers are put together by
/// job in Rust, not joined in SQL: the ledger's connections plan no hash
/// joins, so a join there is a nested loop over the batch, O(batch²).
const CLAIM: &str =
    "SELECT * FROM deliveries_claim($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

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

/// Claims `batch` in one statement (one transaction).
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

    // A NULL not_before would look at every partition: the epoch does.
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
        .bind(&keys)
        .fetch_all(pool)
        .await
        .map_err(|e| LedgerError::sql("claim", &e))?;

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
