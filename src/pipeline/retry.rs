//! Retry policy for transient provider failures: exponential backoff with
//! full jitter, and `Retry-After` honoured. Policy only; the sleeping is done
//! by the caller.

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use std::time::Duration;

/// When to try again, and how often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    /// Provider calls per job, the first included.
    pub(crate) max_attempts: u32,
    pub(crate) base: Duration,
    pub(crate) cap: Duration,
    /// Longest `Retry-After` obeyed; a provider asking for more gets this.
    pub(crate) retry_after_cap: Duration,
}

impl RetryPolicy {
    /// The retry schedule of one job.
    pub(crate) fn schedule(&self) -> Schedule {
        let retries = usize::try_from(self.max_attempts.saturating_sub(1)).unwrap_or(usize::MAX);
        Schedule {
            ceilings: ExponentialBuilder::new()
                .with_min_delay(self.base)
                .with_max_delay(self.cap)
                .with_factor(2.0)
                .with_max_times(retries)
                .build(),
            last_ceiling: self.base,
            retry_after_cap: self.retry_after_cap,
        }
    }
}

/// One job's retries: how long to wait after each transient failure, until
/// the attempt budget is spent.
///
/// backon gives the capped exponential ceilings; its own jitter only adds on
/// top of a ceiling, so the full jitter, drawn uniformly from `[0, ceiling]`,
/// is drawn here: it spreads a burst of failing jobs instead of sending them
/// back in lockstep.
#[derive(Debug)]
pub(crate) struct Schedule {
    ceilings: ExponentialBackoff,
    last_ceiling: Duration,
    retry_after_cap: Duration,
}

impl Schedule {
    /// The wait after a transient failure, or `None` when the budget is
    /// spent. A failure that does not `count` (a failed breaker probe)
    /// waits like the last one and spends nothing.
    pub(crate) fn next(&mut self, retry_after: Option<Duration>, counts: bool) -> Option<Duration> {
        if counts {
            self.last_ceiling = self.ceilings.next()?;
        }
        if let Some(wait) = retry_after {
            return Some(wait.min(self.retry_after_cap));
        }
        let millis = u64::try_from(self.last_ceiling.as_millis()).unwrap_or(u64::MAX);
        Some(Duration::from_millis(fastrand::u64(0..=millis)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(100),
            cap: Duration::from_millis(500),
            retry_after_cap: Duration::from_secs(60),
        }
    }

    #[test]
    fn full_jitter_stays_under_the_capped_ceiling() {
        let mut seen_max = [Duration::ZERO; 4];
        for _ in 0..500 {
            let mut s = policy().schedule();
            for (n, ceiling) in [100, 200, 400, 500].into_iter().enumerate() {
                let d = s.next(None, true).unwrap();
                assert!(d <= Duration::from_millis(ceiling), "retry {n}: {d:?}");
                seen_max[n] = seen_max[n].max(d);
            }
        }
        // Spread over the whole range, not pinned to the ceiling or zero.
        for (n, ceiling) in [100, 200, 400, 500].into_iter().enumerate() {
            assert!(
                seen_max[n] > Duration::from_millis(ceiling / 2),
                "retry {n}"
            );
        }
    }

    #[test]
    fn budget_is_max_attempts_calls_and_uncounted_failures_spend_nothing() {
        let mut s = policy().schedule();
        for _ in 0..4 {
            assert!(s.next(None, true).is_some());
        }
        // Failed probes after the budget is spent still wait, without spending.
        assert!(s.next(None, false).is_some());
        assert_eq!(s.next(None, true), None, "the fifth failure ends it");

        let one = RetryPolicy {
            max_attempts: 1,
            ..policy()
        };
        assert_eq!(one.schedule().next(None, true), None);
    }

    #[test]
    fn retry_after_wins_and_is_capped() {
        let mut s = policy().schedule();
        assert_eq!(
            s.next(Some(Duration::from_secs(2)), true),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            s.next(Some(Duration::from_secs(3600)), true),
            Some(Duration::from_secs(60))
        );
    }
}
