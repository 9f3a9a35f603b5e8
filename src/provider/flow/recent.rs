//! A count of recent events, in fixed buckets: constant memory at any rate.

use std::time::{Duration, Instant};

/// Accepted calls in the last two seconds, in 50 ms buckets.
#[derive(Debug, Clone)]
pub(super) struct Recent {
    counts: [u32; 40],
    /// The bucket `counts[head]` stands for, as a count of 50 ms steps.
    head_step: u64,
    head: usize,
    origin: Instant,
}

impl Recent {
    const STEP: Duration = Duration::from_millis(50);

    pub(super) fn new(origin: Instant) -> Self {
        Self {
            counts: [0; 40],
            head_step: 0,
            head: 0,
            origin,
        }
    }

    fn step(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.origin);
        u64::try_from(since.as_millis() / Self::STEP.as_millis()).unwrap_or(u64::MAX)
    }

    /// Moves the head to `now`'s bucket, clearing what fell out.
    fn advance(&mut self, now: Instant) {
        let step = self.step(now);
        let gap = step
            .saturating_sub(self.head_step)
            .min(self.counts.len() as u64);
        for _ in 0..gap {
            self.head = (self.head + 1) % self.counts.len();
            self.counts[self.head] = 0;
        }
        self.head_step = self.head_step.max(step);
    }

    pub(super) fn add(&mut self, now: Instant) {
        self.advance(now);
        self.counts[self.head] = self.counts[self.head].saturating_add(1);
    }

    /// Accepted since the start of `since`'s bucket (at most two seconds
    /// back), and how long ago that start is.
    pub(super) fn since(&mut self, since: Instant, now: Instant) -> (u32, Duration) {
        self.advance(now);
        let back = self.head_step.saturating_sub(self.step(since));
        let back = usize::try_from(back)
            .unwrap_or(usize::MAX)
            .min(self.counts.len() - 1);
        let count = (0..=back)
            .map(|i| self.counts[(self.head + self.counts.len() - i) % self.counts.len()])
            .sum();
        let first = self.head_step - back as u64;
        let start = self.origin + Self::STEP * u32::try_from(first).unwrap_or(u32::MAX);
        (count, now.saturating_duration_since(start))
    }
}
