//! Acks for one AMQP channel, batched: settled deliveries are answered by
//! as few frames as the [`ledger`] allows (one `multiple` ack for a run of
//! settled tags), sent by one task per channel. Each delivery's [`Slot`]
//! still waits until its own frame has been handed to the socket, so
//! "acked only after settled" and the `unacked` outcome mean what they did.

mod ledger;

use lapin::{
    Acker,
    message::Delivery,
    options::{BasicAckOptions, BasicNackOptions},
};
use ledger::{Frame, Ledger, Want};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// How long a settled delivery waits behind an unsettled one before it is
/// acked on its own: long enough for the deliveries around it to settle
/// (claims and outcomes are written in batches, and a batch's jobs settle
/// out of order), so one `multiple` ack answers for them. Each single ack
/// is a command the broker handles on its own: at 2 ms, 8,900 to 12,800 of
/// 30,000 jobs went alone, at 50 ms 1,200 to 2,700 (README, Performance).
/// At most nine tenths of the window waits so (`max_waiting`); the rest
/// go alone at once, so a stuck job still leaves the others a tenth of
/// the prefetch, and the linger frees the others soon after.
const LINGER: Duration = Duration::from_millis(50);

/// How many settled deliveries may wait behind an unsettled one. A ledger
/// batch (up to 500 jobs) settles out of order with the one beside it, so
/// at half of a 1,000 window whole batches went one frame each; at nine
/// tenths, single acks fell from 480-670 to 70-120 of 30,000 jobs without
/// the ledger and from 1,250-1,820 to about 300 with it, and the worker's
/// CPU a job from 51 to 39 us and 62-78 to 56-63 us (bench (l), runs
/// alternated).
fn max_waiting(prefetch: u16) -> usize {
    usize::from(prefetch.saturating_sub((prefetch / 10).max(1)))
}

struct Settle {
    tag: u64,
    want: Want,
    acker: Acker,
    /// Told whether the frame was sent; `None` when nobody waits.
    done: Option<oneshot::Sender<bool>>,
}

/// The sending side of one channel's acks. Unbounded because each delivery
/// sends once and the prefetch bounds the deliveries.
#[derive(Clone, Debug)]
pub(crate) struct Acks {
    tx: mpsc::UnboundedSender<Settle>,
}

impl Acks {
    /// Starts the task that sends this channel's frames; it ends once every
    /// `Acks` and `Slot` of the channel is gone and their frames are sent.
    /// `prefetch`: the channel's window, nine tenths of which at most
    /// waits behind an unsettled delivery.
    pub(crate) fn start(prefetch: u16) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(send_frames(rx, max_waiting(prefetch)));
        Self { tx }
    }

    /// The one way to settle `delivery` with the broker.
    pub(crate) fn slot(&self, delivery: &Delivery) -> Slot {
        Slot {
            tag: delivery.delivery_tag,
            acker: Some(delivery.acker.clone()),
            tx: self.tx.clone(),
        }
    }
}

/// One delivery's answer to the broker, given once. Dropped unanswered (a
/// task that panicked), it puts the delivery back in the queue, so the run
/// of tags behind it is not held up and nothing is lost.
#[derive(Debug)]
pub(crate) struct Slot {
    tag: u64,
    acker: Option<Acker>,
    tx: mpsc::UnboundedSender<Settle>,
}

impl Slot {
    /// Acks; `false` when the frame could not be sent (channel gone).
    pub(crate) async fn ack(mut self) -> bool {
        self.send(Want::Ack).await
    }

    /// Back to the queue; `false` when the frame could not be sent.
    pub(crate) async fn requeue(mut self) -> bool {
        self.send(Want::Requeue).await
    }

    async fn send(&mut self, want: Want) -> bool {
        let Some(acker) = self.acker.take() else {
            return false;
        };
        let (done, answer) = oneshot::channel();
        let settle = Settle {
            tag: self.tag,
            want,
            acker,
            done: Some(done),
        };
        // A task gone (runtime shutting down) cannot send: the broker
        // redelivers, as for a closed channel.
        self.tx.send(settle).is_ok() && answer.await.unwrap_or(false)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(acker) = self.acker.take() {
            let _ = self.tx.send(Settle {
                tag: self.tag,
                want: Want::Requeue,
                acker,
                done: None,
            });
        }
    }
}

/// Collects what is settled, waking on each settle (taking all that came
/// meanwhile) or when a delivery behind a gap is due.
async fn send_frames(mut rx: mpsc::UnboundedReceiver<Settle>, max_waiting: usize) {
    let mut ledger: Ledger<(Acker, Option<oneshot::Sender<bool>>)> =
        Ledger::new(LINGER, max_waiting);
    let mut open = true;
    while open || ledger.next_due().is_some() {
        let due = ledger.next_due();
        tokio::select! {
            got = rx.recv(), if open => match got {
                Some(s) => {
                    let now = Instant::now();
                    ledger.settle(s.tag, s.want, now, (s.acker, s.done));
                    while let Ok(s) = rx.try_recv() {
                        ledger.settle(s.tag, s.want, now, (s.acker, s.done));
                    }
                }
                None => open = false,
            },
            () = sleep_until(due) => {}
        }
        for (frame, with) in ledger.ready(Instant::now(), !open) {
            send(frame, with).await;
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Sends one frame through the acker of its highest delivery and tells
/// everyone it answers for.
async fn send(frame: Frame, with: Vec<(Acker, Option<oneshot::Sender<bool>>)>) {
    let Some((acker, _)) = with.last() else {
        return;
    };
    let sent = match frame {
        // The acker of the highest tag is the frame's: multiple covers the rest.
        Frame::Ack { multiple, .. } => acker.ack(BasicAckOptions { multiple }).await,
        Frame::Requeue { .. } => {
            acker
                .nack(BasicNackOptions {
                    requeue: true,
                    multiple: false,
                })
                .await
        }
    };
    let sent = matches!(sent, Ok(true));
    for (_, done) in with {
        if let Some(done) = done {
            let _ = done.send(sent);
        }
    }
}

#[cfg(test)]
mod tests {
    //! Against the local RabbitMQ: what the broker sees of each answer.
    use super::*;
    use futures_util::StreamExt;
    use lapin::{
        BasicProperties, Connection, ConnectionProperties,
        options::{BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions},
        types::FieldTable,
    };

    async fn ready(ch: &lapin::Channel, queue: &str) -> u32 {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        ch.queue_declare(queue.into(), passive, FieldTable::default())
            .await
            .map(|q| q.message_count())
            .unwrap_or(u32::MAX)
    }

    #[test]
    fn nine_tenths_of_the_window_may_wait_and_never_all_of_it() {
        assert_eq!(max_waiting(1000), 900);
        assert_eq!(max_waiting(100), 90);
        assert_eq!(max_waiting(10), 9);
        assert_eq!(max_waiting(5), 4);
        assert_eq!(max_waiting(1), 0);
        assert_eq!(max_waiting(0), 0);
    }

    /// A delivery whose slot is dropped unanswered (its task panicked) goes
    /// back to the queue at once, and the ones acked around it do not.
    #[tokio::test]
    async fn a_slot_dropped_unanswered_requeues_its_delivery() {
        let amqp = "amqp://guest:guest@127.0.0.1:5672/%2f";
        let conn = Connection::connect(amqp, ConnectionProperties::default())
            .await
            .expect("RabbitMQ on 127.0.0.1:5672");
        let queue = format!("nw-acks-{}", uuid::Uuid::new_v4().simple());
        let ch = conn.create_channel().await.unwrap();
        ch.queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        for body in [b"1", b"2", b"3"] {
            ch.basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default(),
            )
            .await
            .unwrap();
        }
        let consuming = conn.create_channel().await.unwrap();
        consuming
            .basic_qos(10, BasicQosOptions::default())
            .await
            .unwrap();
        let mut consumer = consuming
            .basic_consume(
                queue.as_str().into(),
                "t".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let acks = Acks::start(10);
        let mut slots = Vec::new();
        for _ in 0..3 {
            let delivery = consumer.next().await.unwrap().unwrap();
            slots.push(acks.slot(&delivery));
        }
        let third = slots.pop().unwrap();
        let second = slots.pop().unwrap();
        let first = slots.pop().unwrap();
        // Cancelled first, so a requeued message is not delivered to us again.
        consuming
            .basic_cancel("t".into(), Default::default())
            .await
            .unwrap();
        drop(second);
        assert!(first.ack().await);
        assert!(third.ack().await);
        let mut back = 0;
        for _ in 0..50 {
            back = ready(&ch, &queue).await;
            if back > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = ch
            .queue_delete(queue.as_str().into(), Default::default())
            .await;
        let _ = conn.close(200, "done".into()).await;
        assert_eq!(back, 1, "only the unanswered delivery is back");
    }
}
