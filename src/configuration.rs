//! Settings (contract section 5): every one an environment variable and a
//! `--flag`, parsed by clap, then turned into a typed [`WorkerConfig`] whose
//! errors name the setting at fault.

use crate::{
    broker::{QueueType, Topology},
    circuit::CircuitPolicy,
    keywatch::KeyFile,
    provider::{ClientError, HttpOptions, HttpVersion, Provider, ProviderClient},
    retry::RetryPolicy,
    secret::{ApiKey, KeyError, redact_url},
};
use clap::{Args, Parser, Subcommand, ValueEnum};
use lapin::uri::AMQPUri;
use std::{net::SocketAddr, path::PathBuf, time::Duration};

#[derive(Debug, Parser)]
#[command(
    name = "notify-worker",
    version,
    about = "Delivers email and SMS jobs from RabbitMQ through MigoSMTP and Telnxo; failures go to PostgreSQL"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format.
    #[arg(long, env = "NOTIFY_LOG_FORMAT", value_name = "NOTIFY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Log filter, in tracing's `EnvFilter` syntax.
    #[arg(
        long,
        env = "NOTIFY_LOG_LEVEL",
        value_name = "NOTIFY_LOG_LEVEL",
        default_value = "info",
        global = true
    )]
    pub log_level: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume both queues and deliver jobs.
    Run(Box<RunArgs>),
    /// Apply the database migrations and exit.
    Migrate(DatabaseArgs),
    /// Read, replay and purge dead letters.
    #[command(subcommand)]
    DeadLetters(crate::cli::DeadLetters),
    /// Publish jobs, with publisher confirms.
    Enqueue(Box<crate::cli::EnqueueArgs>),
    /// Serve sandbox MigoSMTP and Telnxo APIs.
    Sandbox(crate::cli::SandboxArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL for the dead-letter table.
    #[arg(
        long,
        env = "DATABASE_URL",
        value_name = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        hide_env_values = true,
        hide_default_value = false
    )]
    pub database_url: String,
}

/// Where the broker is and what the topology is called.
#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// RabbitMQ URL.
    #[arg(
        long,
        env = "AMQP_URL",
        value_name = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    pub amqp_url: String,
    /// Queue type used when declaring the queues.
    #[arg(long, env = "NOTIFY_QUEUE_TYPE", value_name = "NOTIFY_QUEUE_TYPE", value_enum, default_value_t = QueueType::Quorum)]
    pub queue_type: QueueType,
    #[arg(
        long,
        env = "NOTIFY_EXCHANGE",
        value_name = "NOTIFY_EXCHANGE",
        default_value = "notifications"
    )]
    pub exchange: String,
    #[arg(
        long,
        env = "NOTIFY_EMAIL_QUEUE",
        value_name = "NOTIFY_EMAIL_QUEUE",
        default_value = "notifications.email"
    )]
    pub email_queue: String,
    #[arg(
        long,
        env = "NOTIFY_SMS_QUEUE",
        value_name = "NOTIFY_SMS_QUEUE",
        default_value = "notifications.sms"
    )]
    pub sms_queue: String,
}

impl BrokerArgs {
    /// The topology these settings name, checked.
    pub fn topology(&self) -> Result<Topology, ConfigError> {
        for (setting, name) in [
            ("NOTIFY_EXCHANGE", &self.exchange),
            ("NOTIFY_EMAIL_QUEUE", &self.email_queue),
            ("NOTIFY_SMS_QUEUE", &self.sms_queue),
        ] {
            if name.is_empty() || name.len() > 255 {
                return Err(ConfigError::Invalid(format!(
                    "{setting} must be 1 to 255 bytes long"
                )));
            }
        }
        if self.email_queue == self.sms_queue {
            return Err(ConfigError::Invalid(
                "NOTIFY_EMAIL_QUEUE and NOTIFY_SMS_QUEUE must differ".into(),
            ));
        }
        Ok(Topology {
            exchange: self.exchange.clone(),
            email_queue: self.email_queue.clone(),
            sms_queue: self.sms_queue.clone(),
            queue_type: self.queue_type,
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Run against in-process sandbox providers with generated keys (local trial; no real provider is called).
    #[arg(long, env = "NOTIFY_SANDBOX")]
    pub sandbox: bool,
    /// Do not apply migrations at start-up.
    #[arg(long, env = "NOTIFY_NO_MIGRATE")]
    pub no_migrate: bool,

    #[arg(
        long,
        env = "MIGOSMTP_BASE_URL",
        value_name = "MIGOSMTP_BASE_URL",
        default_value = "https://api.migosmtp.com"
    )]
    pub migosmtp_base_url: String,
    /// MigoSMTP API key (prefer MIGOSMTP_API_KEY_FILE).
    #[arg(
        long,
        env = "MIGOSMTP_API_KEY",
        value_name = "MIGOSMTP_API_KEY",
        hide_env_values = true
    )]
    pub migosmtp_api_key: Option<String>,
    /// File holding the MigoSMTP API key.
    #[arg(
        long,
        env = "MIGOSMTP_API_KEY_FILE",
        value_name = "MIGOSMTP_API_KEY_FILE"
    )]
    pub migosmtp_api_key_file: Option<PathBuf>,
    #[arg(
        long,
        env = "TELNXO_BASE_URL",
        value_name = "TELNXO_BASE_URL",
        default_value = "https://api.telnxo.com"
    )]
    pub telnxo_base_url: String,
    /// Telnxo API key (prefer TELNXO_API_KEY_FILE).
    #[arg(
        long,
        env = "TELNXO_API_KEY",
        value_name = "TELNXO_API_KEY",
        hide_env_values = true
    )]
    pub telnxo_api_key: Option<String>,
    /// File holding the Telnxo API key.
    #[arg(long, env = "TELNXO_API_KEY_FILE", value_name = "TELNXO_API_KEY_FILE")]
    pub telnxo_api_key_file: Option<PathBuf>,

    /// Provider calls per job before `retries_exhausted`.
    #[arg(long, env = "NOTIFY_MAX_ATTEMPTS", value_name = "NOTIFY_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,
    /// Backoff base, in milliseconds.
    #[arg(long, env = "NOTIFY_RETRY_BASE_MS", value_name = "NOTIFY_RETRY_BASE_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    pub retry_base_ms: u64,
    /// Backoff cap, in milliseconds.
    #[arg(long, env = "NOTIFY_RETRY_MAX_MS", value_name = "NOTIFY_RETRY_MAX_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub retry_max_ms: u64,
    /// Longest `Retry-After` obeyed, in milliseconds.
    #[arg(
        long,
        env = "NOTIFY_RETRY_AFTER_MAX_MS",
        value_name = "NOTIFY_RETRY_AFTER_MAX_MS",
        default_value_t = 60_000
    )]
    pub retry_after_max_ms: u64,
    /// Timeout of one provider call, in milliseconds.
    #[arg(long, env = "NOTIFY_REQUEST_TIMEOUT_MS", value_name = "NOTIFY_REQUEST_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_ms: u64,
    /// Unacked deliveries per queue, so jobs processed concurrently per queue.
    #[arg(long, env = "NOTIFY_PREFETCH", value_name = "NOTIFY_PREFETCH", default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: u16,
    /// Pause of a provider after an auth failure, in seconds; 0 turns it off.
    #[arg(
        long,
        env = "NOTIFY_AUTH_PAUSE_SECS",
        value_name = "NOTIFY_AUTH_PAUSE_SECS",
        default_value_t = 30
    )]
    pub auth_pause_secs: u64,
    /// Admin HTTP address (/healthz, /readyz, /metrics).
    #[arg(
        long,
        env = "NOTIFY_ADMIN_ADDR",
        value_name = "NOTIFY_ADMIN_ADDR",
        default_value = "0.0.0.0:9090"
    )]
    pub admin_addr: SocketAddr,
    /// How long in-flight jobs may take to finish after SIGTERM, in seconds.
    #[arg(
        long,
        env = "NOTIFY_DRAIN_TIMEOUT_SECS",
        value_name = "NOTIFY_DRAIN_TIMEOUT_SECS",
        default_value_t = 25
    )]
    pub drain_timeout_secs: u64,
    /// Largest job body accepted, in bytes.
    #[arg(long, env = "NOTIFY_MAX_BODY_BYTES", value_name = "NOTIFY_MAX_BODY_BYTES", default_value_t = 256 * 1024, value_parser = clap::value_parser!(u64).range(2..=(128 * 1024 * 1024)))]
    pub max_body_bytes: u64,
    /// AMQP heartbeat in seconds, unless AMQP_URL sets `heartbeat=`.
    #[arg(long, env = "NOTIFY_HEARTBEAT_SECS", value_name = "NOTIFY_HEARTBEAT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    pub heartbeat_secs: u16,
    /// Deliveries of one message (quorum `x-delivery-count`) beyond this are dead-lettered as `redelivery_limit`.
    #[arg(
        long,
        env = "NOTIFY_MAX_REDELIVERIES",
        value_name = "NOTIFY_MAX_REDELIVERIES",
        default_value_t = 10
    )]
    pub max_redeliveries: u64,
    /// Transient failures in a row that pause a provider (outage breaker); 0 turns it off.
    #[arg(
        long,
        env = "NOTIFY_BREAKER_FAILURES",
        value_name = "NOTIFY_BREAKER_FAILURES",
        default_value_t = 20
    )]
    pub breaker_failures: u32,
    /// How long the outage breaker pauses a provider before a probe, in seconds.
    #[arg(long, env = "NOTIFY_BREAKER_COOLDOWN_SECS", value_name = "NOTIFY_BREAKER_COOLDOWN_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub breaker_cooldown_secs: u64,
    /// Consumers (AMQP channels) per queue, each with NOTIFY_PREFETCH unacked
    /// deliveries: jobs in flight per queue = consumers × prefetch.
    #[arg(long, env = "NOTIFY_CONSUMERS_PER_QUEUE", value_name = "NOTIFY_CONSUMERS_PER_QUEUE", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub consumers_per_queue: u16,
    /// HTTP version spoken to the providers. `auto` offers HTTP/2 by ALPN on
    /// https (HTTP/1.1 if declined) and speaks HTTP/1.1 on plain http;
    /// `http2` does the same on https and uses prior knowledge (h2c) on
    /// plain http; `http1` never offers HTTP/2.
    #[arg(long, env = "NOTIFY_PROVIDER_HTTP", value_name = "NOTIFY_PROVIDER_HTTP", value_enum, default_value_t = HttpVersion::Auto)]
    pub provider_http: HttpVersion,
    /// With HTTP/2, calls per connection: the worker opens up to
    /// ⌈prefetch × consumers / this⌉ connections per provider, as needed.
    /// Keep it at or below the provider's SETTINGS_MAX_CONCURRENT_STREAMS.
    #[arg(long, env = "NOTIFY_HTTP2_STREAMS", value_name = "NOTIFY_HTTP2_STREAMS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub http2_streams: u32,
    /// How often key files are checked for a new key, in milliseconds.
    #[arg(long, env = "NOTIFY_KEY_POLL_MS", value_name = "NOTIFY_KEY_POLL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
    pub key_poll_ms: u64,
}

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

/// The validated settings of `notify-worker run`. No `Debug`: it holds
/// URLs with passwords.
#[derive(Clone)]
pub struct WorkerConfig {
    pub amqp: AMQPUri,
    /// `AMQP_URL` with its password masked, for messages.
    pub amqp_redacted: String,
    pub database_url: String,
    pub migrate: bool,
    pub email: ProviderClient,
    pub sms: ProviderClient,
    /// Key files to watch for rotation (keys given directly are fixed).
    pub email_key_file: Option<KeyFile>,
    pub sms_key_file: Option<KeyFile>,
    pub key_poll: Duration,
    pub retry: RetryPolicy,
    pub circuit: CircuitPolicy,
    pub max_redeliveries: u64,
    pub prefetch: u16,
    pub consumers_per_queue: usize,
    pub admin_addr: SocketAddr,
    pub drain_timeout: Duration,
    pub max_body_bytes: usize,
    pub topology: Topology,
}

impl TryFrom<RunArgs> for WorkerConfig {
    type Error = ConfigError;

    fn try_from(a: RunArgs) -> Result<Self, ConfigError> {
        if a.retry_base_ms > a.retry_max_ms {
            return Err(ConfigError::Invalid(format!(
                "NOTIFY_RETRY_BASE_MS ({}) is above NOTIFY_RETRY_MAX_MS ({})",
                a.retry_base_ms, a.retry_max_ms
            )));
        }
        let topology = a.broker.topology()?;
        let mut amqp: AMQPUri = a.broker.amqp_url.parse().map_err(|_| {
            ConfigError::Invalid(format!(
                "AMQP_URL is not a valid AMQP URL: {}",
                redact_url(&a.broker.amqp_url)
            ))
        })?;
        if amqp.query.heartbeat.is_none() {
            amqp.query.heartbeat = Some(a.heartbeat_secs);
        }
        let http = HttpOptions {
            timeout: Duration::from_millis(a.request_timeout_ms),
            version: a.provider_http,
            // Each provider serves one queue, so this bounds its calls.
            max_in_flight: usize::from(a.prefetch) * usize::from(a.consumers_per_queue),
            streams_per_connection: usize::try_from(a.http2_streams).unwrap_or(usize::MAX),
        };
        let email_key = load_key(
            a.migosmtp_api_key.as_deref(),
            a.migosmtp_api_key_file.as_deref(),
            "MIGOSMTP_API_KEY",
        )?;
        let sms_key = load_key(
            a.telnxo_api_key.as_deref(),
            a.telnxo_api_key_file.as_deref(),
            "TELNXO_API_KEY",
        )?;
        let email = ProviderClient::new(
            Provider::MigoSmtp,
            &a.migosmtp_base_url,
            "MIGOSMTP_BASE_URL",
            email_key,
            http,
        )?;
        let sms = ProviderClient::new(
            Provider::Telnxo,
            &a.telnxo_base_url,
            "TELNXO_BASE_URL",
            sms_key,
            http,
        )?;
        let key_file =
            |path: &Option<PathBuf>, setting| path.clone().map(|path| KeyFile { path, setting });
        Ok(Self {
            amqp,
            amqp_redacted: redact_url(&a.broker.amqp_url),
            email_key_file: key_file(&a.migosmtp_api_key_file, "MIGOSMTP_API_KEY_FILE"),
            sms_key_file: key_file(&a.telnxo_api_key_file, "TELNXO_API_KEY_FILE"),
            key_poll: Duration::from_millis(a.key_poll_ms),
            circuit: CircuitPolicy {
                auth_pause: Duration::from_secs(a.auth_pause_secs),
                outage_threshold: a.breaker_failures,
                outage_cooldown: Duration::from_secs(a.breaker_cooldown_secs),
            },
            max_redeliveries: a.max_redeliveries,
            database_url: a.database.database_url,
            migrate: !a.no_migrate,
            email,
            sms,
            retry: RetryPolicy {
                max_attempts: a.max_attempts,
                base: Duration::from_millis(a.retry_base_ms),
                cap: Duration::from_millis(a.retry_max_ms),
                retry_after_cap: Duration::from_millis(a.retry_after_max_ms),
            },
            prefetch: a.prefetch,
            consumers_per_queue: usize::from(a.consumers_per_queue),
            admin_addr: a.admin_addr,
            drain_timeout: Duration::from_secs(a.drain_timeout_secs),
            max_body_bytes: usize::try_from(a.max_body_bytes).unwrap_or(usize::MAX),
            topology,
        })
    }
}

fn load_key(
    value: Option<&str>,
    file: Option<&std::path::Path>,
    setting: &'static str,
) -> Result<ApiKey, ConfigError> {
    match (value, file) {
        (Some(_), Some(_)) => Err(ConfigError::BothKeys { setting }),
        (Some(v), None) => Ok(ApiKey::parse(v, setting)?),
        (None, Some(path)) => Ok(ApiKey::from_file(path, file_setting(setting))?),
        (None, None) => Err(ConfigError::MissingKey { setting }),
    }
}

fn file_setting(setting: &'static str) -> &'static str {
    match setting {
        "MIGOSMTP_API_KEY" => "MIGOSMTP_API_KEY_FILE",
        _ => "TELNXO_API_KEY_FILE",
    }
}
