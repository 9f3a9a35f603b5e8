//! Taking a job: its claim in the delivery ledger before any provider
//! call. A job already settled is not sent again; one another live worker
//! holds waits; while the database is away the job waits too, or (by
//! setting) is sent unrecorded.

use crate::{
    domain::Job,
    ledger::{Claim, ClaimRequest, Ledger, Status, Unavailable},
    ops::metrics::Metrics,
};
use backon::{BackoffBuilder, ExponentialBuilder};
use std::time::Duration;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

/// A job's claim, carried to its settlement.
#[derive(Debug)]
pub(crate) struct Claimed {
    pub(crate) request: ClaimRequest,
    /// The row's `claimed_at` (its key with channel and job id); when the
    /// claim could not be made, the time the job was taken.
    pub(crate) at: OffsetDateTime,
    /// False: sent without a claim (database away,
    /// `NOTIFY_LEDGER_UNAVAILABLE=send`); recorded when the database is back.
    pub(crate) recorded: bool,
}

/// How taking a job ended.
#[derive(Debug)]
pub(crate) enum Taken {
    /// `None` when there is no ledger.
    Send(Option<Claimed>),
    /// Settled before: acked without a call.
    Duplicate(Status),
    /// Shutdown came while waiting: back to the queue.
    Abandoned,
}

/// The claim of `job`.
fn request(job: &Job, replay: bool) -> ClaimRequest {
    ClaimRequest {
        channel: job.channel(),
        job_id: job.id.as_str().to_owned(),
        recipient: job.recipient().to_owned(),
        minted_after: job.id.minted_after(),
        replay,
        expires_at: job.expires_at,
    }
}

/// Claims `job` (a `replay` may claim a dead-lettered job again).
pub(crate) async fn take(
    ledger: Option<&Ledger>,
    job: &Job,
    replay: bool,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Taken {
    let Some(ledger) = ledger else {
        return Taken::Send(None);
    };
    let channel = job.channel();
    let request = request(job, replay);
    let mut backoff = ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .without_max_times()
        .build();
    let mut held_for_db = None;
    let mut held_by_other = false;
    let mut failures = 0u32;
    loop {
        let wait = match ledger.claim(request.clone()).await {
            Ok(Claim::Granted {
                claimed_at,
                taken_over,
            }) => {
                if let Some(previous) = taken_over {
                    metrics.ledger_takeover(channel);
                    tracing::warn!(job_id = %job.id, %channel, previous = %previous, "took over a claim whose worker stopped renewing it; sending with the same Idempotency-Key");
                }
                return Taken::Send(Some(Claimed {
                    request,
                    at: claimed_at,
                    recorded: true,
                }));
            }
            Ok(Claim::Settled(status)) => return Taken::Duplicate(status),
            Ok(Claim::Held { by, retry_in }) => {
                if !held_by_other {
                    held_by_other = true;
                    metrics.ledger_held(channel);
                    tracing::debug!(job_id = %job.id, %channel, holder = %by, "job claimed by a live worker; waiting for its outcome");
                }
                retry_in
            }
            Err(e) => {
                metrics.ledger_error("claim");
                if e.about_the_row {
                    // The table will refuse this claim every time: holding
                    // the job would hold it forever.
                    metrics.ledger_unrecorded(channel);
                    tracing::error!(job_id = %job.id, %channel, error = %e, "the ledger table refused the job's claim; sending it unrecorded");
                    return Taken::Send(None);
                }
                if ledger.policy.unavailable == Unavailable::Send {
                    metrics.ledger_unrecorded(channel);
                    tracing::warn!(job_id = %job.id, %channel, error = %e, "ledger unavailable: sending unrecorded (NOTIFY_LEDGER_UNAVAILABLE=send)");
                    return Taken::Send(Some(Claimed {
                        request,
                        at: OffsetDateTime::now_utc(),
                        recorded: false,
                    }));
                }
                held_for_db.get_or_insert_with(|| metrics.hold_for_database());
                failures += 1;
                let wait = backoff.next().unwrap_or(Duration::from_secs(5));
                if failures % 10 == 1 {
                    tracing::error!(job_id = %job.id, %channel, error = %e, failures, retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), "cannot claim the job in the ledger; holding it unsent");
                }
                wait
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return Taken::Abandoned,
        }
    }
}
