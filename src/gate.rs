//! The async side of the provider circuit: jobs wait here while their
//! provider is paused, and pauses are logged and exported.

use crate::{
    circuit::{Admit, Attempt, Circuit, CircuitPolicy, Event, Verdict, Why},
    metrics,
    provider::Provider,
};
use std::{
    sync::{Mutex, MutexGuard},
    time::Instant,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// One provider's gate.
#[derive(Debug)]
pub struct Gate {
    provider: Provider,
    circuit: Mutex<Circuit>,
    changed: Notify,
}

impl Gate {
    pub fn new(provider: Provider, policy: CircuitPolicy) -> Self {
        metrics::provider_paused(provider, None);
        Self {
            provider,
            circuit: Mutex::new(Circuit::new(policy)),
            changed: Notify::new(),
        }
    }

    fn circuit(&self) -> MutexGuard<'_, Circuit> {
        // The state stays consistent even if a holder panicked: every
        // update is a single assignment.
        self.circuit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the job may call the provider. `Some(probe)` when it may,
    /// `None` on shutdown.
    pub async fn admit(&self, shutdown: &CancellationToken) -> Option<bool> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let admit = self.circuit().admit(Instant::now());
            let until = match admit {
                Admit::Go { probe } => return Some(probe),
                Admit::Wait(until) => until,
            };
            tokio::select! {
                () = &mut notified => {}
                () = sleep_until(until) => {}
                () = shutdown.cancelled() => return None,
            }
        }
    }

    /// Records an attempt's result and says what the job does next.
    pub fn record(&self, probe: bool, attempt: Attempt, fix: Option<&str>) -> Verdict {
        let (verdict, event) = self.circuit().record(probe, attempt, Instant::now());
        if let Some(event) = event {
            self.announce(&event, fix);
            // Waiters re-check: a probe's result may release or re-pause them.
            self.changed.notify_waiters();
        }
        verdict
    }

    /// The key was replaced: an auth pause ends now with one probe.
    pub fn key_changed(&self) {
        if self.circuit().key_changed(Instant::now()) {
            tracing::info!(provider = %self.provider, "new key: ending the auth pause with one probe job");
            self.changed.notify_waiters();
        }
    }

    fn announce(&self, event: &Event, reason: Option<&str>) {
        let provider = self.provider;
        match event {
            Event::Paused {
                why: Why::Auth { code },
                length,
            } => {
                metrics::provider_paused(provider, Some(code));
                tracing::warn!(
                    %provider,
                    error_code = %code,
                    pause_secs = length.as_secs(),
                    reason = reason.unwrap_or(""),
                    "provider paused after an auth failure: its jobs wait in the queue until the key is fixed or the pause ends"
                );
            }
            Event::Paused {
                why: Why::Outage,
                length,
            } => {
                metrics::provider_paused(provider, Some("outage"));
                tracing::warn!(
                    %provider,
                    pause_secs = length.as_secs(),
                    "provider failing transiently for many jobs in a row: pausing its jobs (they keep their attempts)"
                );
            }
            Event::Resumed { after } => {
                metrics::provider_paused(provider, None);
                let after = match after {
                    Why::Auth { code } => code.as_str(),
                    Why::Outage => "outage",
                };
                tracing::info!(%provider, after, "provider resumed: probe job succeeded");
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
