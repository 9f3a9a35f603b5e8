//! The console's series: logins, reveals of personal data, and rows
//! replayed from it. Audit trails, not performance figures.

use super::Metrics;
use metrics::{Counter, counter, describe_counter};

const LOGINS: &str = "notify_console_logins_total";
const REVEALS: &str = "notify_console_reveals_total";
const REPLAYED: &str = "notify_console_replayed_total";

pub(crate) struct ConsoleMetrics {
    /// `result="ok"`, then `result="refused"`.
    logins: [Counter; 2],
    reveals: Counter,
    replayed: Counter,
}

impl ConsoleMetrics {
    pub(super) fn register() -> Self {
        describe_counter!(
            LOGINS,
            "Console logins by result (ok, refused): many refused ones are someone guessing the token."
        );
        describe_counter!(
            REVEALS,
            "Recipients and message bodies shown unmasked on an operator's explicit reveal (each also logged)."
        );
        describe_counter!(
            REPLAYED,
            "Dead letters republished by replays started from the console or the API."
        );
        Self {
            logins: ["ok", "refused"].map(|r| counter!(LOGINS, "result" => r)),
            reveals: counter!(REVEALS),
            replayed: counter!(REPLAYED),
        }
    }
}

impl Metrics {
    pub(crate) fn console_login(&self, ok: bool) {
        self.console.logins[usize::from(!ok)].increment(1);
    }

    pub(crate) fn console_reveal(&self) {
        self.console.reveals.increment(1);
    }

    pub(crate) fn console_replayed(&self, rows: u64) {
        self.console.replayed.increment(rows);
    }
}
