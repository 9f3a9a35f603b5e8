//! The `notify-worker` binary: everything it does is in [`notify_worker::cli`].

use clap::Parser;
use notify_worker::cli::{Cli, execute};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    execute(Cli::parse()).await
}
