//! The `notify-worker` binary: parse settings, dispatch, map errors to exit codes.

use clap::Parser;
use notify_worker::{
    app::Worker,
    configuration::{Cli, Command, WorkerConfig},
    deadletter::DeadLetterStore,
    secret::redact_url,
    shutdown, telemetry,
};
use std::process::ExitCode;

/// Exit code for a setting that cannot be used (as clap uses for bad flags).
const EXIT_CONFIG: u8 = 2;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = telemetry::init(cli.log_format, &cli.log_level) {
        eprintln!("notify-worker: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    match cli.command {
        Command::Run(args) => {
            let config = match WorkerConfig::try_from(*args) {
                Ok(c) => c,
                Err(e) => return fail(EXIT_CONFIG, &e),
            };
            let worker = match Worker::start(config).await {
                Ok(w) => w,
                Err(e) => return fail(1, &e),
            };
            shutdown::cancel_on_signal(worker.shutdown_token());
            match worker.run().await {
                Ok(()) => {
                    tracing::info!("notify-worker stopped cleanly");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(1, &e),
            }
        }
        Command::Migrate(args) => {
            let url = &args.database_url;
            let migrated = async {
                let store = DeadLetterStore::connect(url, &redact_url(url)).await?;
                store.migrate().await
            };
            match migrated.await {
                Ok(()) => {
                    tracing::info!("migrations applied");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(1, &e),
            }
        }
    }
}

/// One clear line on stderr, then the exit code.
fn fail(code: u8, error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("notify-worker: {error}");
    ExitCode::from(code)
}
