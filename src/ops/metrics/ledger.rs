//! The delivery ledger's series: what it kept from being sent twice, what
//! it waited for, and what it could not record.

use super::Metrics;
use crate::domain::Channel;
use metrics::{Counter, Gauge, counter, describe_counter, describe_gauge, gauge};
use std::array;

const TAKEOVERS: &str = "notify_ledger_takeovers_total";
const HELD: &str = "notify_ledger_held_total";
const ERRORS: &str = "notify_ledger_errors_total";
const UNRECORDED: &str = "notify_ledger_unrecorded_total";
const BACKLOG: &str = "notify_ledger_backlog";
const BACKLOG_DROPPED: &str = "notify_ledger_backlog_dropped_total";

/// Statements that can fail, as `op` labels.
const OPS: [&str; 2] = ["claim", "record"];

pub(crate) struct LedgerMetrics {
    takeovers: [Counter; 2],
    held: [Counter; 2],
    errors: [Counter; OPS.len()],
    unrecorded: [Counter; 2],
    backlog: Gauge,
    backlog_dropped: Counter,
}

impl LedgerMetrics {
    pub(super) fn register() -> Self {
        describe_counter!(
            TAKEOVERS,
            "Claims taken over after their worker stopped renewing them (it died mid-job); the job is sent with the same Idempotency-Key."
        );
        describe_counter!(
            HELD,
            "Deliveries that found their job claimed by another live worker and waited for its outcome."
        );
        describe_counter!(
            ERRORS,
            "Ledger statements that failed (claim, record): the database is away or refusing."
        );
        describe_counter!(
            UNRECORDED,
            "Jobs sent without a ledger claim (NOTIFY_LEDGER_UNAVAILABLE=send while the database was away)."
        );
        describe_gauge!(
            BACKLOG,
            "Outcomes of unrecorded sends waiting for the database, kept in memory."
        );
        describe_counter!(
            BACKLOG_DROPPED,
            "Outcomes of unrecorded sends dropped because the in-memory backlog was full."
        );
        let per_channel = |name: &'static str| {
            array::from_fn(|c| counter!(name, "channel" => Channel::ALL[c].as_str()))
        };
        Self {
            takeovers: per_channel(TAKEOVERS),
            held: per_channel(HELD),
            errors: array::from_fn(|o| counter!(ERRORS, "op" => OPS[o])),
            unrecorded: per_channel(UNRECORDED),
            backlog: gauge!(BACKLOG),
            backlog_dropped: counter!(BACKLOG_DROPPED),
        }
    }
}

impl Metrics {
    pub(crate) fn ledger_takeover(&self, channel: Channel) {
        self.ledger.takeovers[channel.index()].increment(1);
    }

    pub(crate) fn ledger_held(&self, channel: Channel) {
        self.ledger.held[channel.index()].increment(1);
    }

    /// `op`: `claim` or `record`.
    pub(crate) fn ledger_error(&self, op: &str) {
        if let Some(i) = OPS.iter().position(|o| *o == op) {
            self.ledger.errors[i].increment(1);
        }
    }

    pub(crate) fn ledger_unrecorded(&self, channel: Channel) {
        self.ledger.unrecorded[channel.index()].increment(1);
    }

    pub(crate) fn set_ledger_backlog(&self, n: usize) {
        self.ledger.backlog.set(n as f64);
    }

    pub(crate) fn ledger_backlog_dropped(&self) {
        self.ledger.backlog_dropped.increment(1);
    }
}
