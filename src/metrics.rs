//! Metric names and the few helpers that record them. Labels hold channels,
//! providers, outcome classes and known error codes only: never a key, a
//! recipient or a job id.

use crate::{classify::AUTH_CODES, deadletter::codes, job::Channel, provider::Provider};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::{sync::OnceLock, time::Duration};

pub const JOBS: &str = "notify_jobs_total";
pub const DEAD_LETTERS: &str = "notify_dead_letters_total";
pub const RETRIES: &str = "notify_retries_total";
pub const PROVIDER_DURATION: &str = "notify_provider_request_duration_seconds";
pub const IN_FLIGHT: &str = "notify_jobs_in_flight";
pub const DEAD_LETTER_WRITE_FAILURES: &str = "notify_dead_letter_write_failures_total";
pub const PROVIDER_PAUSED: &str = "notify_provider_paused";
pub const CONSUMERS_RUNNING: &str = "notify_consumers_running";
pub const REDELIVERY_LIMIT: &str = "notify_redelivery_limit_total";

/// The process-wide Prometheus recorder, installed on first use. Several
/// workers in one process (tests) share it.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(PROVIDER_DURATION.to_owned()),
                    &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
                )
                .map(PrometheusBuilder::build_recorder);
            match recorder {
                Ok(recorder) => {
                    let handle = recorder.handle();
                    // Fails only if another recorder is installed; then ours
                    // stays empty, which /metrics shows rather than hides.
                    let _ = metrics::set_global_recorder(recorder);
                    handle
                }
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// Final outcome of one job: `sent`, `dead_lettered` or `requeued`.
pub fn job_outcome(channel: Channel, outcome: &'static str) {
    counter!(JOBS, "channel" => channel.as_str(), "outcome" => outcome).increment(1);
}

pub fn dead_lettered(channel: Channel, error_code: &str) {
    counter!(DEAD_LETTERS, "channel" => channel.as_str(), "error_code" => code_label(error_code))
        .increment(1);
}

pub fn redelivery_limit(channel: Channel) {
    counter!(REDELIVERY_LIMIT, "channel" => channel.as_str()).increment(1);
}

pub fn retried(channel: Channel) {
    counter!(RETRIES, "channel" => channel.as_str()).increment(1);
}

/// `status_class` is `2xx`, `4xx`, `5xx` or `transport`.
pub fn provider_call(provider: Provider, status: Option<u16>, took: Duration) {
    let class = match status {
        Some(s @ 100..=599) => ["1xx", "2xx", "3xx", "4xx", "5xx"][usize::from(s / 100 - 1)],
        Some(_) => "other",
        None => "transport",
    };
    histogram!(PROVIDER_DURATION, "provider" => provider.as_str(), "status_class" => class)
        .record(took.as_secs_f64());
}

pub fn dead_letter_write_failed() {
    counter!(DEAD_LETTER_WRITE_FAILURES).increment(1);
}

/// 1 while `provider` is paused, labelled with why (an auth code or
/// `outage`); every other reason of that provider reads 0.
pub fn provider_paused(provider: Provider, reason: Option<&str>) {
    let current = reason.map(|r| {
        if r == "outage" {
            "outage"
        } else {
            code_label(r)
        }
    });
    let reasons = std::iter::once("outage")
        .chain(AUTH_CODES)
        .chain(std::iter::once("other"));
    for label in reasons {
        let value = if Some(label) == current { 1.0 } else { 0.0 };
        gauge!(PROVIDER_PAUSED, "provider" => provider.as_str(), "reason" => label).set(value);
    }
}

/// Holds a per-channel gauge one higher for as long as it lives: jobs in
/// flight, consumers running.
pub struct Counted {
    name: &'static str,
    channel: Channel,
}

impl Counted {
    fn start(name: &'static str, channel: Channel) -> Self {
        gauge!(name, "channel" => channel.as_str()).increment(1.0);
        Self { name, channel }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        gauge!(self.name, "channel" => self.channel.as_str()).decrement(1.0);
    }
}

/// Counts a job in flight for as long as the guard lives.
pub fn in_flight(channel: Channel) -> Counted {
    Counted::start(IN_FLIGHT, channel)
}

/// Counts a running consumer for as long as the guard lives.
pub fn consumer_running(channel: Channel) -> Counted {
    Counted::start(CONSUMERS_RUNNING, channel)
}

/// Provider codes are free text: only known ones become label values.
fn code_label(code: &str) -> &'static str {
    const WORKER_CODES: [&str; 4] = [
        codes::INVALID_JOB,
        codes::REDELIVERY_LIMIT,
        codes::REJECTED,
        codes::RETRIES_EXHAUSTED,
    ];
    WORKER_CODES
        .into_iter()
        .chain(AUTH_CODES)
        .find(|k| *k == code)
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::code_label;

    #[test]
    fn only_known_codes_become_labels() {
        for code in [
            "invalid_job",
            "retries_exhausted",
            "invalid_api_key",
            "forbidden",
        ] {
            assert_eq!(code_label(code), code);
        }
        assert_eq!(code_label("user 42 key sk_live_x"), "other");
    }
}
