//! Provider HTTP clients: MigoSMTP for email, Telnxo for SMS. One pooled
//! client per provider, each holding only its own key.
//!
//! HTTP/1.1 needs a connection per call in flight, and each costs about
//! 30 KiB here (hyper's buffers and dispatch channel). HTTP/2 carries many
//! calls on one connection, but a server caps the streams per connection
//! (often 100 to 250) and hyper puts every call to one host on one
//! connection, queueing the rest; so with HTTP/2 calls are spread over
//! several lanes (each its own client, so its own connection). A lane is
//! filled before the next is used, and built on first use, so a light load
//! keeps one connection.

use crate::{
    job::{Channel, Message},
    secret::ApiKey,
};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use std::{
    fmt,
    sync::{
        Arc, OnceLock, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

/// Largest provider body kept (for `dead_letters.provider_response`).
pub const MAX_RESPONSE_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    MigoSmtp,
    Telnxo,
}

impl Provider {
    pub fn for_channel(channel: Channel) -> Self {
        match channel {
            Channel::Email => Provider::MigoSmtp,
            Channel::Sms => Provider::Telnxo,
        }
    }

    /// The value stored in `dead_letters.provider` and used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::MigoSmtp => "migosmtp",
            Provider::Telnxo => "telnxo",
        }
    }

    /// The setting a person must change when this provider refuses the key.
    pub fn key_setting(self) -> &'static str {
        match self {
            Provider::MigoSmtp => "MIGOSMTP_API_KEY",
            Provider::Telnxo => "TELNXO_API_KEY",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Provider::MigoSmtp => "/v1/email/send",
            Provider::Telnxo => "/v1/sms/send",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one HTTP call returned.
#[derive(Debug, Clone)]
pub enum Response {
    Http {
        status: u16,
        retry_after: Option<Duration>,
        /// At most [`MAX_RESPONSE_BYTES`], cut on a character boundary.
        body: String,
    },
    /// No response: connect error, reset, timeout.
    Transport(String),
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

/// The HTTP version spoken to providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HttpVersion {
    /// HTTP/1.1 only: a connection per call in flight.
    Http1,
    /// HTTP/2: offered by ALPN on https (HTTP/1.1 if the provider declines),
    /// prior knowledge (h2c) on plain http.
    Http2,
}

/// How a [`ProviderClient`] talks HTTP.
#[derive(Debug, Clone, Copy)]
pub struct HttpOptions {
    /// Timeout of one call, queueing for a connection included.
    pub timeout: Duration,
    pub version: HttpVersion,
    /// Most calls this client will have in flight (prefetch × consumers).
    pub max_in_flight: usize,
    /// HTTP/2 only: calls aimed at one connection; at most the provider's
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`.
    pub streams_per_connection: usize,
}

impl HttpOptions {
    /// Lanes needed so no connection carries more than its share of calls.
    fn lanes(&self) -> usize {
        match self.version {
            HttpVersion::Http1 => 1,
            HttpVersion::Http2 => self
                .max_in_flight
                .div_ceil(self.streams_per_connection.max(1))
                .max(1),
        }
    }
}

/// One reqwest client (so one connection pool), built on first use, and
/// the calls it carries.
struct Lane {
    http: OnceLock<reqwest::Client>,
    in_flight: AtomicUsize,
}

/// A lane taken for one call; gives it back when dropped.
struct LaneGuard<'a>(&'a Lane);

impl Drop for LaneGuard<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A typed client for one provider.
#[derive(Clone)]
pub struct ProviderClient {
    provider: Provider,
    lanes: Arc<[Lane]>,
    /// The first lane's client (cheap to clone: it is shared inside).
    first: reqwest::Client,
    options: HttpOptions,
    url: reqwest::Url,
    /// Shared with the key-file watcher, which replaces it on rotation.
    key: Arc<RwLock<ApiKey>>,
}

impl fmt::Debug for ProviderClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderClient")
            .field("provider", &self.provider)
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

impl ProviderClient {
    pub fn new(
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
        let lanes: Arc<[Lane]> = (0..options.lanes())
            .map(|_| Lane {
                http: OnceLock::new(),
                in_flight: AtomicUsize::new(0),
            })
            .collect();
        // The first lane now, so a setting the client refuses stops start-up.
        let first = http_client(&options, url.scheme() == "http")?;
        let _ = lanes[0].http.set(first.clone());
        Ok(Self {
            provider,
            lanes,
            first,
            options,
            url,
            key: Arc::new(RwLock::new(key)),
        })
    }

    /// The key in use.
    pub fn key(&self) -> ApiKey {
        self.key.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Uses `key` from the next call on; calls under way keep the old one.
    pub fn set_key(&self, key: ApiKey) {
        *self.key.write().unwrap_or_else(|e| e.into_inner()) = key;
    }

    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// Connections (HTTP/2) or pools (HTTP/1.1) calls are spread over.
    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// The first lane with room for one more call; if all are full (more
    /// calls than planned, e.g. while a drain overlaps a reconnect), the
    /// least busy.
    fn take_lane(&self) -> LaneGuard<'_> {
        let room = self.options.streams_per_connection.max(1);
        let with_room = self.lanes.iter().find(|lane| {
            lane.in_flight
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < room).then_some(n + 1)
                })
                .is_ok()
        });
        let lane = with_room.unwrap_or_else(|| {
            let lane = self
                .lanes
                .iter()
                .min_by_key(|lane| lane.in_flight.load(Ordering::Acquire))
                .unwrap_or(&self.lanes[0]);
            lane.in_flight.fetch_add(1, Ordering::AcqRel);
            lane
        });
        LaneGuard(lane)
    }

    /// The client of `lane`, built now if this is its first call.
    fn http<'a>(&'a self, lane: &'a Lane) -> &'a reqwest::Client {
        lane.http.get_or_init(|| {
            http_client(&self.options, self.url.scheme() == "http").unwrap_or_else(|e| {
                // The first lane was built with the same options, so this
                // is not expected; share its connection rather than fail.
                tracing::warn!(provider = %self.provider, error = %e, "cannot build another HTTP client; sharing the first");
                self.first.clone()
            })
        })
    }

    /// Sends `message` once. Never fails: a missing response is a
    /// [`Response::Transport`], which the caller classifies as transient.
    pub async fn send(&self, message: &Message) -> (Response, Duration) {
        let started = Instant::now();
        let key = self.key();
        let lane = self.take_lane();
        let request = self.http(lane.0).post(self.url.clone());
        let request = match message {
            Message::Email(job) => request.json(job),
            Message::Sms(job) => request.json(job),
        };
        let response = request
            .header(AUTHORIZATION, authorization(&key))
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => return (Response::Transport(describe(&e)), started.elapsed()),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| crate::retry::parse_retry_after(v, SystemTime::now()));
        let body = match response.bytes().await {
            // Some APIs echo the key they refused: it must not reach a row.
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes).replace(key.expose(), "[redacted]");
                truncate_utf8(text.as_bytes(), MAX_RESPONSE_BYTES)
            }
            Err(e) if status < 300 => {
                // The provider said yes; a body lost after that changes nothing.
                tracing::debug!(error = %describe(&e), "provider body unreadable after 2xx");
                String::new()
            }
            Err(e) => return (Response::Transport(describe(&e)), started.elapsed()),
        };
        let response = Response::Http {
            status,
            retry_after,
            body,
        };
        (response, started.elapsed())
    }
}

/// One pooled client. HTTP/1.1 keeps up to `max_in_flight` idle
/// connections so a steady load does not reconnect; HTTP/2 pings idle
/// connections so a dead one is noticed before a call waits on it.
fn http_client(options: &HttpOptions, plain: bool) -> Result<reqwest::Client, ClientError> {
    let builder = reqwest::Client::builder()
        .timeout(options.timeout)
        .connect_timeout(options.timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("notify-worker/", env!("CARGO_PKG_VERSION")));
    let builder = match options.version {
        HttpVersion::Http1 => builder
            .http1_only()
            .pool_max_idle_per_host(options.max_in_flight),
        HttpVersion::Http2 => {
            let builder = builder
                .pool_max_idle_per_host(options.max_in_flight)
                .http2_keep_alive_interval(Duration::from_secs(30))
                .http2_keep_alive_timeout(Duration::from_secs(10));
            // On https ALPN picks the version; plain http has no ALPN.
            if plain {
                builder.http2_prior_knowledge()
            } else {
                builder
            }
        }
    };
    builder
        .build()
        .map_err(|e| ClientError::Build(e.to_string()))
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

/// A transport error in words, with its kind first (timeout, connect, ...).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect error"
    } else if e.is_body() || e.is_decode() {
        "body error"
    } else {
        "request error"
    };
    let mut text = format!("{kind}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// Keeps at most `max` bytes of `bytes` as text, cut on a character boundary;
/// NUL, which Postgres text refuses, becomes U+FFFD.
pub fn truncate_utf8(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].replace('\0', "\u{FFFD}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_on_char_boundaries() {
        let s = "é".repeat(3000);
        let t = truncate_utf8(s.as_bytes(), MAX_RESPONSE_BYTES);
        assert!(t.len() <= MAX_RESPONSE_BYTES);
        assert_eq!(truncate_utf8(b"a\0b", 10), "a\u{FFFD}b");
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
        assert_eq!(c.url.as_str(), "http://127.0.0.1:9/prefix/v1/sms/send");
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
        }
    }

    fn client(version: HttpVersion, max_in_flight: usize) -> ProviderClient {
        let key = ApiKey::parse("k", "X").unwrap();
        ProviderClient::new(
            Provider::MigoSmtp,
            "http://127.0.0.1:9",
            "MIGOSMTP_BASE_URL",
            key,
            options(version, max_in_flight),
        )
        .unwrap()
    }

    #[test]
    fn http2_gets_a_lane_per_share_of_streams() {
        assert_eq!(client(HttpVersion::Http1, 5000).lanes(), 1);
        assert_eq!(client(HttpVersion::Http2, 100).lanes(), 1);
        assert_eq!(client(HttpVersion::Http2, 101).lanes(), 2);
        assert_eq!(client(HttpVersion::Http2, 5000).lanes(), 50);
    }

    #[test]
    fn a_lane_fills_before_the_next_is_built() {
        let c = client(HttpVersion::Http2, 300);
        let load = |c: &ProviderClient| -> Vec<usize> {
            c.lanes
                .iter()
                .map(|l| l.in_flight.load(Ordering::Relaxed))
                .collect()
        };
        let built = |c: &ProviderClient| c.lanes.iter().filter(|l| l.http.get().is_some()).count();
        let mut held: Vec<_> = (0..150).map(|_| c.take_lane()).collect();
        assert_eq!(load(&c), vec![100, 50, 0]);
        for guard in &held {
            c.http(guard.0);
        }
        assert_eq!(
            built(&c),
            2,
            "the third lane is not built before it is used"
        );
        // Calls ending on the first lane free room there first.
        held.drain(..10);
        assert_eq!(load(&c), vec![90, 50, 0]);
        held.push(c.take_lane());
        assert_eq!(load(&c), vec![91, 50, 0]);
        // All full: the least busy lane takes the extra call.
        held.extend((0..159).map(|_| c.take_lane()));
        assert_eq!(load(&c), vec![100, 100, 100]);
        held.push(c.take_lane());
        assert_eq!(load(&c).iter().sum::<usize>(), 301);
        held.clear();
        assert_eq!(load(&c), vec![0, 0, 0]);
    }
}
