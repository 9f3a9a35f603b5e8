//! What a 429 changes: the provider-wide wait, and the pace after it
//! (the estimate of what the provider allows, see the parent module).

use super::{Change, Flow, Phase};
use std::time::{Duration, Instant};

/// Pace cut at a 429 when there is too little history to estimate from.
const CUT: f64 = 0.8;
/// The share of the estimated allowance cruised at.
const CRUISE: f64 = 0.95;
/// A new pace is at most this share of the pace a 429 refused.
const BELOW_REFUSED: f64 = 0.9;
/// The window a fixed-window provider is assumed to count calls in.
const FIXED_WINDOW: Duration = Duration::from_secs(1);
/// A pace refused soon after a resume is cut at most to this share.
const HALF: f64 = 0.5;
/// History an estimate is taken over, and the least of it that is enough.
const WINDOW: Duration = Duration::from_millis(500);
const MIN_SPAN: Duration = Duration::from_millis(300);
/// A provider throttling this long without a pause of `STREAK_GAP` is
/// "throttled" for operators (metric, log, alert).
const LONG_STREAK: Duration = Duration::from_secs(30);
/// Shortest provider-wide wait after a 429 (`Retry-After: 0` included).
const MIN_WAIT: Duration = Duration::from_millis(100);
/// Without `Retry-After`, the wait after a 429.
const DEFAULT_WAIT: Duration = Duration::from_secs(1);

impl Flow {
    pub(super) fn throttled(
        &mut self,
        retry_after: Option<Duration>,
        now: Instant,
    ) -> Option<Change> {
        let wait = retry_after
            .unwrap_or(DEFAULT_WAIT)
            .clamp(MIN_WAIT, self.policy.retry_after_cap.max(MIN_WAIT));
        self.last_throttle = Some(now);
        let streak_start = *self.streak_start.get_or_insert(now);
        // Calls that were on their way when the first 429 came: the same
        // event; they only stretch the wait.
        if let Some(at) = self.resume_at.filter(|at| *at > now) {
            self.resume_at = Some(at.max(now + wait));
            return None;
        }
        let since = self.run_start.max(now.checked_sub(WINDOW).unwrap_or(now));
        let (accepted, span) = self.accepted.since(since, now);
        let accepted = f64::from(accepted);
        let run = now.saturating_duration_since(self.run_start);
        if let Some(refused) = self.rate
            && self.silence >= FIXED_WINDOW
            && (MIN_SPAN..2 * FIXED_WINDOW).contains(&run)
        {
            // Refused within two windows' length of calls resuming after a
            // silence of a window or more. A fixed window then counts only
            // calls made since the resume: within one window's length their
            // count `n` is its allowance (or spans two windows, the first
            // not full: at most twice it); later, at a steady pace, they
            // span two windows and n / 2 is the least it allows: 0.75 n is
            // taken. (The rate they went at is only the pace refused.) Not
            // under half that pace: a shallow token bucket refuses early
            // too, and takes more. Refused sooner than `MIN_SPAN`, the calls
            // are too few to count (other clients of the provider may have
            // filled the window): the slow start below.
            let count = Count {
                taken: f64::from(self.accepted.since(self.run_start, now).0),
                share: if run < FIXED_WINDOW { 1.0 } else { 0.75 },
                floor: HALF * refused,
                cap: BELOW_REFUSED * refused,
            };
            self.rate = Some(count.pace());
            self.counted = Some(count);
            self.phase = Phase::Cruise;
            self.steady_refused = None;
        } else if let Some(refused) = self.rate
            && span >= MIN_SPAN
            && accepted > 0.0
        {
            let estimate = CRUISE * accepted / span.as_secs_f64();
            self.rate = Some(estimate.min(BELOW_REFUSED * refused).max(1.0));
            self.counted = None;
            self.phase = Phase::Cruise;
            // After a short run the refused pace may be far over.
            self.steady_refused = (run >= 2 * FIXED_WINDOW).then_some(refused);
        } else if let Some(r) = self.rate {
            self.steady_refused = None;
            self.counted = None;
            (self.rate, self.phase) = (Some((CUT * r).max(1.0)), Phase::SlowStart);
        } else {
            // The first 429, after an unpaced burst: what the provider took
            // in the last second is what it allows a second (a fixed
            // window's count, a bucket's depth). Cruise just under it;
            // growing threefold a second from there overshot a fixed-window
            // provider for many windows (0.86 of its allowance against
            // 0.92, in `sim.rs`).
            self.steady_refused = None;
            let second_ago = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
            let count = Count {
                taken: f64::from(self.accepted.since(second_ago, now).0),
                share: 1.0,
                floor: 0.0,
                cap: f64::MAX,
            };
            self.rate = Some(count.pace());
            self.counted = Some(count);
            self.phase = Phase::Cruise;
        }
        let resume = now + wait;
        self.silence = wait;
        self.resume_at = Some(resume);
        self.run_start = resume;
        self.tat = resume;
        self.last_adjust = resume;
        self.epoch += 1;
        self.limit = (self.limit * 0.75).max(1.0);
        self.last_cut = Some(now);
        if !self.long && now.saturating_duration_since(streak_start) >= LONG_STREAK {
            self.long = true;
            return Some(Change::ThrottledLong { rate: self.pace() });
        }
        None
    }
}

/// A pace set from a count of calls the provider took. Answers to calls
/// made before the 429 may come after it (or be handled after it: the
/// worker's tasks run in no set order); taken during the wait, they count.
#[derive(Debug, Clone, Copy)]
pub(super) struct Count {
    taken: f64,
    /// The share of the count that is the allowance.
    share: f64,
    floor: f64,
    cap: f64,
}

impl Count {
    fn pace(&self) -> f64 {
        (CRUISE * (self.share * self.taken).max(self.floor))
            .min(self.cap)
            .max(1.0)
    }
}

impl Flow {
    /// A call accepted while calls wait out a 429 was made before it.
    pub(super) fn accepted_late(&mut self, now: Instant) {
        if self.resume_at.is_some_and(|at| at > now)
            && let Some(count) = &mut self.counted
        {
            count.taken += 1.0;
            self.rate = Some(count.pace());
        }
    }
}
