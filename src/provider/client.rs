//! A typed client for one provider: MigoSMTP for email, Telnxo for SMS.
//! Each holds only its own key; its connections are in [`super::transport`].

use super::transport::{Call, HttpOptions, Transport};
use crate::domain::{ApiKey, JobId, Message, Provider};
use hyper::header::HeaderValue;
use std::{
    fmt,
    sync::{Arc, RwLock},
    time::{Duration, Instant, SystemTime},
};

/// What one call came back with.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    Http {
        status: u16,
        retry_after: Option<Duration>,
        /// As text, at most `NOTIFY_MAX_RESPONSE_BYTES` of it; any key the
        /// provider echoed replaced by `[redacted]`.
        body: String,
    },
    /// No response: connect error, reset, timeout.
    NoResponse(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{setting} is not a valid base URL: {reason}")]
    BadUrl {
        setting: &'static str,
        reason: String,
    },
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// Where a provider's calls go, for their spans.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) url: String,
    pub(crate) host: String,
    pub(crate) port: u16,
}

/// A call's trace context, sent as `traceparent` / `tracestate`.
#[derive(Debug, Default)]
pub(crate) struct TraceHeaders {
    pub(crate) traceparent: Option<String>,
    pub(crate) tracestate: Option<String>,
}

/// A typed client for one provider.
#[derive(Clone)]
pub(crate) struct ProviderClient {
    provider: Provider,
    endpoint: Arc<Endpoint>,
    transport: Arc<Transport>,
    /// Shared with the key-file watcher, which replaces it on rotation.
    key: Arc<RwLock<ApiKey>>,
}

impl fmt::Debug for ProviderClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderClient")
            .field("provider", &self.provider)
            .field("url", &self.transport.url().as_str())
            .finish_non_exhaustive()
    }
}

impl ProviderClient {
    pub(crate) fn new(
        provider: Provider,
        base_url: &str,
        url_setting: &'static str,
        key: ApiKey,
        options: HttpOptions,
    ) -> Result<Self, ClientError> {
        let bad = |reason: String| ClientError::BadUrl {
            setting: url_setting,
            reason,
        };
        let base = reqwest::Url::parse(base_url).map_err(|e| bad(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(bad("scheme must be http or https".into()));
        }
        let url = base
            .join(&format!(
                "{}{}",
                base.path().trim_end_matches('/'),
                provider.path()
            ))
            .map_err(|e| bad(e.to_string()))?;
        let endpoint = Endpoint {
            url: url.as_str().to_owned(),
            host: url.host_str().unwrap_or_default().to_owned(),
            port: url.port_or_known_default().unwrap_or(0),
        };
        let transport = Transport::new(provider, options, url).map_err(ClientError::Build)?;
        Ok(Self {
            provider,
            endpoint: Arc::new(endpoint),
            transport: Arc::new(transport),
            key: Arc::new(RwLock::new(key)),
        })
    }

    /// The key in use.
    pub(crate) fn key(&self) -> ApiKey {
        self.key.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Uses `key` from the next call on; calls under way keep the old one.
    pub(crate) fn set_key(&self, key: ApiKey) {
        *self.key.write().unwrap_or_else(|e| e.into_inner()) = key;
    }

    pub(crate) fn provider(&self) -> Provider {
        self.provider
    }

    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Sends `message` once. Never fails: a missing response is an
    /// [`Answer::NoResponse`], which the caller classifies as transient.
    /// `Idempotency-Key` is the job's id, the same on every attempt and
    /// redelivery (contract section 7).
    pub(crate) async fn send(
        &self,
        message: &Message,
        job_id: &JobId,
        trace: TraceHeaders,
    ) -> (Answer, Duration) {
        let started = Instant::now();
        let key = self.key();
        let body = match super::request::body(message) {
            Ok(body) => body,
            // Jobs are plain strings; this is not expected.
            Err(e) => {
                return (
                    Answer::NoResponse(format!("request error: cannot encode the job: {e}")),
                    started.elapsed(),
                );
            }
        };
        // A context that is not a valid header value is not sent.
        let header = |v: Option<String>| v.and_then(|v| HeaderValue::try_from(v).ok());
        let call = Call {
            authorization: authorization(&key),
            // Ids have no control characters; non-ASCII goes as UTF-8 bytes.
            idempotency_key: HeaderValue::from_bytes(job_id.as_str().as_bytes()).ok(),
            body: body.into(),
            traceparent: header(trace.traceparent),
            tracestate: header(trace.tracestate),
        };
        let reply = match self.transport.call(&call).await {
            Ok(reply) => reply,
            Err(error) => return (Answer::NoResponse(error), started.elapsed()),
        };
        let retry_after = reply
            .retry_after
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        // Some APIs echo the key they refused: it must not reach a row.
        let text = String::from_utf8_lossy(&reply.body).replace(key.expose(), "[redacted]");
        let response = Answer::Http {
            status: reply.status,
            retry_after,
            body: text,
        };
        (response, started.elapsed())
    }
}

/// `Bearer <key>`, marked sensitive so no HTTP layer prints it.
fn authorization(key: &ApiKey) -> HeaderValue {
    // The key was checked for whitespace and control characters at parse
    // time; the fallback only keeps this total.
    let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
    value.set_sensitive(true);
    value
}

/// Parses a `Retry-After` value: delta-seconds or an HTTP date.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::HttpVersion;

    #[test]
    fn parses_both_retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after(" 3 ", now), Some(Duration::from_secs(3)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(7)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(7));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn url_joins_base_with_a_path() {
        let key = ApiKey::parse("k", "X").unwrap();
        let c = ProviderClient::new(
            Provider::Telnxo,
            "http://127.0.0.1:9/prefix/",
            "TELNXO_BASE_URL",
            key.clone(),
            options(HttpVersion::Http1, 4),
        )
        .unwrap();
        assert_eq!(
            c.transport.url().as_str(),
            "http://127.0.0.1:9/prefix/v1/sms/send"
        );
        let err = ProviderClient::new(
            Provider::Telnxo,
            "ftp://x",
            "TELNXO_BASE_URL",
            key,
            options(HttpVersion::Http1, 4),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("TELNXO_BASE_URL"));
    }

    fn options(version: HttpVersion, max_in_flight: usize) -> HttpOptions {
        HttpOptions {
            timeout: Duration::from_secs(1),
            version,
            max_in_flight,
            streams_per_connection: 100,
            max_response_bytes: 64 * 1024,
        }
    }
}
