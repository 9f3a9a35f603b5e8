//! Carriers of W3C trace context: AMQP headers and HTTP header values.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator},
};
use opentelemetry_sdk::propagation::TraceContextPropagator;

use super::{TRACEPARENT, TRACESTATE};

/// Reads trace context from AMQP headers (string values only).
pub(super) struct Headers<'a>(pub(super) &'a FieldTable);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0.inner().get(key)? {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
            AMQPValue::ShortString(s) => Some(s.as_str()),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.inner().keys().map(ShortString::as_str).collect()
    }
}

/// Writes trace context into AMQP headers.
pub(super) struct HeadersMut<'a>(pub(super) &'a mut FieldTable);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(
            ShortString::from(key),
            AMQPValue::LongString(LongString::from(value)),
        );
    }
}

/// Trace context as two header values, for HTTP or AMQP.
#[derive(Debug, Default)]
pub(super) struct Pair {
    pub(super) traceparent: Option<String>,
    pub(super) tracestate: Option<String>,
}

impl Injector for Pair {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT => self.traceparent = Some(value),
            TRACESTATE if !value.is_empty() => self.tracestate = Some(value),
            _ => {}
        }
    }
}

/// The trace context of `cx` as `traceparent` (and `tracestate`).
pub(super) fn pair(cx: &Context) -> Pair {
    let mut pair = Pair::default();
    TraceContextPropagator::new().inject_context(cx, &mut pair);
    pair
}
