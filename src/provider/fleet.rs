//! A provider's ceiling (`NOTIFY_*_MAX_RPS`) held by the whole fleet
//! (`NOTIFY_RATE_SCOPE=fleet`) instead of by each process: one GCRA row per
//! provider in PostgreSQL. A replica that needs calls claims a block of
//! about 100 ms of them in one statement (no round trip per call) and
//! spaces them itself; blocks never overlap, so the fleet stays at the
//! ceiling over any second, give or take one block. A provider's
//! `Retry-After` moves the row's hold for every replica. While the database
//! is away each replica falls back to the ceiling divided by the replicas
//! it expects (`NOTIFY_FLEET_REPLICAS`).

use crate::domain::Provider;
use governor::{
    DefaultDirectRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};
use sqlx::PgPool;
use std::{
    num::NonZeroU32,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};
use tokio_util::sync::CancellationToken;

/// What a block claim may wait for the database.
const CLAIM_DEADLINE: Duration = Duration::from_secs(2);
/// A turn woken up later than this (or than one turn's length) is not
/// used.
const LATE: Duration = Duration::from_millis(50);
/// Late turns given up at most for one call.
const LATE_TURNS: usize = 3;
/// A block is this much time's worth of calls.
const BLOCK: Duration = Duration::from_millis(100);

/// After a failed claim, how long the fallback share is used before the
/// database is asked again (a claim to a database that is away can take
/// the whole deadline, and every caller would wait it out).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// A 429 whose `Retry-After` moves the shared hold by less than this is
/// not shared again: `Retry-After` counts whole seconds, so the 429s of one
/// burst differ by less than half of one.
const HOLD_SLACK: Duration = Duration::from_millis(500);

/// A call's turn: a time in this replica's block, or already had (or
/// refused, on shutdown) under the fallback share.
enum Turn {
    At(Instant),
    Went(bool),
}

/// The calls this replica has claimed and not yet made.
#[derive(Debug)]
struct Block {
    next: Instant,
    left: u32,
    /// Until then the database is not asked: the fallback share applies.
    degraded_until: Option<Instant>,
}

pub(crate) struct FleetCeiling {
    provider: Provider,
    pool: PgPool,
    interval: Duration,
    size: u32,
    block: tokio::sync::Mutex<Block>,
    /// The share of one replica while the database is away.
    fallback: DefaultDirectRateLimiter,
    degraded: AtomicBool,
    /// The hold last shared: the 429s of one burst share it once.
    shared_until: std::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for FleetCeiling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetCeiling")
            .field("provider", &self.provider)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl FleetCeiling {
    /// `rate` calls a second for the fleet; `replicas` share it while the
    /// database is away.
    pub(crate) fn new(provider: Provider, pool: PgPool, rate: f64, replicas: u32) -> Self {
        let rate = rate.max(0.01);
        let share = (rate / f64::from(replicas.max(1)))
            .ceil()
            .clamp(1.0, f64::from(u32::MAX));
        let share = NonZeroU32::new(share as u32).unwrap_or(NonZeroU32::MIN);
        Self {
            provider,
            pool,
            interval: Duration::from_secs_f64(1.0 / rate),
            size: ((rate * BLOCK.as_secs_f64()).round() as u32).max(1),
            block: tokio::sync::Mutex::new(Block {
                next: Instant::now(),
                left: 0,
                degraded_until: None,
            }),
            fallback: RateLimiter::direct(Quota::per_second(share).allow_burst(NonZeroU32::MIN)),
            degraded: AtomicBool::new(false),
            shared_until: std::sync::Mutex::new(None),
        }
    }

    /// Waits for this call's turn under the fleet's ceiling; `false` on
    /// shutdown. A turn woken up late (a busy runtime) is not used: calls
    /// held up together would go together, over the ceiling in the second
    /// they land in; the call takes a later turn instead.
    pub(crate) async fn take(&self, shutdown: &CancellationToken) -> bool {
        let slack = self.interval.max(LATE);
        // A runtime late every time would otherwise claim turn after turn:
        // after a few, the call goes on the last.
        for _ in 0..LATE_TURNS {
            let at = match self.turn(shutdown).await {
                Turn::At(at) => at,
                Turn::Went(went) => return went,
            };
            tokio::select! {
                () = tokio::time::sleep_until(at.into()) => {}
                () = shutdown.cancelled() => return false,
            }
            if Instant::now() <= at + slack {
                return true;
            }
        }
        true
    }

    /// The next turn of this replica's block (claiming a block when it is
    /// spent), or the fallback share's answer while the database is away.
    async fn turn(&self, shutdown: &CancellationToken) -> Turn {
        let at = {
            let mut block = self.block.lock().await;
            let now = Instant::now();
            // Turns that passed unused are not saved up (that would burst).
            if block.left > 0 && block.next + self.interval < now {
                block.left = 0;
            }
            if block.left == 0 {
                if block.degraded_until.is_some_and(|until| until > now) {
                    drop(block);
                    return Turn::Went(self.fallback_turn(shutdown).await);
                }
                match self.claim().await {
                    Ok(start) => {
                        self.recovered();
                        *block = Block {
                            next: start,
                            left: self.size,
                            degraded_until: None,
                        };
                    }
                    Err(why) => {
                        block.degraded_until = Some(Instant::now() + RETRY_AFTER_FAILURE);
                        drop(block);
                        self.degrade(&why);
                        return Turn::Went(self.fallback_turn(shutdown).await);
                    }
                }
            }
            let at = block.next;
            block.next += self.interval;
            block.left -= 1;
            at
        };
        Turn::At(at)
    }

    /// Claims the next block; returns when its first call may go.
    async fn claim(&self) -> Result<Instant, String> {
        let secs = self.interval.as_secs_f64() * f64::from(self.size);
        let claim = sqlx::query_scalar::<_, f64>(
            "INSERT INTO provider_rates AS r (provider, tat) \
             VALUES ($1, clock_timestamp() + make_interval(secs => $2)) \
             ON CONFLICT (provider) DO UPDATE \
             SET tat = greatest(r.tat, clock_timestamp(), r.hold_until) + make_interval(secs => $2) \
             RETURNING extract(epoch FROM (r.tat - make_interval(secs => $2)) - clock_timestamp())::float8",
        )
        .bind(self.provider.as_str())
        .bind(secs)
        .fetch_one(&self.pool);
        match tokio::time::timeout(CLAIM_DEADLINE, claim).await {
            // The start, as an offset from the database's clock, on ours,
            // counted from the answer: never before the block's time (from
            // the question, a slow answer moved the block earlier, into
            // another replica's).
            Ok(Ok(offset)) => Ok(Instant::now() + Duration::from_secs_f64(offset.max(0.0))),
            Ok(Err(e)) => Err(format!("the claim failed: {e}")),
            Err(_) => Err(format!("no answer within {CLAIM_DEADLINE:?}")),
        }
    }

    /// Whether a `Retry-After` of `wait` moves the shared hold (by more
    /// than `HOLD_SLACK`); the other 429s of the same burst need no statement.
    pub(crate) fn extends_hold(&self, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        let mut shared = self.shared_until.lock().unwrap_or_else(|e| e.into_inner());
        if shared.is_some_and(|s| until <= s + HOLD_SLACK) {
            return false;
        }
        *shared = Some(until);
        true
    }

    /// A provider's `Retry-After`: every replica holds its calls until then.
    pub(crate) async fn hold(&self, wait: Duration) {
        let held = sqlx::query(
            "INSERT INTO provider_rates AS r (provider, hold_until) \
             VALUES ($1, clock_timestamp() + make_interval(secs => $2)) \
             ON CONFLICT (provider) DO UPDATE \
             SET hold_until = greatest(r.hold_until, clock_timestamp() + make_interval(secs => $2))",
        )
        .bind(self.provider.as_str())
        .bind(wait.as_secs_f64())
        .execute(&self.pool);
        let failed = match tokio::time::timeout(CLAIM_DEADLINE, held).await {
            Ok(Ok(_)) => return,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {CLAIM_DEADLINE:?}"),
        };
        tracing::debug!(provider = %self.provider, error = %failed, "could not share a Retry-After with the fleet");
    }

    async fn fallback_turn(&self, shutdown: &CancellationToken) -> bool {
        while let Err(not_until) = self.fallback.check() {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shutdown.cancelled() => return false,
            }
        }
        true
    }

    fn degrade(&self, why: &str) {
        if !self.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(provider = %self.provider, %why, "fleet-wide ceiling unavailable (database): holding this replica to its share, the ceiling / NOTIFY_FLEET_REPLICAS");
        }
    }

    fn recovered(&self) {
        if self.degraded.swap(false, Ordering::Relaxed) {
            tracing::info!(provider = %self.provider, "fleet-wide ceiling shared through the database again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deadletter::testdb::TestDb;

    #[tokio::test]
    async fn replicas_claim_blocks_that_never_overlap_and_share_a_retry_after() {
        let db = TestDb::new().await;
        let pool = db.store.pool().clone();
        // A connection open first, so the round trip below is the claim's.
        sqlx::query("SELECT 1")
            .execute(&pool)
            .await
            .expect("connect");
        let a = FleetCeiling::new(Provider::Telnxo, pool.clone(), 100.0, 2);
        let b = FleetCeiling::new(Provider::Telnxo, pool, 100.0, 2);
        assert_eq!(a.size, 10, "100 ms of calls at 100/s");
        // Back to back, each block starts where the other's ends. Each
        // start is placed on our clock from its answer, late by that
        // answer's travel, so the first one's round trip may shorten the
        // gap seen here (CI, loaded: 94.8 ms); overlapping blocks would
        // show no gap at all.
        let asked = Instant::now();
        let first = a.claim().await.expect("claim");
        let first_trip = asked.elapsed();
        let second = b.claim().await.expect("claim");
        let gap = second.saturating_duration_since(first);
        assert!(
            gap + first_trip >= Duration::from_millis(95),
            "blocks overlap: {gap:?} apart, first claim's round trip {first_trip:?}"
        );
        // A's 429 holds B's next block; the rest of A's burst states nothing.
        assert!(a.extends_hold(Duration::from_secs(2)));
        assert!(!a.extends_hold(Duration::from_secs(2)));
        a.hold(Duration::from_secs(2)).await;
        // A later Retry-After that moves the hold is shared again.
        assert!(a.extends_hold(Duration::from_secs(3)));
        let held = b.claim().await.expect("claim");
        let wait = held.saturating_duration_since(Instant::now());
        assert!(wait >= Duration::from_millis(1500), "B waits {wait:?}");
        db.drop().await;
    }
}
