//! HTTP/2 lanes: the connections calls are spread over, each filled to its
//! share of streams before the next is used.

use super::super::http2::Slot;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One HTTP/2 connection and the calls it carries.
pub(super) struct Lane {
    pub(super) slot: Slot,
    pub(super) in_flight: AtomicUsize,
}

/// A lane taken for one call; gives it back when dropped.
pub(super) struct LaneGuard<'a>(pub(super) &'a Lane);

impl Drop for LaneGuard<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The first lane with room for one more call; if all are full (more calls
/// than planned, e.g. while a drain overlaps a reconnect), the least busy.
pub(super) fn take_lane(lanes: &[Lane], room: usize) -> LaneGuard<'_> {
    let with_room = lanes.iter().find(|lane| {
        lane.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < room).then_some(n + 1)
            })
            .is_ok()
    });
    let lane = with_room.unwrap_or_else(|| {
        let lane = lanes
            .iter()
            .min_by_key(|lane| lane.in_flight.load(Ordering::Acquire))
            .unwrap_or(&lanes[0]);
        lane.in_flight.fetch_add(1, Ordering::AcqRel);
        lane
    });
    LaneGuard(lane)
}
