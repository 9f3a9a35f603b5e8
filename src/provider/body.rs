//! Reading a provider's answer within bounds, whatever it sends: at most
//! `max` bytes of body are kept, the rest is never buffered (the response
//! is dropped, which closes an HTTP/1.1 connection rather than draining it
//! and resets an HTTP/2 stream), and the read ends at the call's deadline.
//!
//! Once the status has arrived it is the answer: a body cut by the bound,
//! broken off by an error or stalled past the deadline leaves what was read
//! so far, and the status still classifies the call. A 2xx whose body never
//! ends is a sent job, not a failure to send it again.

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::header::HeaderValue;
use tokio::time::Instant;

/// A response: the status, `Retry-After`, and the body as far as read.
#[derive(Debug)]
pub(crate) struct HttpReply {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<HeaderValue>,
    pub(crate) body: Bytes,
}

/// Why a call got no response. The kind comes first in the text, as in
/// reqwest's errors, so reasons read the same whatever the version.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    #[error("connect error: {0}")]
    Connect(String),
    #[error("request error: {0}")]
    Request(String),
}

/// A body that yields its bytes chunk by chunk.
pub(crate) trait Chunks {
    /// The next chunk; `None` at the end.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, String>;
}

impl Chunks for reqwest::Response {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, String> {
        self.chunk().await.map_err(|e| chain(&e))
    }
}

impl Chunks for hyper::body::Incoming {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, String> {
        loop {
            match self.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(chain(&e)),
                // Trailers and other frames carry nothing we keep.
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }
}

/// Why a body was not read to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cut {
    /// More than the bound was sent; the rest was not read.
    Bound,
    Deadline,
    Error(String),
}

/// Reads `body` up to `max` bytes or `deadline`, whichever comes first.
pub(crate) async fn read_bounded(
    mut body: impl Chunks,
    max: usize,
    deadline: Instant,
) -> (Bytes, Option<Cut>) {
    let mut kept = BytesMut::new();
    loop {
        let next = match tokio::time::timeout_at(deadline, body.next_chunk()).await {
            Err(_) => return (kept.freeze(), Some(Cut::Deadline)),
            Ok(Err(e)) => return (kept.freeze(), Some(Cut::Error(e))),
            Ok(Ok(None)) => return (kept.freeze(), None),
            Ok(Ok(Some(chunk))) => chunk,
        };
        let room = max - kept.len();
        if next.len() > room {
            kept.extend_from_slice(&next[..room]);
            // Dropping `body` here gives up the rest unread.
            return (kept.freeze(), Some(Cut::Bound));
        }
        kept.extend_from_slice(&next);
    }
}

/// An error and its sources on one line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{collections::VecDeque, time::Duration};

    /// Chunks from a list, then an error, the end, or a stall.
    struct Scripted(VecDeque<Result<Option<Bytes>, String>>);

    impl Chunks for Scripted {
        async fn next_chunk(&mut self) -> Result<Option<Bytes>, String> {
            match self.0.pop_front() {
                Some(next) => next,
                None => std::future::pending().await,
            }
        }
    }

    fn chunks(parts: &[&'static [u8]]) -> VecDeque<Result<Option<Bytes>, String>> {
        parts
            .iter()
            .map(|p| Ok(Some(Bytes::from_static(p))))
            .collect()
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(50)
    }

    #[tokio::test]
    async fn keeps_at_most_the_bound_and_says_why_it_stopped() {
        let mut all = chunks(&[b"abc", b"def"]);
        all.push_back(Ok(None));
        assert_eq!(
            read_bounded(Scripted(all.clone()), 10, soon()).await,
            (Bytes::from_static(b"abcdef"), None)
        );
        assert_eq!(
            read_bounded(Scripted(all), 4, soon()).await,
            (Bytes::from_static(b"abcd"), Some(Cut::Bound))
        );
        let mut broken = chunks(&[b"ab"]);
        broken.push_back(Err("reset".into()));
        assert_eq!(
            read_bounded(Scripted(broken), 10, soon()).await,
            (Bytes::from_static(b"ab"), Some(Cut::Error("reset".into())))
        );
        // A body that stalls after its first bytes ends at the deadline.
        assert_eq!(
            read_bounded(Scripted(chunks(&[b"ab"])), 10, soon()).await,
            (Bytes::from_static(b"ab"), Some(Cut::Deadline))
        );
    }
}
