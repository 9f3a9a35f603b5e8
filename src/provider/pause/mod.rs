//! When a provider's calls are held back: the auth pause (contract
//! section 6) and the outage breaker, as one pure state machine. Time is
//! passed in; no I/O here. [`super::gate`] is the async side.
//!
//! Both stop a provider's jobs for a while because every job would fail the
//! same way: an auth failure is about the key or the account, a run of
//! transient failures is about the provider. When the pause ends one job is
//! let through as a probe; its result resumes or re-pauses the provider.

use crate::domain::{PauseReason, ProviderCode};
use std::time::{Duration, Instant};

/// Longest auth pause, however often it doubles.
pub(crate) const MAX_AUTH_PAUSE: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PausePolicy {
    /// First auth pause; zero turns the auth pause off.
    pub(crate) auth_pause: Duration,
    /// Transient failures in a row that open the breaker; zero turns it off.
    pub(crate) outage_threshold: u32,
    /// Longest wait between outage probes.
    pub(crate) outage_cooldown: Duration,
}

/// The first wait before an outage probe.
const FIRST_COOLDOWN: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq)]
enum PauseState {
    Closed,
    Open {
        until: Instant,
        why: PauseReason,
        length: Duration,
    },
    /// One probe is out; everyone else waits for its result.
    Probing {
        why: PauseReason,
        length: Duration,
    },
}

/// May a job call the provider now?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    Go {
        probe: bool,
    },
    /// Wait until this instant, or until told of a change when `None`.
    Wait(Option<Instant>),
}

/// What one attempt came to, as far as the circuit cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attempt {
    Auth(ProviderCode),
    Transient,
    /// Sent or rejected: the provider works and takes the key.
    Answered,
    /// 429, or 503 with `Retry-After`: the provider works, and asks us to
    /// slow down. No failure: flow control handles it.
    Throttled,
}

/// What the job does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Settle as classified (sent, rejected).
    Done,
    /// Dead-letter this auth failure.
    DeadLetter,
    /// Auth failure while the provider is already paused by another job:
    /// neither sent nor dead-lettered; wait and try again after the pause.
    Hold,
    /// Transient: retry; `counts` says whether it spends the job's budget
    /// (a failed probe does not).
    Retry { counts: bool },
    /// Throttled: try again when flow control allows, spending nothing.
    Throttled,
}

/// A change worth a log line and a metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    Paused { why: PauseReason, length: Duration },
    Resumed { after: PauseReason },
}

/// A read-only look at a [`Pause`].
#[derive(Debug, Clone)]
pub(crate) struct PauseView {
    pub(crate) why: Option<PauseReason>,
    pub(crate) until: Option<Instant>,
    pub(crate) probing: bool,
    pub(crate) failures_in_a_row: u32,
    pub(crate) breaker_threshold: u32,
}

/// One provider's pause state.
#[derive(Debug)]
pub(crate) struct Pause {
    policy: PausePolicy,
    state: PauseState,
    transient_in_a_row: u32,
    /// When the current outage began (the breaker opened).
    outage_since: Option<Instant>,
}

impl Pause {
    pub(crate) fn new(policy: PausePolicy) -> Self {
        Self {
            policy,
            state: PauseState::Closed,
            transient_in_a_row: 0,
            outage_since: None,
        }
    }

    /// The wait before the next outage probe: 1 s first, then doubling
    /// while probes fail, but never past half the outage so far (so an
    /// outage of T seconds costs at most about T/2 after it ends), and
    /// never past `outage_cooldown`.
    fn cooldown(&self, last: Option<Duration>, now: Instant) -> Duration {
        let cap = self.policy.outage_cooldown.max(FIRST_COOLDOWN);
        let Some(last) = last else {
            return FIRST_COOLDOWN.min(cap);
        };
        let half_so_far = self.outage_since.map_or(Duration::ZERO, |since| {
            now.saturating_duration_since(since) / 2
        });
        (last * 2).min(half_so_far).max(FIRST_COOLDOWN).min(cap)
    }

    /// A probe was admitted but never made: the next call probes instead.
    pub(crate) fn probe_dropped(&mut self, now: Instant) {
        if let PauseState::Probing { why, length } = &self.state {
            self.state = PauseState::Open {
                until: now,
                why: why.clone(),
                length: *length,
            };
        }
    }

    pub(crate) fn admit(&mut self, now: Instant) -> Admit {
        match &self.state {
            PauseState::Closed => Admit::Go { probe: false },
            PauseState::Open { until, why, length } if now >= *until => {
                self.state = PauseState::Probing {
                    why: why.clone(),
                    length: *length,
                };
                Admit::Go { probe: true }
            }
            PauseState::Open { until, .. } => Admit::Wait(Some(*until)),
            PauseState::Probing { .. } => Admit::Wait(None),
        }
    }

    /// Records the result of an attempt admitted with `probe`.
    pub(crate) fn record(
        &mut self,
        probe: bool,
        attempt: Attempt,
        now: Instant,
    ) -> (Verdict, Option<Event>) {
        let probing = probe && matches!(self.state, PauseState::Probing { .. });
        match attempt {
            Attempt::Answered => {
                self.transient_in_a_row = 0;
                if probing {
                    let after = self.why().unwrap_or(PauseReason::Outage);
                    self.state = PauseState::Closed;
                    self.outage_since = None;
                    return (Verdict::Done, Some(Event::Resumed { after }));
                }
                (Verdict::Done, None)
            }
            Attempt::Throttled => {
                self.transient_in_a_row = 0;
                match &self.state {
                    // An outage probe answered: the provider is back.
                    PauseState::Probing {
                        why: PauseReason::Outage,
                        ..
                    } if probing => {
                        self.state = PauseState::Closed;
                        self.outage_since = None;
                        let after = PauseReason::Outage;
                        (Verdict::Throttled, Some(Event::Resumed { after }))
                    }
                    // An auth probe throttled says nothing of the key: the
                    // next job probes again, when flow control allows.
                    PauseState::Probing { why, length } if probing => {
                        self.state = PauseState::Open {
                            until: now,
                            why: why.clone(),
                            length: *length,
                        };
                        (Verdict::Throttled, None)
                    }
                    _ => (Verdict::Throttled, None),
                }
            }
            Attempt::Auth(code) => {
                self.transient_in_a_row = 0;
                if self.policy.auth_pause.is_zero() {
                    return (Verdict::DeadLetter, None);
                }
                let length = match &self.state {
                    PauseState::Closed => self.policy.auth_pause,
                    PauseState::Probing {
                        why: PauseReason::Auth(_),
                        length,
                    } if probing => (*length * 2).min(MAX_AUTH_PAUSE),
                    PauseState::Probing { .. } if probing => self.policy.auth_pause,
                    // Paused already, by another job's failure.
                    _ => return (Verdict::Hold, None),
                };
                let why = PauseReason::Auth(code);
                (Verdict::DeadLetter, Some(self.open(why, length, now)))
            }
            Attempt::Transient => {
                self.transient_in_a_row = self.transient_in_a_row.saturating_add(1);
                if probing {
                    let last = match &self.state {
                        PauseState::Probing { length, .. } => Some(*length),
                        _ => None,
                    };
                    let length = self.cooldown(last, now);
                    let why = self.why().unwrap_or(PauseReason::Outage);
                    // A failed probe leaves the reason as it was: an auth
                    // pause is not resumed by a provider that cannot answer.
                    let event = self.open(why, length, now);
                    return (Verdict::Retry { counts: false }, Some(event));
                }
                let threshold = self.policy.outage_threshold;
                if threshold > 0
                    && self.transient_in_a_row >= threshold
                    && matches!(self.state, PauseState::Closed)
                {
                    self.outage_since = Some(now);
                    let event = self.open(PauseReason::Outage, self.cooldown(None, now), now);
                    return (Verdict::Retry { counts: true }, Some(event));
                }
                (Verdict::Retry { counts: true }, None)
            }
        }
    }

    /// The provider's key changed: end an auth pause now, with a probe.
    pub(crate) fn key_changed(&mut self, now: Instant) -> bool {
        match &mut self.state {
            PauseState::Open {
                until,
                why: PauseReason::Auth(_),
                ..
            } => {
                *until = now;
                true
            }
            _ => false,
        }
    }

    /// What the console shows: why paused, until when, whether a probe is
    /// out, and the transient failures in a row towards the breaker.
    pub(crate) fn view(&self) -> PauseView {
        let (until, probing) = match &self.state {
            PauseState::Closed => (None, false),
            PauseState::Open { until, .. } => (Some(*until), false),
            PauseState::Probing { .. } => (None, true),
        };
        PauseView {
            why: self.why(),
            until,
            probing,
            failures_in_a_row: self.transient_in_a_row,
            breaker_threshold: self.policy.outage_threshold,
        }
    }

    /// Why the provider is paused, if it is.
    pub(crate) fn why(&self) -> Option<PauseReason> {
        match &self.state {
            PauseState::Closed => None,
            PauseState::Open { why, .. } | PauseState::Probing { why, .. } => Some(why.clone()),
        }
    }

    fn open(&mut self, why: PauseReason, length: Duration, now: Instant) -> Event {
        self.state = PauseState::Open {
            until: now + length,
            why: why.clone(),
            length,
        };
        Event::Paused { why, length }
    }
}

#[cfg(test)]
mod tests;
