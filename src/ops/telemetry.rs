//! Logging: JSON for machines, text for people, both through tracing.

use std::{
    cell::RefCell,
    fmt::Write as _,
    io::IsTerminal,
    time::{SystemTime, UNIX_EPOCH},
};
use tracing_subscriber::{
    EnvFilter, fmt,
    fmt::{format::Writer, time::FormatTime},
};

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
    let builder = fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_timer(UtcMicros);
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
        LogFormat::Text
            if std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none() =>
        {
            builder.with_ansi(true).try_init()
        }
        // Without colour the same text, written for less (`logfields`).
        LogFormat::Text => builder
            .with_ansi(false)
            .fmt_fields(super::logfields::PlainFields)
            .try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}

/// Log timestamps as tracing-subscriber's default writes them
/// (`2026-12-03T10:15:00.123456Z`), with the part up to the second
/// formatted once a second per thread: the default formats all of it for
/// every line, a fifth of a job's log line.
#[derive(Debug, Clone, Copy)]
struct UtcMicros;

thread_local! {
    /// The second last formatted, and its text up to the seconds.
    static SECOND: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
}

impl FormatTime for UtcMicros {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let secs = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
        SECOND.with_borrow_mut(|(at, text)| {
            if *at != secs {
                text.clear();
                let t = time::OffsetDateTime::from_unix_timestamp(secs)
                    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
                write!(
                    text,
                    "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                    t.year(),
                    u8::from(t.month()),
                    t.day(),
                    t.hour(),
                    t.minute(),
                    t.second()
                )?;
                *at = secs;
            }
            w.write_str(text)
        })?;
        // Six digits and the zone, without the formatting machinery.
        let mut tail = *b".000000Z";
        let mut micros = since.subsec_micros();
        for digit in tail[1..7].iter_mut().rev() {
            *digit = b'0' + u8::try_from(micros % 10).unwrap_or(0);
            micros /= 10;
        }
        w.write_str(std::str::from_utf8(&tail).unwrap_or(".000000Z"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp() -> String {
        let mut out = String::new();
        UtcMicros.format_time(&mut Writer::new(&mut out)).unwrap();
        out
    }

    #[test]
    fn timestamps_read_as_the_default_timer_writes_them() {
        let before = SystemTime::now();
        let ours = stamp();
        let again = stamp();
        let mut theirs = String::new();
        fmt::time::SystemTime
            .format_time(&mut Writer::new(&mut theirs))
            .unwrap();
        assert_eq!(ours.len(), theirs.len(), "{ours} against {theirs}");
        // Same shape: the same up to the second unless one ticked between.
        assert!(
            ours <= again && again <= theirs,
            "{ours}, {again}, {theirs}"
        );
        let parsed =
            time::OffsetDateTime::parse(&ours, &time::format_description::well_known::Rfc3339)
                .unwrap();
        let at = time::OffsetDateTime::from(before);
        let apart = (parsed - at).abs();
        assert!(
            apart < time::Duration::seconds(2),
            "{ours} is {apart} from {at}"
        );
        assert!(ours.ends_with('Z') && ours.as_bytes()[19] == b'.', "{ours}");
    }
}
