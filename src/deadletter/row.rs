//! One dead-letter row as the worker builds it (contract section 4).

use crate::domain::{Channel, ErrorCode, Provider};
use serde_json::Value;

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
}

/// The job as received: JSON when it parsed, bytes when it did not.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Body {
    Json(Value),
    Raw(Vec<u8>),
}

impl Body {
    /// Chooses the column for a body. JSON holding `\u0000` cannot be stored
    /// as jsonb, so it is kept as bytes instead of failing the insert forever.
    pub(crate) fn new(payload: Option<Value>, raw: &[u8]) -> Self {
        match payload {
            Some(v) if !has_nul(&v) => Body::Json(v),
            _ => Body::Raw(raw.to_vec()),
        }
    }
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}
