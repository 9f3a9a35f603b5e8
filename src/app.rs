//! Assembling the worker: database, broker session, key watchers, admin
//! server; keeping the broker session alive; taking it all down in order.

use crate::{
    admin::{self, BindError, Readiness},
    configuration::WorkerConfig,
    deadletter::{DeadLetterStore, StoreError},
    gate::Gate,
    keywatch, metrics,
    process::{Pipeline, Route},
    provider::Provider,
    secret::redact_url,
    session::{BrokerHealth, Session, SessionError},
    writer::DeadLetterWriter,
};
use lapin::uri::AMQPUri;
use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Longest wait between reconnection attempts.
const RECONNECT_CAP: Duration = Duration::from_secs(2);

/// Why the worker could not start: each names the thing at fault.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Admin(#[from] BindError),
}

/// A started worker. Stop it through its shutdown token, then [`Worker::run`] returns.
pub struct Worker {
    admin_addr: SocketAddr,
    shutdown: CancellationToken,
    session: Option<Session>,
    pipeline: Arc<Pipeline>,
    health: Arc<BrokerHealth>,
    amqp: AMQPUri,
    amqp_redacted: String,
    prefetch: u16,
    tracker: TaskTracker,
    drain_timeout: Duration,
    admin_task: tokio::task::JoinHandle<()>,
}

impl Worker {
    /// Connects to the database (migrating unless disabled) and the broker,
    /// declares the topology, starts both consumers, the key watchers and
    /// the admin server. Any failure here ends start-up.
    pub async fn start(config: WorkerConfig) -> Result<Self, WorkerError> {
        let metrics = metrics::handle();
        let store =
            DeadLetterStore::connect(&config.database_url, &redact_url(&config.database_url))
                .await?;
        if config.migrate {
            store.migrate().await?;
        }
        let shutdown = CancellationToken::new();
        let route = |client: crate::provider::ProviderClient, provider: Provider| Route {
            gate: Arc::new(Gate::new(provider, config.circuit)),
            client,
        };
        let pipeline = Arc::new(Pipeline {
            email: route(config.email, Provider::MigoSmtp),
            sms: route(config.sms, Provider::Telnxo),
            retry: config.retry,
            writer: DeadLetterWriter::spawn(store.clone()),
            topology: config.topology.clone(),
            max_body_bytes: config.max_body_bytes,
            max_redeliveries: config.max_redeliveries,
            shutdown: shutdown.clone(),
        });
        let tracker = TaskTracker::new();
        let health = Arc::new(BrokerHealth::new(config.consumers_per_queue));
        let session = Session::open(
            &config.amqp,
            &config.amqp_redacted,
            config.prefetch,
            &pipeline,
            &tracker,
            &health,
        )
        .await?;

        let readiness = Readiness {
            health: Arc::clone(&health),
            store,
        };
        let (admin_addr, admin_task) =
            match admin::serve(config.admin_addr, readiness, metrics, shutdown.clone()).await {
                Ok(served) => served,
                Err(e) => {
                    shutdown.cancel();
                    session.close().await;
                    return Err(e.into());
                }
            };
        for (file, route) in [
            (config.email_key_file, &pipeline.email),
            (config.sms_key_file, &pipeline.sms),
        ] {
            if let Some(file) = file {
                keywatch::spawn(
                    file,
                    config.key_poll,
                    route.client.clone(),
                    Arc::clone(&route.gate),
                    shutdown.clone(),
                );
            }
        }
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
            session: Some(session),
            pipeline,
            health,
            amqp: config.amqp,
            amqp_redacted: config.amqp_redacted,
            prefetch: config.prefetch,
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

    /// Runs until shutdown. A broker session that fails (connection lost,
    /// consumer cancelled or ended) is replaced by a new one; acks for the
    /// old one's deliveries fail quietly and the broker redelivers them.
    /// At shutdown, in-flight jobs get up to the drain timeout to settle,
    /// then channels and connection close; what is unacked then returns to
    /// the queue.
    pub async fn run(mut self) -> Result<(), WorkerError> {
        let mut session = self.session.take();
        while let Some(live) = session.as_mut() {
            let ended = tokio::select! {
                () = self.shutdown.cancelled() => break,
                ended = live.pumps.join_next() => ended,
            };
            let reason = match ended {
                Some(Ok(Err(e))) => e.to_string(),
                Some(Ok(Ok(()))) => "consumer stopped".to_owned(),
                Some(Err(e)) => format!("consumer task failed: {e}"),
                None => "no consumers".to_owned(),
            };
            self.health.connected.store(false, Ordering::SeqCst);
            for c in &self.health.consumers {
                c.store(false, Ordering::SeqCst);
            }
            tracing::warn!(%reason, "broker session lost; reconnecting");
            if let Some(dead) = session.take() {
                dead.close().await;
            }
            session = self.reconnect().await;
        }
        self.shutdown.cancel();
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
        if let Some(live) = session {
            live.close().await;
        }
        let _ = (&mut self.admin_task).await;
        Ok(())
    }

    /// Opens a new session with capped exponential backoff; `None` on shutdown.
    async fn reconnect(&self) -> Option<Session> {
        let mut wait = Duration::from_millis(100);
        let mut failures = 0u32;
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.shutdown.cancelled() => return None,
            }
            let opened = Session::open(
                &self.amqp,
                &self.amqp_redacted,
                self.prefetch,
                &self.pipeline,
                &self.tracker,
                &self.health,
            )
            .await;
            match opened {
                Ok(session) => {
                    tracing::info!(failures, "broker session restored; consuming again");
                    return Some(session);
                }
                Err(e) => {
                    failures += 1;
                    // Every attempt at debug; a reminder at warn now and then.
                    if failures % 10 == 1 {
                        tracing::warn!(error = %e, failures, "broker still unreachable; retrying");
                    } else {
                        tracing::debug!(error = %e, failures, "reconnect failed");
                    }
                    wait = (wait * 2).min(RECONNECT_CAP);
                }
            }
        }
    }
}
