//! HTTP/2 connections to one provider, on hyper's connection API.
//!
//! Through reqwest each call in flight carried about 7 KiB more even over
//! HTTP/2 (massif: reqwest's request future, hyper-util's pooled-client
//! future, header copies for its redirect and retry layers), which put
//! 10,000 calls in flight near 200 MiB. hyper's HTTP/2 client, the one
//! reqwest drives underneath, needs little beyond the stream itself; here a
//! connection is a hyper `SendRequest`, opened on first use and again once
//! it has closed. Pooling is [`super::transport`]'s job: one [`Slot`] per lane.

use super::body::chain;
use crate::domain::Provider;
use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use http_body_util::Full;
use hyper::{
    Request, Response,
    body::Incoming,
    client::conn::http2::{Builder, SendRequest},
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::{sync::Arc, time::Duration};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use tokio_rustls::{
    TlsConnector,
    rustls::{self, ClientConfig, pki_types::ServerName},
};

pub(crate) type RequestBody = Full<Bytes>;

/// Why a call got no response. The kind comes first in the text, as in
/// reqwest's errors, so reasons read the same whatever the version.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    #[error("connect error: {0}")]
    Connect(String),
    #[error("request error: {0}")]
    Request(String),
}

/// Opens connections to one provider: TCP, then on https TLS offering h2
/// and http/1.1 by ALPN; on plain http, HTTP/2 by prior knowledge.
pub(crate) struct Connector {
    provider: Provider,
    host: String,
    port: u16,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
    /// Bytes a provider may send on one stream before we read them.
    stream_window: u32,
}

/// What a new connection turned out to be.
enum Opened {
    H2(SendRequest<RequestBody>),
    /// The provider chose HTTP/1.1 by ALPN.
    Declined,
}

impl Connector {
    /// Checks the URL and, for https, builds the TLS configuration once
    /// (trust as reqwest's: the platform verifier, so `SSL_CERT_FILE` and
    /// the system store apply).
    pub(crate) fn new(
        provider: Provider,
        url: &reqwest::Url,
        connect_timeout: Duration,
        max_response_bytes: usize,
    ) -> Result<Self, String> {
        let host = url
            .host_str()
            .ok_or_else(|| format!("{url} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = url
            .port_or_known_default()
            .ok_or_else(|| format!("{url} has no port"))?;
        let tls = match url.scheme() {
            "https" => {
                let name = ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
                Some((TlsConnector::from(tls_config()?), name))
            }
            _ => None,
        };
        Ok(Self {
            provider,
            host,
            port,
            tls,
            connect_timeout,
            // At least the protocol's default; at most what a body may be.
            stream_window: u32::try_from(max_response_bytes)
                .unwrap_or(u32::MAX)
                .max(65_535),
        })
    }

    /// Why an open failed is a connect error's text.
    async fn open(&self) -> Result<Opened, String> {
        let address = format!("{}:{}", self.host, self.port);
        let tcp = tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| format!("{address}: no connection within {:?}", self.connect_timeout))?
        .map_err(|e| format!("{address}: {e}"))?;
        // Small request frames must not wait for a delayed ACK.
        let _ = tcp.set_nodelay(true);
        let Some((tls, name)) = &self.tls else {
            return self.handshake(Box::new(tcp)).await;
        };
        let stream = tokio::time::timeout(self.connect_timeout, tls.connect(name.clone(), tcp))
            .await
            .map_err(|_| {
                format!(
                    "{address}: no TLS handshake within {:?}",
                    self.connect_timeout
                )
            })?
            .map_err(|e| format!("{address}: TLS: {e}"))?;
        if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Ok(Opened::Declined);
        }
        self.handshake(Box::new(stream)).await
    }

    /// The stream is boxed because hyper stores it inline in a type it
    /// also spawns once per call: a TLS stream there (~2 KiB of rustls
    /// state) would cost every call in flight 2 KiB.
    async fn handshake(&self, io: Box<dyn Io>) -> Result<Opened, String> {
        let (sender, connection) = Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            // Pings, idle or not, notice a dead connection before a call
            // waits on it.
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            // hyper lets a provider send 2 MiB per stream and 5 MiB per
            // connection before anything is read; a body is bounded, so
            // is what waits for the reader.
            .initial_stream_window_size(self.stream_window)
            .initial_connection_window_size(self.stream_window.max(1 << 20))
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| chain(&e))?;
        let provider = self.provider;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%provider, error = %chain(&e), "HTTP/2 connection ended");
            }
        });
        Ok(Opened::H2(sender))
    }
}

/// A connection's byte stream, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The TLS client configuration reqwest would build: the process's crypto
/// provider (aws-lc-rs unless one was installed) and the platform verifier.
fn tls_config() -> Result<Arc<ClientConfig>, String> {
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let verifier = rustls_platform_verifier::Verifier::new(provider.clone())
        .map_err(|e| format!("TLS certificate verifier: {e}"))?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// An open in progress, awaited by every call that needs it: all wake
/// together when it ends, not one by one as behind a lock.
type Opening = Shared<BoxFuture<'static, Result<Option<SendRequest<RequestBody>>, String>>>;

enum SlotState {
    Closed,
    Opening(Opening),
    Open(SendRequest<RequestBody>),
}

/// One connection, opened on first use and again once it has closed.
pub(crate) struct Slot {
    state: std::sync::Mutex<SlotState>,
}

impl Default for Slot {
    fn default() -> Self {
        Self {
            state: std::sync::Mutex::new(SlotState::Closed),
        }
    }
}

impl Slot {
    /// Sends `request()` on this slot's connection and waits for the
    /// response head; `Ok(None)` if the provider declined HTTP/2. A request the provider
    /// never processed (the connection closed before it was sent, the
    /// stream refused, or past a graceful GOAWAY) goes once more at once.
    pub(crate) async fn call(
        &self,
        connector: &Arc<Connector>,
        request: impl Fn() -> Request<RequestBody>,
    ) -> Result<Option<Response<Incoming>>, CallError> {
        let mut retried = false;
        loop {
            let mut sender = match self.sender(connector) {
                Ok(sender) => sender,
                Err(opening) => match opening.await.map_err(CallError::Connect)? {
                    Some(sender) => sender,
                    None => return Ok(None),
                },
            };
            match sender.try_send_request(request()).await {
                Ok(response) => return Ok(Some(response)),
                Err(e) if !retried && (e.message().is_some() || unprocessed(e.error())) => {
                    retried = true;
                }
                Err(e) => return Err(CallError::Request(chain(&e.into_error()))),
            }
        }
    }

    /// The open connection's sender, or the open to wait for (started now
    /// if none is under way).
    fn sender(&self, connector: &Arc<Connector>) -> Result<SendRequest<RequestBody>, Opening> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &*state {
            SlotState::Open(sender) if !sender.is_closed() => return Ok(sender.clone()),
            SlotState::Opening(opening) => match opening.peek() {
                None => return Err(opening.clone()),
                // Done: a failed or declined open is tried afresh.
                Some(Ok(Some(sender))) if !sender.is_closed() => {
                    let sender = sender.clone();
                    *state = SlotState::Open(sender.clone());
                    return Ok(sender);
                }
                Some(_) => {}
            },
            _ => {}
        }
        let connector = Arc::clone(connector);
        // Boxed: TCP, TLS and handshake states are large; inline they
        // would grow every call's future by kilobytes.
        let opening = async move {
            match connector.open().await? {
                Opened::H2(sender) => Ok(Some(sender)),
                Opened::Declined => Ok(None),
            }
        }
        .boxed()
        .shared();
        *state = SlotState::Opening(opening.clone());
        Err(opening)
    }
}

/// Whether the server said it did not process the request: REFUSED_STREAM,
/// or a graceful GOAWAY (RFC 9113, 8.7), so it is safe to send again.
fn unprocessed(e: &hyper::Error) -> bool {
    let Some(h2) = std::error::Error::source(e).and_then(|s| s.downcast_ref::<h2::Error>()) else {
        return false;
    };
    h2.reason() == Some(h2::Reason::REFUSED_STREAM)
        || (h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR))
}
