//! Admin HTTP: `/healthz`, `/readyz`, `/metrics` (contract section 5).

use crate::{deadletter::DeadLetterStore, session::BrokerHealth};
use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use metrics_exporter_prometheus::PrometheusHandle;
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What readiness is judged on.
#[derive(Clone)]
pub struct Readiness {
    pub health: Arc<BrokerHealth>,
    pub store: DeadLetterStore,
}

impl Readiness {
    /// Broker connected, every consumer running, and the database answering.
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

#[derive(Clone)]
struct AppState {
    readiness: Readiness,
    metrics: PrometheusHandle,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on NOTIFY_ADMIN_ADDR {addr}: {source}")]
pub struct BindError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// Binds `addr` and serves until `shutdown`. Returns the bound address (port
/// 0 picks a free one) and the server task.
pub async fn serve(
    addr: SocketAddr,
    readiness: Readiness,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), BindError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| BindError { addr, source })?;
    let upkeep = metrics.clone();
    let upkeep_stop = shutdown.clone();
    tokio::spawn(async move {
        // The exporter's histograms and idle-metric sweeping need upkeep.
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => upkeep.run_upkeep(),
                () = upkeep_stop.cancelled() => return,
            }
        }
    });
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { readiness, metrics });
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "admin server stopped");
        }
    });
    Ok((local, task))
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let problems = state.readiness.problems().await;
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join(", ")),
        )
    }
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
