//! Sending one job: provider calls, classified, retried while transient.

use crate::{
    circuit::{Attempt, Verdict},
    classify::{Class, classify, error_code, error_message},
    deadletter::codes,
    gate::Gate,
    job::Job,
    metrics,
    provider::{ProviderClient, Response},
    retry::RetryPolicy,
};
use tokio_util::sync::CancellationToken;

/// How the sending of one job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Sent {
        attempts: u32,
        status: u16,
    },
    Failed(Failure),
    /// Shutdown came while waiting to retry: the job goes back to the queue.
    Abandoned {
        attempts: u32,
    },
}

/// What a dead-letter row needs from the sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub error_code: String,
    pub reason: String,
    pub http_status: Option<u16>,
    pub provider_response: Option<String>,
    pub attempts: u32,
}

/// Sends `job` through `client`, retrying transient failures per `policy`,
/// each call admitted by the provider's `gate` (paused providers are not
/// called). Waits end early on `shutdown`, so draining is not held up.
pub async fn deliver(
    job: &Job,
    client: &ProviderClient,
    gate: &Gate,
    policy: &RetryPolicy,
    shutdown: &CancellationToken,
) -> Delivery {
    let channel = job.channel();
    // Provider calls made, and transient failures that spend the budget.
    let mut attempts = 0;
    let mut spent = 0;
    loop {
        let Some(probe) = gate.admit(shutdown).await else {
            return Delivery::Abandoned { attempts };
        };
        attempts += 1;
        let (response, took) = client.send(&job.message).await;
        let (status, retry_after, body, transport) = match response {
            Response::Http {
                status,
                retry_after,
                body,
            } => (Some(status), retry_after, body, None),
            Response::Transport(error) => (None, None, String::new(), Some(error)),
        };
        metrics::provider_call(client.provider(), status, took);
        let class = match status {
            Some(s) => classify(s, &body),
            None => Class::Transient,
        };
        let attempt = match &class {
            Class::Sent | Class::Rejected { .. } => Attempt::Answered,
            Class::AuthFailure { code, .. } => Attempt::Auth { code: code.clone() },
            Class::Transient => Attempt::Transient,
        };
        let fix = match &class {
            Class::AuthFailure { reason, .. } => Some(reason.as_str()),
            _ => None,
        };
        let verdict = gate.record(probe, attempt, fix);
        if verdict == Verdict::Hold {
            // Paused by another job's auth failure: wait out the pause.
            continue;
        }
        match class {
            Class::Sent => {
                return Delivery::Sent {
                    attempts,
                    status: status.unwrap_or_default(),
                };
            }
            Class::AuthFailure { code, reason } => {
                return Delivery::Failed(Failure {
                    error_code: code,
                    reason,
                    http_status: status,
                    provider_response: Some(body),
                    attempts,
                });
            }
            Class::Rejected { code } => {
                let s = status.unwrap_or_default();
                let detail = match (code, error_message(&body)) {
                    (Some(c), Some(m)) => format!(" {c}: {m}"),
                    (Some(c), None) => format!(" {c}"),
                    (None, Some(m)) => format!(": {m}"),
                    (None, None) => String::new(),
                };
                return Delivery::Failed(Failure {
                    error_code: codes::REJECTED.into(),
                    reason: format!(
                        "{} refused the job with HTTP {s}{detail}; the job itself must be fixed",
                        client.provider()
                    ),
                    http_status: status,
                    provider_response: Some(body),
                    attempts,
                });
            }
            Class::Transient => {}
        }
        if verdict != (Verdict::Retry { counts: false }) {
            spent += 1;
        }
        let Some(wait) = policy.delay(spent.max(1), retry_after) else {
            let last = match (&transport, status) {
                (Some(error), _) => error.clone(),
                (None, Some(s)) => match error_code(&body) {
                    Some(code) => format!("HTTP {s} {code}"),
                    None => format!("HTTP {s}"),
                },
                (None, None) => "no response".into(),
            };
            return Delivery::Failed(Failure {
                error_code: codes::RETRIES_EXHAUSTED.into(),
                reason: format!(
                    "{} failed {attempts} times in a row, giving up; last: {last}. Fix: check the provider's status and the network path to it, then replay",
                    client.provider()
                ),
                http_status: status,
                provider_response: status.map(|_| body),
                attempts,
            });
        };
        metrics::retried(channel);
        tracing::debug!(job_id = %job.id, %channel, attempts, ?status, wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), "transient failure, will retry");
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return Delivery::Abandoned { attempts },
        }
    }
}
