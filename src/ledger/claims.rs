//! Claiming jobs before their provider call, many in one statement.
//!
//! A partitioned table has no unique index on (channel, job_id), so two
//! claims of one job are kept apart by an advisory lock per job, taken in
//! key order (no deadlock between batches) before the statement that looks
//! for the job's row. Both run in one round trip, inside the database
//! function `deliveries_claim_near` (its migrations say how the look-up
//! still sees any claim committed by the lock's last holder, and why it
//! need not look past an hour ahead).

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

/// The claim (migration `deliveries_claim_horizon`): one row per job
/// that had a row, with whether it was taken over; a job not answered for
/// was inserted with its claim time (the first given, a microsecond more
/// for each next job). The answers are put together by job in Rust, not
/// joined in SQL: the ledger's connections plan no hash joins, so a join
/// there is a nested loop over the batch, O(batch²).
const CLAIM: &str =
    "SELECT * FROM deliveries_claim_near($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

/// Position among the jobs asked (from 0), claimed_at, status,
/// claimed_by, lease left (s), taken.
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
    let mut first: HashMap<(Channel, &str), usize> = HashMap::with_capacity(batch.len());
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
    let not_before: Vec<Option<OffsetDateTime>> =
        asked.iter().map(|&n| batch[n].minted_after).collect();
    let replay: Vec<bool> = asked.iter().map(|&n| batch[n].replay).collect();
    let expires: Vec<Option<OffsetDateTime>> = asked.iter().map(|&n| batch[n].expires_at).collect();
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    // A new row's claim time: the worker's clock (it only places the row in
    // its day and orders a job's rows; leases are timed by the database's,
    // which refuses a time an hour off its own), one apart per row, so a
    // look-up by claimed_at finds one row. Whole microseconds, as
    // PostgreSQL keeps them; the database adds them as this does.
    let now = OffsetDateTime::now_utc();
    let now = now
        .replace_nanosecond(now.nanosecond() / 1000 * 1000)
        .unwrap_or(now);
    let new_at = |k: usize| now + time::Duration::microseconds(i64::try_from(k).unwrap_or(0));

    // A NULL not_before would look at no partition: the epoch looks at all.
    let rows: Vec<Row> = sqlx::query_as(CLAIM)
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
        .bind(now)
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
    for (k, &i) in asked.iter().enumerate() {
        let n = i32::try_from(k).unwrap_or(i32::MAX);
        let Some((at, status, holder, lease_left)) = found.remove(&n) else {
            answers[i] = Some(Claim::Granted {
                claimed_at: new_at(k),
                taken_over: None,
            });
            continue;
        };
        answers[i] = Some(match (at, status.as_deref()) {
            (Some(at), _) if taken.contains(&n) => Claim::Granted {
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
    use crate::{deadletter::testdb::TestDb, ledger::tests::request};

    /// The look-up stops an hour past the database clock: a row that a
    /// worker 50 minutes ahead wrote is still found (here: held by it).
    #[tokio::test]
    async fn a_claim_made_by_a_clock_up_to_an_hour_ahead_is_still_found() {
        let db = TestDb::new().await;
        let pool = db.store.pool().clone();
        sqlx::query("INSERT INTO deliveries (job_id, channel, status, claimed_by, lease_until, claimed_at) VALUES ('ahead', 'sms', 'claimed', 'fast-clock', now() + interval '1 minute', now() + interval '50 minutes')")
            .execute(&pool)
            .await
            .unwrap();
        let answers = claim_many(&pool, "b", Duration::from_secs(60), vec![request("ahead")])
            .await
            .unwrap();
        match &answers[..] {
            [Ok(Claim::Held { by, .. })] => assert_eq!(by, "fast-clock"),
            other => panic!("the row 50 minutes ahead was not found: {other:?}"),
        }
        db.drop().await;
    }

    /// A claim time more than an hour off the database's is refused, as
    /// the database's fault, not the row's: by default the job is held,
    /// where a refused row would be sent unrecorded (perhaps a second time).
    #[tokio::test]
    async fn a_claim_time_an_hour_off_the_database_clock_is_refused() {
        let db = TestDb::new().await;
        let pool = db.store.pool().clone();
        for offset in ["2 hours", "-2 hours"] {
            let e = sqlx::query(
                "SELECT * FROM deliveries_claim_near('{sms}', '{j}', '{telnxo}', '{x}', '{1970-01-01Z}', '{f}', '{NULL}', 'w', 60000, now() + $1::interval, '{1}')",
            )
            .bind(offset)
            .fetch_all(&pool)
            .await
            .map(|_| ())
            .map_err(|e| LedgerError::sql("claim", &e))
            .unwrap_err();
            assert!(!e.about_the_row, "{e}");
            assert!(e.message.contains("worker's clock"), "{e}");
        }
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(rows, 0);
        db.drop().await;
    }

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
