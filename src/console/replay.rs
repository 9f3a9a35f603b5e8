//! Replaying dead letters: republishing each open row's original payload,
//! paced, one row at a time. The CLI runs it in the foreground; the console
//! and the API start it in the background and show its progress.

use crate::{
    broker::{Publisher, Topology},
    deadletter::queries::{self, Filter},
    ops::{metrics::Metrics, traces},
};
use serde::Serialize;
use sqlx::PgPool;
use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tokio_util::sync::CancellationToken;

/// How a replay went.
#[derive(Debug, Default)]
pub(crate) struct Replayed {
    /// Rows published, confirmed and marked replayed.
    pub(crate) confirmed: u64,
    /// The row whose publish failed, and why; the replay stopped there.
    pub(crate) failed: Option<(i64, String)>,
}

/// Republishes the original payload of each open row `filter` names, one
/// at a time: the row is locked, published with a confirm, marked
/// `replayed_at`, and committed. A row is never published twice, even by
/// two replays at once (the lock is taken with SKIP LOCKED); a crash between
/// the confirm and the commit can publish it again on the next replay.
/// Only a confirmed row is marked; at the first that is not (the broker
/// blocked, no confirm in time), the replay stops and says which.
/// `done` counts rows as they are confirmed; `stop` ends it between rows.
pub(crate) async fn run(
    db: &PgPool,
    publisher: &Publisher,
    filter: &Filter,
    per_second: Option<f64>,
    done: &AtomicU64,
    stop: &CancellationToken,
) -> anyhow::Result<Replayed> {
    let pace = per_second
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(1.0 / r));
    let mut tick = pace.map(tokio::time::interval);
    let mut result = Replayed::default();
    let mut after = 0;
    loop {
        if stop.is_cancelled() {
            return Ok(result);
        }
        let mut tx = db.begin().await?;
        let Some(row) = queries::lock_next_open(&mut tx, filter, after).await? else {
            return Ok(result);
        };
        after = row.id;
        if let Some(t) = tick.as_mut() {
            tokio::select! {
                _ = t.tick() => {}
                () = stop.cancelled() => return Ok(result),
            }
        }
        if let Err(e) = publisher
            .publish_raw(
                row.channel,
                &row.body(),
                Some(&row.job_id),
                row.trace_parent
                    .as_deref()
                    .map(traces::parse_traceparent)
                    .as_ref(),
            )
            .await
        {
            // Dropping `tx` rolls back: the row stays open.
            result.failed = Some((row.id, e.to_string()));
            return Ok(result);
        }
        queries::mark_replayed(&mut tx, row.id).await?;
        tx.commit().await?;
        result.confirmed += 1;
        done.fetch_add(1, Ordering::Relaxed);
    }
}

/// Where background replays publish. No `Debug`: the URL holds a password.
pub(crate) struct PublishPlan {
    pub(crate) amqp_url: String,
    pub(crate) topology: Topology,
    pub(crate) max_body_bytes: usize,
    pub(crate) confirm_timeout: Duration,
}

/// Replays kept for their progress to be seen.
const KEPT: usize = 50;
/// Replays running at once; more are refused (429).
pub(crate) const MAX_RUNNING: usize = 4;

/// One background replay as the console and the API show it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Progress {
    pub(crate) id: u64,
    /// `running`, `done`, `failed` or `stopped` (shutdown).
    pub(crate) state: &'static str,
    /// Open rows it was started for.
    pub(crate) total: i64,
    pub(crate) replayed: u64,
    pub(crate) rate_per_second: f64,
    /// What it replays, as the operator chose it.
    pub(crate) selection: String,
    pub(crate) started_by: &'static str,
    pub(crate) started_at: String,
    pub(crate) finished_at: Option<String>,
    pub(crate) error: Option<String>,
}

struct Entry {
    progress: Mutex<Progress>,
    replayed: AtomicU64,
}

impl Entry {
    fn view(&self) -> Progress {
        let mut p = self
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        p.replayed = self.replayed.load(Ordering::Relaxed);
        p
    }
}

/// The worker's background replays.
pub(crate) struct Replays {
    db: PgPool,
    plan: PublishPlan,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    next: AtomicU64,
    entries: Mutex<VecDeque<Arc<Entry>>>,
}

/// What a start asks for.
pub(crate) struct Start {
    pub(crate) filter: Filter,
    pub(crate) total: i64,
    pub(crate) rate: f64,
    pub(crate) selection: String,
    pub(crate) started_by: &'static str,
}

fn now() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

impl Replays {
    pub(crate) fn new(
        db: PgPool,
        plan: PublishPlan,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            db,
            plan,
            metrics,
            shutdown,
            next: AtomicU64::new(1),
            entries: Mutex::new(VecDeque::new()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Entry>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn list(&self) -> Vec<Progress> {
        self.entries().iter().rev().map(|e| e.view()).collect()
    }

    pub(crate) fn get(&self, id: u64) -> Option<Progress> {
        self.entries()
            .iter()
            .find(|e| e.progress.lock().is_ok_and(|p| p.id == id))
            .map(|e| e.view())
    }

    /// Starts a replay in the background; `None` when [`MAX_RUNNING`] run.
    pub(crate) fn start(self: &Arc<Self>, start: Start) -> Option<Progress> {
        let entry = {
            let mut entries = self.entries();
            let running = entries
                .iter()
                .filter(|e| e.view().state == "running")
                .count();
            if running >= MAX_RUNNING {
                return None;
            }
            let entry = Arc::new(Entry {
                progress: Mutex::new(Progress {
                    id: self.next.fetch_add(1, Ordering::Relaxed),
                    state: "running",
                    total: start.total,
                    replayed: 0,
                    rate_per_second: start.rate,
                    selection: start.selection,
                    started_by: start.started_by,
                    started_at: now(),
                    finished_at: None,
                    error: None,
                }),
                replayed: AtomicU64::new(0),
            });
            entries.push_back(Arc::clone(&entry));
            while entries.len() > KEPT {
                entries.pop_front();
            }
            entry
        };
        let view = entry.view();
        let this = Arc::clone(self);
        let filter = start.filter;
        tokio::spawn(async move {
            let outcome = this.run(&entry, &filter, start.rate).await;
            let mut p = entry.progress.lock().unwrap_or_else(|e| e.into_inner());
            p.finished_at = Some(now());
            let replayed = entry.replayed.load(Ordering::Relaxed);
            match outcome {
                Ok(Replayed { failed: None, .. }) if this.shutdown.is_cancelled() => {
                    p.state = "stopped";
                    p.error = Some("the worker shut down; the rest stay open".to_owned());
                }
                Ok(Replayed { failed: None, .. }) => p.state = "done",
                Ok(Replayed {
                    failed: Some((id, e)),
                    ..
                }) => {
                    p.state = "failed";
                    p.error = Some(format!("dead letter {id} was not replayed: {e}"));
                }
                Err(e) => {
                    p.state = "failed";
                    p.error = Some(format!("{e:#}"));
                }
            }
            tracing::info!(
                replay = p.id,
                state = p.state,
                replayed,
                total = p.total,
                "console replay ended"
            );
        });
        Some(view)
    }

    async fn run(&self, entry: &Entry, filter: &Filter, rate: f64) -> anyhow::Result<Replayed> {
        let publisher = Publisher::connect(&self.plan.amqp_url, &self.plan.topology)
            .await?
            .with_max_body_bytes(self.plan.max_body_bytes)
            .with_confirm_timeout(self.plan.confirm_timeout);
        let result = run(
            &self.db,
            &publisher,
            filter,
            Some(rate),
            &entry.replayed,
            &self.shutdown,
        )
        .await;
        publisher.close().await;
        self.metrics
            .console_replayed(entry.replayed.load(Ordering::Relaxed));
        result
    }
}
