//! Batched dead-letter writes. Jobs that must be dead-lettered hand their
//! row to one writer task, which inserts whatever has queued up in one
//! statement and one commit, then tells each job; the job acks only then.
//! Under a storm of failures this turns thousands of commits into dozens.

use super::{
    row::DeadLetter,
    store::{DeadLetterStore, InsertError},
};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Rows per statement at most (11 binds each, far below Postgres' 65535).
const MAX_BATCH: usize = 500;

/// Where the writer tells a job how its row went.
type Done = oneshot::Sender<Result<bool, InsertError>>;

/// A handle to the writer task.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetterWriter {
    tx: mpsc::Sender<(Arc<DeadLetter>, Done)>,
}

impl DeadLetterWriter {
    /// Starts the writer task; it ends when every handle is dropped.
    pub(crate) fn spawn(store: DeadLetterStore) -> Self {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(store, rx));
        Self { tx }
    }

    /// Writes `row`; `Ok(new_row)` once it is committed (or an open row for
    /// the job already existed).
    pub(crate) async fn write(&self, row: Arc<DeadLetter>) -> Result<bool, InsertError> {
        let (done, answer) = oneshot::channel();
        if self.tx.send((row, done)).await.is_err() {
            return Err(InsertError::writer_gone());
        }
        answer
            .await
            .unwrap_or_else(|_| Err(InsertError::writer_gone()))
    }
}

async fn run(store: DeadLetterStore, mut rx: mpsc::Receiver<(Arc<DeadLetter>, Done)>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let rows: Vec<&DeadLetter> = batch.iter().map(|(row, _)| row.as_ref()).collect();
        match store.insert_many(&rows).await {
            Ok(written) => {
                for ((_, done), new_row) in batch.drain(..).zip(written) {
                    let _ = done.send(Ok(new_row));
                }
            }
            // One bad row must not hold up the others: try them one by one.
            // A database that is away fails them all at once instead.
            Err(e) if e.about_the_row && batch.len() > 1 => {
                for (row, done) in batch.drain(..) {
                    let _ = done.send(store.insert(&row).await);
                }
            }
            Err(e) => {
                for (_, done) in batch.drain(..) {
                    let _ = done.send(Err(e.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        deadletter::{row::Parts, testdb::TestDb},
        domain::{Channel, ErrorCode},
    };

    fn row(job: &str, reason: &str) -> Arc<DeadLetter> {
        Arc::new(DeadLetter::new(Parts {
            job_id: job,
            channel: Channel::Sms,
            provider: None,
            error_code: ErrorCode::InvalidJob,
            reason,
            http_status: None,
            provider_response: Some("x"),
            payload: None,
            raw: b"raw",
            attempts: 0,
            source_queue: "q",
            trace_parent: None,
        }))
    }

    #[tokio::test]
    async fn batches_keep_one_row_per_job_and_one_bad_row_does_not_block_the_rest() {
        let db = TestDb::new().await;
        // An operator's constraint the worker cannot know of.
        sqlx::query("ALTER TABLE dead_letters ADD CHECK (reason <> 'refused')")
            .execute(db.store.pool())
            .await
            .unwrap();
        let writer = DeadLetterWriter::spawn(db.store.clone());
        // Sent at once, so they share batches: duplicate jobs, and a row the
        // table refuses.
        let mut jobs = Vec::new();
        for i in 0..50 {
            let w = writer.clone();
            let r = if i == 25 {
                row("refused", "refused")
            } else {
                row(&format!("j{}", i % 40), "r")
            };
            jobs.push(tokio::spawn(async move { w.write(r).await }));
        }
        let mut new_rows = 0;
        let mut failed = Vec::new();
        for j in jobs {
            match j.await.unwrap() {
                Ok(true) => new_rows += 1,
                Ok(false) => {}
                Err(e) => failed.push(e),
            }
        }
        assert_eq!(new_rows, 39, "39 distinct jobs written once each");
        assert_eq!(failed.len(), 1, "the refused row alone failed");
        assert!(failed[0].about_the_row, "{:?}", failed[0]);
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM dead_letters")
            .fetch_one(db.store.pool())
            .await
            .unwrap();
        assert_eq!(n, 39);
        db.drop().await;
    }
}
