//! The worker's metrics. Each worker has its own Prometheus recorder (two
//! workers in one process, as in tests, never mix their figures), and every
//! series is registered once at start-up with all its label values: the hot
//! path only bumps a handle, and `/metrics` shows every series from the
//! first scrape, zeros included.
//!
//! Labels hold channels, providers, outcome classes and known error codes
//! only: never a key, a recipient or a job id.

use crate::domain::{Channel, ErrorCode, PauseReason, Provider};
use metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub(crate) use super::held::{HeldWrite, HeldWrites};
use std::{array, sync::Arc, time::Duration};

mod console;
mod ledger;
use console::ConsoleMetrics;
use ledger::LedgerMetrics;

pub(crate) const JOBS: &str = "notify_jobs_total";
pub(crate) const DEAD_LETTERS: &str = "notify_dead_letters_total";
pub(crate) const RETRIES: &str = "notify_retries_total";
pub(crate) const PROVIDER_DURATION: &str = "notify_provider_request_duration_seconds";
pub(crate) const IN_FLIGHT: &str = "notify_jobs_in_flight";
pub(crate) const DEAD_LETTER_WRITE_FAILURES: &str = "notify_dead_letter_write_failures_total";
pub(crate) const PROVIDER_PAUSED: &str = "notify_provider_paused";
pub(crate) const CONSUMERS_RUNNING: &str = "notify_consumers_running";
pub(crate) const REDELIVERY_LIMIT: &str = "notify_redelivery_limit_total";
pub(crate) const KEY_RELOADS: &str = "notify_key_reloads_total";
pub(crate) const WRITES_HELD: &str = "notify_dead_letter_writes_held";
pub(crate) const OLDEST_HELD: &str = "notify_dead_letter_oldest_held_seconds";
pub(crate) const DEGRADED: &str = "notify_dead_letters_degraded_total";
pub(crate) const CONCURRENCY_LIMIT: &str = "notify_provider_concurrency_limit";
pub(crate) const PACE: &str = "notify_provider_pace_per_second";
pub(crate) const THROTTLED: &str = "notify_provider_throttled_total";

/// How a job's delivery ended, as `notify_jobs_total` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Sent,
    DeadLettered,
    /// Given back to the broker (shutdown while waiting).
    Requeued,
    /// The ack could not be sent (channel gone): the broker redelivers.
    Unacked,
    /// The ledger said it was settled before: acked without a call.
    DuplicateSuppressed,
}

impl Outcome {
    const ALL: [Outcome; 5] = [
        Outcome::Sent,
        Outcome::DeadLettered,
        Outcome::Requeued,
        Outcome::Unacked,
        Outcome::DuplicateSuppressed,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Requeued => "requeued",
            Outcome::Unacked => "unacked",
            Outcome::DuplicateSuppressed => "duplicate_suppressed",
        }
    }
}

/// What became of a key file's new content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyReload {
    Rotated,
    /// Read, but not a usable key: the old one stays.
    Refused,
    /// Could not be read: the old key stays.
    Unreadable,
}

impl KeyReload {
    const ALL: [KeyReload; 3] = [
        KeyReload::Rotated,
        KeyReload::Refused,
        KeyReload::Unreadable,
    ];

    fn as_str(self) -> &'static str {
        match self {
            KeyReload::Rotated => "rotated",
            KeyReload::Refused => "refused",
            KeyReload::Unreadable => "unreadable",
        }
    }
}

/// `status_class` label values of the provider call histogram.
const STATUS_CLASSES: [&str; 7] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other", "transport"];

/// Every series the worker exports, registered once, and what renders them.
pub(crate) struct Metrics {
    handle: PrometheusHandle,
    jobs: [[Counter; Outcome::ALL.len()]; 2],
    dead_letters: [[Counter; ErrorCode::LABELS.len()]; 2],
    retries: [Counter; 2],
    redelivery_limit: [Counter; 2],
    in_flight: [Gauge; 2],
    consumers_running: [Gauge; 2],
    provider_duration: [[Histogram; STATUS_CLASSES.len()]; 2],
    paused: [[Gauge; PauseReason::LABELS.len()]; 2],
    write_failures: Counter,
    key_reloads: [[Counter; KeyReload::ALL.len()]; 2],
    degraded: Counter,
    held: Arc<HeldWrites>,
    concurrency_limit: [Gauge; 2],
    pace: [Gauge; 2],
    throttled: [Counter; 2],
    /// `notify_provider_paused{reason="throttled"}`, apart from the pauses.
    throttled_long: [Gauge; 2],
    ledger: LedgerMetrics,
    console: ConsoleMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// A fresh recorder with every series registered at zero.
    pub(crate) fn new() -> Self {
        // Fails only for an empty bucket list; the default buckets would do.
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(PROVIDER_DURATION.to_owned()),
                &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
            )
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || Self::register(handle))
    }

    /// The Prometheus text of every series, ages brought up to date.
    pub(crate) fn render(&self) -> String {
        self.held.refresh();
        self.handle.render()
    }

    /// Housekeeping the exporter needs now and then (histogram buffers).
    pub(crate) fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    fn register(handle: PrometheusHandle) -> Self {
        describe_counter!(JOBS, "Jobs settled, by channel and outcome.");
        describe_counter!(
            DEAD_LETTERS,
            "Dead-letter rows committed, by channel and error code."
        );
        describe_counter!(RETRIES, "Provider calls retried after a transient failure.");
        describe_counter!(
            REDELIVERY_LIMIT,
            "Messages set aside for being delivered more than NOTIFY_MAX_REDELIVERIES times."
        );
        describe_gauge!(IN_FLIGHT, "Jobs taken from the queue and not yet settled.");
        describe_gauge!(CONSUMERS_RUNNING, "Queue consumers running.");
        describe_histogram!(
            PROVIDER_DURATION,
            Unit::Seconds,
            "Duration of one provider call, by provider and status class."
        );
        describe_gauge!(
            PROVIDER_PAUSED,
            "1 while a provider is paused, labelled with why (an auth code, outage, or throttled: answering 429 for 30 s and more)."
        );
        describe_counter!(
            DEAD_LETTER_WRITE_FAILURES,
            "Failed dead-letter inserts; the job is held unacked and the insert retried."
        );
        describe_counter!(
            KEY_RELOADS,
            "Changes seen in a key file, by provider and result (rotated, refused, unreadable)."
        );
        describe_counter!(
            DEGRADED,
            "Dead-letter rows the table refused in full, stored without payload and provider response."
        );
        describe_gauge!(
            WRITES_HELD,
            "Deliveries held unacked because the database cannot take their dead-letter or ledger row yet."
        );
        describe_gauge!(
            OLDEST_HELD,
            Unit::Seconds,
            "How long the oldest delivery held for its dead-letter row has waited; 0 when none."
        );
        describe_gauge!(
            CONCURRENCY_LIMIT,
            "Calls a provider may have in flight now, as adaptive concurrency sets it."
        );
        describe_gauge!(
            PACE,
            "Calls per second a provider's calls are paced to after it throttled; 0 while unpaced."
        );
        describe_counter!(
            THROTTLED,
            "Provider answers that asked to slow down (429, or 503 with Retry-After)."
        );
        let per_provider_gauge = |name: &'static str| {
            array::from_fn(|p| gauge!(name, "provider" => Provider::ALL[p].as_str()))
        };
        let per_channel = |name: &'static str| {
            array::from_fn(|c| counter!(name, "channel" => Channel::ALL[c].as_str()))
        };
        Self {
            handle,
            ledger: LedgerMetrics::register(),
            console: ConsoleMetrics::register(),
            jobs: array::from_fn(|c| {
                array::from_fn(
                    |o| counter!(JOBS, "channel" => Channel::ALL[c].as_str(), "outcome" => Outcome::ALL[o].as_str()),
                )
            }),
            dead_letters: array::from_fn(|c| {
                array::from_fn(
                    |e| counter!(DEAD_LETTERS, "channel" => Channel::ALL[c].as_str(), "error_code" => ErrorCode::LABELS[e]),
                )
            }),
            retries: per_channel(RETRIES),
            redelivery_limit: per_channel(REDELIVERY_LIMIT),
            in_flight: array::from_fn(|c| gauge!(IN_FLIGHT, "channel" => Channel::ALL[c].as_str())),
            consumers_running: array::from_fn(
                |c| gauge!(CONSUMERS_RUNNING, "channel" => Channel::ALL[c].as_str()),
            ),
            provider_duration: array::from_fn(|p| {
                array::from_fn(
                    |s| histogram!(PROVIDER_DURATION, "provider" => Provider::ALL[p].as_str(), "status_class" => STATUS_CLASSES[s]),
                )
            }),
            paused: array::from_fn(|p| {
                array::from_fn(|r| {
                    let gauge = gauge!(PROVIDER_PAUSED, "provider" => Provider::ALL[p].as_str(), "reason" => PauseReason::LABELS[r]);
                    gauge.set(0.0);
                    gauge
                })
            }),
            write_failures: counter!(DEAD_LETTER_WRITE_FAILURES),
            degraded: counter!(DEGRADED),
            held: Arc::new(HeldWrites::new(gauge!(WRITES_HELD), gauge!(OLDEST_HELD))),
            concurrency_limit: per_provider_gauge(CONCURRENCY_LIMIT),
            pace: per_provider_gauge(PACE),
            throttled: array::from_fn(
                |p| counter!(THROTTLED, "provider" => Provider::ALL[p].as_str()),
            ),
            throttled_long: array::from_fn(|p| {
                let gauge = gauge!(PROVIDER_PAUSED, "provider" => Provider::ALL[p].as_str(), "reason" => "throttled");
                gauge.set(0.0);
                gauge
            }),
            key_reloads: array::from_fn(|p| {
                array::from_fn(
                    |r| counter!(KEY_RELOADS, "provider" => Provider::ALL[p].as_str(), "result" => KeyReload::ALL[r].as_str()),
                )
            }),
        }
    }

    pub(crate) fn job_settled(&self, channel: Channel, outcome: Outcome) {
        self.jobs[channel.index()][outcome as usize].increment(1);
    }

    pub(crate) fn dead_lettered(&self, channel: Channel, code: &ErrorCode) {
        self.dead_letters[channel.index()][code.label_index()].increment(1);
    }

    pub(crate) fn retried(&self, channel: Channel) {
        self.retries[channel.index()].increment(1);
    }

    pub(crate) fn redelivery_limit(&self, channel: Channel) {
        self.redelivery_limit[channel.index()].increment(1);
    }

    pub(crate) fn dead_letter_write_failed(&self) {
        self.write_failures.increment(1);
    }

    /// The provider's adaptive limits: calls in flight, and the pace.
    pub(crate) fn set_flow(&self, provider: Provider, limit: usize, pace: Option<f64>) {
        self.concurrency_limit[provider.index()].set(limit as f64);
        self.pace[provider.index()].set(pace.unwrap_or(0.0));
    }

    pub(crate) fn throttled(&self, provider: Provider) {
        self.throttled[provider.index()].increment(1);
    }

    /// 1 while `provider` has been throttling for long.
    pub(crate) fn set_throttled(&self, provider: Provider, on: bool) {
        self.throttled_long[provider.index()].set(if on { 1.0 } else { 0.0 });
    }

    pub(crate) fn dead_letter_degraded(&self) {
        self.degraded.increment(1);
    }

    /// Counts a delivery as held for the database until the guard drops.
    pub(crate) fn hold_for_database(&self) -> HeldWrite {
        HeldWrites::hold(&self.held)
    }

    pub(crate) fn key_reload(&self, provider: Provider, result: KeyReload) {
        self.key_reloads[provider.index()][result as usize].increment(1);
    }

    /// One provider call; `status` is `None` when no response came.
    pub(crate) fn provider_call(&self, provider: Provider, status: Option<u16>, took: Duration) {
        let class = match status {
            Some(s @ 100..=599) => usize::from(s / 100 - 1),
            Some(_) => 5,
            None => 6,
        };
        self.provider_duration[provider.index()][class].record(took.as_secs_f64());
    }

    /// 1 on the series of `reason` (0 on every other reason of `provider`),
    /// or 0 on all of them when `None`.
    pub(crate) fn set_paused(&self, provider: Provider, reason: Option<&PauseReason>) {
        let current = reason.map(PauseReason::label_index);
        for (i, gauge) in self.paused[provider.index()].iter().enumerate() {
            gauge.set(if Some(i) == current { 1.0 } else { 0.0 });
        }
    }

    /// Counts a job in flight for as long as the guard lives.
    pub(crate) fn in_flight(&self, channel: Channel) -> Held {
        Held::new(&self.in_flight[channel.index()])
    }

    /// Counts a running consumer for as long as the guard lives.
    pub(crate) fn consumer_running(&self, channel: Channel) -> Held {
        Held::new(&self.consumers_running[channel.index()])
    }
}

/// Holds a gauge one higher for as long as it lives.
pub(crate) struct Held(Gauge);

impl Held {
    fn new(gauge: &Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

#[cfg(test)]
mod tests;
