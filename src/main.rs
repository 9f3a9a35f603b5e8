//! The `notify-worker` binary: parse settings, dispatch, map errors to exit codes.

use clap::Parser;
use notify_worker::{
    app::Worker,
    cli,
    configuration::{Cli, Command, RunArgs, WorkerConfig},
    deadletter::DeadLetterStore,
    secret::redact_url,
    shutdown, telemetry,
};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

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
        Command::Run(args) => run(*args).await,
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
        Command::DeadLetters(cmd) => edge(cli::dead_letters(cmd).await.map(|()| true)),
        Command::Enqueue(args) => edge(cli::enqueue(*args).await),
        Command::Sandbox(args) => {
            let stop = CancellationToken::new();
            shutdown::cancel_on_signal(stop.clone());
            edge(cli::sandbox(args, stop).await.map(|()| true))
        }
    }
}

async fn run(mut args: RunArgs) -> ExitCode {
    let stop = CancellationToken::new();
    if args.sandbox {
        match cli::attach_sandbox(&mut args, stop.clone()).await {
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
