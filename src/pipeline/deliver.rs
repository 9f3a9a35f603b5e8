//! Sending one job: provider calls, classified, retried while transient.

use super::{Route, retry::RetryPolicy};
use crate::{
    domain::{Class, ErrorCode, Job, classify, error_code, error_message, provider_message_id},
    ops::{
        metrics::Metrics,
        traces::{CallInfo, JobTrace},
    },
    provider::{Answer, Attempt, FlowOutcome, TraceHeaders, Verdict},
};
use std::time::Duration;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

/// How the sending of one job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sending {
    Sent {
        attempts: u32,
        status: u16,
        /// The provider's id for the message, from the 2xx body.
        provider_message_id: Option<String>,
    },
    Failed(Failure),
    /// Shutdown came while waiting to retry: the job goes back to the queue.
    Abandoned {
        attempts: u32,
    },
}

/// What a dead-letter row needs from the sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) error_code: ErrorCode,
    pub(crate) reason: String,
    pub(crate) http_status: Option<u16>,
    pub(crate) provider_response: Option<String>,
    pub(crate) attempts: u32,
}

impl Failure {
    /// A failure found before any provider call.
    pub(crate) fn unsent(error_code: ErrorCode, reason: String) -> Self {
        Self {
            error_code,
            reason,
            http_status: None,
            provider_response: None,
            attempts: 0,
        }
    }

    /// The job's `expires_at` came before it could be sent.
    pub(crate) fn expired(job: &Job, attempts: u32, last: Option<(u16, String)>) -> Self {
        let at = job
            .expires_at
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
        let calls = match &last {
            Some((status, _)) => format!("{attempts} provider call(s), last HTTP {status}"),
            None if attempts > 0 => format!("{attempts} provider call(s), no response"),
            None => "no provider call".into(),
        };
        Self {
            error_code: ErrorCode::Expired,
            reason: format!(
                "expired at {at} before it could be sent ({calls}); never sent late. Fix: none for this job (its content is stale); if many expire, look at provider outages, pauses and the queue's backlog"
            ),
            http_status: last.as_ref().map(|(s, _)| *s),
            provider_response: last.map(|(_, body)| body),
            attempts,
        }
    }
}

/// Whether `job` has expired by now, or will have by the end of `wait`.
fn expires_within(job: &Job, wait: Duration) -> bool {
    let wait = time::Duration::try_from(wait).unwrap_or(time::Duration::MAX);
    job.expired_at(OffsetDateTime::now_utc().saturating_add(wait))
}

/// Waits until `job` expires (forever when it has no `expires_at`).
async fn expiry(job: &Job) {
    match job.expires_at {
        Some(at) => {
            let left = at - OffsetDateTime::now_utc();
            tokio::time::sleep(Duration::try_from(left).unwrap_or(Duration::ZERO)).await;
        }
        None => std::future::pending().await,
    }
}

/// Sends `job` through `route`, retrying transient failures per `policy`,
/// each call admitted by the provider's gate (paused providers are not
/// called). Waits end early on `shutdown`, so draining is not held up.
pub(crate) async fn deliver(
    job: &Job,
    urgent: bool,
    trace: &JobTrace,
    route: &Route,
    policy: &RetryPolicy,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Sending {
    let channel = job.channel();
    let provider = route.client.provider();
    let mut schedule = policy.schedule();
    let mut attempts = 0;
    // The last answer, for an expiry's row.
    let mut last: Option<(u16, String)> = None;
    loop {
        // Expiry is checked at each call: before the gate, during its wait
        // (a pause, the breaker, the pace) and after it.
        if expires_within(job, Duration::ZERO) {
            return Sending::Failed(Failure::expired(job, attempts, last));
        }
        let admitted = tokio::select! {
            permit = route.gate.admit(urgent, shutdown) => permit,
            () = expiry(job) => return Sending::Failed(Failure::expired(job, attempts, last)),
        };
        let Some(permit) = admitted else {
            return Sending::Abandoned { attempts };
        };
        if expires_within(job, Duration::ZERO) {
            drop(permit);
            return Sending::Failed(Failure::expired(job, attempts, last));
        }
        attempts += 1;
        let endpoint = route.client.endpoint();
        let mut span = trace.attempt(&CallInfo {
            url: &endpoint.url,
            host: &endpoint.host,
            port: endpoint.port,
            attempt: attempts,
        });
        let headers = TraceHeaders {
            traceparent: span.traceparent.take(),
            tracestate: span.tracestate.take(),
        };
        let (answer, took) = route.client.send(&job.message, &job.id, headers).await;
        match &answer {
            Answer::Http { status, .. } if *status >= 400 => {
                span.end(Some(*status), Some(&status.to_string()));
            }
            Answer::Http { status, .. } => span.end(Some(*status), None),
            Answer::NoResponse(error) => span.end(None, Some(no_response_type(error))),
        }
        let (status, retry_after, body, no_response) = match answer {
            Answer::Http {
                status,
                retry_after,
                body,
            } => (Some(status), retry_after, body, None),
            Answer::NoResponse(error) => (None, None, String::new(), Some(error)),
        };
        metrics.provider_call(provider, status, took);
        let class = status.map_or(Class::Transient, |s| {
            classify(s, &body, retry_after.is_some())
        });
        let (attempt, fix) = match &class {
            Class::Sent | Class::Rejected { .. } => (Attempt::Answered, None),
            Class::AuthFailure { code, reason } => {
                (Attempt::Auth(code.clone()), Some(reason.as_str()))
            }
            Class::Transient => (Attempt::Transient, None),
            Class::Throttled => (Attempt::Throttled, None),
        };
        let outcome = match (&class, &no_response) {
            (Class::Throttled, _) => FlowOutcome::Throttled { retry_after },
            (_, Some(error)) => FlowOutcome::NoAnswer {
                timeout: error.starts_with("timeout"),
            },
            _ => FlowOutcome::Answered { rtt: took },
        };
        let verdict = route.gate.record(permit, attempt, outcome, fix);
        if matches!(verdict, Verdict::Hold | Verdict::Throttled) {
            // Paused by another job's auth failure, or asked to slow down:
            // the gate holds the next call back; nothing is spent.
            continue;
        }
        let failed = |error_code, reason| {
            Sending::Failed(Failure {
                error_code,
                reason,
                http_status: status,
                provider_response: status.map(|_| body.clone()),
                attempts,
            })
        };
        match class {
            Class::Sent => {
                return Sending::Sent {
                    attempts,
                    status: status.unwrap_or_default(),
                    provider_message_id: provider_message_id(&body),
                };
            }
            Class::AuthFailure { code, reason } => {
                return failed(ErrorCode::Provider(code), reason);
            }
            Class::Rejected { code } => {
                let s = status.unwrap_or_default();
                let detail = match (code, error_message(&body)) {
                    (Some(c), Some(m)) => format!(" {c}: {m}"),
                    (Some(c), None) => format!(" {c}"),
                    (None, Some(m)) => format!(": {m}"),
                    (None, None) => String::new(),
                };
                let reason = format!(
                    "{provider} refused the job with HTTP {s}{detail}; the job itself must be fixed"
                );
                return failed(ErrorCode::Rejected, reason);
            }
            Class::Transient | Class::Throttled => {}
        }
        let counts = verdict != (Verdict::Retry { counts: false });
        let Some(wait) = schedule.next(retry_after, counts) else {
            let last = match (&no_response, status) {
                (Some(error), _) => error.clone(),
                (None, Some(s)) => match error_code(&body) {
                    Some(code) => format!("HTTP {s} {code}"),
                    None => format!("HTTP {s}"),
                },
                (None, None) => "no response".into(),
            };
            let reason = format!(
                "{provider} failed {attempts} times in a row, giving up; last: {last}. Fix: check the provider's status and the network path to it, then replay"
            );
            return failed(ErrorCode::RetriesExhausted, reason);
        };
        if expires_within(job, wait) {
            // The retry would come too late: end it now.
            let last = status.map(|s| (s, body));
            return Sending::Failed(Failure::expired(job, attempts, last));
        }
        last = status.map(|s| (s, body.clone()));
        metrics.retried(channel);
        tracing::debug!(job_id = %job.id, %channel, attempts, ?status, wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), "transient failure, will retry");
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return Sending::Abandoned { attempts },
        }
    }
}

/// `error.type` of a call without a response.
fn no_response_type(error: &str) -> &'static str {
    if error.starts_with("timeout") {
        "timeout"
    } else if error.contains("connect") {
        "connect_error"
    } else {
        "transport_error"
    }
}
