//! Publishing jobs, for Rust backends and for the `enqueue` and `replay`
//! commands: persistent JSON with publisher confirms, checked by the
//! worker's own decoder first, so nothing is published that the worker
//! would refuse.

pub use super::new_job::{NewEmail, NewJob, NewSms};
use super::topology::{self, BrokerError, Topology};
use crate::{
    domain::{Channel, DEFAULT_MAX_BODY_BYTES, DecodeInput, decode, redact_url},
    ops::traces::{self, PublishSpan},
};
use futures_util::{StreamExt, stream::FuturesOrdered};
use lapin::{
    BasicProperties, Confirmation, Connection, Event,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::FieldTable,
    uri::AMQPUri,
};
use opentelemetry::Context;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("AMQP_URL is not a valid AMQP URL: {0}")]
    Url(String),
    #[error("the worker would refuse this job: {0}")]
    Invalid(String),
    #[error("publish failed: {0}")]
    Publish(String),
    #[error("the broker did not confirm the message (nack)")]
    Nacked,
    #[error(
        "the broker blocked publishing ({0}): the job was not confirmed, and may still be published once the alarm clears; `rabbitmqctl status` shows the broker's alarms"
    )]
    Blocked(String),
    #[error(
        "no confirm from the broker within {0:?} (NOTIFY_PUBLISH_TIMEOUT_SECS): the job may or may not have been published"
    )]
    Timeout(Duration),
    #[error("not tried: {0}")]
    NotTried(String),
    #[error("unroutable: exchange `{exchange}` has no queue bound to `{routing_key}`")]
    Unroutable {
        exchange: String,
        routing_key: String,
    },
}

impl PublishError {
    /// The broker takes nothing now: the jobs after this would fail alike.
    fn stops_publishing(&self) -> bool {
        matches!(self, PublishError::Blocked(_) | PublishError::Timeout(_))
    }

    /// For the jobs not tried after this one.
    fn not_tried(&self) -> PublishError {
        PublishError::NotTried(self.to_string())
    }
}

/// Longest wait for a confirm by default (`NOTIFY_PUBLISH_TIMEOUT_SECS`).
pub const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// A confirming publisher to the notifications exchange. Every wait on the
/// broker has a deadline, and a broker that blocks publishing (a memory or
/// disk alarm) fails a publish at once with the broker's reason.
pub struct Publisher {
    connection: Connection,
    channel: lapin::Channel,
    exchange: String,
    max_body_bytes: usize,
    confirm_timeout: Duration,
    /// The broker's reason while it blocks this connection.
    blocked: watch::Receiver<Option<String>>,
}

impl Publisher {
    /// Connects and declares the topology (idempotent), so the first job
    /// published is routable even before a worker has started.
    pub async fn connect(amqp_url: &str, topology: &Topology) -> Result<Self, PublishError> {
        let uri: AMQPUri = amqp_url
            .parse()
            .map_err(|_| PublishError::Url(redact_url(amqp_url)))?;
        let connection = topology::connect(&uri, &redact_url(amqp_url)).await?;
        topology::declare(&connection, topology).await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| PublishError::Publish(e.to_string()))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| PublishError::Publish(e.to_string()))?;
        let (tell, blocked) = watch::channel(None);
        let mut events = connection.events_listener();
        // Ends with the connection, when its event stream does.
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                match event {
                    Event::ConnectionBlocked(reason) => tell.send_replace(Some(reason)),
                    Event::ConnectionUnblocked => tell.send_replace(None),
                    _ => None,
                };
            }
        });
        Ok(Self {
            connection,
            channel,
            exchange: topology.exchange.clone(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            confirm_timeout: DEFAULT_CONFIRM_TIMEOUT,
            blocked,
        })
    }

    /// Waits at most `timeout` for each confirm.
    pub fn with_confirm_timeout(mut self, timeout: Duration) -> Self {
        self.confirm_timeout = timeout;
        self
    }

    /// Refuses jobs over `max` bytes, as a worker with
    /// `NOTIFY_MAX_BODY_BYTES=max` would (the default is the worker's).
    pub fn with_max_body_bytes(mut self, max: usize) -> Self {
        self.max_body_bytes = max;
        self
    }

    /// Checks `job` with the worker's decoder, publishes it with its `id`
    /// (or a new UUIDv7) as `message_id`, and waits for the broker's
    /// confirm. Two identical jobs without an `id` stay two jobs. The
    /// current OpenTelemetry context goes with it (`traceparent`), so the
    /// worker's spans join the caller's trace.
    pub async fn publish(&self, job: &NewJob) -> Result<(), PublishError> {
        self.publish_in(job, &Context::current()).await
    }

    /// [`Publisher::publish`] in the trace of `cx`.
    pub async fn publish_in(&self, job: &NewJob, cx: &Context) -> Result<(), PublishError> {
        let (body, id) = self.check(job)?;
        self.send(job.routing_key(), &body, id, cx, None, false)
            .await?
            .await
    }

    /// Publishes `body` as is (a replayed payload), with `message_id` (a new
    /// UUIDv7 when `None`) as the AMQP property, so an id-less job keeps
    /// its id, and waits for the confirm. A new trace starts, linked to
    /// `link` (the original job's) when traces are on. The message is
    /// marked a replay (header `x-notify-replay`): the ledger lets a
    /// dead-lettered job be claimed, and sent, again.
    pub async fn publish_raw(
        &self,
        channel: Channel,
        body: &[u8],
        message_id: Option<&str>,
        link: Option<&Context>,
    ) -> Result<(), PublishError> {
        self.send(
            channel.as_str(),
            body,
            message_id,
            &Context::new(),
            link,
            true,
        )
        .await?
        .await
    }

    /// Checks and publishes `jobs`, keeping at most `window` confirms in
    /// flight at once: one result per job, in order, each a confirm or the
    /// reason there is none. Once the broker blocks publishing or a confirm
    /// times out, the jobs not yet sent are not tried (their results say
    /// why) instead of each waiting out the timeout.
    pub async fn publish_all(
        &self,
        jobs: &[NewJob],
        window: usize,
    ) -> Vec<Result<(), PublishError>> {
        self.publish_all_in(jobs, window, &Context::current()).await
    }

    /// [`Publisher::publish_all`] in the trace of `cx`.
    pub async fn publish_all_in(
        &self,
        jobs: &[NewJob],
        window: usize,
        cx: &Context,
    ) -> Vec<Result<(), PublishError>> {
        let mut results: Vec<Option<Result<(), PublishError>>> = Vec::with_capacity(jobs.len());
        results.resize_with(jobs.len(), || None);
        let mut pending = FuturesOrdered::new();
        let mut given_up: Option<PublishError> = None;
        for (i, job) in jobs.iter().enumerate() {
            if let Some(why) = &given_up {
                results[i] = Some(Err(why.not_tried()));
                continue;
            }
            let sent = match self.check(job) {
                Ok((body, id)) => {
                    self.send(job.routing_key(), &body, id, cx, None, false)
                        .await
                }
                Err(e) => Err(e),
            };
            match sent {
                Ok(confirm) => pending.push_back(async move { (i, confirm.await) }),
                Err(e) => {
                    if e.stops_publishing() {
                        given_up = Some(e.not_tried());
                    }
                    results[i] = Some(Err(e));
                }
            }
            while pending.len() >= window.max(1) {
                let Some((at, result)) = pending.next().await else {
                    break;
                };
                if let Err(e) = &result
                    && e.stops_publishing()
                {
                    given_up.get_or_insert_with(|| e.not_tried());
                }
                results[at] = Some(result);
            }
        }
        while let Some((at, result)) = pending.next().await {
            results[at] = Some(result);
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(PublishError::Publish("not published".into()))))
            .collect()
    }

    /// The body of `job` and its id, if the worker's decoder takes it.
    fn check<'j>(&self, job: &'j NewJob) -> Result<(Vec<u8>, Option<&'j str>), PublishError> {
        let body = job.body();
        let id = match job {
            NewJob::Email(e) => e.id.as_deref(),
            NewJob::Sms(s) => s.id.as_deref(),
        };
        decode(DecodeInput {
            channel: job.channel(),
            body: &body,
            message_id: id,
            max_bytes: self.max_body_bytes,
        })
        .map_err(|invalid| PublishError::Invalid(invalid.reason))?;
        Ok((body, id))
    }

    /// Sends one message in the trace of `cx` (a producer span of its own
    /// when traces are on, linked to `link`); the future returned waits for
    /// its confirm, until the confirm timeout (counted from now) or the
    /// broker blocking us.
    async fn send(
        &self,
        routing_key: &'static str,
        body: &[u8],
        message_id: Option<&str>,
        cx: &Context,
        link: Option<&Context>,
        replay: bool,
    ) -> Result<impl Future<Output = Result<(), PublishError>> + use<>, PublishError> {
        if let Some(reason) = self.blocked.borrow().clone() {
            return Err(PublishError::Blocked(reason));
        }
        let deadline = tokio::time::Instant::now() + self.confirm_timeout;
        let timeout = self.confirm_timeout;
        let id = message_id.map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
        let mut span = PublishSpan::start(cx, &self.exchange, routing_key, link);
        let mut headers = FieldTable::default();
        traces::inject_amqp(&span.cx, &mut headers);
        if replay {
            // The worker may send a dead-lettered job again (ledger).
            headers.insert(
                crate::pipeline::REPLAY_HEADER.into(),
                lapin::types::AMQPValue::Boolean(true),
            );
        }
        let mut props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_message_id(id.into());
        if !headers.inner().is_empty() {
            props = props.with_headers(headers);
        }
        let publish = self.channel.basic_publish(
            self.exchange.as_str().into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            props,
        );
        // lapin holds frames while the connection is blocked: the send
        // itself waits, so it too gives way to the broker's reason.
        let mut blocked = self.blocked.clone();
        let confirm = tokio::select! {
            sent = tokio::time::timeout_at(deadline, publish) => match sent {
                Ok(Ok(confirm)) => confirm,
                Ok(Err(e)) => return Err(failed(&mut span, PublishError::Publish(e.to_string()))),
                Err(_) => return Err(failed(&mut span, PublishError::Timeout(timeout))),
            },
            reason = blocked.wait_for(Option::is_some) => {
                let reason = reason.ok().and_then(|r| r.clone()).unwrap_or_default();
                return Err(failed(&mut span, PublishError::Blocked(reason)));
            }
        };
        let exchange = self.exchange.clone();
        Ok(async move {
            let confirmed =
                Self::confirmed(confirm, deadline, timeout, blocked, exchange, routing_key).await;
            match confirmed {
                Ok(()) => {
                    span.ok();
                    Ok(())
                }
                Err(e) => Err(failed(&mut span, e)),
            }
        })
    }

    async fn confirmed(
        confirm: impl Future<Output = lapin::Result<Confirmation>>,
        deadline: tokio::time::Instant,
        timeout: Duration,
        mut blocked: watch::Receiver<Option<String>>,
        exchange: String,
        routing_key: &'static str,
    ) -> Result<(), PublishError> {
        {
            let confirmation = tokio::select! {
                confirmed = tokio::time::timeout_at(deadline, confirm) => match confirmed {
                    Ok(c) => c.map_err(|e| PublishError::Publish(e.to_string()))?,
                    Err(_) => return Err(PublishError::Timeout(timeout)),
                },
                reason = blocked.wait_for(Option::is_some) => {
                    let reason = reason.ok().and_then(|r| r.clone()).unwrap_or_default();
                    return Err(PublishError::Blocked(reason));
                }
            };
            match confirmation {
                Confirmation::Ack(None) => Ok(()),
                Confirmation::Ack(Some(_)) => Err(PublishError::Unroutable {
                    exchange,
                    routing_key: routing_key.to_owned(),
                }),
                Confirmation::Nack(_) => Err(PublishError::Nacked),
                Confirmation::NotRequested => {
                    Err(PublishError::Publish("confirms not enabled".into()))
                }
            }
        }
    }

    /// Closes channel and connection, waiting a few seconds at most. A
    /// blocked broker reads nothing, a close-ok included: then the
    /// connection is dropped, which closes its socket.
    pub async fn close(self) {
        if self.blocked.borrow().is_some() {
            return;
        }
        let closing = async {
            let _ = self.channel.close(200, "done".into()).await;
            let _ = self.connection.close(200, "done".into()).await;
        };
        let _ = tokio::time::timeout(Duration::from_secs(3), closing).await;
    }
}

/// Ends `span` as failed with `e`, and hands `e` on.
fn failed(span: &mut PublishSpan, e: PublishError) -> PublishError {
    span.failed(e.kind());
    e
}

impl PublishError {
    /// A low-cardinality name for `error.type`.
    fn kind(&self) -> &'static str {
        match self {
            PublishError::Broker(_) => "broker",
            PublishError::Url(_) => "url",
            PublishError::Invalid(_) => "invalid",
            PublishError::Publish(_) => "publish",
            PublishError::Nacked => "nacked",
            PublishError::Blocked(_) => "blocked",
            PublishError::Timeout(_) => "timeout",
            PublishError::NotTried(_) => "not_tried",
            PublishError::Unroutable { .. } => "unroutable",
        }
    }
}
