//! Logging: JSON for machines, text for people, both through tracing.

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
        LogFormat::Text => builder.try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}
