//! The validated settings of `notify-worker run`, typed. They are parsed
//! from the command line and environment in [`crate::cli`]; a value that
//! cannot be used fails there with a [`ConfigError`] naming the setting.

use crate::{
    broker::SessionPlan,
    console::ConsoleConfig,
    domain::KeyError,
    ledger::LedgerPolicy,
    pipeline::RetryPolicy,
    provider::{ClientError, FlowPolicy, KeyFile, PausePolicy, ProviderClient},
};
use std::{net::SocketAddr, time::Duration};

/// A setting that cannot be used. Exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{setting} is not set (set it or {setting}_FILE)")]
    MissingKey { setting: &'static str },
    #[error("{setting} and {setting}_FILE are both set; set only one")]
    BothKeys { setting: &'static str },
    #[error("{0}")]
    Invalid(String),
}

/// What the worker runs with. No `Debug`: it holds URLs with passwords.
pub struct WorkerConfig {
    pub(crate) session: SessionPlan,
    pub(crate) database_url: String,
    pub(crate) statement_timeout: Duration,
    pub(crate) migrate: bool,
    /// Per channel, email's first; each holds only its own key.
    pub(crate) clients: [ProviderClient; 2],
    /// Key files to watch for rotation, per channel (a key given directly
    /// is fixed).
    pub(crate) key_files: [Option<KeyFile>; 2],
    pub(crate) key_poll: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) pause: PausePolicy,
    /// Flow control per channel, email's first.
    pub(crate) flow: [FlowPolicy; 2],
    pub(crate) max_redeliveries: u64,
    pub(crate) admin_addr: SocketAddr,
    pub(crate) drain_timeout: Duration,
    pub(crate) max_body_bytes: usize,
    /// The delivery ledger's policy; `None` when it is off.
    pub(crate) ledger: Option<LedgerPolicy>,
    /// `NOTIFY_*_MAX_RPS` held by the fleet (through the database), with the
    /// replicas expected to share it; `None`: held by each process.
    pub(crate) fleet_replicas: Option<u32>,
    /// The operator console and API; `None` when no token is set.
    pub(crate) console: Option<ConsoleConfig>,
}
