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
    pub(crate) outage_cooldown: Duration,
}

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
}

/// A change worth a log line and a metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    Paused { why: PauseReason, length: Duration },
    Resumed { after: PauseReason },
}

/// One provider's pause state.
#[derive(Debug)]
pub(crate) struct Pause {
    policy: PausePolicy,
    state: PauseState,
    transient_in_a_row: u32,
}

impl Pause {
    pub(crate) fn new(policy: PausePolicy) -> Self {
        Self {
            policy,
            state: PauseState::Closed,
            transient_in_a_row: 0,
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
                    return (Verdict::Done, Some(Event::Resumed { after }));
                }
                (Verdict::Done, None)
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
                    let length = self.policy.outage_cooldown;
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
                    let event = self.open(PauseReason::Outage, self.policy.outage_cooldown, now);
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
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn circuit(auth_secs: u64, threshold: u32) -> Pause {
        Pause::new(PausePolicy {
            auth_pause: S * auth_secs as u32,
            outage_threshold: threshold,
            outage_cooldown: S * 5,
        })
    }

    fn code() -> ProviderCode {
        ProviderCode::parse("invalid_api_key").unwrap()
    }

    fn auth() -> Attempt {
        Attempt::Auth(code())
    }

    #[test]
    fn auth_failure_pauses_holds_others_then_probes_and_doubles_to_the_cap() {
        let t0 = Instant::now();
        let mut c = circuit(30, 0);
        assert_eq!(c.admit(t0), Admit::Go { probe: false });
        let (v, e) = c.record(false, auth(), t0);
        assert_eq!(v, Verdict::DeadLetter);
        assert!(matches!(e, Some(Event::Paused { length, .. }) if length == S * 30));
        // A concurrent job's auth failure is held, not dead-lettered.
        assert_eq!(c.record(false, auth(), t0).0, Verdict::Hold);
        assert_eq!(c.admit(t0 + S), Admit::Wait(Some(t0 + S * 30)));
        let mut now = t0 + S * 30;
        let mut expected = S * 60;
        for _ in 0..6 {
            assert_eq!(c.admit(now), Admit::Go { probe: true });
            assert_eq!(c.admit(now), Admit::Wait(None), "one probe at a time");
            let (v, e) = c.record(true, auth(), now);
            assert_eq!(v, Verdict::DeadLetter);
            assert_eq!(
                e,
                Some(Event::Paused {
                    why: PauseReason::Auth(code()),
                    length: expected
                })
            );
            now += expected;
            expected = (expected * 2).min(MAX_AUTH_PAUSE);
        }
        assert_eq!(c.admit(now), Admit::Go { probe: true });
        let (v, e) = c.record(true, Attempt::Answered, now);
        assert_eq!(v, Verdict::Done);
        assert!(matches!(e, Some(Event::Resumed { .. })));
        assert_eq!(c.admit(now), Admit::Go { probe: false });
    }

    #[test]
    fn zero_pause_turns_the_pause_off() {
        let mut c = circuit(0, 0);
        for _ in 0..3 {
            assert_eq!(
                c.record(false, auth(), Instant::now()),
                (Verdict::DeadLetter, None)
            );
        }
        assert_eq!(c.admit(Instant::now()), Admit::Go { probe: false });
    }

    #[test]
    fn key_change_ends_an_auth_pause_early() {
        let t0 = Instant::now();
        let mut c = circuit(30, 0);
        c.record(false, auth(), t0);
        assert!(c.key_changed(t0 + S));
        assert_eq!(c.admit(t0 + S), Admit::Go { probe: true });
    }

    #[test]
    fn outage_breaker_opens_after_the_threshold_and_failed_probes_cost_nothing() {
        let t0 = Instant::now();
        let mut c = circuit(30, 3);
        for _ in 0..2 {
            assert_eq!(
                c.record(false, Attempt::Transient, t0).0,
                Verdict::Retry { counts: true }
            );
        }
        let (v, e) = c.record(false, Attempt::Transient, t0);
        assert_eq!(v, Verdict::Retry { counts: true });
        assert_eq!(
            e,
            Some(Event::Paused {
                why: PauseReason::Outage,
                length: S * 5
            })
        );
        assert_eq!(c.admit(t0), Admit::Wait(Some(t0 + S * 5)));
        assert_eq!(c.admit(t0 + S * 5), Admit::Go { probe: true });
        assert_eq!(
            c.record(true, Attempt::Transient, t0 + S * 5).0,
            Verdict::Retry { counts: false }
        );
        assert_eq!(c.admit(t0 + S * 10), Admit::Go { probe: true });
        assert!(matches!(
            c.record(true, Attempt::Answered, t0 + S * 10),
            (
                Verdict::Done,
                Some(Event::Resumed {
                    after: PauseReason::Outage
                })
            )
        ));
        // An answer resets the count.
        for _ in 0..2 {
            c.record(false, Attempt::Transient, t0);
        }
        c.record(false, Attempt::Answered, t0);
        assert_eq!(c.record(false, Attempt::Transient, t0).1, None);
    }
}
