//! Settling a delivery: ack it, or commit its dead-letter row and then ack
//! it, or give it back to the broker. Nothing is acked before its outcome is
//! settled.

use super::{acks::Slot, claim::Claimed};
use crate::{
    deadletter::{DeadLetter, DeadLetterWriter, InsertError},
    domain::ErrorCode,
    ledger::{Backlog, Late, Ledger, Record, Status, Unavailable},
    ops::metrics::{HeldWrite, Metrics, Outcome},
};
use backon::{ExponentialBuilder, Retryable};
use std::{sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

/// The decided end of one delivery.
#[derive(Debug)]
pub(crate) enum Settlement {
    Ack,
    DeadLetter(Box<DeadLetter>),
    /// Not finished: back to the queue for another try.
    Requeue,
    /// Settled before (the ledger says so): acked without a call.
    Duplicate,
}

/// What a settlement writes to the ledger, when the job has a claim.
#[derive(Debug)]
pub(crate) struct Books<'a> {
    pub(crate) ledger: &'a Ledger,
    pub(crate) backlog: Option<&'a Backlog>,
    pub(crate) claimed: Claimed,
    pub(crate) attempts: u32,
    pub(crate) http_status: Option<u16>,
    pub(crate) provider_message_id: Option<String>,
}

impl Books<'_> {
    /// The job's row with `status` (and, for a failure, its code).
    fn record(&self, status: Status, error_code: Option<&ErrorCode>) -> Record {
        Record {
            channel: self.claimed.request.channel,
            job_id: self.claimed.request.job_id.clone(),
            claimed_at: self.claimed.at,
            status,
            attempts: self.attempts,
            http_status: self.http_status,
            provider_message_id: self.provider_message_id.clone(),
            error_code: error_code.map(|c| c.as_str().to_owned()),
        }
    }
}

/// What became of the delivery, for the outcome log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    Acked,
    /// Dead-lettered; `false` when an open row for the job already existed.
    DeadLettered {
        new_row: bool,
    },
    Requeued,
    /// The ack or nack could not be sent (channel gone): the broker redelivers.
    Unacked,
    Duplicate,
}

impl Settled {
    pub(crate) fn outcome(self) -> Outcome {
        match self {
            Settled::Acked => Outcome::Sent,
            Settled::DeadLettered { .. } => Outcome::DeadLettered,
            Settled::Requeued => Outcome::Requeued,
            Settled::Unacked => Outcome::Unacked,
            Settled::Duplicate => Outcome::DuplicateSuppressed,
        }
    }
}

/// How often a failing dead-letter insert is tried again.
fn insert_retries() -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .without_max_times()
}

/// Carries out `settlement`. A dead-letter insert that fails for the
/// database's sake is retried with capped backoff while the worker runs,
/// holding the delivery unacked (and counted as held); on shutdown the
/// delivery is given back instead. A row the table refuses for its content
/// is stored degraded, so no delivery waits forever on a row that can
/// never be written.
///
/// With a ledger, the job's row is written after the dead letter and
/// before the ack; a claim given back is released first, so the next
/// delivery need not wait out the lease.
pub(crate) async fn settle(
    settlement: Settlement,
    slot: Slot,
    writer: &DeadLetterWriter,
    books: Option<Books<'_>>,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Settled {
    let row: Arc<DeadLetter> = match settlement {
        Settlement::Duplicate => return ack(slot, Settled::Duplicate).await,
        Settlement::Ack => {
            if let Some(books) = &books
                && !book(books, books.record(Status::Sent, None), metrics, shutdown).await
            {
                return requeue(slot).await;
            }
            return ack(slot, Settled::Acked).await;
        }
        Settlement::Requeue => {
            if let Some(books) = &books {
                release(books).await;
            }
            return requeue(slot).await;
        }
        Settlement::DeadLetter(row) => Arc::from(row),
    };
    let mut held = None;
    let written = match write(&row, false, writer, metrics, &mut held, shutdown).await {
        Err(refused) if refused.about_the_row => {
            metrics.dead_letter_degraded();
            tracing::warn!(job_id = %row.job_id, channel = %row.channel, error = %refused, "the table refused the dead-letter row; storing it without payload and provider response");
            let degraded = Arc::new(row.degraded(&refused.message));
            write(&degraded, true, writer, metrics, &mut held, shutdown).await
        }
        written => written,
    };
    let new_row = match written {
        Ok(new_row) => new_row,
        // Shutdown came while the row could not be written: give it back.
        Err(_) => {
            if let Some(books) = &books {
                release(books).await;
            }
            return requeue(slot).await;
        }
    };
    if let Some(books) = &books {
        let status = if row.error_code == ErrorCode::Expired {
            Status::Expired
        } else {
            Status::DeadLettered
        };
        let record = books.record(status, Some(&row.error_code));
        if !book(books, record, metrics, shutdown).await {
            return requeue(slot).await;
        }
    }
    ack(slot, Settled::DeadLettered { new_row }).await
}

/// Writes the job's ledger row, trying again while the database fails and
/// the worker runs. False: not written and shutdown came (the delivery
/// goes back; its lease lapses). With `NOTIFY_LEDGER_UNAVAILABLE=send` a
/// row that cannot be written now is kept for later instead, and the job
/// is acked. A row the table refuses for its content is not tried again:
/// the outcome stands (the call was made, or the dead letter is
/// committed), so the job is acked and the refusal logged and counted.
async fn book(
    books: &Books<'_>,
    record: Record,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> bool {
    if !books.claimed.recorded {
        later(books, record);
        return true;
    }
    let send_mode = books.ledger.policy.unavailable == Unavailable::Send;
    let mut held: Option<HeldWrite> = None;
    let written = (|| books.ledger.record(record.clone()))
        .retry(insert_retries())
        .sleep(until_shutdown(shutdown))
        .when(|e| !send_mode && !e.about_the_row && !shutdown.is_cancelled())
        .notify(|e, wait| {
            metrics.ledger_error("record");
            held.get_or_insert_with(|| metrics.hold_for_database());
            tracing::error!(job_id = %record.job_id, channel = %record.channel, error = %e, retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), "ledger record failed; holding the job unacked");
        })
        .await;
    match written {
        Ok(_) => true,
        Err(e) if e.about_the_row => {
            metrics.ledger_error("record");
            books.ledger.forget(&record);
            tracing::error!(job_id = %record.job_id, channel = %record.channel, status = record.status.as_str(), error = %e, "the ledger table refused the job's record; acking it with its row left claimed");
            true
        }
        Err(_) if send_mode => {
            metrics.ledger_error("record");
            later(books, record);
            true
        }
        Err(_) => {
            books.ledger.forget(&record);
            false
        }
    }
}

/// Keeps an outcome for the backlog to write when the database is back.
fn later(books: &Books<'_>, record: Record) {
    if let Some(backlog) = books.backlog {
        backlog.push(Late {
            request: books.claimed.request.clone(),
            record,
        });
    }
}

/// Gives the claim up (one try: should it fail, the lease lapses).
async fn release(books: &Books<'_>) {
    if books.claimed.recorded {
        let record = books.record(Status::Claimed, None);
        if books.ledger.record(record.clone()).await.is_err() {
            books.ledger.forget(&record);
        }
    }
}

/// backon's sleep between tries, cut short by shutdown.
fn until_shutdown(
    shutdown: &CancellationToken,
) -> impl Fn(Duration) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + use<> {
    let stop = shutdown.clone();
    move |wait| {
        let stop = stop.clone();
        Box::pin(async move {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => {}
            }
        })
    }
}

/// Writes `row`, trying again while the failure is the database's (or any
/// failure, when `always`), until it is written or shutdown comes.
/// Shutdown ends the waits between tries, not a try: a row being committed
/// is let finish, so its job is acked, not sent again.
async fn write(
    row: &Arc<DeadLetter>,
    always: bool,
    writer: &DeadLetterWriter,
    metrics: &Metrics,
    held: &mut Option<HeldWrite>,
    shutdown: &CancellationToken,
) -> Result<bool, InsertError> {
    (|| writer.write(Arc::clone(row)))
        .retry(insert_retries())
        .sleep(until_shutdown(shutdown))
        .when(|e| (always || !e.about_the_row) && !shutdown.is_cancelled())
        .notify(|e, wait| {
            metrics.dead_letter_write_failed();
            held.get_or_insert_with(|| metrics.hold_for_database());
            tracing::error!(job_id = %row.job_id, channel = %row.channel, error = %e, retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), "dead-letter write failed; holding the job unacked");
        })
        .await
}

async fn ack(slot: Slot, settled: Settled) -> Settled {
    // The slot answers once the ack's frame has been handed to the socket,
    // so a channel closed after this cannot put the message back.
    if slot.ack().await {
        settled
    } else {
        Settled::Unacked
    }
}

async fn requeue(slot: Slot) -> Settled {
    if slot.requeue().await {
        Settled::Requeued
    } else {
        Settled::Unacked
    }
}
