//! Flow control for one provider: how fast and how many calls may go. Pure
//! state, time passed in; [`super::gate`] waits what this decides.
//!
//! A 429 (or a 503 with `Retry-After`) means "slow down", not "failed":
//! - **Retry-After applies to the provider.** Every call waits until then,
//!   instead of each job retrying on its own clock at the same instant.
//! - **Then calls resume at a reduced rate**, 95 % of an estimate of
//!   what the provider allows, never above 90 % of the pace it refused:
//!   - before the first 429 calls are unpaced; at the first, the estimate
//!     is what the provider took in the last second;
//!   - refused within two seconds of resuming after a wait of a second or
//!     more, the estimate is the count taken since the resume (0.75 of it
//!     after a second, when two windows may hold them): a provider counting
//!     calls in fixed one-second windows refuses once its count is reached,
//!     whatever the rate the calls went at;
//!   - refused after a longer, steady run, the estimate is the rate taken
//!     in the last half second; the pace then grows back within seconds to
//!     97 % of the one refused and holds there for 30 s (each probe past a
//!     fixed window costs a window of calls), then probes upward slowly,
//!     faster the longer all is quiet;
//!   - with too little history (a short `Retry-After`), the pace is cut and
//!     grows threefold a second ("slow start") until the next;
//!   - pacing is lifted after a minute without a 429.
//! - **Calls in flight are bounded adaptively** (additive increase,
//!   multiplicative decrease, as TCP and Vector's adaptive concurrency):
//!   +1 per round trip while calls succeed at a steady latency, ×0.75 on a
//!   429, ×0.9 on a timeout or a latency well above its baseline for a
//!   second; never above the prefetch window, never below 1.
//! - A fixed ceiling (`NOTIFY_*_MAX_RPS`) caps the pace whatever it learns.
//!
//! Sends are *reserved*: an admitted call gets a send time and sleeps until
//! it, so thousands of waiting jobs do not wake at every tick. A 429 bumps
//! an epoch, and reservations of an older epoch are made again under the
//! new pace, after the provider's Retry-After.

mod recent;
mod throttle;

use recent::Recent;
use std::time::{Duration, Instant};

/// Growth of the pace per second before a good estimate.
const SLOW_START: f64 = 3.0;
/// Growth of the pace per second when cruising, doubling every `ACCEL`.
const PROBE: f64 = 0.002;
const ACCEL: Duration = Duration::from_secs(10);
/// After a 429 that ended a steady run, the pace grows back by `REGROW` a
/// second to `PLATEAU` of the pace refused and holds there for `HOLD`
/// before probing above it: every probe past a fixed window's allowance
/// costs a window of calls (the `Retry-After` second), so probes are rare.
const REGROW: f64 = 1.05;
const PLATEAU: f64 = 0.97;
const HOLD: Duration = Duration::from_secs(30);
/// Pacing is lifted after this long without a 429.
const LIFT_AFTER: Duration = Duration::from_secs(60);
/// A provider throttling for `throttle::LONG_STREAK` without a pause of
/// this long is "throttled" for operators (metric, log, alert).
const STREAK_GAP: Duration = Duration::from_secs(10);
/// Latency counts as rising above both of these over its baseline.
const LATENCY_FACTOR: f64 = 2.0;
const LATENCY_MARGIN: Duration = Duration::from_millis(50);
/// How long latency must stay risen before it cuts calls in flight (or two
/// baseline round trips, if longer).
const LATENCY_LASTING: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct FlowPolicy {
    /// Calls in flight at most (the prefetch window of the provider's queue).
    pub(crate) max_in_flight: usize,
    /// Calls per second at most, whatever the pace learnt.
    pub(crate) max_rate: Option<f64>,
    /// Longest `Retry-After` obeyed.
    pub(crate) retry_after_cap: Duration,
}

/// What one call came to, as flow control cares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Outcome {
    /// The provider answered (any status but a throttle), after `rtt`.
    Answered { rtt: Duration },
    /// 429, or 503 with `Retry-After`.
    Throttled { retry_after: Option<Duration> },
    /// No answer; `timeout` when the call ran out of time.
    NoAnswer { timeout: bool },
}

/// A change operators should hear of.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Change {
    /// Throttling for [`LONG_STREAK`]: calls are paced at `rate`.
    ThrottledLong {
        rate: Option<f64>,
    },
    ThrottlingEnded,
}

/// Leave to send: at `send_at`, if still of the current epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) send_at: Instant,
    epoch: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    Go(Slot),
    /// The provider asked to wait until then.
    Wait(Instant),
    /// Every call allowed in flight is; wait for one to end.
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    SlowStart,
    Cruise,
}

/// One provider's flow state.
#[derive(Debug, Clone)]
pub(crate) struct Flow {
    policy: FlowPolicy,
    resume_at: Option<Instant>,
    epoch: u64,
    /// The learnt pace, calls per second; `None` while unpaced.
    rate: Option<f64>,
    phase: Phase,
    /// The next free send time (GCRA's theoretical arrival time).
    tat: Instant,
    last_adjust: Instant,
    last_throttle: Option<Instant>,
    /// When calls last resumed after a 429: history starts there.
    run_start: Instant,
    /// How long calls had waited before `run_start`.
    silence: Duration,
    /// The pace a 429 refused after a steady run: a little over the
    /// provider's allowance.
    steady_refused: Option<f64>,
    /// The count the pace was last set from, if it was.
    counted: Option<throttle::Count>,
    accepted: Recent,
    limit: f64,
    in_flight: usize,
    last_cut: Option<Instant>,
    /// Latency: a slow baseline and a fast average, in seconds.
    rtt_base: Option<f64>,
    rtt_fast: Option<f64>,
    /// Since when latency has been over its baseline, without a break.
    rising_since: Option<Instant>,
    streak_start: Option<Instant>,
    long: bool,
}

impl Flow {
    pub(crate) fn new(policy: FlowPolicy, now: Instant) -> Self {
        Self {
            policy,
            resume_at: None,
            epoch: 0,
            rate: None,
            phase: Phase::SlowStart,
            tat: now,
            last_adjust: now,
            last_throttle: None,
            run_start: now,
            silence: Duration::ZERO,
            steady_refused: None,
            counted: None,
            accepted: Recent::new(now),
            limit: policy.max_in_flight.max(1) as f64,
            in_flight: 0,
            last_cut: None,
            rtt_base: None,
            rtt_fast: None,
            rising_since: None,
            streak_start: None,
            long: false,
        }
    }

    /// The pace sends are held to: the learnt one, under the ceiling.
    pub(crate) fn pace(&self) -> Option<f64> {
        match (self.rate, self.policy.max_rate) {
            (Some(r), Some(m)) => Some(r.min(m)),
            (r, m) => r.or(m),
        }
    }

    /// The fixed ceiling, calls per second.
    pub(crate) fn ceiling(&self) -> Option<f64> {
        self.policy.max_rate
    }

    /// Why a call could not start now, without taking a place.
    pub(crate) fn blocked(&self, now: Instant) -> Option<Admit> {
        if let Some(at) = self.resume_at.filter(|at| *at > now) {
            return Some(Admit::Wait(at));
        }
        (!self.has_room()).then_some(Admit::Full)
    }

    /// Calls in flight now.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Until when a provider's `Retry-After` holds every call back.
    pub(crate) fn resume_at(&self, now: Instant) -> Option<Instant> {
        self.resume_at.filter(|at| *at > now)
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit as usize
    }

    pub(crate) fn has_room(&self) -> bool {
        self.in_flight < self.limit()
    }

    /// May a call start now? `Go` takes a place in flight. An `urgent`
    /// call takes one even over the limit (not past a `Retry-After`).
    pub(crate) fn admit(&mut self, now: Instant, urgent: bool) -> Admit {
        match self.blocked(now) {
            Some(Admit::Full) if urgent => {}
            Some(blocked) => return blocked,
            None => {}
        }
        self.in_flight += 1;
        Admit::Go(Slot {
            send_at: self.reserve(now),
            epoch: self.epoch,
        })
    }

    fn reserve(&mut self, now: Instant) -> Instant {
        match self.pace() {
            None => now,
            Some(rate) => {
                let at = self.tat.max(now);
                self.tat = at + Duration::from_secs_f64(1.0 / rate.max(0.01));
                at
            }
        }
    }

    /// `None` when `slot` may send now; else when to ask again. A slot
    /// reserved before the last 429 is reserved again, after its wait.
    pub(crate) fn ready(&mut self, slot: &mut Slot, now: Instant) -> Option<Instant> {
        if slot.epoch != self.epoch {
            if let Some(at) = self.resume_at.filter(|at| *at > now) {
                return Some(at);
            }
            *slot = Slot {
                send_at: self.reserve(now),
                epoch: self.epoch,
            };
        }
        (slot.send_at > now).then_some(slot.send_at)
    }

    /// A call gave its place back unfinished (shutdown).
    pub(crate) fn release(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Records how a call admitted earlier ended.
    pub(crate) fn done(&mut self, outcome: Outcome, now: Instant) -> Option<Change> {
        self.release();
        match outcome {
            Outcome::Answered { rtt } => self.answered(rtt, now),
            Outcome::Throttled { retry_after } => self.throttled(retry_after, now),
            Outcome::NoAnswer { timeout } => {
                if timeout {
                    self.cut(0.9, now);
                }
                None
            }
        }
    }

    fn answered(&mut self, rtt: Duration, now: Instant) -> Option<Change> {
        self.accepted.add(now);
        self.accepted_late(now);
        self.latency(rtt.as_secs_f64(), now);
        let quiet = self
            .last_throttle
            .map_or(Duration::MAX, |t| now.saturating_duration_since(t));
        if let Some(rate) = self.rate {
            let dt = now
                .saturating_duration_since(self.last_adjust)
                .as_secs_f64();
            if quiet >= LIFT_AFTER {
                self.rate = None;
                self.steady_refused = None;
            } else if dt >= 0.1 {
                self.last_adjust = now;
                self.rate = Some(
                    match (self.phase, self.steady_refused) {
                        (Phase::SlowStart, _) => rate * SLOW_START.powf(dt),
                        (Phase::Cruise, Some(refused)) if rate < PLATEAU * refused => {
                            (rate * REGROW.powf(dt)).min(PLATEAU * refused)
                        }
                        (Phase::Cruise, Some(_)) if quiet < HOLD => rate,
                        (Phase::Cruise, _) => {
                            let probe =
                                1.0 + PROBE * 2f64.powf(quiet.as_secs_f64() / ACCEL.as_secs_f64());
                            rate * probe.powf(dt)
                        }
                    }
                    .min(1e6),
                );
            }
        }
        if quiet >= STREAK_GAP && self.streak_start.take().is_some() && self.long {
            self.long = false;
            return Some(Change::ThrottlingEnded);
        }
        None
    }

    fn latency(&mut self, rtt: f64, now: Instant) {
        let base = *self.rtt_base.get_or_insert(rtt);
        let fast = self.rtt_fast.map_or(rtt, |f| 0.8 * f + 0.2 * rtt);
        self.rtt_fast = Some(fast);
        let rising = fast > LATENCY_FACTOR * base && fast > base + LATENCY_MARGIN.as_secs_f64();
        if rising {
            // Only a rise that lasts is congestion: a burst of slow calls
            // (connections being opened, a pause on one side) is not, and
            // one cut costs thousands of calls in flight many round trips
            // to grow back.
            let since = *self.rising_since.get_or_insert(now);
            let lasting = Duration::from_secs_f64((2.0 * base).max(LATENCY_LASTING.as_secs_f64()));
            if now.saturating_duration_since(since) >= lasting {
                self.cut(0.9, now);
                self.rising_since = None;
            }
        } else {
            self.rising_since = None;
            // The baseline follows slowly, and only what is not a rise.
            self.rtt_base = Some(0.95 * base + 0.05 * rtt.min(LATENCY_FACTOR * base));
            let max = self.policy.max_in_flight.max(1) as f64;
            self.limit = (self.limit + 1.0 / self.limit).min(max);
        }
    }

    /// Shrinks the limit, at most once a second.
    fn cut(&mut self, factor: f64, now: Instant) {
        if self
            .last_cut
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.last_cut = Some(now);
        self.limit = (self.limit * factor).max(1.0);
    }
}

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
