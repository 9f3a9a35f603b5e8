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
/// Rows tried per round.
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
    tx: mpsc::UnboundedSender<Late>,
}

impl Backlog {
    pub(crate) fn spawn(
        ledger: Ledger,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(ledger, rx, metrics, shutdown));
        Self { tx }
    }

    pub(crate) fn push(&self, late: Late) {
        let _ = self.tx.send(late);
    }
}

async fn run(
    ledger: Ledger,
    mut rx: mpsc::UnboundedReceiver<Late>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut kept: VecDeque<Late> = VecDeque::new();
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = shutdown.cancelled() => break,
        }
        while let Ok(late) = rx.try_recv() {
            if kept.len() == MAX_KEPT {
                kept.pop_front();
                metrics.ledger_backlog_dropped();
            }
            kept.push_back(late);
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
                        ledger.record(record).await.map(|_| ()).map_err(|_| late)
                    }
                    // Recorded by another delivery of the job meanwhile.
                    Ok(Claim::Settled(_)) => Ok(()),
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
    if !kept.is_empty() {
        tracing::warn!(
            rows = kept.len(),
            "stopping with ledger rows of sends made while the database was away still unwritten"
        );
    }
}
