//! One delivery's path: decode, send, classify, settle, then one log line.

use crate::{
    broker::Topology,
    deadletter::{Body, DeadLetter, DeadLetterStore, codes},
    deliver::{Delivery, deliver},
    job::{Channel, DecodeInput, decode},
    metrics,
    provider::{Provider, ProviderClient},
    retry::RetryPolicy,
    settle::{Settled, Settlement, settle},
};
use lapin::message::Delivery as AmqpDelivery;
use tokio_util::sync::CancellationToken;

/// Everything a delivery needs, shared by all of them.
#[derive(Debug)]
pub struct Pipeline {
    pub email: ProviderClient,
    pub sms: ProviderClient,
    pub retry: RetryPolicy,
    pub store: DeadLetterStore,
    pub topology: Topology,
    pub max_body_bytes: usize,
    pub shutdown: CancellationToken,
}

impl Pipeline {
    fn client(&self, channel: Channel) -> &ProviderClient {
        match channel {
            Channel::Email => &self.email,
            Channel::Sms => &self.sms,
        }
    }

    /// Takes one delivery from `channel`'s queue to its settled end.
    pub async fn handle(&self, channel: Channel, delivery: AmqpDelivery) {
        let _in_flight = metrics::InFlight::start(channel);
        let queue = self.topology.queue(channel);
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str());
        let decoded = decode(DecodeInput {
            channel,
            body: &delivery.data,
            message_id,
            max_bytes: self.max_body_bytes,
        });
        let dead_letter = |job_id: String, payload, failure: Option<&crate::deliver::Failure>| {
            let provider = failure.map(|_| Provider::for_channel(channel));
            Box::new(DeadLetter {
                job_id,
                channel,
                provider,
                error_code: failure.map_or(codes::INVALID_JOB.into(), |f| f.error_code.clone()),
                reason: String::new(),
                http_status: failure.and_then(|f| f.http_status),
                provider_response: failure.and_then(|f| f.provider_response.clone()),
                body: Body::new(payload, truncated(&delivery.data, self.max_body_bytes)),
                attempts: failure.map_or(0, |f| f.attempts),
                source_queue: queue.to_owned(),
            })
        };

        let (job_id, settlement, attempts, status) = match decoded {
            Err(invalid) => {
                let mut row = dead_letter(invalid.job_id.to_string(), invalid.payload, None);
                row.reason = format!("invalid job: {}", invalid.reason);
                (
                    invalid.job_id.to_string(),
                    Settlement::DeadLetter(row),
                    0,
                    None,
                )
            }
            Ok(job) => {
                let result = deliver(&job, self.client(channel), &self.retry, &self.shutdown).await;
                let id = job.id.to_string();
                match result {
                    Delivery::Sent { attempts, status } => {
                        (id, Settlement::Ack, attempts, Some(status))
                    }
                    Delivery::Abandoned { attempts } => (id, Settlement::Requeue, attempts, None),
                    Delivery::Failed(failure) => {
                        let payload = serde_json::from_slice(&delivery.data).ok();
                        let mut row = dead_letter(id.clone(), payload, Some(&failure));
                        row.reason = failure.reason.clone();
                        (
                            id,
                            Settlement::DeadLetter(row),
                            failure.attempts,
                            failure.http_status,
                        )
                    }
                }
            }
        };
        let error_code = match &settlement {
            Settlement::DeadLetter(row) => Some(row.error_code.clone()),
            _ => None,
        };
        let settled = settle(settlement, &delivery.acker, &self.store, &self.shutdown).await;
        let outcome = match settled {
            Settled::Acked => "sent",
            Settled::DeadLettered { .. } => "dead_lettered",
            Settled::Requeued => "requeued",
            Settled::Unacked => "unacked",
        };
        metrics::job_outcome(channel, outcome);
        if let (Settled::DeadLettered { .. }, Some(code)) = (settled, &error_code) {
            metrics::dead_lettered(channel, code);
        }
        let new_row = matches!(settled, Settled::DeadLettered { new_row: true });
        tracing::info!(
            job_id,
            %channel,
            outcome,
            attempts,
            status,
            error_code = error_code.as_deref(),
            new_row,
            redelivered = delivery.redelivered,
            "job settled"
        );
    }
}

/// The stored raw body is capped at the body limit (an oversize body is
/// dead-lettered without being read further).
fn truncated(data: &[u8], max: usize) -> &[u8] {
    &data[..data.len().min(max)]
}
