//! Deliveries held unacked while their dead-letter row cannot be written:
//! how many, and since when, for `/metrics`.

use metrics::Gauge;
use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

/// Deliveries held unacked because their dead-letter row cannot be
/// written, and since when (insertion order is time order).
pub(crate) struct HeldWrites {
    since: Mutex<BTreeMap<u64, Instant>>,
    next: AtomicU64,
    count: Gauge,
    oldest: Gauge,
}

/// A delivery held for the database, for as long as the guard lives.
pub(crate) struct HeldWrite {
    id: u64,
    held: Arc<HeldWrites>,
}

impl Drop for HeldWrite {
    fn drop(&mut self) {
        let mut since = self.held.since.lock().unwrap_or_else(|e| e.into_inner());
        since.remove(&self.id);
        self.held.count.set(since.len() as f64);
    }
}

impl HeldWrites {
    pub(crate) fn new(count: Gauge, oldest: Gauge) -> Self {
        Self {
            since: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(0),
            count,
            oldest,
        }
    }

    pub(crate) fn hold(held: &Arc<Self>) -> HeldWrite {
        let id = held.next.fetch_add(1, Ordering::Relaxed);
        let mut since = held.since.lock().unwrap_or_else(|e| e.into_inner());
        since.insert(id, Instant::now());
        held.count.set(since.len() as f64);
        HeldWrite {
            id,
            held: Arc::clone(held),
        }
    }

    /// Brings the oldest hold's age up to date (0 when none).
    pub(crate) fn refresh(&self) {
        let since = self.since.lock().unwrap_or_else(|e| e.into_inner());
        let oldest = since.values().next().map(Instant::elapsed);
        self.oldest.set(oldest.map_or(0.0, |age| age.as_secs_f64()));
    }
}
