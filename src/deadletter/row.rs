//! One dead-letter row as the worker builds it (contract section 4).
//!
//! A row can only be built by [`DeadLetter::new`], which makes whatever a
//! provider or a producer sent storable: NUL (which PostgreSQL text and
//! jsonb refuse) is replaced before anything is cut, and every text is cut
//! on a character boundary to what its column holds. A row that reaches the
//! table can only be refused for reasons outside the worker's making (an
//! operator's constraint, say); then [`DeadLetter::degraded`] keeps what
//! identifies the job and says what was dropped.

use crate::domain::{Channel, ErrorCode, Provider};
use serde_json::Value;

/// Most bytes of `provider_response` (the table checks it).
pub(crate) const MAX_PROVIDER_RESPONSE: usize = 4096;
/// Most bytes of `reason`: the cause, the fix, and a provider message.
const MAX_REASON: usize = 8192;
/// Most bytes of `job_id`: 128 characters of up to 4 bytes.
const MAX_JOB_ID: usize = 512;
/// Most bytes of `source_queue` (AMQP names are at most 255).
const MAX_QUEUE: usize = 255;

/// One row to write.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DeadLetter {
    pub(crate) job_id: String,
    pub(crate) channel: Channel,
    /// `None` when no provider call was made.
    pub(crate) provider: Option<Provider>,
    pub(crate) error_code: ErrorCode,
    pub(crate) reason: String,
    pub(crate) http_status: Option<u16>,
    pub(crate) provider_response: Option<String>,
    pub(crate) body: Body,
    pub(crate) attempts: u32,
    pub(crate) source_queue: String,
    /// The job's W3C `traceparent`, when it had a trace.
    pub(crate) trace_parent: Option<String>,
    /// Only [`DeadLetter::new`] builds a row.
    _storable: Storable,
}

#[derive(Debug, Clone, PartialEq)]
struct Storable;

/// The job as received: JSON when it parsed, bytes when it did not.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Body {
    Json(Value),
    Raw(Vec<u8>),
    /// Dropped from a degraded row.
    Dropped,
}

/// What a row is built from, as it came.
#[derive(Debug, Clone)]
pub(crate) struct Parts<'a> {
    pub(crate) job_id: &'a str,
    pub(crate) channel: Channel,
    pub(crate) provider: Option<Provider>,
    pub(crate) error_code: ErrorCode,
    pub(crate) reason: &'a str,
    pub(crate) http_status: Option<u16>,
    pub(crate) provider_response: Option<&'a str>,
    /// The body as JSON, when it parsed.
    pub(crate) payload: Option<Value>,
    /// The body's bytes (already cut to the body limit).
    pub(crate) raw: &'a [u8],
    pub(crate) attempts: u32,
    pub(crate) source_queue: &'a str,
    pub(crate) trace_parent: Option<String>,
}

impl DeadLetter {
    pub(crate) fn new(parts: Parts<'_>) -> Self {
        let body = match parts.payload {
            // jsonb cannot hold `\u0000`: such JSON is kept as its bytes.
            Some(v) if !has_nul(&v) => Body::Json(v),
            _ => Body::Raw(parts.raw.to_vec()),
        };
        Self {
            job_id: storable(parts.job_id, MAX_JOB_ID),
            channel: parts.channel,
            provider: parts.provider,
            error_code: parts.error_code,
            reason: storable(parts.reason, MAX_REASON),
            http_status: parts.http_status,
            provider_response: parts
                .provider_response
                .map(|r| storable(r, MAX_PROVIDER_RESPONSE)),
            body,
            attempts: parts.attempts,
            source_queue: storable(parts.source_queue, MAX_QUEUE),
            // A traceparent is 55 ASCII characters; anything longer is not one.
            trace_parent: parts
                .trace_parent
                .filter(|t| t.len() <= 128 && t.is_ascii()),
            _storable: Storable,
        }
    }

    /// The row without the parts the table may refuse: payload and
    /// provider response dropped, and the reason saying so and why.
    pub(crate) fn degraded(&self, refusal: &str) -> Self {
        let note = format!(
            " [stored degraded: the table refused the full row ({}); payload and provider response dropped]",
            storable(refusal, 1024)
        );
        let keep = MAX_REASON - note.len();
        Self {
            reason: storable(&self.reason, keep) + &note,
            provider_response: None,
            body: Body::Dropped,
            ..self.clone()
        }
    }
}

/// `text` as PostgreSQL text takes it: NUL replaced by U+FFFD first, then
/// cut to at most `max` bytes on a character boundary.
pub(crate) fn storable(text: &str, max: usize) -> String {
    let mut text = text.replace('\0', "\u{FFFD}");
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_is_replaced_before_the_cut_which_falls_on_a_character_boundary() {
        // NULs near the cut grow the text by two bytes each when replaced:
        // replaced first, the cut still holds.
        let text = format!("{}\0\0\0", "a".repeat(MAX_PROVIDER_RESPONSE - 2));
        let kept = storable(&text, MAX_PROVIDER_RESPONSE);
        assert!(kept.len() <= MAX_PROVIDER_RESPONSE, "{}", kept.len());
        assert!(!kept.contains('\0'));
        let wide = "é".repeat(3000);
        let kept = storable(&wide, MAX_PROVIDER_RESPONSE);
        assert_eq!(kept.len(), MAX_PROVIDER_RESPONSE);
        assert_eq!(storable("a\0b", 10), "a\u{FFFD}b");
    }
}
