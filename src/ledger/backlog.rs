//! With `NOTIFY_LEDGER_UNAVAILABLE=send`, jobs sent while the database was
//! away have no row yet: their outcomes wait here, in memory and bounded,
//! and are written once the database answers again.

use super::{Claim, ClaimRequest, Ledger, Record};
use crate::ops::metrics::Metrics;
use std::{collections::VecDeque, sync::Arc, time::Duration};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Outcomes kept at most; past this the oldest are dropped (and counted).
const MAX_KEPT: usize = 100_000;
/// Rows tried per round, and the hand-over's capacity.
const ROUND: usize = 500;

/// An outcome whose claim could not be made.
#[derive(Debug)]
pub(crate) struct Late {
    pub(crate) request: ClaimRequest,
    /// Its `claimed_at` is replaced by the row's.
    pub(crate) record: Record,
}

/// Where late outcomes are handed over.
#[derive(Debug, Clone)]
pub(crate) struct Backlog {
    tx: mpsc::Sender<Late>,
    metrics: Arc<Metrics>,
}

impl Backlog {
    pub(crate) fn spawn(
        ledger: Ledger,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::channel(ROUND);
        tokio::spawn(run(ledger, rx, Arc::clone(&metrics), shutdown));
        Self { tx, metrics }
    }

    /// Hands `late` over without waiting; when even the hand-over is full,
    /// it is dropped and counted.
    pub(crate) fn push(&self, late: Late) {
        if self.tx.try_send(late).is_err() {
            self.metrics.ledger_backlog_dropped();
        }
    }
}

async fn run(
    ledger: Ledger,
    mut rx: mpsc::Receiver<Late>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut kept: VecDeque<Late> = VecDeque::new();
    let keep = |kept: &mut VecDeque<Late>, late| {
        if kept.len() == MAX_KEPT {
            kept.pop_front();
            metrics.ledger_backlog_dropped();
        }
        kept.push_back(late);
    };
    loop {
        // Take outcomes as they come; try writing them once a second.
        let tick = tokio::time::sleep(Duration::from_secs(1));
        tokio::pin!(tick);
        loop {
            tokio::select! {
                () = &mut tick => break,
                late = rx.recv() => match late {
                    Some(late) => keep(&mut kept, late),
                    // Every handle dropped: the worker is gone.
                    None => return warn_unwritten(&kept),
                },
                () = shutdown.cancelled() => return warn_unwritten(&kept),
            }
        }
        let round: Vec<Late> = kept.drain(..kept.len().min(ROUND)).collect();
        let tries = round.into_iter().map(|late| {
            let ledger = ledger.clone();
            async move {
                match ledger.claim(late.request.clone()).await {
                    Ok(Claim::Granted { claimed_at, .. }) => {
                        let record = Record {
                            claimed_at,
                            ..late.record.clone()
                        };
                        match ledger.record(record).await {
                            Err(e) if !e.about_the_row => Err(late),
                            _ => Ok(()),
                        }
                    }
                    // Recorded by another delivery of the job meanwhile.
                    Ok(Claim::Settled(_)) => Ok(()),
                    // Refused for its content: it never will be written.
                    Err(e) if e.about_the_row => {
                        tracing::warn!(job_id = %late.record.job_id, error = %e, "the ledger table refused a late record; dropping it");
                        Ok(())
                    }
                    Ok(Claim::Held { .. }) | Err(_) => Err(late),
                }
            }
        });
        for result in futures_util::future::join_all(tries).await {
            if let Err(late) = result {
                kept.push_back(late);
            }
        }
        metrics.set_ledger_backlog(kept.len());
    }
}

fn warn_unwritten(kept: &VecDeque<Late>) {
    if !kept.is_empty() {
        tracing::warn!(
            rows = kept.len(),
            "stopping with ledger rows of sends made while the database was away still unwritten"
        );
    }
}
