//! One delivery's path: decode, send, classify, settle, then one log line.

use crate::{
    broker::Topology,
    deadletter::{Body, DeadLetter, codes},
    deliver::{Delivery, Failure, deliver},
    gate::Gate,
    job::{Channel, DecodeInput, Job, decode},
    metrics,
    provider::{Provider, ProviderClient},
    retry::RetryPolicy,
    settle::{Settled, Settlement, settle},
    writer::DeadLetterWriter,
};
use lapin::{message::Delivery as AmqpDelivery, types::AMQPValue};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A provider's client and the gate its calls pass.
#[derive(Debug, Clone)]
pub struct Route {
    pub client: ProviderClient,
    pub gate: Arc<Gate>,
}

/// Everything a delivery needs, shared by all of them.
#[derive(Debug)]
pub struct Pipeline {
    pub email: Route,
    pub sms: Route,
    pub retry: RetryPolicy,
    pub writer: DeadLetterWriter,
    pub topology: Topology,
    pub max_body_bytes: usize,
    /// Deliveries of one message beyond this are dead-lettered unsent.
    pub max_redeliveries: u64,
    pub shutdown: CancellationToken,
}

/// The outcome of one delivery before it is settled.
struct Decision {
    job_id: String,
    settlement: Settlement,
    attempts: u32,
    status: Option<u16>,
}

impl Pipeline {
    pub fn route(&self, channel: Channel) -> &Route {
        match channel {
            Channel::Email => &self.email,
            Channel::Sms => &self.sms,
        }
    }

    /// Takes one delivery from `channel`'s queue to its settled end.
    pub async fn handle(self: Arc<Self>, channel: Channel, delivery: AmqpDelivery) {
        let _in_flight = metrics::in_flight(channel);
        let decision = self.decide(channel, &delivery).await;
        let error_code = match &decision.settlement {
            Settlement::DeadLetter(row) => Some(row.error_code.clone()),
            _ => None,
        };
        let settled = settle(
            decision.settlement,
            &delivery.acker,
            &self.writer,
            &self.shutdown,
        )
        .await;
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
        tracing::info!(
            job_id = decision.job_id,
            %channel,
            outcome,
            attempts = decision.attempts,
            status = decision.status,
            error_code = error_code.as_deref(),
            new_row = matches!(settled, Settled::DeadLettered { new_row: true }),
            redelivered = delivery.redelivered,
            "job settled"
        );
    }

    async fn decide(&self, channel: Channel, delivery: &AmqpDelivery) -> Decision {
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
        let job = match decoded {
            Ok(job) => job,
            Err(invalid) => {
                let reason = format!(
                    "invalid job: {}. Fix: correct the producer (see schemas/), then publish again",
                    invalid.reason
                );
                let row = self.row(
                    channel,
                    delivery,
                    invalid.job_id.as_str(),
                    invalid.payload,
                    codes::INVALID_JOB,
                    reason,
                );
                return Decision {
                    job_id: row.job_id.clone(),
                    settlement: Settlement::DeadLetter(row),
                    attempts: 0,
                    status: None,
                };
            }
        };
        if let Some(count) = delivery_count(delivery).filter(|c| *c > self.max_redeliveries) {
            metrics::redelivery_limit(channel);
            return self.poison(channel, delivery, &job, count);
        }
        let route = self.route(channel);
        let result = deliver(
            &job,
            &route.client,
            &route.gate,
            &self.retry,
            &self.shutdown,
        )
        .await;
        let job_id = job.id.to_string();
        match result {
            Delivery::Sent { attempts, status } => Decision {
                job_id,
                settlement: Settlement::Ack,
                attempts,
                status: Some(status),
            },
            Delivery::Abandoned { attempts } => Decision {
                job_id,
                settlement: Settlement::Requeue,
                attempts,
                status: None,
            },
            Delivery::Failed(failure) => {
                let (attempts, status) = (failure.attempts, failure.http_status);
                let row = self.failure_row(channel, delivery, &job, failure);
                Decision {
                    job_id,
                    settlement: Settlement::DeadLetter(row),
                    attempts,
                    status,
                }
            }
        }
    }

    /// A message delivered more often than allowed: something about it kills
    /// or stalls workers, so it is set aside instead of tried again.
    fn poison(&self, channel: Channel, delivery: &AmqpDelivery, job: &Job, count: u64) -> Decision {
        let reason = format!(
            "delivered {count} times, over NOTIFY_MAX_REDELIVERIES ({}): earlier deliveries never settled (worker crash or stall?); inspect, then replay",
            self.max_redeliveries
        );
        let payload = serde_json::from_slice(&delivery.data).ok();
        let row = self.row(
            channel,
            delivery,
            job.id.as_str(),
            payload,
            codes::REDELIVERY_LIMIT,
            reason,
        );
        Decision {
            job_id: row.job_id.clone(),
            settlement: Settlement::DeadLetter(row),
            attempts: 0,
            status: None,
        }
    }

    fn failure_row(
        &self,
        channel: Channel,
        delivery: &AmqpDelivery,
        job: &Job,
        failure: Failure,
    ) -> Box<DeadLetter> {
        let payload = serde_json::from_slice(&delivery.data).ok();
        let mut row = self.row(
            channel,
            delivery,
            job.id.as_str(),
            payload,
            &failure.error_code,
            failure.reason,
        );
        row.provider = Some(Provider::for_channel(channel));
        row.http_status = failure.http_status;
        row.provider_response = failure.provider_response;
        row.attempts = failure.attempts;
        row
    }

    fn row(
        &self,
        channel: Channel,
        delivery: &AmqpDelivery,
        job_id: &str,
        payload: Option<serde_json::Value>,
        error_code: &str,
        reason: String,
    ) -> Box<DeadLetter> {
        // An oversize body is stored only up to the limit.
        let raw = &delivery.data[..delivery.data.len().min(self.max_body_bytes)];
        Box::new(DeadLetter {
            job_id: job_id.to_owned(),
            channel,
            provider: None,
            error_code: error_code.to_owned(),
            reason,
            http_status: None,
            provider_response: None,
            body: Body::new(payload, raw),
            attempts: 0,
            source_queue: self.topology.queue(channel).to_owned(),
        })
    }
}

/// How many times this message was delivered before, from the
/// `x-delivery-count` header quorum queues set. Classic queues have only the
/// `redelivered` flag, which cannot be counted.
fn delivery_count(delivery: &AmqpDelivery) -> Option<u64> {
    let headers = delivery.properties.headers().as_ref()?;
    let value = headers.inner().get("x-delivery-count")?;
    match value {
        AMQPValue::ShortShortInt(v) => u64::try_from(*v).ok(),
        AMQPValue::ShortShortUInt(v) => Some(u64::from(*v)),
        AMQPValue::ShortInt(v) => u64::try_from(*v).ok(),
        AMQPValue::ShortUInt(v) => Some(u64::from(*v)),
        AMQPValue::LongInt(v) => u64::try_from(*v).ok(),
        AMQPValue::LongUInt(v) => Some(u64::from(*v)),
        AMQPValue::LongLongInt(v) => u64::try_from(*v).ok(),
        _ => None,
    }
}
