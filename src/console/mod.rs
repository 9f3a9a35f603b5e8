//! The operator console (`/console`, server-rendered HTML) and its JSON API
//! (`/api/v1/`), contract section 9: dead letters grouped by cause, the
//! filtered list, one dead letter with its delivery record, paced replay,
//! provider state. Off unless a token is set; every request needs it.
//!
//! The pages run no script at all, so the Content-Security-Policy can
//! forbid every script; every value is HTML-escaped by the templates
//! (maud), and recipients and texts are masked until an operator asks.

mod api;
mod auth;
mod html;
mod mask;
mod pages;
mod params;
pub(crate) mod replay;
mod views;

use crate::{domain::ApiKey, ops::metrics::Metrics, provider::Gate};
use auth::{Caller, Token};
use axum::{
    Router,
    extract::{DefaultBodyLimit, Request, State},
    http::{HeaderValue, Method, StatusCode, header},
    middleware::{Next, from_fn, from_fn_with_state},
    response::{IntoResponse, Response},
    routing::{any, get, post},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use std::{path::PathBuf, sync::Arc, sync::LazyLock, time::Duration};
use tokio_util::sync::CancellationToken;

pub(crate) use auth::parse_token;
pub(crate) use replay::{PublishPlan, Replays};

/// Largest request body (a replay of 1,000 ids fits many times over).
const MAX_BODY: usize = 64 * 1024;

/// The console's settings. No `Debug`: it holds the token and a URL.
pub(crate) struct ConsoleConfig {
    pub(crate) token: ApiKey,
    /// Re-read when it changes (`NOTIFY_CONSOLE_TOKEN_FILE`).
    pub(crate) token_file: Option<PathBuf>,
    pub(crate) poll: Duration,
    /// Default pace of a replay, rows a second.
    pub(crate) replay_rate: f64,
    /// Fastest pace an operator may choose.
    pub(crate) replay_max_rate: f64,
    pub(crate) publish: PublishPlan,
}

/// What every handler reads.
pub(crate) struct Console {
    token: Arc<Token>,
    db: PgPool,
    gates: Vec<Arc<Gate>>,
    replays: Arc<Replays>,
    metrics: Arc<Metrics>,
    replay_rate: f64,
    replay_max_rate: f64,
}

/// The console's routes, to merge into the admin server.
pub(crate) fn router(
    config: ConsoleConfig,
    db: PgPool,
    gates: Vec<Arc<Gate>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Router {
    let token = Token::new(config.token);
    if let Some(path) = config.token_file {
        auth::watch_file(Arc::clone(&token), path, config.poll, shutdown.clone());
    }
    let replays = Arc::new(Replays::new(
        db.clone(),
        config.publish,
        Arc::clone(&metrics),
        shutdown,
    ));
    let console = Arc::new(Console {
        token,
        db,
        gates,
        replays,
        metrics,
        replay_rate: config.replay_rate,
        replay_max_rate: config.replay_max_rate,
    });
    Router::new()
        .route("/console", get(pages::home))
        .route("/console/login", get(pages::logged_in))
        .route("/console/dead-letters/{id}", get(pages::detail))
        .route("/console/replay/confirm", post(pages::confirm))
        .route("/console/replay", post(pages::replay))
        .route("/console/replays/{id}", get(pages::progress))
        .route("/console/logout", post(pages::logout))
        .route("/console/{*rest}", any(pages::not_found))
        .route("/api/v1/dead-letters", get(api::list))
        .route("/api/v1/dead-letters/groups", get(api::groups))
        .route("/api/v1/dead-letters/replay", post(api::replay))
        .route("/api/v1/dead-letters/{id}", get(api::show))
        .route("/api/v1/replays", get(api::replays))
        .route("/api/v1/replays/{id}", get(api::progress))
        .route("/api/v1/deliveries/{job_id}", get(api::delivery))
        .route("/api/v1/providers", get(api::providers))
        .route("/api", any(api::not_found))
        .route("/api/{*rest}", any(api::not_found))
        .route_layer(from_fn_with_state(Arc::clone(&console), guard))
        // The one route open without the token: the login form's POST.
        .route("/console/login", post(pages::login))
        .layer(from_fn(security_headers))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(console)
}

fn is_api(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

/// Every route but the login: the token or a session, and for a change
/// (POST), proof the request did not come from another site.
async fn guard(State(console): State<Arc<Console>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let Some(caller) = auth::authenticate(&console.token, req.headers()) else {
        return unauthorized(&path, None);
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        if let Err(why) = auth::same_origin(req.headers()) {
            tracing::warn!(%path, %why, "console: cross-site request refused");
            return refused(&path, &why);
        }
        // Console forms carry their CSRF token in the form (see
        // `pages::Posted`); an API call by cookie carries it in a header.
        if let (true, Caller::Session(session)) = (is_api(&path), &caller) {
            let given = req
                .headers()
                .get(auth::CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !console.token.csrf_matches(session, given) {
                return refused(
                    &path,
                    "an API call by session cookie needs its X-Notify-CSRF header",
                );
            }
        }
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// 401, with nothing of the data: the login form for a page, a JSON
/// error for the API.
fn unauthorized(path: &str, message: Option<&str>) -> Response {
    if is_api(path) {
        let body = serde_json::json!({
            "error": "unauthorized",
            "message": "send Authorization: Bearer <NOTIFY_CONSOLE_TOKEN>",
        });
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"notify-worker\"")],
            axum::Json(body),
        )
            .into_response()
    } else {
        (StatusCode::UNAUTHORIZED, html::login(message)).into_response()
    }
}

/// 403 for a request from another site.
fn refused(path: &str, why: &str) -> Response {
    if is_api(path) {
        let body = serde_json::json!({"error": "forbidden", "message": why});
        (StatusCode::FORBIDDEN, axum::Json(body)).into_response()
    } else {
        (StatusCode::FORBIDDEN, html::message("Refused", why)).into_response()
    }
}

/// The page's only style sheet, inline, allowed by its hash.
static STYLE_HASH: LazyLock<String> =
    LazyLock::new(|| STANDARD.encode(Sha256::digest(html::CSS.as_bytes())));

/// Headers on every console and API answer: no script, no framing, no
/// sniffing, no caching, no referrer.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let csp = format!(
        "default-src 'none'; style-src 'sha256-{}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        *STYLE_HASH
    );
    let h = res.headers_mut();
    if let Ok(csp) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    res
}

/// A handler's failure: a bad parameter (400), nothing there (404), too
/// many replays (429) or the database (503, logged).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    #[error(transparent)]
    Bad(#[from] params::BadParam),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Busy(String),
    #[error("the database did not answer; try again")]
    Database(#[source] anyhow::Error),
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        Failure::Database(e.into())
    }
}

impl From<crate::deadletter::queries::QueryError> for Failure {
    fn from(e: crate::deadletter::queries::QueryError) -> Self {
        match e {
            crate::deadletter::queries::QueryError::NotFound(id) => {
                Failure::NotFound(format!("no dead letter with id {id}"))
            }
            other => Failure::Database(other.into()),
        }
    }
}

impl Failure {
    fn status(&self) -> StatusCode {
        match self {
            Failure::Bad(_) => StatusCode::BAD_REQUEST,
            Failure::NotFound(_) => StatusCode::NOT_FOUND,
            Failure::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
            Failure::Database(e) => {
                tracing::warn!(error = %format!("{e:#}"), "console: database query failed");
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }
}
