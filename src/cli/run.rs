//! `notify-worker run`: its settings, turned into a [`WorkerConfig`] whose
//! errors name the setting at fault, and the command itself.

use super::{BodyLimit, BrokerArgs, ConsoleArgs, DatabaseArgs, EXIT_CONFIG, fail, sandbox};
use crate::{
    ConfigError, WorkerConfig,
    app::Worker,
    broker::SessionPlan,
    domain::{ApiKey, Provider, redact_url},
    ledger::{LedgerPolicy, Switch, Unavailable, retention_days},
    ops::shutdown,
    pipeline::RetryPolicy,
    provider::{FlowPolicy, HttpOptions, HttpVersion, KeyFile, PausePolicy, ProviderClient},
};
use clap::Args;
use lapin::uri::AMQPUri;
use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};
use tokio_util::sync::CancellationToken;

/// Who a provider's fixed ceiling binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RateScope {
    Process,
    Fleet,
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
    /// Deep: each job also waits for two ledger commits, and a shallow
    /// window leaves the broker and the database idle meanwhile.
    #[arg(long, env = "NOTIFY_PREFETCH", value_name = "NOTIFY_PREFETCH", default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..))]
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
    #[command(flatten)]
    pub body: BodyLimit,
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
    /// Longest wait between outage probes, in seconds: the first comes after
    /// 1 s, later ones wait twice as long each, at most half the outage so far.
    #[arg(long, env = "NOTIFY_BREAKER_COOLDOWN_SECS", value_name = "NOTIFY_BREAKER_COOLDOWN_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub breaker_cooldown_secs: u64,
    /// Consumers (AMQP channels) per queue, each with NOTIFY_PREFETCH unacked
    /// deliveries: jobs in flight per queue = consumers × prefetch.
    #[arg(long, env = "NOTIFY_CONSUMERS_PER_QUEUE", value_name = "NOTIFY_CONSUMERS_PER_QUEUE", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub consumers_per_queue: u16,
    /// Most bulk calls in flight per provider, whatever the window (the jobs
    /// beyond it wait their turn, unacked; urgent calls go past it): a burst
    /// of a deep window must not open as many HTTP/1.1 connections at once.
    /// Raise it for a slow provider: calls/s per provider is at most this
    /// divided by its response time.
    #[arg(long, env = "NOTIFY_MAX_CALLS_IN_FLIGHT", value_name = "NOTIFY_MAX_CALLS_IN_FLIGHT", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_calls_in_flight: u32,
    /// Prefetch of each urgent queue (`{queue}.urgent`, one consumer each):
    /// its jobs skip the wait for a place in flight behind bulk calls.
    #[arg(long, env = "NOTIFY_URGENT_PREFETCH", value_name = "NOTIFY_URGENT_PREFETCH", default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..))]
    pub urgent_prefetch: u16,
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
    /// Most of a provider's response body read, in bytes; the rest is never
    /// buffered (a dead-letter row keeps 4 KiB of it).
    #[arg(long, env = "NOTIFY_MAX_RESPONSE_BYTES", value_name = "NOTIFY_MAX_RESPONSE_BYTES", default_value_t = 64 * 1024, value_parser = clap::value_parser!(u32).range(4096..=(16 * 1024 * 1024)))]
    pub max_response_bytes: u32,
    /// MigoSMTP calls per second at most, whatever else (unset: no ceiling;
    /// the pace is learnt from its 429s). Per worker process.
    #[arg(long, env = "NOTIFY_MIGOSMTP_MAX_RPS", value_name = "NOTIFY_MIGOSMTP_MAX_RPS", value_parser = parse_rate)]
    pub migosmtp_max_rps: Option<f64>,
    /// Telnxo calls per second at most (unset: no ceiling). Per worker process.
    #[arg(long, env = "NOTIFY_TELNXO_MAX_RPS", value_name = "NOTIFY_TELNXO_MAX_RPS", value_parser = parse_rate)]
    pub telnxo_max_rps: Option<f64>,
    /// Who `NOTIFY_*_MAX_RPS` binds: each `process`, or the whole `fleet`
    /// (shared through PostgreSQL).
    #[arg(long, env = "NOTIFY_RATE_SCOPE", value_name = "NOTIFY_RATE_SCOPE", value_enum, default_value_t = RateScope::Process)]
    pub rate_scope: RateScope,
    /// With `NOTIFY_RATE_SCOPE=fleet`: the replicas expected to share the
    /// ceiling; each takes this share of it while the database is away.
    #[arg(long, env = "NOTIFY_FLEET_REPLICAS", value_name = "NOTIFY_FLEET_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub fleet_replicas: u32,
    /// Delivery ledger (`deliveries` table): claim every job before its
    /// provider call and record its outcome, so no job is sent twice.
    #[arg(long, env = "NOTIFY_LEDGER", value_name = "NOTIFY_LEDGER", value_enum, default_value_t = Switch::On)]
    pub ledger: Switch,
    /// While the database is away: `hold` keeps jobs unsent (in the
    /// broker); `send` sends them unrecorded, writing the rows when it is back.
    #[arg(long, env = "NOTIFY_LEDGER_UNAVAILABLE", value_name = "NOTIFY_LEDGER_UNAVAILABLE", value_enum, default_value_t = Unavailable::Hold)]
    pub ledger_unavailable: Unavailable,
    /// How long a worker's claim on a job lasts without renewal, in
    /// seconds: a worker that dies mid-job has its jobs taken over after this.
    #[arg(long, env = "NOTIFY_LEDGER_LEASE_SECS", value_name = "NOTIFY_LEDGER_LEASE_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub ledger_lease_secs: u64,
    /// How long ledger rows are kept (whole days; daily partitions are dropped).
    #[arg(long, env = "NOTIFY_LEDGER_RETENTION", value_name = "NOTIFY_LEDGER_RETENTION", default_value = "7d", value_parser = retention_days)]
    pub ledger_retention: u32,
    /// Longest a claim or record waits for others to share its statement,
    /// in milliseconds. 0: it goes as soon as a statement slot is free,
    /// with whatever queued meanwhile (under load, batches still form while
    /// statements run); more gives fewer, larger statements and each job
    /// that much more latency (2 ms: 30 % less throughput at 100 jobs in
    /// flight, 35 % less database CPU a job, benchmark (l)).
    #[arg(long, env = "NOTIFY_LEDGER_FLUSH_MS", value_name = "NOTIFY_LEDGER_FLUSH_MS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub ledger_flush_ms: u64,
    /// How often key files are checked for a new key, in milliseconds.
    #[arg(long, env = "NOTIFY_KEY_POLL_MS", value_name = "NOTIFY_KEY_POLL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
    pub key_poll_ms: u64,
    #[command(flatten)]
    pub console: ConsoleArgs,
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
        // Each provider serves one queue: its bulk calls are bounded by the
        // queue's window (all shards) and the setting; its urgent lane's
        // calls go past that bound, so its connections have room for them.
        let bulk_calls = (usize::from(a.prefetch)
            * usize::from(a.consumers_per_queue)
            * usize::from(a.broker.shards.max(1)))
        .min(usize::try_from(a.max_calls_in_flight).unwrap_or(usize::MAX));
        let http = HttpOptions {
            timeout: Duration::from_millis(a.request_timeout_ms),
            version: a.provider_http,
            max_in_flight: bulk_calls + usize::from(a.urgent_prefetch),
            streams_per_connection: usize::try_from(a.http2_streams).unwrap_or(usize::MAX),
            max_response_bytes: usize::try_from(a.max_response_bytes).unwrap_or(usize::MAX),
        };
        let email_key = load_key(
            a.migosmtp_api_key.as_deref(),
            a.migosmtp_api_key_file.as_deref(),
            ["MIGOSMTP_API_KEY", "MIGOSMTP_API_KEY_FILE"],
        )?;
        let sms_key = load_key(
            a.telnxo_api_key.as_deref(),
            a.telnxo_api_key_file.as_deref(),
            ["TELNXO_API_KEY", "TELNXO_API_KEY_FILE"],
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
        let console = a.console.config(
            &a.broker.amqp_url,
            &topology,
            a.body.bytes(),
            Duration::from_millis(a.key_poll_ms),
        )?;
        let flow = |max_rate| FlowPolicy {
            max_in_flight: bulk_calls,
            max_rate,
            retry_after_cap: Duration::from_millis(a.retry_after_max_ms),
        };
        Ok(Self {
            session: SessionPlan {
                uri: amqp,
                redacted: redact_url(&a.broker.amqp_url),
                topology,
                prefetch: a.prefetch,
                consumers_per_queue: usize::from(a.consumers_per_queue),
                urgent_prefetch: a.urgent_prefetch,
            },
            key_files: [
                key_file(&a.migosmtp_api_key_file, "MIGOSMTP_API_KEY_FILE"),
                key_file(&a.telnxo_api_key_file, "TELNXO_API_KEY_FILE"),
            ],
            key_poll: Duration::from_millis(a.key_poll_ms),
            pause: PausePolicy {
                auth_pause: Duration::from_secs(a.auth_pause_secs),
                outage_threshold: a.breaker_failures,
                outage_cooldown: Duration::from_secs(a.breaker_cooldown_secs),
            },
            flow: [flow(a.migosmtp_max_rps), flow(a.telnxo_max_rps)],
            max_redeliveries: a.max_redeliveries,
            statement_timeout: a.database.statement_timeout(),
            database_url: a.database.database_url,
            migrate: !a.no_migrate,
            clients: [email, sms],
            retry: RetryPolicy {
                max_attempts: a.max_attempts,
                base: Duration::from_millis(a.retry_base_ms),
                cap: Duration::from_millis(a.retry_max_ms),
                retry_after_cap: Duration::from_millis(a.retry_after_max_ms),
            },
            admin_addr: a.admin_addr,
            drain_timeout: Duration::from_secs(a.drain_timeout_secs),
            max_body_bytes: a.body.bytes(),
            ledger: (a.ledger == Switch::On).then(|| LedgerPolicy {
                lease: Duration::from_secs(a.ledger_lease_secs),
                unavailable: a.ledger_unavailable,
                linger: Duration::from_millis(a.ledger_flush_ms),
                retention_days: a.ledger_retention,
            }),
            console,
            fleet_replicas: (a.rate_scope == RateScope::Fleet).then_some(a.fleet_replicas),
        })
    }
}

/// A positive number of calls per second.
pub(super) fn parse_rate(value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate >= 0.01 => Ok(rate),
        _ => Err(format!(
            "`{value}` is not a rate in calls per second (at least 0.01)"
        )),
    }
}

/// A key given directly or as a file (exactly one of the two settings).
fn load_key(
    value: Option<&str>,
    file: Option<&std::path::Path>,
    [setting, file_setting]: [&'static str; 2],
) -> Result<ApiKey, ConfigError> {
    match (value, file) {
        (Some(_), Some(_)) => Err(ConfigError::BothKeys { setting }),
        (Some(v), None) => Ok(ApiKey::parse(v, setting)?),
        (None, Some(path)) => Ok(ApiKey::from_file(path, file_setting)?),
        (None, None) => Err(ConfigError::MissingKey { setting }),
    }
}

/// Runs the worker until SIGTERM or SIGINT.
pub(crate) async fn run(mut args: RunArgs) -> ExitCode {
    let stop = CancellationToken::new();
    if args.sandbox {
        match sandbox::attach(&mut args, stop.clone()).await {
            Ok(addr) => {
                tracing::warn!(%addr, "sandbox mode: jobs go to in-process fake providers, not to MigoSMTP or Telnxo; request log at /_sandbox/requests")
            }
            Err(e) => return fail(1, &format!("{e:#}")),
        }
    }
    let config = match WorkerConfig::try_from(args) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_CONFIG, &e),
    };
    let worker = match Worker::start(config).await {
        Ok(w) => w,
        Err(e) => return fail(1, &e),
    };
    shutdown::cancel_on_signal(worker.shutdown_token());
    let result = worker.run().await;
    stop.cancel();
    match result {
        Ok(()) => {
            tracing::info!("notify-worker stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, &e),
    }
}
