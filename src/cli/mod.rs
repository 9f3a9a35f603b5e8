//! The command line: the clap root, the settings several subcommands share,
//! and each subcommand (`run`, `migrate`, `dead-letters`, `enqueue`,
//! `sandbox`). Parsing and printing here; the work is done by the modules
//! they call.

mod console;
mod dead_letters;
mod deliveries;
mod enqueue;
mod print;
mod run;
pub mod sandbox;

pub use console::ConsoleArgs;
pub use dead_letters::DeadLetters;
pub use deliveries::{Deliveries, ListArgs as DeliveriesListArgs};
pub use enqueue::{EnqueueArgs, EnqueueJob};
pub use run::RunArgs;
pub use sandbox::SandboxArgs;

use crate::{
    ConfigError,
    broker::{Publisher, QueueType, Topology},
    deadletter::DeadLetterStore,
    domain::{DEFAULT_MAX_BODY_BYTES, redact_url},
    ops::{
        shutdown,
        telemetry::{self, LogFormat},
        traces::Traces,
    },
};
use clap::{Args, Parser, Subcommand};
use std::{process::ExitCode, time::Duration};
use tokio_util::sync::CancellationToken;

/// Exit code for a setting that cannot be used (as clap uses for bad flags).
const EXIT_CONFIG: u8 = 2;

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
    DeadLetters(DeadLetters),
    /// What the delivery ledger says of jobs: sent, when, under which provider id.
    #[command(subcommand)]
    Deliveries(Deliveries),
    /// Publish jobs, with publisher confirms.
    Enqueue(Box<EnqueueArgs>),
    /// Serve sandbox MigoSMTP and Telnxo APIs.
    Sandbox(SandboxArgs),
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
    /// Longest a database statement may run, in seconds (the worker's
    /// inserts and the dead-letters commands; not migrations).
    #[arg(long, env = "NOTIFY_DB_STATEMENT_TIMEOUT_SECS", value_name = "NOTIFY_DB_STATEMENT_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub db_statement_timeout_secs: u64,
}

impl DatabaseArgs {
    fn statement_timeout(&self) -> Duration {
        Duration::from_secs(self.db_statement_timeout_secs)
    }

    /// A store whose statements have the statement timeout, or none.
    async fn store(&self, timeout: bool) -> anyhow::Result<DeadLetterStore> {
        let url = &self.database_url;
        let limit = timeout.then(|| self.statement_timeout());
        Ok(DeadLetterStore::connect(url, &redact_url(url), limit).await?)
    }
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
    /// Queues per channel: more than 1 spreads each channel over that many
    /// quorum queues through RabbitMQ's consistent-hash exchange (plugin
    /// rabbitmq_consistent_hash_exchange). Only grow it: jobs queued before
    /// stay and are consumed.
    #[arg(long, env = "NOTIFY_SHARDS", value_name = "NOTIFY_SHARDS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub shards: u16,
}

impl BrokerArgs {
    /// The topology these settings name, checked.
    fn topology(&self) -> Result<Topology, ConfigError> {
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
            shards: self.shards,
            ..Topology::new(
                &self.exchange,
                &self.email_queue,
                &self.sms_queue,
                self.queue_type,
            )
        })
    }
}

/// How long a publish may wait for the broker's confirm.
#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    /// Longest wait for the broker's confirm of one job, in seconds.
    #[arg(long, env = "NOTIFY_PUBLISH_TIMEOUT_SECS", value_name = "NOTIFY_PUBLISH_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub publish_timeout_secs: u64,
    /// Confirms in flight at most when publishing many (`enqueue --file`);
    /// 1 publishes one at a time.
    #[arg(long, env = "NOTIFY_PUBLISH_WINDOW", value_name = "NOTIFY_PUBLISH_WINDOW", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=65_535))]
    pub publish_window: u32,
}

impl PublishArgs {
    fn window(&self) -> usize {
        usize::try_from(self.publish_window).unwrap_or(1)
    }

    /// A publisher for `broker`'s topology, checking jobs against `body`.
    async fn publisher(&self, broker: &BrokerArgs, body: &BodyLimit) -> anyhow::Result<Publisher> {
        Ok(Publisher::connect(&broker.amqp_url, &broker.topology()?)
            .await?
            .with_max_body_bytes(body.bytes())
            .with_confirm_timeout(Duration::from_secs(self.publish_timeout_secs)))
    }
}

/// The largest job body: one setting for the worker, the publisher and
/// the sandbox, so none of them accepts what another refuses.
#[derive(Debug, Clone, Args)]
pub struct BodyLimit {
    /// Largest job body accepted, in bytes.
    #[arg(long, env = "NOTIFY_MAX_BODY_BYTES", value_name = "NOTIFY_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES as u64, value_parser = clap::value_parser!(u64).range(2..=(128 * 1024 * 1024)))]
    pub max_body_bytes: u64,
}

impl BodyLimit {
    fn bytes(&self) -> usize {
        // At most 128 MiB, by the parser's range.
        usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX)
    }
}

/// Runs the command `cli` names; the exit code says how it went.
pub async fn execute(cli: Cli) -> ExitCode {
    if let Err(e) = telemetry::init(cli.log_format, &cli.log_level) {
        return fail(EXIT_CONFIG, &e);
    }
    if let Err(e) = Traces::init() {
        return fail(EXIT_CONFIG, &e);
    }
    let code = command(cli.command).await;
    // Spans still queued go out before the process ends (SIGTERM included:
    // `run` returns once drained).
    Traces::shutdown(Duration::from_secs(5)).await;
    code
}

async fn command(command: Command) -> ExitCode {
    match command {
        Command::Run(args) => run::run(*args).await,
        Command::Migrate(db) => {
            // A migration may rightly run long: no statement timeout.
            let migrated =
                async { Ok::<_, anyhow::Error>(db.store(false).await?.migrate().await?) };
            match migrated.await {
                Ok(()) => {
                    tracing::info!("migrations applied");
                    ExitCode::SUCCESS
                }
                // The store's errors already name their cause.
                Err(e) => fail(1, &e),
            }
        }
        Command::DeadLetters(cmd) => edge(dead_letters::run(cmd).await),
        Command::Deliveries(cmd) => edge(deliveries::run(cmd).await),
        Command::Enqueue(args) => edge(enqueue::run(*args).await),
        Command::Sandbox(args) => {
            let stop = CancellationToken::new();
            shutdown::cancel_on_signal(stop.clone());
            edge(sandbox::run(args, stop).await.map(|()| true))
        }
    }
}

/// Exit 0 when all went well, 1 when the command says some of it failed or
/// it failed as a whole (with one line on stderr).
fn edge(result: anyhow::Result<bool>) -> ExitCode {
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => fail(1, &format!("{e:#}")),
    }
}

/// One clear line on stderr, then the exit code.
fn fail(code: u8, error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("notify-worker: {error}");
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
