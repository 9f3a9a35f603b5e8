//! Settling a delivery: ack it, or commit its dead-letter row and then ack
//! it, or give it back to the broker. Nothing is acked before its outcome is
//! settled.

use super::acks::Slot;
use crate::{
    deadletter::{DeadLetter, DeadLetterWriter, InsertError},
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
}

impl Settled {
    pub(crate) fn outcome(self) -> Outcome {
        match self {
            Settled::Acked => Outcome::Sent,
            Settled::DeadLettered { .. } => Outcome::DeadLettered,
            Settled::Requeued => Outcome::Requeued,
            Settled::Unacked => Outcome::Unacked,
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
pub(crate) async fn settle(
    settlement: Settlement,
    slot: Slot,
    writer: &DeadLetterWriter,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Settled {
    let row: Arc<DeadLetter> = match settlement {
        Settlement::Ack => return ack(slot, Settled::Acked).await,
        Settlement::Requeue => return requeue(slot).await,
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
    match written {
        Ok(new_row) => ack(slot, Settled::DeadLettered { new_row }).await,
        // Shutdown came while the row could not be written: give it back.
        Err(_) => requeue(slot).await,
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
    let stop = shutdown.clone();
    (|| writer.write(Arc::clone(row)))
        .retry(insert_retries())
        .sleep(move |wait| {
            let stop = stop.clone();
            async move {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = stop.cancelled() => {}
                }
            }
        })
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
