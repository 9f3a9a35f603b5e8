//! Batched dead-letter writes. Jobs that must be dead-lettered hand their
//! row to one writer task, which inserts whatever has queued up in one
//! statement and one commit, then tells each job; the job acks only then.
//! Under a storm of failures this turns thousands of commits into dozens.

use crate::deadletter::{DeadLetter, DeadLetterStore, StoreError};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Rows per statement at most (11 binds each, far below Postgres' 65535).
const MAX_BATCH: usize = 500;

type Reply = oneshot::Sender<Result<bool, String>>;

/// A handle to the writer task.
#[derive(Debug, Clone)]
pub struct DeadLetterWriter {
    tx: mpsc::Sender<(Arc<DeadLetter>, Reply)>,
}

impl DeadLetterWriter {
    /// Starts the writer task; it ends when every handle is dropped.
    pub fn spawn(store: DeadLetterStore) -> Self {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(store, rx));
        Self { tx }
    }

    /// Writes `row`; `Ok(new_row)` once it is committed (or an open row for
    /// the job already existed).
    pub async fn write(&self, row: Arc<DeadLetter>) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        let gone = || StoreError::Writer("dead-letter writer stopped".into());
        self.tx.send((row, reply)).await.map_err(|_| gone())?;
        answer
            .await
            .map_err(|_| gone())?
            .map_err(StoreError::Writer)
    }
}

async fn run(store: DeadLetterStore, mut rx: mpsc::Receiver<(Arc<DeadLetter>, Reply)>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let rows: Vec<&DeadLetter> = batch.iter().map(|(row, _)| row.as_ref()).collect();
        match store.insert_many(&rows).await {
            Ok(written) => {
                for ((_, reply), new_row) in batch.drain(..).zip(written) {
                    let _ = reply.send(Ok(new_row));
                }
            }
            // One bad row must not hold up the others: try them one by one.
            Err(_) if batch.len() > 1 => {
                for (row, reply) in batch.drain(..) {
                    let result = store.insert(&row).await.map_err(|e| e.to_string());
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(e.to_string()));
                }
            }
        }
    }
}
