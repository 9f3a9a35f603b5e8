//! Logging: JSON for machines, text for people, both through tracing.

use std::io::IsTerminal;
use tracing_subscriber::{EnvFilter, fmt};

/// `NOTIFY_LOG_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// Installs the global subscriber. Logs go to stdout, as Kubernetes expects.
pub(crate) fn init(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter)
        .map_err(|e| anyhow::anyhow!("NOTIFY_LOG_LEVEL is not a valid filter: {e}"))?;
    let builder = fmt().with_env_filter(filter).with_target(false);
    let installed = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            // A job's lines carry its trace ids in "span".
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        // Colour only for a person at a terminal: piped to a file or a log
        // collector, escape codes are noise (and cost a job's line a
        // fifth of its formatting). `NO_COLOR` turns them off anyway.
        LogFormat::Text => builder
            .with_ansi(std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}
