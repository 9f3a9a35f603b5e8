//! Sandbox providers: fake MigoSMTP and Telnxo APIs for local development
//! and for other teams' integration tests. They enforce the real APIs' key
//! rules, and can be told to be slow or to fail.

use crate::domain::{ApiKey, Channel, DecodeInput, decode};
use axum::{
    Json, Router,
    body::Bytes,
    extract::{RawQuery, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Serialize;
use serde_json::json;
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};
use tokio_util::sync::CancellationToken;

/// Requests kept in the log; older ones are dropped.
const LOG_CAPACITY: usize = 10_000;

/// A failure by recipient: jobs whose `to` matches `pattern` get `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailRule {
    /// `*` matches any run of characters.
    pub pattern: String,
    pub status: u16,
}

impl std::str::FromStr for FailRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (pattern, status) = s
            .rsplit_once('=')
            .ok_or_else(|| format!("`{s}` is not PATTERN=STATUS"))?;
        let status: u16 = status
            .parse()
            .ok()
            .filter(|s| (100..=599).contains(s))
            .ok_or_else(|| format!("`{status}` is not an HTTP status"))?;
        Ok(Self {
            pattern: pattern.to_owned(),
            status,
        })
    }
}

#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub migosmtp_key: ApiKey,
    pub telnxo_key: ApiKey,
    pub latency: Duration,
    /// Share of calls (0 to 1) answered 503.
    pub fail_rate: f64,
    pub fail_rules: Vec<FailRule>,
    /// Largest body accepted, as the worker's `NOTIFY_MAX_BODY_BYTES`.
    pub max_body_bytes: usize,
}

/// One request as the log shows it. Never holds a key.
#[derive(Debug, Clone, Serialize)]
pub struct Logged {
    pub at: String,
    pub provider: &'static str,
    pub to: Option<String>,
    pub status: u16,
    pub error_code: Option<String>,
    /// `valid`, `missing`, `malformed`, `wrong`, `other_platform` or `in_url`.
    pub authorization: &'static str,
    pub body: serde_json::Value,
}

struct Shared {
    config: SandboxConfig,
    log: Mutex<Vec<Logged>>,
}

/// Binds `addr` and serves until `shutdown`; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    config: SandboxConfig,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let shared = Arc::new(Shared {
        config,
        log: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route("/v1/email/send", post(email))
        .route("/v1/sms/send", post(sms))
        .route("/_sandbox/requests", get(requests).delete(clear))
        .with_state(shared);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
    });
    Ok((local, task))
}

async fn email(State(s): State<Arc<Shared>>, q: RawQuery, h: HeaderMap, body: Bytes) -> Response {
    handle(&s, Channel::Email, q.0, &h, &body).await
}

async fn sms(State(s): State<Arc<Shared>>, q: RawQuery, h: HeaderMap, body: Bytes) -> Response {
    handle(&s, Channel::Sms, q.0, &h, &body).await
}

async fn requests(State(s): State<Arc<Shared>>) -> Json<Vec<Logged>> {
    Json(s.log.lock().unwrap_or_else(|e| e.into_inner()).clone())
}

async fn clear(State(s): State<Arc<Shared>>) -> StatusCode {
    s.log.lock().unwrap_or_else(|e| e.into_inner()).clear();
    StatusCode::NO_CONTENT
}

fn error(status: u16, code: &str, message: &str) -> (u16, Option<String>, serde_json::Value) {
    (
        status,
        Some(code.to_owned()),
        json!({"error": {"code": code, "message": message}}),
    )
}

async fn handle(
    s: &Shared,
    channel: Channel,
    query: Option<String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let c = &s.config;
    let (own, other, provider) = match channel {
        Channel::Email => (&c.migosmtp_key, &c.telnxo_key, "migosmtp"),
        Channel::Sms => (&c.telnxo_key, &c.migosmtp_key, "telnxo"),
    };
    let parsed: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    let to = parsed.get("to").and_then(|v| v.as_str()).map(str::to_owned);
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let key_in_url = query.as_deref().is_some_and(|q| {
        q.contains(own.expose())
            || q.contains(other.expose())
            || q.split('&').any(|p| {
                let name = p.split('=').next().unwrap_or("").to_ascii_lowercase();
                matches!(
                    name.as_str(),
                    "api_key" | "apikey" | "key" | "token" | "access_token"
                )
            })
    });
    let (auth, verdict) = match given.map(|g| g.strip_prefix("Bearer ")) {
        _ if key_in_url => (
            "in_url",
            Some(error(
                401,
                "authentication_failed",
                "API keys are not accepted in the URL: send `Authorization: Bearer KEY`",
            )),
        ),
        None => (
            "missing",
            Some(error(
                401,
                "authentication_failed",
                "Authorization header missing",
            )),
        ),
        Some(None) => (
            "malformed",
            Some(error(
                401,
                "authentication_failed",
                "Authorization header must be `Bearer KEY`",
            )),
        ),
        Some(Some(k)) if k == own.expose() => ("valid", None),
        Some(Some(k)) if k == other.expose() => (
            "other_platform",
            Some(error(
                401,
                "invalid_api_key",
                "this key belongs to the other platform",
            )),
        ),
        Some(Some(_)) => (
            "wrong",
            Some(error(
                401,
                "invalid_api_key",
                "API key malformed, incorrect or revoked",
            )),
        ),
    };
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    let (status, code, reply) = match verdict {
        Some(v) => v,
        None if !json_type => error(
            415,
            "invalid_request",
            "Content-Type must be application/json",
        ),
        None => match decode(DecodeInput {
            channel,
            body,
            message_id: None,
            max_bytes: c.max_body_bytes,
        }) {
            Err(invalid) => error(422, "invalid_request", &invalid.reason),
            Ok(_) => {
                let rule = to
                    .as_deref()
                    .and_then(|to| c.fail_rules.iter().find(|r| glob(&r.pattern, to)));
                match rule {
                    Some(r) => error(
                        r.status,
                        "sandbox_failure",
                        "failure requested by a --fail-to rule",
                    ),
                    None if c.fail_rate > 0.0 && fastrand::f64() < c.fail_rate => {
                        error(503, "unavailable", "failure requested by --fail-rate")
                    }
                    None => (
                        200,
                        None,
                        json!({"id": uuid::Uuid::new_v4().to_string(), "status": "queued"}),
                    ),
                }
            }
        },
    };
    if !c.latency.is_zero() {
        tokio::time::sleep(c.latency).await;
    }
    {
        let mut log = s.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() >= LOG_CAPACITY {
            log.remove(0);
        }
        log.push(Logged {
            at: httpdate::fmt_http_date(SystemTime::now()),
            provider,
            to,
            status,
            error_code: code,
            authorization: auth,
            body: parsed,
        });
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(reply)).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    response
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first)
        || !text[first.len()..].ends_with(last)
        || text.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("*@bounce.test", "a@bounce.test"));
        assert!(glob("+1555*", "+15550001"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxc"));
        assert!(glob("exact@x.io", "exact@x.io"));
        assert!(!glob("ab*ba", "aba"));
    }

    #[test]
    fn parses_fail_rules() {
        assert_eq!(
            "*@x=422".parse::<FailRule>(),
            Ok(FailRule {
                pattern: "*@x".into(),
                status: 422
            })
        );
        assert!("nope".parse::<FailRule>().is_err());
        assert!("a=999".parse::<FailRule>().is_err());
    }
}
