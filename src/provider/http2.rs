//! HTTP/2 connections to one provider, on hyper's connection API.
//!
//! Through reqwest each call in flight carried about 7 KiB more even over
//! HTTP/2 (massif: reqwest's request future, hyper-util's pooled-client
//! future, header copies for its redirect and retry layers), which put
//! 10,000 calls in flight near 200 MiB. hyper's HTTP/2 client, the one
//! reqwest drives underneath, needs little beyond the stream itself; here a
//! connection is a hyper `SendRequest`, opened on first use and again once
//! it has closed. Pooling is [`super::transport`]'s job: one [`Slot`] per lane.

use super::{
    body::{CallError, chain},
    connect::Connector,
};
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

pub(crate) type RequestBody = Full<Bytes>;

/// Opens HTTP/2 connections: on https, by ALPN (offering h2 and HTTP/1.1);
/// on plain http, by prior knowledge.
pub(crate) struct H2Connector {
    pub(crate) tcp: Connector,
    /// Bytes a provider may send on one stream before we read them.
    stream_window: u32,
}

/// What a new connection turned out to be.
enum Handshake {
    H2(SendRequest<RequestBody>),
    /// The provider chose HTTP/1.1 by ALPN.
    Declined,
}

impl H2Connector {
    pub(crate) fn new(tcp: Connector, max_response_bytes: usize) -> Self {
        Self {
            tcp,
            // At least the protocol's default; at most what a body may be.
            stream_window: u32::try_from(max_response_bytes)
                .unwrap_or(u32::MAX)
                .max(65_535),
        }
    }

    async fn open(&self) -> Result<Handshake, String> {
        let opened = self.tcp.open().await?;
        if opened.h2 == Some(false) {
            return Ok(Handshake::Declined);
        }
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
            .handshake(TokioIo::new(opened.io))
            .await
            .map_err(|e| chain(&e))?;
        let provider = self.tcp.provider;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%provider, error = %chain(&e), "HTTP/2 connection ended");
            }
        });
        Ok(Handshake::H2(sender))
    }
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
        connector: &Arc<H2Connector>,
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
    fn sender(&self, connector: &Arc<H2Connector>) -> Result<SendRequest<RequestBody>, Opening> {
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
                Handshake::H2(sender) => Ok(Some(sender)),
                Handshake::Declined => Ok(None),
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
