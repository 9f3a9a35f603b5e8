//! Retry policy for transient provider failures: exponential backoff with
//! full jitter, and `Retry-After` honoured. Policy only; the sleeping is done
//! by the caller.

use backon::{BackoffBuilder, ExponentialBuilder};
use std::time::{Duration, SystemTime};

/// When to try again, and how often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Provider calls per job, the first included.
    pub max_attempts: u32,
    pub base: Duration,
    pub cap: Duration,
    /// Longest `Retry-After` obeyed; a provider asking for more gets this.
    pub retry_after_cap: Duration,
}

impl RetryPolicy {
    /// The delay before attempt `failed_attempts + 1`, after `failed_attempts`
    /// transient failures, or `None` when the attempt budget is spent.
    ///
    /// Without `Retry-After` the delay is drawn uniformly from
    /// `[0, min(cap, base * 2^(n-1))]` ("full jitter"), which spreads a burst
    /// of failing jobs instead of sending them back in lockstep. backon gives
    /// the capped exponential ceiling; its own jitter only adds on top of the
    /// ceiling, so the full jitter is drawn here.
    pub fn delay(&self, failed_attempts: u32, retry_after: Option<Duration>) -> Option<Duration> {
        if failed_attempts == 0 || failed_attempts >= self.max_attempts {
            return None;
        }
        if let Some(wait) = retry_after {
            return Some(wait.min(self.retry_after_cap));
        }
        let ceiling = ExponentialBuilder::new()
            .with_min_delay(self.base)
            .with_max_delay(self.cap)
            .with_factor(2.0)
            .with_max_times(failed_attempts as usize)
            .build()
            .last()
            .unwrap_or(self.base)
            .min(self.cap);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Some(Duration::from_millis(fastrand::u64(0..=millis)))
    }
}

/// Parses a `Retry-After` value: delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
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
        let p = policy();
        for (n, ceiling) in [(1, 100), (2, 200), (3, 400), (4, 500)] {
            let mut seen_max = Duration::ZERO;
            for _ in 0..500 {
                let d = p.delay(n, None).unwrap();
                assert!(d <= Duration::from_millis(ceiling), "attempt {n}: {d:?}");
                seen_max = seen_max.max(d);
            }
            // Spread over the whole range, not pinned to the ceiling or zero.
            assert!(seen_max > Duration::from_millis(ceiling / 2), "attempt {n}");
        }
    }

    #[test]
    fn budget_is_max_attempts_calls() {
        let p = policy();
        assert!(p.delay(4, None).is_some());
        assert_eq!(p.delay(5, None), None);
    }

    #[test]
    fn retry_after_wins_and_is_capped() {
        let p = policy();
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(2))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(3600))),
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn parses_both_retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after(" 3 ", now), Some(Duration::from_secs(3)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(7)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(7));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
