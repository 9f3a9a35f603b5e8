//! The `notify-worker` binary: everything it does is in [`notify_worker::cli`].

use clap::Parser;
use notify_worker::cli::{Cli, execute};
use std::process::ExitCode;

// mimalloc: glibc's malloc and free were a seventh of the worker's CPU
// (perf, benchmark (i)); built without transparent huge pages, whose
// 2 MiB pages took idle RSS from 26 to 42 MiB.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    execute(Cli::parse()).await
}
