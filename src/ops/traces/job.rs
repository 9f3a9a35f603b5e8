//! One job's trace: its consumer span and a client span per provider call.

use super::{
    TRACEPARENT, Traces,
    carrier::{Headers, pair},
};
use lapin::types::FieldTable;
use opentelemetry::{
    Context, KeyValue,
    propagation::TextMapPropagator,
    trace::{Link, SpanKind, Status, TraceContextExt, Tracer as _},
};
use opentelemetry_sdk::propagation::TraceContextPropagator;

/// What a job's span says about the message it came in.
pub(crate) struct Received<'a> {
    pub(crate) headers: Option<&'a FieldTable>,
    pub(crate) exchange: &'a str,
    pub(crate) routing_key: &'a str,
    pub(crate) queue: &'a str,
    pub(crate) message_id: Option<&'a str>,
    pub(crate) delivery_tag: u64,
    pub(crate) body_size: usize,
}

/// One job's trace: the consumer span (when traces are on) under the
/// producer's context, or the producer's context alone (when off).
#[derive(Debug)]
pub(crate) struct JobTrace {
    /// With the job's span when on; the producer's remote context otherwise.
    cx: Context,
    on: bool,
}

impl JobTrace {
    pub(crate) fn start(received: &Received<'_>) -> Self {
        let parent = match received.headers {
            Some(h) if h.contains_key(TRACEPARENT) => {
                TraceContextPropagator::new().extract(&Headers(h))
            }
            _ => Context::new(),
        };
        let Some(tracer) = Traces::tracer() else {
            return Self {
                cx: parent,
                on: false,
            };
        };
        let mut attributes = vec![
            KeyValue::new("messaging.system", "rabbitmq"),
            KeyValue::new("messaging.operation.type", "process"),
            KeyValue::new("messaging.operation.name", "process"),
            KeyValue::new("messaging.destination.name", received.exchange.to_owned()),
            KeyValue::new(
                "messaging.rabbitmq.destination.routing_key",
                received.routing_key.to_owned(),
            ),
            KeyValue::new("messaging.consumer.group.name", received.queue.to_owned()),
            KeyValue::new(
                "messaging.rabbitmq.message.delivery_tag",
                i64::try_from(received.delivery_tag).unwrap_or(i64::MAX),
            ),
            KeyValue::new(
                "messaging.message.body.size",
                i64::try_from(received.body_size).unwrap_or(i64::MAX),
            ),
        ];
        if let Some(id) = received.message_id {
            attributes.push(KeyValue::new("messaging.message.id", id.to_owned()));
        }
        let creation = parent.span().span_context().clone();
        let mut builder = tracer
            .span_builder(format!("process {}", received.exchange))
            .with_kind(SpanKind::Consumer)
            .with_attributes(attributes);
        if creation.is_valid() {
            builder = builder.with_links(vec![Link::with_context(creation)]);
        }
        let span = builder.start_with_context(tracer, &parent);
        Self {
            cx: Context::new().with_span(span),
            on: true,
        }
    }

    /// Trace and span id for the log line, when there is a context.
    pub(crate) fn ids(&self) -> Option<(String, String)> {
        let span = self.cx.span();
        let sc = span.span_context();
        sc.is_valid()
            .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
    }

    /// The job's `traceparent`, stored with a dead letter so a replay can
    /// link back to it.
    pub(crate) fn traceparent(&self) -> Option<String> {
        pair(&self.cx).traceparent
    }

    /// Records the job id once it is known (after decoding).
    pub(crate) fn job_id(&self, id: &str) {
        if self.on {
            self.cx
                .span()
                .set_attribute(KeyValue::new("notify.job.id", id.to_owned()));
        }
    }

    /// Ends the span: `error_type` names the failure, if any.
    pub(crate) fn end(self, outcome: &'static str, error_type: Option<&str>) {
        if !self.on {
            return;
        }
        let span = self.cx.span();
        span.set_attribute(KeyValue::new("notify.outcome", outcome));
        if let Some(error) = error_type {
            span.set_attribute(KeyValue::new("error.type", error.to_owned()));
            span.set_status(Status::error(error.to_owned()));
        }
        span.end();
    }

    /// A client span for one provider call, child of the job's.
    pub(crate) fn attempt(&self, call: &CallInfo<'_>) -> AttemptTrace {
        let Some(tracer) = Traces::tracer().filter(|_| self.on) else {
            // Off: the provider gets the producer's context as it came.
            let p = pair(&self.cx);
            return AttemptTrace {
                cx: None,
                traceparent: p.traceparent,
                tracestate: p.tracestate,
            };
        };
        let mut attributes = vec![
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("url.full", call.url.to_owned()),
            KeyValue::new("server.address", call.host.to_owned()),
            KeyValue::new("server.port", i64::from(call.port)),
        ];
        if call.attempt > 1 {
            attributes.push(KeyValue::new(
                "http.request.resend_count",
                i64::from(call.attempt - 1),
            ));
        }
        let span = tracer
            .span_builder("POST")
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(tracer, &self.cx);
        let cx = self.cx.with_span(span);
        let p = pair(&cx);
        AttemptTrace {
            cx: Some(cx),
            traceparent: p.traceparent,
            tracestate: p.tracestate,
        }
    }
}

/// What a provider call's span says about it.
pub(crate) struct CallInfo<'a> {
    pub(crate) url: &'a str,
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    /// From 1.
    pub(crate) attempt: u32,
}

/// One provider call's span (when on) and the context it sends.
#[derive(Debug)]
pub(crate) struct AttemptTrace {
    cx: Option<Context>,
    pub(crate) traceparent: Option<String>,
    pub(crate) tracestate: Option<String>,
}

impl AttemptTrace {
    /// Ends the call's span with its status code or what went wrong.
    pub(crate) fn end(self, status: Option<u16>, error_type: Option<&str>) {
        let Some(cx) = self.cx else {
            return;
        };
        let span = cx.span();
        if let Some(status) = status {
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
        }
        if let Some(error) = error_type {
            span.set_attribute(KeyValue::new("error.type", error.to_owned()));
            span.set_status(Status::error(error.to_owned()));
        }
        span.end();
    }
}
