//! Talking to the providers: a typed client per provider over its HTTP
//! transport, the key-file watcher that rotates its key, and the gate that
//! holds its calls back while it is paused (policy in `pause`, pure).

mod body;
mod client;
mod connect;
mod fleet;
mod flow;
mod gate;
mod http1;
mod http2;
mod keywatch;
mod pause;
mod request;
mod state;
mod transport;

pub use client::ClientError;
pub(crate) use client::{Answer, ProviderClient, TraceHeaders};
pub(crate) use flow::{FlowPolicy, Outcome as FlowOutcome};
pub(crate) use gate::{Fleet, Gate};
pub(crate) use keywatch::{KeyFile, spawn as watch_key_file};
pub(crate) use pause::{Attempt, PausePolicy, Verdict};
pub(crate) use state::ProviderState;
pub(crate) use transport::HttpOptions;
pub use transport::HttpVersion;
