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

/// What the ledger says of a job's row, for its settlement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ticket {
    /// No ledger (`NOTIFY_LEDGER=off`), or no claim made.
    None,
    /// Claimed: the row's key.
    Claimed(OffsetDateTime),
    /// Sent without a claim (database away, `NOTIFY_LEDGER_UNAVAILABLE=send`):
    /// recorded when the database is back.
    Unrecorded(OffsetDateTime),
}

/// How taking a job ended.
#[derive(Debug)]
pub(crate) enum Taken {
    Send(Ticket),
    /// Settled before: acked without a call.
    Duplicate(Status),
    /// Shutdown came while waiting: back to the queue.
    Abandoned,
}

/// The claim of `job`.
pub(crate) fn request(job: &Job, replay: bool) -> ClaimRequest {
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
        return Taken::Send(Ticket::None);
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
                return Taken::Send(Ticket::Claimed(claimed_at));
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
                if ledger.policy.unavailable == Unavailable::Send {
                    metrics.ledger_unrecorded(channel);
                    tracing::warn!(job_id = %job.id, %channel, error = %e, "ledger unavailable: sending unrecorded (NOTIFY_LEDGER_UNAVAILABLE=send)");
                    return Taken::Send(Ticket::Unrecorded(OffsetDateTime::now_utc()));
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
