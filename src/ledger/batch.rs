//! One task that turns many callers' requests into one statement: each
//! caller waits for its own answer, the task runs whatever has queued up.
//! A lone request waits at most `linger` for company, so a quiet worker
//! still makes few round trips; under load the statement in progress is
//! the wait, and nothing lingers.

use super::LedgerError;
use std::{future::Future, sync::Arc, time::Duration};
use tokio::{
    sync::{Semaphore, mpsc, oneshot},
    time::Instant,
};

type Answer<A> = oneshot::Sender<Result<A, LedgerError>>;

/// A handle to a batching task.
#[derive(Debug)]
pub(super) struct Batcher<Q, A> {
    tx: mpsc::Sender<(Q, Instant, Answer<A>)>,
}

impl<Q, A> Clone for Batcher<Q, A> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<Q: Send + 'static, A: Send + 'static> Batcher<Q, A> {
    /// Starts the task; `run` gets up to `max` requests and returns one
    /// answer per request, in order, or one error for them all. At most
    /// `parallel` statements run at once: while they all do, the next
    /// batch gathers, so batches grow with the load. The task ends when
    /// every handle is dropped.
    pub(super) fn spawn<F, Fut>(max: usize, linger: Duration, parallel: usize, run: F) -> Self
    where
        F: Fn(Vec<Q>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<A>, LedgerError>> + Send + 'static,
    {
        let (tx, mut rx) = mpsc::channel::<(Q, Instant, Answer<A>)>(4 * max);
        let run = Arc::new(run);
        let slots = Arc::new(Semaphore::new(parallel.max(1)));
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(max);
            loop {
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                    return;
                };
                if rx.recv_many(&mut batch, max).await == 0 {
                    return;
                }
                // The oldest request sets the deadline: under load it has
                // already waited out the statements before.
                let deadline = batch.iter().map(|(_, at, _)| *at).min();
                if let Some(deadline) = deadline.map(|at| at + linger) {
                    while batch.len() < max {
                        let left = max - batch.len();
                        match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, left))
                            .await
                        {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                }
                let (requests, answers): (Vec<Q>, Vec<Answer<A>>) =
                    batch.drain(..).map(|(q, _, a)| (q, a)).unzip();
                let run = Arc::clone(&run);
                // Boxed: a statement's future is kilobytes (sqlx's), and a
                // task moves its future several times.
                tokio::spawn(Box::pin(async move {
                    answer(answers, run(requests).await);
                    drop(slot);
                }));
            }
        });
        Self { tx }
    }

    /// Queues `request` and waits for its answer.
    pub(super) async fn call(&self, request: Q) -> Result<A, LedgerError> {
        let (answer, rx) = oneshot::channel();
        if self
            .tx
            .send((request, Instant::now(), answer))
            .await
            .is_err()
        {
            return Err(LedgerError::new("ledger writer stopped".into()));
        }
        rx.await
            .unwrap_or_else(|_| Err(LedgerError::new("ledger writer stopped".into())))
    }
}

/// Sends each caller its result: one per request, or the batch's error.
fn answer<A>(answers: Vec<Answer<A>>, results: Result<Vec<A>, LedgerError>) {
    let n = answers.len();
    match results {
        Ok(results) if results.len() == n => {
            for (answer, result) in answers.into_iter().zip(results) {
                let _ = answer.send(Ok(result));
            }
        }
        Ok(results) => {
            let e = LedgerError::new(format!(
                "ledger batch answered {} of {n} requests",
                results.len()
            ));
            for answer in answers {
                let _ = answer.send(Err(e.clone()));
            }
        }
        Err(e) => {
            for answer in answers {
                let _ = answer.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn requests_share_statements_and_each_gets_its_own_answer() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&sizes);
        let b = Batcher::spawn(10, Duration::from_millis(20), 1, move |qs: Vec<u32>| {
            seen.lock().unwrap().push(qs.len());
            async move { Ok(qs.into_iter().map(|q| q * 2).collect()) }
        });
        let calls: Vec<_> = (0..25)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { b.call(i).await })
            })
            .collect();
        for (i, c) in calls.into_iter().enumerate() {
            assert_eq!(c.await.unwrap().unwrap(), 2 * i as u32);
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 25);
        assert!(sizes.len() <= 4, "25 requests in {sizes:?}");
        assert!(sizes.iter().all(|n| *n <= 10), "{sizes:?}");
    }

    #[tokio::test]
    async fn an_error_reaches_every_caller_of_the_batch() {
        let b: Batcher<u32, u32> = Batcher::spawn(10, Duration::from_millis(5), 2, |_| async {
            Err(LedgerError::new("database away".into()))
        });
        let e = b.call(1).await.unwrap_err();
        assert!(e.to_string().contains("database away"), "{e}");
    }
}
