//! Consuming one queue: manual acks (batched per channel, see
//! `pipeline::acks`), `basic_qos` prefetch, and one task per delivery so a
//! slow provider call never holds up the others. The prefetch window bounds
//! how many run at once.

use crate::pipeline::{Acks, Pipeline, Source};
use futures_util::StreamExt;
use lapin::{
    Connection,
    options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions},
    types::FieldTable,
};
use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error("cannot start consuming queue `{queue}`: {reason}")]
    Start { queue: String, reason: String },
    #[error("consumer of queue `{queue}` failed: {reason}")]
    Stream { queue: String, reason: String },
    #[error("consumer of queue `{queue}` was cancelled by the broker")]
    Ended { queue: String },
}

/// Opens a channel on `conn`, sets its prefetch and starts consuming the
/// queue of `source`. Returns the AMQP channel, which must stay open until
/// in-flight jobs have settled (their acks go through it), and the pump that
/// spawns deliveries on `tracker` until shutdown, failure or cancellation.
pub(crate) async fn start(
    conn: &Connection,
    source: Arc<Source>,
    index: usize,
    prefetch: u16,
    pipeline: Arc<Pipeline>,
    tracker: TaskTracker,
    running: Arc<AtomicBool>,
) -> Result<
    (
        lapin::Channel,
        impl Future<Output = Result<(), ConsumeError>> + use<>,
    ),
    ConsumeError,
> {
    let queue = source.queue.clone();
    let fail = |e: lapin::Error| ConsumeError::Start {
        queue: queue.clone(),
        reason: e.to_string(),
    };
    let tag = format!("notify-worker-{queue}-{index}");
    let amqp = conn.create_channel().await.map_err(fail)?;
    amqp.basic_qos(prefetch, BasicQosOptions::default())
        .await
        .map_err(fail)?;
    let consumer = amqp
        .basic_consume(
            queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(fail)?;
    running.store(true, Ordering::SeqCst);
    let ch = amqp.clone();
    let pump_task = async move {
        let result = pump(consumer, source, prefetch, &pipeline, &tracker).await;
        running.store(false, Ordering::SeqCst);
        if result.is_ok() {
            // Stop the broker sending more; deliveries it already sent stay
            // unacked and go back to the queue when the channel closes.
            let _ = ch
                .basic_cancel(tag.into(), BasicCancelOptions::default())
                .await;
        }
        result.map_err(|reason| match reason {
            Some(reason) => ConsumeError::Stream { queue, reason },
            None => ConsumeError::Ended { queue },
        })
    };
    Ok((amqp, pump_task))
}

/// Reads deliveries until shutdown (`Ok`) or until the stream fails or ends
/// (`Err`, with the reason if there is one).
async fn pump(
    mut consumer: lapin::Consumer,
    source: Arc<Source>,
    prefetch: u16,
    pipeline: &Arc<Pipeline>,
    tracker: &TaskTracker,
) -> Result<(), Option<String>> {
    let shutdown: CancellationToken = pipeline.shutdown.clone();
    let _running = pipeline.metrics.consumer_running(source.channel);
    let acks = Acks::start(prefetch);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok(()),
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    // Spawned as is: wrapped in an async block, the task
                    // would hold the delivery twice. Boxed: the job's
                    // future is kilobytes, and a task moves its future
                    // several times (spawn, its cell, its end).
                    tracker.spawn(Box::pin(Arc::clone(pipeline).handle(Arc::clone(&source), delivery, acks.clone())));
                }
                Some(Err(e)) => return Err(Some(e.to_string())),
                None => return Err(None),
            },
        }
    }
}
