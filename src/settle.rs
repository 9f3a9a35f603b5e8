//! Settling a delivery: ack it, or commit its dead-letter row and then ack
//! it, or give it back to the broker. Nothing is acked before its outcome is
//! settled.

use crate::{deadletter::DeadLetter, metrics, writer::DeadLetterWriter};
use lapin::{
    Acker,
    options::{BasicAckOptions, BasicNackOptions},
};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The decided end of one delivery.
#[derive(Debug)]
pub enum Settlement {
    Ack,
    DeadLetter(Box<DeadLetter>),
    /// Not finished: back to the queue for another try.
    Requeue,
}

/// What became of the delivery, for the outcome log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Acked,
    /// Dead-lettered; `false` when an open row for the job already existed.
    DeadLettered {
        new_row: bool,
    },
    Requeued,
    /// The ack or nack could not be sent (channel gone): the broker redelivers.
    Unacked,
}

/// Carries out `settlement`. A failing dead-letter insert is retried with
/// capped backoff while the worker runs, holding the delivery unacked; on
/// shutdown the delivery is given back instead.
pub async fn settle(
    settlement: Settlement,
    acker: &Acker,
    writer: &DeadLetterWriter,
    shutdown: &CancellationToken,
) -> Settled {
    match settlement {
        Settlement::Ack => ack(acker, Settled::Acked).await,
        Settlement::Requeue => requeue(acker).await,
        Settlement::DeadLetter(row) => {
            let row: std::sync::Arc<DeadLetter> = std::sync::Arc::from(row);
            let mut wait = Duration::from_millis(200);
            loop {
                match writer.write(std::sync::Arc::clone(&row)).await {
                    Ok(new_row) => return ack(acker, Settled::DeadLettered { new_row }).await,
                    Err(e) => {
                        metrics::dead_letter_write_failed();
                        tracing::error!(job_id = %row.job_id, channel = %row.channel, error = %e, retry_in_ms = wait.as_millis() as u64, "dead-letter write failed; holding the job unacked");
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = shutdown.cancelled() => return requeue(acker).await,
                }
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn ack(acker: &Acker, settled: Settled) -> Settled {
    // Awaiting the ack means its frame has been handed to the socket, so a
    // channel closed after this cannot put the message back.
    match acker.ack(BasicAckOptions::default()).await {
        Ok(true) => settled,
        Ok(false) | Err(_) => Settled::Unacked,
    }
}

async fn requeue(acker: &Acker) -> Settled {
    let options = BasicNackOptions {
        requeue: true,
        ..Default::default()
    };
    match acker.nack(options).await {
        Ok(true) => Settled::Requeued,
        Ok(false) | Err(_) => Settled::Unacked,
    }
}
