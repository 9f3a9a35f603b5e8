//! The door every provider call passes. A job waits here while its
//! provider is paused ([`super::pause`]) or while flow control holds it
//! back ([`super::flow`]), and reports each call's result here. The
//! decisions are those modules'; this side waits, logs and exports them.

use super::{
    fleet::FleetCeiling,
    flow::{self, Admit as FlowAdmit, Change, Flow, FlowPolicy},
    pause::{Admit, Attempt, Event, Pause, PausePolicy, Verdict},
};
use crate::{
    domain::{PauseReason, Provider},
    ops::metrics::Metrics,
};
use governor::{
    DefaultDirectRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};
use std::{
    num::NonZeroU32,
    sync::{Arc, Mutex, MutexGuard},
    time::Instant,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Pause and flow state, changed together under one lock.
#[derive(Debug)]
struct Door {
    pause: Pause,
    flow: Flow,
}

/// Leave to make one call; give it back to [`Gate::record`] with the
/// result. Dropped unrecorded (shutdown), it gives its place back.
#[must_use]
pub(crate) struct Permit<'a> {
    gate: &'a Gate,
    probe: bool,
    recorded: bool,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            let mut door = self.gate.door();
            door.flow.release();
            if self.probe {
                // A probe never made (its job expired): the next call probes.
                door.pause.probe_dropped(Instant::now());
            }
            drop(door);
            self.gate.room.notify_one();
            if self.probe {
                self.gate.changed.notify_waiters();
            }
        }
    }
}

/// Who a fixed ceiling binds.
enum Ceiling {
    Process(DefaultDirectRateLimiter),
    Fleet(Arc<FleetCeiling>),
}

/// Sharing the ceiling with the fleet: the database and how many replicas
/// split it while the database is away.
#[derive(Debug, Clone)]
pub(crate) struct Fleet {
    pub(crate) pool: sqlx::PgPool,
    pub(crate) replicas: u32,
}

/// One provider's gate.
pub(crate) struct Gate {
    provider: Provider,
    door: Mutex<Door>,
    /// A pause began or ended: everyone waiting on it looks again.
    changed: Notify,
    /// A place in flight came free: one waiter looks again.
    room: Notify,
    /// The fixed ceiling (`NOTIFY_*_MAX_RPS`), a guarantee on top of the
    /// pace, which already keeps under it: this process's, or the fleet's.
    ceiling: Option<Ceiling>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

impl Gate {
    pub(crate) fn new(
        provider: Provider,
        pause: PausePolicy,
        flow: FlowPolicy,
        metrics: Arc<Metrics>,
        fleet: Option<Fleet>,
    ) -> Self {
        metrics.set_paused(provider, None);
        let now = Instant::now();
        let flow = Flow::new(flow, now);
        metrics.set_flow(provider, flow.limit(), flow.pace());
        // One call at a time: the ceiling holds over any second.
        let ceiling = match (flow.ceiling(), fleet) {
            (Some(rate), Some(fleet)) => Some(Ceiling::Fleet(Arc::new(FleetCeiling::new(
                provider,
                fleet.pool,
                rate,
                fleet.replicas,
            )))),
            _ => flow_ceiling(&flow).map(|rps| {
                Ceiling::Process(RateLimiter::direct(
                    Quota::per_second(rps).allow_burst(NonZeroU32::MIN),
                ))
            }),
        };
        Self {
            provider,
            door: Mutex::new(Door {
                pause: Pause::new(pause),
                flow,
            }),
            changed: Notify::new(),
            room: Notify::new(),
            ceiling,
            metrics,
        }
    }

    fn door(&self) -> MutexGuard<'_, Door> {
        // The state stays consistent even if a holder panicked: every
        // update is a few assignments that cannot fail midway.
        self.door.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the job may call the provider; `None` on shutdown. An
    /// `urgent` job (the urgent lane) does not queue for a place in flight
    /// behind bulk calls; it still waits out a pause, a `Retry-After` and
    /// the pace. Its own prefetch bounds how many it adds.
    pub(crate) async fn admit(
        &self,
        urgent: bool,
        shutdown: &CancellationToken,
    ) -> Option<Permit<'_>> {
        let (mut slot, permit) = loop {
            let changed = self.changed.notified();
            let room = self.room.notified();
            tokio::pin!(changed, room);
            changed.as_mut().enable();
            room.as_mut().enable();
            let wait = {
                let mut door = self.door();
                let now = Instant::now();
                match door.flow.blocked(now) {
                    Some(FlowAdmit::Wait(until)) => Wait::Until(until),
                    Some(_) if !urgent => Wait::Room,
                    _ => match door.pause.admit(now) {
                        Admit::Wait(until) => Wait::Pause(until),
                        Admit::Go { probe } => match door.flow.admit(now, urgent) {
                            FlowAdmit::Go(slot) => {
                                if door.flow.has_room() {
                                    // Pass the turn on: there is room for more.
                                    self.room.notify_one();
                                }
                                break (
                                    slot,
                                    Permit {
                                        gate: self,
                                        probe,
                                        recorded: false,
                                    },
                                );
                            }
                            // Not blocked a moment ago, under the same lock.
                            _ => Wait::Room,
                        },
                    },
                }
            };
            tokio::select! {
                () = &mut changed => {}
                () = wait_for(wait, &mut room) => {}
                () = shutdown.cancelled() => return None,
            }
        };
        // A reserved send time, made again if a 429 changed the plan.
        loop {
            let next = self.door().flow.ready(&mut slot, Instant::now());
            let Some(at) = next else { break };
            tokio::select! {
                () = tokio::time::sleep_until(at.into()) => {}
                () = shutdown.cancelled() => return None,
            }
        }
        match &self.ceiling {
            Some(Ceiling::Process(ceiling)) => {
                while let Err(not_until) = ceiling.check() {
                    let wait = not_until.wait_time_from(DefaultClock::default().now());
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = shutdown.cancelled() => return None,
                    }
                }
            }
            Some(Ceiling::Fleet(fleet)) if !fleet.take(shutdown).await => return None,
            Some(Ceiling::Fleet(_)) | None => {}
        }
        Some(permit)
    }

    /// Records the result of the call `permit` allowed; says what the job
    /// does next. `fix` is an auth failure's reason, for the pause log.
    pub(crate) fn record(
        &self,
        mut permit: Permit<'_>,
        attempt: Attempt,
        outcome: flow::Outcome,
        fix: Option<&str>,
    ) -> Verdict {
        permit.recorded = true;
        let now = Instant::now();
        let (verdict, event, change, limit, pace) = {
            let mut door = self.door();
            let (verdict, event) = door.pause.record(permit.probe, attempt, now);
            let change = door.flow.done(outcome, now);
            (verdict, event, change, door.flow.limit(), door.flow.pace())
        };
        self.room.notify_one();
        self.metrics.set_flow(self.provider, limit, pace);
        if let flow::Outcome::Throttled { retry_after } = outcome {
            self.metrics.throttled(self.provider);
            tracing::debug!(provider = %self.provider, pace = pace.map(|p| p.round()), limit, ?retry_after, "429: calls wait out the provider's Retry-After, then go at the pace");
            // The fleet holds its calls too, not only this replica.
            if let (Some(wait), Some(Ceiling::Fleet(fleet))) = (retry_after, &self.ceiling)
                && fleet.extends_hold(wait)
            {
                let fleet = Arc::clone(fleet);
                tokio::spawn(async move { fleet.hold(wait).await });
            }
        }
        if let Some(change) = change {
            self.announce_flow(change);
        }
        if let Some(event) = event {
            self.announce(&event, fix);
            // Waiters look again: a probe's result may release or re-pause them.
            self.changed.notify_waiters();
        }
        verdict
    }

    pub(crate) fn provider(&self) -> Provider {
        self.provider
    }

    /// The provider's pause, breaker and flow state now.
    pub(crate) fn state(&self) -> super::ProviderState {
        let now = Instant::now();
        let door = self.door();
        super::ProviderState::read(self, door.pause.view(), &door.flow, now)
    }

    /// The key was replaced: an auth pause ends now with one probe.
    pub(crate) fn key_changed(&self) {
        if self.door().pause.key_changed(Instant::now()) {
            tracing::info!(provider = %self.provider, "new key: ending the auth pause with one probe job");
            self.changed.notify_waiters();
        }
    }

    fn announce_flow(&self, change: Change) {
        let provider = self.provider;
        match change {
            Change::ThrottledLong { rate } => {
                self.metrics.set_throttled(provider, true);
                tracing::warn!(
                    %provider,
                    pace_per_second = rate.map(|r| r.round()),
                    "provider has been answering 429 (rate limited) for 30 s: its calls are paced to what it takes; jobs wait, none is dead-lettered for it. Fix: ask the provider for a higher limit, or set NOTIFY_*_MAX_RPS below it"
                );
            }
            Change::ThrottlingEnded => {
                self.metrics.set_throttled(provider, false);
                tracing::info!(%provider, "provider no longer throttling");
            }
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
                        pause_ms = u64::try_from(length.as_millis()).unwrap_or(u64::MAX),
                        "provider failing transiently for many jobs in a row: pausing its jobs (they keep their attempts)"
                    ),
                }
            }
            Event::Resumed { after } => {
                self.metrics.set_paused(provider, None);
                tracing::info!(%provider, after = %after, "provider resumed: probe job answered");
            }
        }
    }
}

/// The fixed ceiling in whole calls per second, if one is set.
fn flow_ceiling(flow: &Flow) -> Option<NonZeroU32> {
    let rate = flow.ceiling()?;
    NonZeroU32::new(rate.ceil().clamp(1.0, f64::from(u32::MAX)) as u32)
}

/// What a job waits for before looking again.
#[derive(Debug, Clone, Copy)]
enum Wait {
    /// The provider's Retry-After.
    Until(Instant),
    /// A place in flight.
    Room,
    /// A pause's end, or news of one when `None`.
    Pause(Option<Instant>),
}

async fn wait_for(wait: Wait, room: &mut std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>) {
    match wait {
        Wait::Until(at) | Wait::Pause(Some(at)) => tokio::time::sleep_until(at.into()).await,
        Wait::Room => room.as_mut().await,
        Wait::Pause(None) => std::future::pending().await,
    }
}
