//! One job's path, from the delivery the consumer hands over to its ack:
//! decode ([`crate::domain::decode`]), send and classify ([`deliver`], with
//! its [`retry`] policy), settle ([`settle`]), then one log line.

mod acks;
mod claim;
mod deliver;
mod retry;
mod settle;

pub(crate) use acks::Acks;
pub(crate) use retry::RetryPolicy;

use crate::{
    deadletter::{DeadLetter, DeadLetterWriter, Parts},
    domain::{Channel, DecodeInput, ErrorCode, JobId, Provider, decode},
    ledger::{Backlog, Ledger},
    ops::{
        metrics::Metrics,
        traces::{JobTrace, Received},
    },
    provider::{Gate, ProviderClient},
};
use claim::{Claimed, Taken};
use deliver::{Failure, Sending, deliver};
use lapin::{message::Delivery, types::AMQPValue};
use settle::{Books, Settled, Settlement, settle};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// A queue the worker consumes, and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Source {
    pub(crate) channel: Channel,
    pub(crate) queue: String,
    /// The urgent lane: its calls skip the queue for a place in flight.
    pub(crate) urgent: bool,
}

/// A provider's client and the gate its calls pass.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) client: ProviderClient,
    pub(crate) gate: Arc<Gate>,
}

/// Everything a delivery needs, shared by all of them.
#[derive(Debug)]
pub(crate) struct Pipeline {
    /// Per channel, email's first.
    pub(crate) routes: [Route; 2],
    pub(crate) retry: RetryPolicy,
    pub(crate) writer: DeadLetterWriter,
    /// The delivery ledger, unless `NOTIFY_LEDGER=off`.
    pub(crate) ledger: Option<Ledger>,
    /// Outcomes of sends made unrecorded, when the ledger allows those.
    pub(crate) backlog: Option<Backlog>,
    pub(crate) max_body_bytes: usize,
    /// Deliveries of one message beyond this are dead-lettered unsent.
    pub(crate) max_redeliveries: u64,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) shutdown: CancellationToken,
}

/// The outcome of one delivery before it is settled.
struct Decision {
    job_id: JobId,
    settlement: Settlement,
    attempts: u32,
    status: Option<u16>,
    /// The job's ledger claim, when it has one.
    claimed: Option<Claimed>,
    provider_message_id: Option<String>,
}

/// Set on messages `dead-letters replay` publishes: a dead-lettered job
/// may be claimed, and so sent, again.
pub(crate) const REPLAY_HEADER: &str = "x-notify-replay";

impl Pipeline {
    pub(crate) fn route(&self, channel: Channel) -> &Route {
        &self.routes[channel.index()]
    }

    /// Takes one delivery from `source` to its settled end.
    pub(crate) async fn handle(
        self: Arc<Self>,
        source: Arc<Source>,
        delivery: Delivery,
        acks: Acks,
    ) {
        let channel = source.channel;
        let slot = acks.slot(&delivery);
        drop(acks);
        let _in_flight = self.metrics.in_flight(channel);
        let trace = JobTrace::start(&Received {
            headers: delivery.properties.headers().as_ref(),
            exchange: delivery.exchange.as_str(),
            routing_key: delivery.routing_key.as_str(),
            queue: &source.queue,
            message_id: delivery
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.as_str()),
            delivery_tag: delivery.delivery_tag,
            body_size: delivery.data.len(),
        });
        let ids = trace.ids();
        // What a job logs on its way carries its trace (JSON: under "span").
        let log_span = ids.as_ref().map_or_else(
            tracing::Span::none,
            |(t, s)| tracing::info_span!("job", trace_id = %t, span_id = %s),
        );
        let decision = self
            .decide(&source, &delivery, &trace)
            .instrument(log_span.clone())
            .await;
        let error_code = match &decision.settlement {
            Settlement::DeadLetter(row) => Some(row.error_code.clone()),
            _ => None,
        };
        let books = self
            .ledger
            .as_ref()
            .zip(decision.claimed)
            .map(|(ledger, claimed)| Books {
                ledger,
                backlog: self.backlog.as_ref(),
                claimed,
                attempts: decision.attempts,
                http_status: decision.status,
                provider_message_id: decision.provider_message_id,
            });
        let settled = settle(
            decision.settlement,
            slot,
            &self.writer,
            books,
            &self.metrics,
            &self.shutdown,
        )
        .instrument(log_span)
        .await;
        let outcome = settled.outcome();
        self.metrics.job_settled(channel, outcome);
        if let (Settled::DeadLettered { .. }, Some(code)) = (settled, &error_code) {
            self.metrics.dead_lettered(channel, code);
        }
        tracing::info!(
            job_id = %decision.job_id,
            trace_id = ids.as_ref().map(|(t, _)| t.as_str()),
            span_id = ids.as_ref().map(|(_, s)| s.as_str()),
            %channel,
            outcome = outcome.as_str(),
            attempts = decision.attempts,
            status = decision.status,
            error_code = error_code.as_ref().map(ErrorCode::as_str),
            new_row = matches!(settled, Settled::DeadLettered { new_row: true }),
            redelivered = delivery.redelivered,
            "job settled"
        );
        trace.end(outcome.as_str(), error_code.as_ref().map(ErrorCode::as_str));
    }

    async fn decide(&self, source: &Source, delivery: &Delivery, trace: &JobTrace) -> Decision {
        let channel = source.channel;
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
            Ok(job) => {
                trace.job_id(job.id.as_str());
                job
            }
            Err(invalid) => {
                let reason = format!(
                    "invalid job: {}. Fix: correct the producer (see schemas/), then publish again",
                    invalid.reason
                );
                let failure = Failure::unsent(ErrorCode::InvalidJob, reason);
                let row = self.row(
                    source,
                    delivery,
                    trace,
                    &invalid.job_id,
                    invalid.payload,
                    failure,
                );
                return Decision::unsent(invalid.job_id, Settlement::DeadLetter(row), None);
            }
        };
        let replay = delivery
            .properties
            .headers()
            .as_ref()
            .is_some_and(|h| h.inner().contains_key(REPLAY_HEADER));
        let claimed = match claim::take(
            self.ledger.as_ref(),
            &job,
            replay,
            &self.metrics,
            &self.shutdown,
        )
        .await
        {
            Taken::Send(claimed) => claimed,
            Taken::Duplicate(status) => {
                tracing::info!(job_id = %job.id, %channel, ledger_status = status.as_str(), "already settled; acked without a provider call");
                return Decision::unsent(job.id, Settlement::Duplicate, None);
            }
            Taken::Abandoned => return Decision::unsent(job.id, Settlement::Requeue, None),
        };
        let unsent = |this: &Self, failure, job_id: JobId, claimed| {
            let row = this.row(source, delivery, trace, &job_id, reparse(delivery), failure);
            Decision::unsent(job_id, Settlement::DeadLetter(row), claimed)
        };
        if let Some(count) = delivery_count(delivery).filter(|c| *c > self.max_redeliveries) {
            // Something about this message kills or stalls workers: set it
            // aside instead of trying it again.
            self.metrics.redelivery_limit(channel);
            let reason = format!(
                "delivered {count} times, over NOTIFY_MAX_REDELIVERIES ({}): earlier deliveries never settled (worker crash or stall?); inspect, then replay",
                self.max_redeliveries
            );
            let failure = Failure::unsent(ErrorCode::RedeliveryLimit, reason);
            return unsent(self, failure, job.id, claimed);
        }
        if job.expired_at(time::OffsetDateTime::now_utc()) {
            return unsent(self, Failure::expired(&job, 0, None), job.id, claimed);
        }
        let sending = deliver(
            &job,
            source.urgent,
            trace,
            self.route(channel),
            &self.retry,
            &self.metrics,
            &self.shutdown,
        )
        .await;
        let mut provider_message_id = None;
        let (settlement, attempts, status) = match sending {
            Sending::Sent {
                attempts,
                status,
                provider_message_id: id,
            } => {
                provider_message_id = id;
                (Settlement::Ack, attempts, Some(status))
            }
            Sending::Abandoned { attempts } => (Settlement::Requeue, attempts, None),
            Sending::Failed(failure) => {
                let (attempts, status) = (failure.attempts, failure.http_status);
                let row = self.row(source, delivery, trace, &job.id, reparse(delivery), failure);
                (Settlement::DeadLetter(row), attempts, status)
            }
        };
        Decision {
            job_id: job.id,
            settlement,
            attempts,
            status,
            claimed,
            provider_message_id,
        }
    }

    /// The one place a dead-letter row is built.
    fn row(
        &self,
        source: &Source,
        delivery: &Delivery,
        trace: &JobTrace,
        job_id: &JobId,
        payload: Option<serde_json::Value>,
        failure: Failure,
    ) -> Box<DeadLetter> {
        let channel = source.channel;
        Box::new(DeadLetter::new(Parts {
            job_id: job_id.as_str(),
            channel,
            // Null when no call was made (contract section 4).
            provider: (failure.attempts > 0).then(|| Provider::for_channel(channel)),
            error_code: failure.error_code,
            reason: &failure.reason,
            http_status: failure.http_status,
            provider_response: failure.provider_response.as_deref(),
            payload,
            // An oversize body is stored only up to the limit.
            raw: &delivery.data[..delivery.data.len().min(self.max_body_bytes)],
            attempts: failure.attempts,
            source_queue: &source.queue,
            trace_parent: trace.traceparent(),
        }))
    }
}

impl Decision {
    /// A job settled without a provider call.
    fn unsent(job_id: JobId, settlement: Settlement, claimed: Option<Claimed>) -> Self {
        Self {
            job_id,
            settlement,
            attempts: 0,
            status: None,
            claimed,
            provider_message_id: None,
        }
    }
}

/// The body as JSON again, for a row of a job that decoded (and so parsed).
fn reparse(delivery: &Delivery) -> Option<serde_json::Value> {
    serde_json::from_slice(&delivery.data).ok()
}

/// How many times this message was delivered before, from the
/// `x-delivery-count` header quorum queues set. Classic queues have only the
/// `redelivered` flag, which cannot be counted.
fn delivery_count(delivery: &Delivery) -> Option<u64> {
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
