//! Distributed traces (OpenTelemetry): the W3C trace context a producer
//! puts in a job's AMQP headers (`traceparent`, `tracestate`) is followed
//! by one consumer span per job and a client span per provider call, whose
//! `traceparent` goes to the provider. Spans are exported by OTLP over HTTP
//! (protobuf), configured only by the standard `OTEL_*` variables, and only
//! when an endpoint is set: otherwise no span is made, and the incoming
//! context is passed to the provider as it came.

mod carrier;
mod job;

pub(crate) use job::{CallInfo, JobTrace, Received};

use carrier::HeadersMut;
use lapin::types::FieldTable;
use opentelemetry::{
    Context, KeyValue,
    propagation::TextMapPropagator,
    trace::{
        Link, SpanContext, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
    },
};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{SdkTracer, SdkTracerProvider},
};
use std::{sync::OnceLock, time::Duration};

/// The header names of W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

#[derive(Debug, thiserror::Error)]
pub enum TracesError {
    #[error(
        "{0}={1} is not supported: notify-worker exports OTLP over HTTP only (set it to http/protobuf or unset it)"
    )]
    Protocol(&'static str, String),
    #[error("cannot set up the OTLP trace exporter: {0}")]
    Exporter(String),
}

/// The exporter, when traces are on; flushed by [`Traces::shutdown`].
static TRACER: OnceLock<(SdkTracerProvider, SdkTracer)> = OnceLock::new();

/// Whether the `OTEL_*` variables ask for traces: an OTLP endpoint set,
/// the SDK not disabled, the exporter not `none`.
fn wanted() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let off = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
        || std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.trim() == "none");
    !off && (set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") || set("OTEL_EXPORTER_OTLP_ENDPOINT"))
}

/// Handle on the process's traces.
#[derive(Debug, Clone, Copy)]
pub struct Traces;

impl Traces {
    /// Sets traces up from the `OTEL_*` variables (once per process; later
    /// calls see the first one's exporter). Returns whether spans are made.
    pub fn init() -> Result<bool, TracesError> {
        if !wanted() {
            return Ok(false);
        }
        if TRACER.get().is_some() {
            return Ok(true);
        }
        for name in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Ok(v) = std::env::var(name)
                && v.trim() != "http/protobuf"
                && !v.trim().is_empty()
            {
                return Err(TracesError::Protocol(name, v));
            }
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| TracesError::Exporter(e.to_string()))?;
        let mut resource = Resource::builder();
        if std::env::var("OTEL_SERVICE_NAME").is_err() {
            resource = resource.with_service_name("notify-worker");
        }
        // Sampler and batch sizes come from OTEL_TRACES_SAMPLER, OTEL_BSP_*.
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        let tracer = provider.tracer("notify-worker");
        let _ = TRACER.set((provider, tracer));
        Ok(true)
    }

    pub(super) fn tracer() -> Option<&'static SdkTracer> {
        TRACER.get().map(|(_, t)| t)
    }

    /// Exports what is left, waiting at most `limit` (on SIGTERM and at
    /// the end of every command).
    pub async fn shutdown(limit: Duration) {
        let Some((provider, _)) = TRACER.get() else {
            return;
        };
        let provider = provider.clone();
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(limit));
        match tokio::time::timeout(limit + Duration::from_secs(1), flushed).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "spans not all exported at shutdown"),
            _ => tracing::warn!(
                limit_secs = limit.as_secs(),
                "spans not exported at shutdown within the limit"
            ),
        }
    }
}

/// Adds the trace context of `cx` to `headers` (publishing). Nothing when
/// `cx` holds none.
pub fn inject_amqp(cx: &Context, headers: &mut FieldTable) {
    TraceContextPropagator::new().inject_context(cx, &mut HeadersMut(headers));
}

/// The context a `traceparent` string names (a stored one, `TRACEPARENT`).
pub fn parse_traceparent(traceparent: &str) -> Context {
    let mut carrier = std::collections::HashMap::new();
    carrier.insert(TRACEPARENT.to_owned(), traceparent.to_owned());
    TraceContextPropagator::new().extract(&carrier)
}

/// A publish's producer span (when traces are on), linked to `link`, under
/// `parent`; ended once with how the publish went (dropped: abandoned).
pub(crate) struct PublishSpan {
    /// The context to inject: the span's, or `parent` alone when off.
    pub(crate) cx: Context,
    on: bool,
}

impl PublishSpan {
    pub(crate) fn start(
        parent: &Context,
        exchange: &str,
        routing_key: &str,
        link: Option<&Context>,
    ) -> Self {
        let Some(tracer) = Traces::tracer() else {
            return Self {
                cx: parent.clone(),
                on: false,
            };
        };
        let mut builder = tracer
            .span_builder(format!("publish {exchange}"))
            .with_kind(SpanKind::Producer)
            .with_attributes(vec![
                KeyValue::new("messaging.system", "rabbitmq"),
                KeyValue::new("messaging.operation.type", "send"),
                KeyValue::new("messaging.operation.name", "publish"),
                KeyValue::new("messaging.destination.name", exchange.to_owned()),
                KeyValue::new(
                    "messaging.rabbitmq.destination.routing_key",
                    routing_key.to_owned(),
                ),
            ]);
        if let Some(sc) = link
            .map(|l| l.span().span_context().clone())
            .filter(SpanContext::is_valid)
        {
            builder = builder.with_links(vec![Link::with_context(sc)]);
        }
        let span = builder.start_with_context(tracer, parent);
        Self {
            cx: parent.with_span(span),
            on: true,
        }
    }

    /// Confirmed.
    pub(crate) fn ok(&mut self) {
        self.end(None);
    }

    /// Not confirmed, for the reason `error_type` names.
    pub(crate) fn failed(&mut self, error_type: &str) {
        self.end(Some(error_type));
    }

    fn end(&mut self, error_type: Option<&str>) {
        if !std::mem::take(&mut self.on) {
            return;
        }
        let span = self.cx.span();
        if let Some(error) = error_type {
            span.set_attribute(KeyValue::new("error.type", error.to_owned()));
            span.set_status(Status::error(error.to_owned()));
        }
        span.end();
    }
}

impl Drop for PublishSpan {
    fn drop(&mut self) {
        self.end(Some("abandoned"));
    }
}
