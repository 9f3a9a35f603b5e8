//! One broker session: a connection, the topology declared on it, and a
//! consumer per queue. When it fails the worker drops it and opens another.

use super::{
    consumer::{self, ConsumeError},
    topology::{self, BrokerError, Topology},
};
use crate::pipeline::{Pipeline, Source};
use lapin::uri::AMQPUri;
use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};
use tokio::task::JoinSet;
use tokio_util::task::TaskTracker;

/// What `/readyz` knows of the broker side.
#[derive(Debug)]
pub(crate) struct BrokerHealth {
    pub(crate) connected: AtomicBool,
    /// One flag per consumer, email's first.
    pub(crate) consumers: Vec<Arc<AtomicBool>>,
}

impl BrokerHealth {
    /// For the consumers `plan` starts.
    pub(crate) fn new(plan: &SessionPlan) -> Self {
        Self {
            connected: AtomicBool::new(false),
            consumers: plan
                .consumers()
                .iter()
                .map(|_| Arc::new(AtomicBool::new(false)))
                .collect(),
        }
    }

    pub(crate) fn ready(&self) -> (bool, bool) {
        (
            self.connected.load(Ordering::SeqCst),
            self.consumers.iter().all(|c| c.load(Ordering::SeqCst)),
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Consume(#[from] ConsumeError),
}

/// What a session needs to be opened, again and again.
pub(crate) struct SessionPlan {
    pub(crate) uri: AMQPUri,
    /// The URL with its password masked, for messages.
    pub(crate) redacted: String,
    pub(crate) topology: Topology,
    pub(crate) prefetch: u16,
    /// Consumers (AMQP channels) per bulk queue and shard.
    pub(crate) consumers_per_queue: usize,
    /// The urgent queues' prefetch, one consumer each.
    pub(crate) urgent_prefetch: u16,
}

impl SessionPlan {
    /// Each consumer to start: its queue, its number and its prefetch.
    fn consumers(&self) -> Vec<(Arc<Source>, usize, u16)> {
        self.topology
            .sources()
            .into_iter()
            .flat_map(|source| {
                let (n, prefetch) = if source.urgent {
                    (1, self.urgent_prefetch)
                } else {
                    (self.consumers_per_queue, self.prefetch)
                };
                let source = Arc::new(source);
                (0..n).map(move |i| (Arc::clone(&source), i, prefetch))
            })
            .collect()
    }
}

pub(crate) struct Session {
    connection: lapin::Connection,
    /// Kept open until in-flight jobs settle: their acks go through them.
    channels: Vec<lapin::Channel>,
    pub(crate) pumps: JoinSet<Result<(), ConsumeError>>,
}

impl Session {
    /// Connects, declares the topology and starts a consumer per queue
    /// (urgent, main, shards) and per `consumers_per_queue`.
    pub(crate) async fn open(
        plan: &SessionPlan,
        pipeline: &Arc<Pipeline>,
        tracker: &TaskTracker,
        health: &BrokerHealth,
    ) -> Result<Self, SessionError> {
        let connection = topology::connect(&plan.uri, &plan.redacted).await?;
        let mut session = Self {
            connection,
            channels: Vec::new(),
            pumps: JoinSet::new(),
        };
        let started = session.start(plan, pipeline, tracker, health).await;
        if let Err(e) = started {
            session.close().await;
            return Err(e);
        }
        health.connected.store(true, Ordering::SeqCst);
        Ok(session)
    }

    async fn start(
        &mut self,
        plan: &SessionPlan,
        pipeline: &Arc<Pipeline>,
        tracker: &TaskTracker,
        health: &BrokerHealth,
    ) -> Result<(), SessionError> {
        topology::declare(&self.connection, &plan.topology).await?;
        for ((source, index, prefetch), running) in
            plan.consumers().into_iter().zip(&health.consumers)
        {
            let (amqp, pump) = consumer::start(
                &self.connection,
                source,
                index,
                prefetch,
                Arc::clone(pipeline),
                tracker.clone(),
                Arc::clone(running),
            )
            .await?;
            self.channels.push(amqp);
            self.pumps.spawn(pump);
        }
        Ok(())
    }

    /// Closes channels, then the connection. Deliveries still unacked go
    /// back to their queues.
    pub(crate) async fn close(mut self) {
        self.pumps.abort_all();
        let closing = async {
            for channel in &self.channels {
                let _ = channel.close(200, "shutdown".into()).await;
            }
            let _ = self.connection.close(200, "shutdown".into()).await;
        };
        // A dead connection must not hold up a reconnect or an exit.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), closing).await;
    }
}
