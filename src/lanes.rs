//! The HTTP connections to one provider.
//!
//! HTTP/1.1 needs a connection per call in flight, and each costs about
//! 32 KiB here (hyper's buffers and dispatch channel). HTTP/2 carries many
//! calls on one connection, but a server caps the streams per connection
//! (often 100 to 250) and hyper puts every call to one host on one
//! connection, queueing the rest; so with HTTP/2 calls are spread over
//! several lanes, each its own reqwest client and so its own connection. A
//! lane is filled before the next is used, and built on first use, so a
//! light load keeps one connection.

use crate::provider::Provider;
use std::{
    sync::{
        OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

/// The HTTP version spoken to providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HttpVersion {
    /// HTTP/1.1 only: a connection per call in flight.
    Http1,
    /// HTTP/2: offered by ALPN on https (HTTP/1.1 if the provider declines),
    /// prior knowledge (h2c) on plain http.
    Http2,
}

/// How a provider client talks HTTP.
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
    /// Calls one lane takes before the next is used: unbounded for
    /// HTTP/1.1, whose single lane opens a connection per call.
    fn room(&self) -> usize {
        match self.version {
            HttpVersion::Http1 => usize::MAX,
            HttpVersion::Http2 => self.streams_per_connection.max(1),
        }
    }

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
pub struct LaneGuard<'a>(&'a Lane);

impl Drop for LaneGuard<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The lanes of one provider.
pub struct Lanes {
    provider: Provider,
    lanes: Box<[Lane]>,
    /// The first lane's client (cheap to clone: it is shared inside).
    first: reqwest::Client,
    options: HttpOptions,
    /// Plain `http`: HTTP/2 needs prior knowledge, there is no ALPN.
    plain: bool,
}

impl Lanes {
    /// Builds the first lane now, so a setting reqwest refuses stops
    /// start-up; the others wait for their first call.
    pub fn new(
        provider: Provider,
        options: HttpOptions,
        plain: bool,
    ) -> Result<Self, reqwest::Error> {
        let lanes: Box<[Lane]> = (0..options.lanes())
            .map(|_| Lane {
                http: OnceLock::new(),
                in_flight: AtomicUsize::new(0),
            })
            .collect();
        let first = http_client(&options, plain)?;
        let _ = lanes[0].http.set(first.clone());
        Ok(Self {
            provider,
            lanes,
            first,
            options,
            plain,
        })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lanes.len()
    }

    /// A client for one call, and the guard that counts the call on its
    /// lane until dropped.
    pub fn take(&self) -> (&reqwest::Client, LaneGuard<'_>) {
        let guard = self.take_lane();
        (self.http(guard.0), guard)
    }

    /// The first lane with room for one more call; if all are full (more
    /// calls than planned, e.g. while a drain overlaps a reconnect), the
    /// least busy.
    fn take_lane(&self) -> LaneGuard<'_> {
        let room = self.options.room();
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
            http_client(&self.options, self.plain).unwrap_or_else(|e| {
                // The first lane was built with the same options, so this
                // is not expected; share its connection rather than fail.
                tracing::warn!(provider = %self.provider, error = %e, "cannot build another HTTP client; sharing the first");
                self.first.clone()
            })
        })
    }
}

/// One pooled client. HTTP/1.1 keeps up to `max_in_flight` idle
/// connections so a steady load does not reconnect; HTTP/2 pings idle
/// connections so a dead one is noticed before a call waits on it.
fn http_client(options: &HttpOptions, plain: bool) -> Result<reqwest::Client, reqwest::Error> {
    let builder = reqwest::Client::builder()
        .timeout(options.timeout)
        .connect_timeout(options.timeout.min(Duration::from_secs(5)))
        .pool_max_idle_per_host(options.max_in_flight)
        .user_agent(concat!("notify-worker/", env!("CARGO_PKG_VERSION")));
    let builder = match options.version {
        HttpVersion::Http1 => builder.http1_only(),
        HttpVersion::Http2 => {
            let builder = builder
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
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lanes(version: HttpVersion, max_in_flight: usize) -> Lanes {
        let options = HttpOptions {
            timeout: Duration::from_secs(1),
            version,
            max_in_flight,
            streams_per_connection: 100,
        };
        Lanes::new(Provider::MigoSmtp, options, true).unwrap()
    }

    #[test]
    fn http2_gets_a_lane_per_share_of_streams() {
        assert_eq!(lanes(HttpVersion::Http1, 5000).len(), 1);
        assert_eq!(lanes(HttpVersion::Http2, 100).len(), 1);
        assert_eq!(lanes(HttpVersion::Http2, 101).len(), 2);
        assert_eq!(lanes(HttpVersion::Http2, 5000).len(), 50);
    }

    #[test]
    fn a_lane_fills_before_the_next_is_built() {
        let c = lanes(HttpVersion::Http2, 300);
        let load = |c: &Lanes| -> Vec<usize> {
            c.lanes
                .iter()
                .map(|l| l.in_flight.load(Ordering::Relaxed))
                .collect()
        };
        let built = |c: &Lanes| c.lanes.iter().filter(|l| l.http.get().is_some()).count();
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
