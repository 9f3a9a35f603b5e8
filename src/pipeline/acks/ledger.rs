//! Which ack frames to send, given the deliveries settled so far: one
//! `basic.ack` with `multiple = true` up to the highest delivery tag whose
//! predecessors are all settled, never past an unsettled one. A settled
//! delivery stuck behind an unsettled one waits at most `linger`, then is
//! acked on its own; and when more than `max_waiting` wait so, the oldest
//! go at once: a slow job never holds more than that many of the others'
//! prefetch slots. Pure: the I/O is in the parent module.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    time::{Duration, Instant},
};

/// What a settled delivery wants from the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    Ack,
    /// Back to the queue (`basic.nack`, requeue).
    Requeue,
}

/// One frame to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Frame {
    Ack { tag: u64, multiple: bool },
    Requeue { tag: u64 },
}

/// The deliveries of one AMQP channel between their settling and their
/// frame. `T` rides along with each (what the I/O layer answers when its
/// frame is sent). Delivery tags of a channel run 1, 2, 3, ...
#[derive(Debug)]
pub(crate) struct Ledger<T> {
    /// Every tag up to this one has had its frame.
    through: u64,
    /// Settled, frame not sent yet.
    waiting: BTreeMap<u64, (Want, Instant, T)>,
    /// Beyond `through`, already sent on their own.
    sent: BTreeSet<u64>,
    /// Tags in the order they settled (times only grow), so the ones due
    /// on their own are found from the front, not by a scan: some may have
    /// gone out in a run since.
    order: VecDeque<(Instant, u64)>,
    linger: Duration,
    max_waiting: usize,
}

impl<T> Ledger<T> {
    pub(crate) fn new(linger: Duration, max_waiting: usize) -> Self {
        Self {
            through: 0,
            waiting: BTreeMap::new(),
            sent: BTreeSet::new(),
            order: VecDeque::new(),
            linger,
            max_waiting,
        }
    }

    pub(crate) fn settle(&mut self, tag: u64, want: Want, now: Instant, with: T) {
        self.waiting.insert(tag, (want, now, with));
        self.order.push_back((now, tag));
    }

    /// The frames to send now, in order, each with what it answers for.
    /// With `all`, nothing is left waiting (the channel is closing).
    pub(crate) fn ready(&mut self, now: Instant, all: bool) -> Vec<(Frame, Vec<T>)> {
        let mut frames = Vec::new();
        let mut acked: Vec<T> = Vec::new();
        let mut highest_ack = None;
        loop {
            let next = self.through + 1;
            if self.sent.remove(&next) {
                self.through = next;
                continue;
            }
            let Some((want, _, with)) = self.waiting.remove(&next) else {
                break;
            };
            self.through = next;
            match want {
                Want::Ack => {
                    highest_ack = Some(next);
                    acked.push(with);
                }
                // A nack sent before the multiple ack that covers its tag
                // removes it from what that ack covers.
                Want::Requeue => frames.push((Frame::Requeue { tag: next }, vec![with])),
            }
        }
        if let Some(tag) = highest_ack {
            let multiple = acked.len() > 1;
            frames.push((Frame::Ack { tag, multiple }, acked));
        }
        while let Some(&(at, tag)) = self.order.front() {
            let crowded = self.waiting.len() > self.max_waiting;
            if !all && !crowded && now.duration_since(at) < self.linger {
                break;
            }
            self.order.pop_front();
            if let Some((want, _, with)) = self.waiting.remove(&tag) {
                self.sent.insert(tag);
                let frame = match want {
                    Want::Ack => Frame::Ack {
                        tag,
                        multiple: false,
                    },
                    Want::Requeue => Frame::Requeue { tag },
                };
                frames.push((frame, vec![with]));
            }
        }
        frames
    }

    /// When the oldest delivery waiting behind a gap is due on its own.
    pub(crate) fn next_due(&mut self) -> Option<Instant> {
        // Drop from the front what already went out in a run.
        while let Some(&(_, tag)) = self.order.front() {
            if self.waiting.contains_key(&tag) {
                break;
            }
            self.order.pop_front();
        }
        self.order.front().map(|(at, _)| *at + self.linger)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LINGER: Duration = Duration::from_millis(2);

    #[test]
    fn settled_in_order_is_one_frame() {
        let now = Instant::now();
        let mut ledger = Ledger::new(LINGER, 100);
        for tag in [3, 1, 2] {
            ledger.settle(tag, Want::Ack, now, tag);
        }
        let frames = ledger.ready(now, false);
        assert_eq!(
            frames,
            vec![(
                Frame::Ack {
                    tag: 3,
                    multiple: true
                },
                vec![1, 2, 3]
            )]
        );
    }

    #[test]
    fn never_acks_past_an_unsettled_delivery_and_lingers_no_longer_than_told() {
        let now = Instant::now();
        let mut ledger = Ledger::new(LINGER, 100);
        ledger.settle(1, Want::Ack, now, 1);
        ledger.settle(3, Want::Ack, now, 3);
        assert_eq!(
            ledger.ready(now, false),
            vec![(
                Frame::Ack {
                    tag: 1,
                    multiple: false
                },
                vec![1]
            )]
        );
        assert_eq!(ledger.next_due(), Some(now + LINGER));
        // 2 is still out: 3 goes on its own once due.
        assert_eq!(
            ledger.ready(now + LINGER, false),
            vec![(
                Frame::Ack {
                    tag: 3,
                    multiple: false
                },
                vec![3]
            )]
        );
        // 2 settles: 2 and 3 are through, 4 and 5 ride one frame.
        ledger.settle(5, Want::Ack, now, 5);
        ledger.settle(4, Want::Requeue, now, 4);
        ledger.settle(2, Want::Ack, now, 2);
        assert_eq!(
            ledger.ready(now + LINGER, false),
            vec![
                (Frame::Requeue { tag: 4 }, vec![4]),
                (
                    Frame::Ack {
                        tag: 5,
                        multiple: true
                    },
                    vec![2, 5]
                )
            ]
        );
        assert_eq!(ledger.next_due(), None);
    }

    #[test]
    fn no_more_than_max_waiting_wait_behind_a_gap() {
        let now = Instant::now();
        let mut ledger = Ledger::new(LINGER, 2);
        // 1 is out; 2, 3, 4 settle behind it at once: one too many waits,
        // so the oldest goes alone before its linger is over.
        for tag in [2, 3, 4] {
            ledger.settle(tag, Want::Ack, now, tag);
        }
        assert_eq!(
            ledger.ready(now, false),
            vec![(
                Frame::Ack {
                    tag: 2,
                    multiple: false
                },
                vec![2]
            )]
        );
        assert_eq!(ledger.ready(now, false), vec![]);
        // 1 settles: one multiple ack covers it and the two still waiting.
        ledger.settle(1, Want::Ack, now, 1);
        assert_eq!(
            ledger.ready(now, false),
            vec![(
                Frame::Ack {
                    tag: 4,
                    multiple: true
                },
                vec![1, 3, 4]
            )]
        );
    }

    proptest! {
        /// Any order of settling, any flush points: each delivery is
        /// answered by exactly one frame; a multiple ack covers only
        /// deliveries settled as acked (or already sent); a requeued one is
        /// never acked.
        #[test]
        fn every_delivery_gets_exactly_the_frame_it_wants(
            order in Just((1..=60u64).collect::<Vec<_>>()).prop_shuffle(),
            requeue in proptest::collection::vec(any::<bool>(), 60),
            flushes in proptest::collection::vec(any::<bool>(), 60),
            elapse in proptest::collection::vec(0..4u64, 60),
            max_waiting in 0..70usize,
        ) {
            let start = Instant::now();
            let mut now = start;
            let mut ledger = Ledger::new(LINGER, max_waiting);
            let wants: Vec<Want> = requeue.iter().map(|r| if *r { Want::Requeue } else { Want::Ack }).collect();
            let mut answered = vec![0u32; 61];
            let mut acked_at_broker = [false; 61];
            let mut nacked_at_broker = [false; 61];
            let mut settled = vec![false; 61];
            let mut apply = |frames: Vec<(Frame, Vec<u64>)>, settled: &[bool]| {
                for (frame, with) in frames {
                    for t in &with { answered[*t as usize] += 1; }
                    match frame {
                        Frame::Requeue { tag } => {
                            prop_assert!(!acked_at_broker[tag as usize]);
                            nacked_at_broker[tag as usize] = true;
                        }
                        Frame::Ack { tag, multiple } => {
                            let from = if multiple { 1 } else { tag };
                            for t in from..=tag {
                                let t = t as usize;
                                if acked_at_broker[t] || nacked_at_broker[t] { continue; }
                                prop_assert!(settled[t], "ack covered unsettled {}", t);
                                prop_assert_eq!(wants[t - 1], Want::Ack, "ack covered a requeue");
                                acked_at_broker[t] = true;
                            }
                        }
                    }
                }
                Ok(())
            };
            for (i, tag) in order.iter().enumerate() {
                settled[*tag as usize] = true;
                ledger.settle(*tag, wants[*tag as usize - 1], now, *tag);
                now += Duration::from_millis(elapse[i]);
                if flushes[i] {
                    apply(ledger.ready(now, false), &settled)?;
                }
            }
            apply(ledger.ready(now, true), &settled)?;
            for t in 1..=60usize {
                prop_assert_eq!(answered[t], 1, "tag {} answered {} times", t, answered[t]);
                prop_assert!(acked_at_broker[t] != nacked_at_broker[t]);
                prop_assert_eq!(nacked_at_broker[t], wants[t - 1] == Want::Requeue);
            }
        }
    }
}
