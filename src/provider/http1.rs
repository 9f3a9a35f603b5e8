//! HTTP/1.1 connections to one provider, on hyper's connection API.
//!
//! reqwest drives the same hyper underneath, but its request path (URL
//! parsing and copying, its redirect and retry layers, the pooled-client
//! future) cost about 52,000 instructions a call here (callgrind), most of
//! the worker's own work per job. A call takes an idle keep-alive
//! connection or opens one, and gives it back only once its response was
//! read to the end; one with a remainder unread is dropped, which closes it.

use super::{
    body::{CallError, chain},
    connect::Connector,
    http2::RequestBody,
};
use hyper::{
    Request, Response,
    body::Incoming,
    client::conn::http1::{Builder, SendRequest},
};
use hyper_util::rt::TokioIo;
use std::{sync::Mutex, time::Duration};
use tokio::sync::Semaphore;

/// Connections opened at once, at most. Without a bound a cold start (or
/// a provider that closed every kept connection) opens one per call in
/// flight in the same instant, hundreds; a provider whose accept queue
/// overflows drops the SYNs, the kernel tries each again only after a
/// second, and every job behind those calls waits for it (the benchmark's
/// fake provider, when its queue was 128: 63 to 211 such drops a run). On
/// loopback 32 at a time open 2,000 connections in milliseconds. A call
/// waiting its turn is still bounded by its own deadline.
pub(crate) const OPENING_AT_ONCE: usize = 32;

/// Keep-alive connections to one provider.
pub(crate) struct H1Pool {
    connector: Connector,
    idle: Mutex<Vec<SendRequest<RequestBody>>>,
    /// Idle connections kept at most (the calls this provider has in flight).
    max_idle: usize,
    opening: Semaphore,
}

impl H1Pool {
    pub(crate) fn new(connector: Connector, max_idle: usize) -> Self {
        Self {
            connector,
            idle: Mutex::new(Vec::new()),
            max_idle,
            opening: Semaphore::new(OPENING_AT_ONCE),
        }
    }

    fn take_idle(&self) -> Option<SendRequest<RequestBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    async fn open(&self) -> Result<SendRequest<RequestBody>, CallError> {
        let opened = self.connector.open().await.map_err(CallError::Connect)?;
        let (sender, connection) = Builder::new()
            .handshake(TokioIo::new(opened.io))
            .await
            .map_err(|e| CallError::Connect(chain(&e)))?;
        let provider = self.connector.provider;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%provider, error = %chain(&e), "HTTP/1.1 connection ended");
            }
        });
        Ok(sender)
    }

    /// A connection for a call that found none idle: opened in its turn
    /// (`OPENING_AT_ONCE`), or one given back while it waited for it.
    async fn open_in_turn(&self) -> Result<(SendRequest<RequestBody>, bool), CallError> {
        let _turn = self
            .opening
            .acquire()
            .await
            .map_err(|_| CallError::Connect("the connection pool is closed".into()))?;
        match self.take_idle() {
            Some(sender) => Ok((sender, false)),
            None => Ok((self.open().await?, true)),
        }
    }

    /// Sends `request()` and waits for the response head. A request an
    /// idle connection never sent (the provider had closed it) goes out on
    /// another, or on a new one; nothing sent is ever sent twice.
    pub(crate) async fn call(
        &self,
        request: impl Fn() -> Request<RequestBody>,
    ) -> Result<(Response<Incoming>, SendRequest<RequestBody>), CallError> {
        loop {
            let (mut sender, fresh) = match self.take_idle() {
                Some(sender) => (sender, false),
                // Boxed: opening is rare, and inline its state (TCP, TLS,
                // handshake) would sit in every call's future.
                None => Box::pin(self.open_in_turn()).await?,
            };
            match sender.try_send_request(request()).await {
                Ok(response) => return Ok((response, sender)),
                Err(e) if !fresh && e.message().is_some() => {}
                Err(e) => return Err(CallError::Request(chain(&e.into_error()))),
            }
        }
    }

    /// Keeps a connection whose response was read to the end, once it can
    /// take the next request.
    pub(crate) async fn give_back(&self, mut sender: SendRequest<RequestBody>) {
        let ready = tokio::time::timeout(Duration::from_millis(100), sender.ready()).await;
        if !matches!(ready, Ok(Ok(()))) {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push(sender);
        }
    }
}
