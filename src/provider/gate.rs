//! The door every provider call passes: a job waits here while its provider
//! is paused, and reports each attempt's result here. The decisions are
//! [`super::pause`]'s; this side waits, logs and exports them.

use super::pause::{Admit, Attempt, Event, Pause, PausePolicy, Verdict};
use crate::{
    domain::{PauseReason, Provider},
    ops::metrics::Metrics,
};
use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::Instant,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Leave to make one call; give it back to [`Gate::record`] with the result.
#[derive(Debug)]
#[must_use]
pub(crate) struct Permit {
    probe: bool,
}

/// One provider's gate.
#[derive(Debug)]
pub(crate) struct Gate {
    provider: Provider,
    pause: Mutex<Pause>,
    changed: Notify,
    metrics: Arc<Metrics>,
}

impl Gate {
    pub(crate) fn new(provider: Provider, policy: PausePolicy, metrics: Arc<Metrics>) -> Self {
        metrics.set_paused(provider, None);
        Self {
            provider,
            pause: Mutex::new(Pause::new(policy)),
            changed: Notify::new(),
            metrics,
        }
    }

    fn pause(&self) -> MutexGuard<'_, Pause> {
        // The state stays consistent even if a holder panicked: every
        // update is a single assignment.
        self.pause.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the job may call the provider; `None` on shutdown.
    pub(crate) async fn admit(&self, shutdown: &CancellationToken) -> Option<Permit> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let until = match self.pause().admit(Instant::now()) {
                Admit::Go { probe } => return Some(Permit { probe }),
                Admit::Wait(until) => until,
            };
            tokio::select! {
                () = &mut notified => {}
                () = sleep_until(until) => {}
                () = shutdown.cancelled() => return None,
            }
        }
    }

    /// Records the result of the call `permit` allowed; says what the job
    /// does next. `fix` is the auth failure's reason, for the pause log.
    pub(crate) fn record(&self, permit: Permit, attempt: Attempt, fix: Option<&str>) -> Verdict {
        let (verdict, event) = self.pause().record(permit.probe, attempt, Instant::now());
        if let Some(event) = event {
            self.announce(&event, fix);
            // Waiters re-check: a probe's result may release or re-pause them.
            self.changed.notify_waiters();
        }
        verdict
    }

    /// The key was replaced: an auth pause ends now with one probe.
    pub(crate) fn key_changed(&self) {
        if self.pause().key_changed(Instant::now()) {
            tracing::info!(provider = %self.provider, "new key: ending the auth pause with one probe job");
            self.changed.notify_waiters();
        }
    }

    fn announce(&self, event: &Event, fix: Option<&str>) {
        let provider = self.provider;
        match event {
            Event::Paused { why, length } => {
                self.metrics.set_paused(provider, Some(why));
                match why {
                    PauseReason::Auth(code) => tracing::warn!(
                        %provider,
                        error_code = %code,
                        pause_secs = length.as_secs(),
                        reason = fix.unwrap_or(""),
                        "provider paused after an auth failure: its jobs wait in the queue until the key is fixed or the pause ends"
                    ),
                    PauseReason::Outage => tracing::warn!(
                        %provider,
                        pause_secs = length.as_secs(),
                        "provider failing transiently for many jobs in a row: pausing its jobs (they keep their attempts)"
                    ),
                }
            }
            Event::Resumed { after } => {
                self.metrics.set_paused(provider, None);
                tracing::info!(%provider, after = %after, "provider resumed: probe job succeeded");
            }
        }
    }
}

async fn sleep_until(until: Option<Instant>) {
    match until {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
