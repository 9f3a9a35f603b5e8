//! The HTTP connections to one provider's send endpoint.
//!
//! HTTP/1.1 needs a connection per call in flight, each with hyper's
//! buffers and dispatch channel; [`super::http1`] pools them. reqwest is
//! used only for a provider behind a proxy (it tunnels; these do not).
//! HTTP/2 carries many calls on one connection, but a server caps the
//! streams per connection (often 100 to 250), so calls are spread over
//! lanes, each one connection ([`super::http2`]). A lane is filled before
//! the next is used, and connects on first use, so a light load keeps one
//! connection.

use super::{
    body::{Chunks, HttpReply, chain, read_bounded},
    connect::{Connector, H2, HTTP1},
    http1::H1Pool,
    http2::{H2Connector, RequestBody, Slot},
};
use crate::domain::Provider;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Uri,
    header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT},
};
use hyper_util::client::proxy::matcher::Matcher;
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::time::Instant;

/// The HTTP version spoken to providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HttpVersion {
    /// HTTP/2 offered by ALPN on https (HTTP/1.1 if the provider declines),
    /// HTTP/1.1 on plain http, where nothing can be negotiated.
    Auto,
    /// HTTP/1.1 only: a connection per call in flight.
    Http1,
    /// HTTP/2: offered by ALPN on https (HTTP/1.1 if the provider declines),
    /// prior knowledge (h2c) on plain http.
    Http2,
}

/// How a provider client talks HTTP.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpOptions {
    /// Timeout of one call, queueing for a connection included.
    pub(crate) timeout: Duration,
    pub(crate) version: HttpVersion,
    /// Most calls this client will have in flight (prefetch × consumers).
    pub(crate) max_in_flight: usize,
    /// HTTP/2 only: calls aimed at one connection; at most the provider's
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`.
    pub(crate) streams_per_connection: usize,
    /// Most of a response body read; the rest is never buffered.
    pub(crate) max_response_bytes: usize,
}

impl HttpOptions {
    /// Calls one HTTP/2 lane takes before the next is used.
    fn room(&self) -> usize {
        self.streams_per_connection.max(1)
    }

    fn connect_timeout(&self) -> Duration {
        self.timeout.min(Duration::from_secs(5))
    }

    /// HTTP/2 lanes needed so no connection carries more than its share.
    fn lanes(&self) -> usize {
        self.max_in_flight.div_ceil(self.room()).max(1)
    }
}

/// Where calls go: hyper's HTTP/1.1 ([`super::http1`]) or HTTP/2
/// ([`super::http2`]) connections, HTTP/2 falling back to HTTP/1.1 if the
/// provider declines it by ALPN; reqwest behind a proxy.
enum Engine {
    Http1(H1Pool),
    Http2 {
        lanes: Box<[Lane]>,
        connector: Arc<H2Connector>,
        /// For when the provider chooses HTTP/1.1 by ALPN: every call from
        /// then on (`declined`) goes this way.
        fallback: H1Pool,
        declined: AtomicBool,
    },
    /// Through `HTTPS_PROXY` and friends: reqwest, which tunnels.
    Proxied(reqwest::Client),
}

/// The connections to one provider's send endpoint.
pub(crate) struct Transport {
    provider: Provider,
    url: reqwest::Url,
    /// Absolute, for HTTP/2 (`:scheme`, `:authority`).
    uri: Uri,
    /// Origin form and `Host`, for HTTP/1.1: hyper's connection API sends
    /// the URI as given and adds no `Host`, which servers may refuse.
    path: Uri,
    host: HeaderValue,
    options: HttpOptions,
    engine: Engine,
}

use lanes::{Lane, take_lane};

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// One call's request: the JSON body and the `Authorization` value.
pub(crate) struct Call {
    pub(crate) authorization: HeaderValue,
    /// The job's id, so a provider can drop a call made twice.
    pub(crate) idempotency_key: Option<HeaderValue>,
    pub(crate) body: Bytes,
    /// W3C trace context, when the job has one.
    pub(crate) traceparent: Option<HeaderValue>,
    pub(crate) tracestate: Option<HeaderValue>,
}

impl Transport {
    /// Checks the settings now, so one the HTTP stack refuses stops
    /// start-up; connections wait for the first call.
    pub(crate) fn new(
        provider: Provider,
        options: HttpOptions,
        url: reqwest::Url,
    ) -> Result<Self, String> {
        let uri = url.as_str().parse::<Uri>().map_err(|e| e.to_string())?;
        let path = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse::<Uri>()
            .map_err(|e| e.to_string())?;
        let host = uri
            .authority()
            .map(|a| a.as_str())
            .ok_or("the URL has no host")?;
        let host = HeaderValue::from_str(host).map_err(|e| e.to_string())?;
        let http2 = match options.version {
            HttpVersion::Auto => url.scheme() == "https",
            HttpVersion::Http1 => false,
            HttpVersion::Http2 => true,
        };
        // reqwest honours HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY;
        // the HTTP/2 client here does not tunnel, so a provider reached
        // through a proxy is spoken to in HTTP/1.1 through reqwest.
        let proxied = Matcher::from_system().intercept(&uri).is_some();
        if http2 && proxied {
            tracing::info!(%provider, "a proxy is set for this provider: HTTP/1.1 through it");
        }
        let connect =
            |alpn: &[&[u8]]| Connector::new(provider, &url, options.connect_timeout(), alpn);
        let pool = |connector| H1Pool::new(connector, options.max_in_flight);
        let engine = if proxied {
            Engine::Proxied(http1_client(&options).map_err(|e| e.to_string())?)
        } else if http2 {
            Engine::Http2 {
                lanes: (0..options.lanes())
                    .map(|_| Lane {
                        slot: Slot::default(),
                        in_flight: AtomicUsize::new(0),
                    })
                    .collect(),
                connector: Arc::new(H2Connector::new(
                    connect(&[H2, HTTP1])?,
                    options.max_response_bytes,
                )),
                fallback: pool(connect(&[HTTP1])?),
                declined: AtomicBool::new(false),
            }
        } else {
            Engine::Http1(pool(connect(&[HTTP1])?))
        };
        Ok(Self {
            provider,
            url,
            uri,
            path,
            host,
            options,
            engine,
        })
    }

    pub(crate) fn url(&self) -> &reqwest::Url {
        &self.url
    }

    #[cfg(test)]
    fn lanes(&self) -> &[Lane] {
        match &self.engine {
            Engine::Http1(_) | Engine::Proxied(_) => &[],
            Engine::Http2 { lanes, .. } => lanes,
        }
    }

    /// POSTs `call` within the call timeout, queueing for a connection and
    /// reading the body included. `Err` holds why no response came, kind
    /// first (timeout, connect error, ...).
    pub(crate) async fn call(&self, call: &Call) -> Result<HttpReply, String> {
        let deadline = Instant::now() + self.options.timeout;
        let (lanes, connector, fallback, declined) = match &self.engine {
            Engine::Proxied(http) => return self.call_reqwest(http, call, deadline).await,
            Engine::Http1(pool) => return self.call_h1(pool, call, deadline).await,
            Engine::Http2 {
                lanes,
                connector,
                fallback,
                declined,
            } => (lanes, connector, fallback, declined),
        };
        if declined.load(Ordering::Relaxed) {
            return Box::pin(self.call_h1(fallback, call, deadline)).await;
        }
        let lane = take_lane(lanes, self.options.room());
        let request = || self.request(call, false);
        let sent = tokio::time::timeout_at(deadline, lane.0.slot.call(connector, request));
        match sent.await {
            Ok(Ok(Some(response))) => {
                let status = response.status().as_u16();
                let retry_after = response.headers().get(RETRY_AFTER).cloned();
                let (body, _) = self.read(response.into_body(), status, deadline).await;
                return Ok(HttpReply {
                    status,
                    retry_after,
                    body,
                });
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err(self.timed_out()),
        }
        drop(lane);
        if !declined.swap(true, Ordering::Relaxed) {
            tracing::info!(provider = %self.provider, "provider declined HTTP/2 by ALPN; using HTTP/1.1");
        }
        Box::pin(self.call_h1(fallback, call, deadline)).await
    }

    async fn call_h1(
        &self,
        pool: &H1Pool,
        call: &Call,
        deadline: Instant,
    ) -> Result<HttpReply, String> {
        let sent = tokio::time::timeout_at(deadline, pool.call(|| self.request(call, true))).await;
        let (response, sender) = match sent {
            Ok(Ok(sent)) => sent,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err(self.timed_out()),
        };
        let status = response.status().as_u16();
        let retry_after = response.headers().get(RETRY_AFTER).cloned();
        let (body, complete) = self.read(response.into_body(), status, deadline).await;
        if complete {
            pool.give_back(sender).await;
        }
        Ok(HttpReply {
            status,
            retry_after,
            body,
        })
    }

    fn timed_out(&self) -> String {
        format!("timeout: no response within {:?}", self.options.timeout)
    }

    /// The body, within the bound and the deadline, and whether it was
    /// read to its end; the status stands whatever happens to the body
    /// (see [`super::body`]).
    async fn read(&self, body: impl Chunks, status: u16, deadline: Instant) -> (Bytes, bool) {
        let max = self.options.max_response_bytes;
        let (body, cut) = read_bounded(body, max, deadline).await;
        if let Some(cut) = &cut {
            tracing::debug!(provider = %self.provider, status, kept = body.len(), ?cut, "provider body not read to its end");
        }
        (body, cut.is_none())
    }

    fn request(&self, call: &Call, http1: bool) -> Request<RequestBody> {
        let mut request = Request::new(Full::new(call.body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = if http1 {
            self.path.clone()
        } else {
            self.uri.clone()
        };
        let headers = request.headers_mut();
        if http1 {
            headers.insert(HOST, self.host.clone());
        }
        headers.insert(AUTHORIZATION, call.authorization.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        if let Some(v) = &call.idempotency_key {
            headers.insert(IDEMPOTENCY_KEY, v.clone());
        }
        if let Some(v) = &call.traceparent {
            headers.insert(TRACEPARENT, v.clone());
        }
        if let Some(v) = &call.tracestate {
            headers.insert(TRACESTATE, v.clone());
        }
        request
    }

    async fn call_reqwest(
        &self,
        http: &reqwest::Client,
        call: &Call,
        deadline: Instant,
    ) -> Result<HttpReply, String> {
        let mut request = http
            .post(self.url.clone())
            .header(AUTHORIZATION, call.authorization.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(v) = &call.idempotency_key {
            request = request.header(IDEMPOTENCY_KEY, v.clone());
        }
        if let Some(v) = &call.traceparent {
            request = request.header(TRACEPARENT, v.clone());
        }
        if let Some(v) = &call.tracestate {
            request = request.header(TRACESTATE, v.clone());
        }
        let response = request
            .body(call.body.clone())
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = response.status().as_u16();
        let retry_after = response.headers().get(RETRY_AFTER).cloned();
        let (body, _) = self.read(response, status, deadline).await;
        Ok(HttpReply {
            status,
            retry_after,
            body,
        })
    }
}

const USER_AGENT_VALUE: &str = concat!("notify-worker/", env!("CARGO_PKG_VERSION"));

/// The HTTP/1.1 client: keeps up to `max_in_flight` idle connections so a
/// steady load does not reconnect.
fn http1_client(options: &HttpOptions) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(options.timeout)
        .connect_timeout(options.connect_timeout())
        .pool_max_idle_per_host(options.max_in_flight)
        .user_agent(USER_AGENT_VALUE)
        .http1_only()
        // A send endpoint that redirects is misconfigured: its 3xx is the
        // answer, not a POST turned into a GET elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .build()
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
    format!("{kind}: {}", chain(e))
}

mod lanes;
#[cfg(test)]
mod tests;
