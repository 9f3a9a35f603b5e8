//! Assembling the worker: database, broker, consumers, admin server; and
//! taking it down again in order.

use crate::{
    admin::{self, BindError, Readiness},
    broker::{self, BrokerError},
    configuration::WorkerConfig,
    consume::{self, ConsumeError},
    deadletter::{DeadLetterStore, StoreError},
    job::Channel,
    metrics,
    process::Pipeline,
    secret::redact_url,
};
use std::{
    net::SocketAddr,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Why the worker could not start (or stopped): each names the thing at fault.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Consume(#[from] ConsumeError),
    #[error(transparent)]
    Admin(#[from] BindError),
    #[error("consumer stopped: {0}")]
    ConsumerStopped(String),
}

/// A started worker. Drop it only through [`Worker::run`].
pub struct Worker {
    admin_addr: SocketAddr,
    shutdown: CancellationToken,
    connection: Arc<lapin::Connection>,
    channels: Vec<lapin::Channel>,
    pumps: tokio::task::JoinSet<Result<(), ConsumeError>>,
    tracker: TaskTracker,
    drain_timeout: Duration,
    admin_task: tokio::task::JoinHandle<()>,
}

impl Worker {
    /// Connects to the database (migrating unless disabled) and the broker,
    /// declares the topology, starts both consumers and the admin server.
    pub async fn start(config: WorkerConfig) -> Result<Self, WorkerError> {
        let metrics = metrics::handle();
        let store =
            DeadLetterStore::connect(&config.database_url, &redact_url(&config.database_url))
                .await?;
        if config.migrate {
            store.migrate().await?;
        }
        let connection = broker::connect(&config.amqp_url, &redact_url(&config.amqp_url)).await?;
        let connection = Arc::new(connection);
        broker::declare(&connection, &config.topology).await?;

        let shutdown = CancellationToken::new();
        let pipeline = Arc::new(Pipeline {
            email: config.email,
            sms: config.sms,
            retry: config.retry,
            store: store.clone(),
            topology: config.topology.clone(),
            max_body_bytes: config.max_body_bytes,
            shutdown: shutdown.clone(),
        });
        let tracker = TaskTracker::new();
        let mut channels = Vec::new();
        let mut pumps = tokio::task::JoinSet::new();
        let mut flags = Vec::new();
        for channel in Channel::ALL {
            let running = Arc::new(AtomicBool::new(false));
            let consumer = consume::start(
                &connection,
                channel,
                config.prefetch,
                Arc::clone(&pipeline),
                tracker.clone(),
                Arc::clone(&running),
            )
            .await;
            match consumer {
                Ok((amqp, pump)) => {
                    channels.push(amqp);
                    pumps.spawn(pump);
                }
                Err(e) => {
                    shutdown.cancel();
                    let _ = connection.close(200, "start-up failed".into()).await;
                    return Err(e.into());
                }
            }
            flags.push(running);
        }
        let readiness = Readiness {
            connection: Arc::clone(&connection),
            consumers: flags,
            store,
        };
        let served = admin::serve(config.admin_addr, readiness, metrics, shutdown.clone()).await;
        let (admin_addr, admin_task) = match served {
            Ok(s) => s,
            Err(e) => {
                shutdown.cancel();
                let _ = connection.close(200, "start-up failed".into()).await;
                return Err(e.into());
            }
        };
        tracing::info!(
            admin_addr = %admin_addr,
            email_queue = %config.topology.email_queue,
            sms_queue = %config.topology.sms_queue,
            prefetch = config.prefetch,
            "notify-worker consuming"
        );
        Ok(Self {
            admin_addr,
            shutdown,
            connection,
            channels,
            pumps,
            tracker,
            drain_timeout: config.drain_timeout,
            admin_task,
        })
    }

    /// The bound admin address (useful when configured with port 0).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Cancelling this token stops the worker gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Runs until shutdown is requested or a consumer fails, then drains:
    /// in-flight jobs get up to the drain timeout to settle (and ack), after
    /// which channels and connection are closed; what is still unacked then
    /// goes back to the queue. A consumer failure is returned as the error.
    pub async fn run(mut self) -> Result<(), WorkerError> {
        let mut error = tokio::select! {
            () = self.shutdown.cancelled() => None,
            Some(done) = self.pumps.join_next() => Some(match done {
                Ok(Err(e)) => WorkerError::from(e),
                Ok(Ok(())) => WorkerError::ConsumerStopped("consumer ended without a shutdown".into()),
                Err(e) => WorkerError::ConsumerStopped(e.to_string()),
            }),
        };
        self.shutdown.cancel();
        while let Some(result) = self.pumps.join_next().await {
            if let Ok(Err(e)) = result
                && error.is_none()
            {
                error = Some(e.into());
            }
        }
        self.tracker.close();
        let in_flight = self.tracker.len();
        if tokio::time::timeout(self.drain_timeout, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                unfinished = self.tracker.len(),
                "drain timeout reached; unfinished jobs stay unacked and return to the queue"
            );
        } else {
            tracing::info!(drained = in_flight, "in-flight jobs settled");
        }
        for channel in &self.channels {
            let _ = channel.close(200, "shutdown".into()).await;
        }
        let _ = self.connection.close(200, "shutdown".into()).await;
        let _ = (&mut self.admin_task).await;
        match error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
