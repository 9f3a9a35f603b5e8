//! Assembling the worker: database, broker session, key watchers, admin
//! server; keeping the broker session alive; taking it all down in order.

use crate::{
    WorkerConfig,
    broker::{BrokerHealth, Session, SessionError, SessionPlan},
    console,
    deadletter::{DeadLetterStore, DeadLetterWriter, StoreError},
    domain::{Channel, Provider, redact_url},
    ledger::{self, Backlog, Ledger, Unavailable},
    ops::{
        admin::{self, BindError, Readiness},
        metrics::Metrics,
    },
    pipeline::{Pipeline, Route},
    provider::{Fleet, Gate, ProviderClient, watch_key_file},
};
use backon::{ExponentialBuilder, Retryable};
use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

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
    plan: SessionPlan,
    pipeline: Arc<Pipeline>,
    health: Arc<BrokerHealth>,
    tracker: TaskTracker,
    drain_timeout: Duration,
    admin_task: tokio::task::JoinHandle<()>,
}

/// `/readyz`: broker connected, every consumer running, database answering.
struct Ready {
    health: Arc<BrokerHealth>,
    store: DeadLetterStore,
}

impl Readiness for Ready {
    async fn problems(&self) -> Vec<&'static str> {
        let mut problems = Vec::new();
        let (connected, consuming) = self.health.ready();
        if !connected {
            problems.push("broker disconnected");
        }
        if !consuming {
            problems.push("consumers not running");
        }
        if !self.store.ping().await {
            problems.push("database unreachable");
        }
        problems
    }
}

impl Worker {
    /// Connects to the database (migrating unless disabled) and the broker,
    /// declares the topology, starts both consumers, the key watchers and
    /// the admin server. Any failure here ends start-up.
    pub async fn start(config: WorkerConfig) -> Result<Self, WorkerError> {
        let metrics = Arc::new(Metrics::new());
        let url = &config.database_url;
        if config.migrate {
            // Migrations may rightly run long: their own pool, no timeout.
            let migrator = DeadLetterStore::connect(url, &redact_url(url), None).await?;
            migrator.migrate().await?;
            migrator.pool().close().await;
        }
        let store =
            DeadLetterStore::connect(url, &redact_url(url), Some(config.statement_timeout)).await?;
        let shutdown = CancellationToken::new();
        let route = |client: ProviderClient, flow| {
            let fleet = config.fleet_replicas.map(|replicas| Fleet {
                pool: store.pool().clone(),
                replicas,
            });
            let gate = Gate::new(
                client.provider(),
                config.pause,
                flow,
                Arc::clone(&metrics),
                fleet,
            );
            Route {
                client,
                gate: Arc::new(gate),
            }
        };
        let [email, sms] = config.clients;
        let [email_flow, sms_flow] = config.flow;
        let routes = [route(email, email_flow), route(sms, sms_flow)];
        let topology = &config.session.topology;
        let ledger = match config.ledger {
            Some(policy) => {
                let pool = store.sibling(ledger::CONNECTIONS, ledger::SESSION);
                // Partitions for today and ahead; should this fail, the
                // hourly upkeep tries again (the migration made some).
                if let Err(e) = ledger::maintain(&pool, policy.retention_days).await {
                    tracing::warn!(error = %e, "ledger partition upkeep failed at start-up");
                }
                ledger::spawn_maintenance(pool.clone(), policy.retention_days, shutdown.clone());
                let worker = ledger::worker_name();
                tracing::info!(%worker, lease_secs = policy.lease.as_secs_f64(), unavailable = ?policy.unavailable, "delivery ledger on");
                Some(Ledger::spawn(pool, policy, worker, shutdown.clone()))
            }
            None => None,
        };
        let backlog = ledger
            .as_ref()
            .filter(|l| l.policy.unavailable == Unavailable::Send)
            .map(|l| Backlog::spawn(l.clone(), Arc::clone(&metrics), shutdown.clone()));
        let pipeline = Arc::new(Pipeline {
            ledger,
            backlog,
            routes,
            retry: config.retry,
            writer: DeadLetterWriter::spawn(store.clone()),
            max_body_bytes: config.max_body_bytes,
            max_redeliveries: config.max_redeliveries,
            metrics: Arc::clone(&metrics),
            shutdown: shutdown.clone(),
        });
        let tracker = TaskTracker::new();
        let health = Arc::new(BrokerHealth::new(&config.session));
        let session = Session::open(&config.session, &pipeline, &tracker, &health).await?;

        let console = config.console.map(|console| {
            let gates = Channel::ALL.map(|c| Arc::clone(&pipeline.route(c).gate));
            tracing::info!("console on at /console, API at /api/v1/");
            console::router(
                console,
                store.pool().clone(),
                gates.to_vec(),
                Arc::clone(&metrics),
                shutdown.clone(),
            )
        });
        let ready = Arc::new(Ready {
            health: Arc::clone(&health),
            store,
        });
        let served = admin::serve(
            config.admin_addr,
            ready,
            Arc::clone(&metrics),
            console,
            shutdown.clone(),
        )
        .await;
        let (admin_addr, admin_task) = match served {
            Ok(served) => served,
            Err(e) => {
                shutdown.cancel();
                session.close().await;
                return Err(e.into());
            }
        };
        for (file, channel) in config.key_files.into_iter().zip(Channel::ALL) {
            if let Some(file) = file {
                let route = pipeline.route(channel);
                watch_key_file(
                    file,
                    config.key_poll,
                    route.client.clone(),
                    Arc::clone(&route.gate),
                    Arc::clone(&metrics),
                    shutdown.clone(),
                );
            }
        }
        tracing::info!(
            admin_addr = %admin_addr,
            email_queue = %topology.email_queue,
            sms_queue = %topology.sms_queue,
            shards = topology.shards,
            prefetch = config.session.prefetch,
            email_provider = %Provider::for_channel(Channel::Email),
            sms_provider = %Provider::for_channel(Channel::Sms),
            "notify-worker consuming"
        );
        Ok(Self {
            admin_addr,
            shutdown,
            session: Some(session),
            plan: config.session,
            pipeline,
            health,
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
            session = tokio::select! {
                opened = self.reconnect() => Some(opened?),
                () = self.shutdown.cancelled() => None,
            };
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

    /// Opens a new session, with capped exponential backoff between tries,
    /// for as long as it takes (the caller stops waiting on shutdown).
    async fn reconnect(&self) -> Result<Session, SessionError> {
        let backoff = ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(2))
            .without_max_times();
        let mut failures = 0u32;
        let open = || Session::open(&self.plan, &self.pipeline, &self.tracker, &self.health);
        // The first try waits too: the broker that just dropped us is
        // rarely back at once.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let opened = open
            .retry(backoff)
            .notify(|e, _| {
                failures += 1;
                // Every attempt at debug; a reminder at warn now and then.
                if failures % 10 == 1 {
                    tracing::warn!(error = %e, failures, "broker still unreachable; retrying");
                } else {
                    tracing::debug!(error = %e, failures, "reconnect failed");
                }
            })
            .await;
        if opened.is_ok() {
            tracing::info!(failures, "broker session restored; consuming again");
        }
        // An error only if the schedule ended, which it does not.
        opened
    }
}
