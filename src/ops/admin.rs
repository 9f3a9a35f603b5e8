//! Admin HTTP: `/healthz`, `/readyz`, `/metrics` (contract section 5), and
//! whatever else the worker mounts beside them (the console).

use super::metrics::Metrics;
use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What `/readyz` asks. Implemented by the worker, which knows its broker
/// session and database; this module knows neither.
pub(crate) trait Readiness: Send + Sync + 'static {
    /// What keeps the worker from being ready; empty when it is.
    fn problems(&self) -> impl Future<Output = Vec<&'static str>> + Send;
}

struct AppState<R> {
    readiness: Arc<R>,
    metrics: Arc<Metrics>,
}

impl<R> Clone for AppState<R> {
    fn clone(&self) -> Self {
        Self {
            readiness: Arc::clone(&self.readiness),
            metrics: Arc::clone(&self.metrics),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on NOTIFY_ADMIN_ADDR {addr}: {source}")]
pub struct BindError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// Binds `addr` and serves until `shutdown`. Returns the bound address (port
/// 0 picks a free one) and the server task.
pub(crate) async fn serve<R: Readiness>(
    addr: SocketAddr,
    readiness: Arc<R>,
    metrics: Arc<Metrics>,
    more: Option<Router>,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), BindError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| BindError { addr, source })?;
    let upkeep = Arc::clone(&metrics);
    let upkeep_stop = shutdown.clone();
    tokio::spawn(async move {
        // The exporter's histograms need upkeep to drain their buffers.
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => upkeep.upkeep(),
                () = upkeep_stop.cancelled() => return,
            }
        }
    });
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz::<R>))
        .route("/metrics", get(metrics_text::<R>))
        .with_state(AppState { readiness, metrics });
    // The console and its API, when on: mounted beside the probes.
    let app = match more {
        Some(more) => app.merge(more),
        None => app,
    };
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

async fn readyz<R: Readiness>(State(state): State<AppState<R>>) -> impl IntoResponse {
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

async fn metrics_text<R: Readiness>(State(state): State<AppState<R>>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
