//! The delivery ledger (contract section 7): every job that decoded is
//! claimed in `deliveries` before its first provider call and its outcome
//! recorded before its ack, so a redelivered job is never sent twice and a
//! backend can ask what became of a job. Claims and records are batched
//! (one statement for many jobs); retention drops daily partitions.

mod backlog;
mod batch;
mod claims;
mod partitions;
pub(crate) mod queries;
mod records;

pub(crate) use backlog::{Backlog, Late};
pub(crate) use claims::{Claim, ClaimRequest};
pub(crate) use partitions::{maintain, spawn_maintenance};
pub(crate) use records::{Record, Status};

use batch::Batcher;
use sqlx::PgPool;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

/// Rows per statement at most.
const MAX_BATCH: usize = 500;

/// Claim statements (and, apart, record statements) in flight at once.
/// One: the next batch gathers while a statement runs, so batches grow
/// with the load, and each statement's fixed cost (a round trip, a
/// commit, the function's start) is shared by more jobs. Measured against
/// two, (l) 3 alternated pairs: batches of about 70 jobs where about 40,
/// PostgreSQL 30 us a job where 40, the worker 44 us where 54 (medians);
/// (c) at K = 2,000 no worse (94-95 % where 92-93 %).
const PARALLEL: usize = 1;

/// The ledger pool's connections: the statements in flight, the lease
/// renewal and the partition upkeep.
pub(crate) const CONNECTIONS: u32 = 2 * PARALLEL as u32 + 2;

/// Session settings of the ledger's own connections. Every ledger statement
/// finds rows by key, but a generic plan made while a day's partition was
/// still empty hash-joined a seq scan of every partition, kept until
/// autovacuum next analyzed it: each batch read the whole day (measured:
/// 4.3 ms a 50-row record batch after 30,000 jobs, 161 us of database CPU
/// a job). On these connections no plan scans a table or hash- or
/// merge-joins one, whatever the statistics say.
pub(crate) const SESSION: &[(&str, &str)] = &[
    ("enable_seqscan", "off"),
    ("enable_hashjoin", "off"),
    ("enable_mergejoin", "off"),
];

/// A ledger statement that failed: the database is away, slow or
/// refusing (the caller holds the job, or sends unrecorded, by setting),
/// or the table refused the row itself (`about_the_row`: trying the same
/// row again cannot help).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct LedgerError {
    pub(crate) message: String,
    pub(crate) about_the_row: bool,
}

impl LedgerError {
    pub(crate) fn new(message: String) -> Self {
        Self {
            message,
            about_the_row: false,
        }
    }

    fn sql(what: &str, e: &sqlx::Error) -> Self {
        Self {
            message: format!("ledger {what} failed: {e}"),
            about_the_row: crate::deadletter::about_the_row(e),
        }
    }
}

/// What a job does when its claim cannot be made (the database is away).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Unavailable {
    /// Hold the job unacked and try the claim again: nothing is sent
    /// unrecorded, nothing twice; sending waits for the database.
    Hold,
    /// Send without a claim (a redelivery may then be sent twice) and
    /// write the ledger rows when the database is back.
    Send,
}

/// How the ledger behaves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LedgerPolicy {
    /// How long a claim stays another worker's without renewal.
    pub(crate) lease: Duration,
    pub(crate) unavailable: Unavailable,
    /// Longest a lone claim or record waits for others to share its statement.
    pub(crate) linger: Duration,
    /// Days of rows kept (`NOTIFY_LEDGER_RETENTION`).
    pub(crate) retention_days: u32,
}

/// `NOTIFY_LEDGER`: whether jobs are claimed and recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

/// Parses `NOTIFY_LEDGER_RETENTION` (`7d`, `36h`, ...) into whole days,
/// rounded up: partitions are dropped a day at a time.
pub(crate) fn retention_days(value: &str) -> Result<u32, String> {
    let d = humantime::parse_duration(value.trim())
        .map_err(|e| format!("`{value}` is not a duration such as 7d or 36h: {e}"))?;
    let day = 86_400;
    let days = d.as_secs().div_ceil(day);
    if !(1..=3660).contains(&days) {
        return Err(format!("`{value}` must be between 1 day and 10 years"));
    }
    u32::try_from(days).map_err(|e| e.to_string())
}

/// A claim this worker holds: its row's key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Held {
    pub(crate) channel: crate::domain::Channel,
    pub(crate) job_id: String,
    pub(crate) claimed_at: OffsetDateTime,
}

impl Held {
    fn of(record: &Record) -> Self {
        Self {
            channel: record.channel,
            job_id: record.job_id.clone(),
            claimed_at: record.claimed_at,
        }
    }
}

/// The ledger's handle, shared by every job.
#[derive(Debug, Clone)]
pub(crate) struct Ledger {
    claims: Batcher<ClaimRequest, Result<Claim, LedgerError>>,
    records: Batcher<Record, Result<bool, LedgerError>>,
    pub(crate) policy: LedgerPolicy,
    /// This process, as `claimed_by` names it.
    pub(crate) worker: Arc<str>,
    /// Claims held now, and when each was last renewed.
    live: Arc<Mutex<HashMap<Held, tokio::time::Instant>>>,
}

impl Ledger {
    /// Starts the claim and record writers and the lease renewal; they end
    /// on `shutdown` (renewal) or when the last handle drops (writers).
    pub(crate) fn spawn(
        pool: PgPool,
        policy: LedgerPolicy,
        worker: String,
        shutdown: CancellationToken,
    ) -> Self {
        let worker: Arc<str> = worker.into();
        let (pool_c, who, lease) = (pool.clone(), Arc::clone(&worker), policy.lease);
        let claims = Batcher::spawn(MAX_BATCH, policy.linger, PARALLEL, move |batch| {
            let (pool, who) = (pool_c.clone(), Arc::clone(&who));
            async move { claims::claim_many(&pool, &who, lease, batch).await }
        });
        let (pool_r, who) = (pool.clone(), Arc::clone(&worker));
        let records = Batcher::spawn(MAX_BATCH, policy.linger, PARALLEL, move |batch| {
            let (pool, who) = (pool_r.clone(), Arc::clone(&who));
            async move { records::record_many(&pool, &who, batch).await }
        });
        let ledger = Self {
            claims,
            records,
            policy,
            worker,
            live: Arc::default(),
        };
        tokio::spawn(renew(ledger.clone(), pool, shutdown));
        ledger
    }

    /// Claims the job, or says why not.
    pub(crate) async fn claim(&self, request: ClaimRequest) -> Result<Claim, LedgerError> {
        let (channel, job_id) = (request.channel, request.job_id.clone());
        let claim = self.claims.call(request).await.and_then(|c| c)?;
        if let Claim::Granted { claimed_at, .. } = &claim {
            let held = Held {
                channel,
                job_id,
                claimed_at: *claimed_at,
            };
            self.lock_live().insert(held, tokio::time::Instant::now());
        }
        Ok(claim)
    }

    /// Records a job's outcome (or gives its claim up, `Status::Claimed`);
    /// when this returns `Ok`, the row is committed. `Ok(false)`: no row
    /// matched (dropped by retention, or the claim was taken over).
    pub(crate) async fn record(&self, record: Record) -> Result<bool, LedgerError> {
        let key = Held::of(&record);
        let written = self.records.call(record).await.and_then(|r| r);
        if written.is_ok() {
            self.lock_live().remove(&key);
        }
        written
    }

    /// Stops renewing a claim whose record could not be written (the
    /// job is going back to the broker): its lease lapses instead.
    pub(crate) fn forget(&self, record: &Record) {
        self.lock_live().remove(&Held::of(record));
    }

    fn lock_live(&self) -> std::sync::MutexGuard<'_, HashMap<Held, tokio::time::Instant>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Extends the lease of every claim held longer than a third of the lease,
/// every third of the lease, so a job that waits long (retries, a pause)
/// is not taken over while this worker lives. A worker that dies stops
/// renewing, and its claims lapse.
async fn renew(ledger: Ledger, pool: PgPool, shutdown: CancellationToken) {
    let every = ledger.policy.lease / 3;
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
        let now = tokio::time::Instant::now();
        let due: Vec<Held> = ledger
            .lock_live()
            .iter()
            .filter(|(_, at)| now.duration_since(**at) >= every)
            .map(|(h, _)| h.clone())
            .collect();
        if due.is_empty() {
            continue;
        }
        match records::renew(&pool, &ledger.worker, ledger.policy.lease, &due).await {
            Ok(()) => {
                let mut live = ledger.lock_live();
                for held in due {
                    if let Some(at) = live.get_mut(&held) {
                        *at = now;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, claims = due.len(), "cannot renew ledger claims; they lapse if this lasts past the lease")
            }
        }
    }
}

/// The name this process claims under: the host (the pod, in Kubernetes)
/// and a random part, so two processes on one host differ.
pub(crate) fn worker_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty() && h.len() <= 64 && !h.chars().any(char::is_control))
        .unwrap_or_else(|| "worker".into());
    let tag = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}/{}", &tag[..8])
}

#[cfg(test)]
mod tests;
