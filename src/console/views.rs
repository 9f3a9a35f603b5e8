//! What the API and the pages show of a dead letter, a group and a
//! delivery: masked unless revealed, with the fix attached.

use super::mask;
use crate::{
    deadletter::queries::{Detail, Group, Listed},
    domain::fix_for,
    ledger::queries::Delivery,
};
use serde::Serialize;
use serde_json::{Value, json};

/// One dead letter, as shown.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DeadLetterView {
    #[serde(flatten)]
    pub(crate) row: Listed,
    pub(crate) fix: &'static str,
    pub(crate) source_queue: String,
    pub(crate) provider_response: Option<String>,
    pub(crate) payload: Option<Value>,
    /// A body that was not JSON, as text (lossy); hidden unless revealed.
    pub(crate) raw_payload: Option<String>,
    pub(crate) raw_payload_bytes: Option<usize>,
    pub(crate) replayed_at: Option<String>,
    pub(crate) trace_id: Option<String>,
    /// False: recipients and texts are masked.
    pub(crate) revealed: bool,
}

impl DeadLetterView {
    pub(crate) fn new(d: Detail, reveal: bool) -> Self {
        let fix = fix_for(&d.row.error_code);
        let trace_id = d
            .trace_parent
            .as_deref()
            .and_then(|t| t.split('-').nth(1))
            .map(str::to_owned);
        let raw_bytes = d.raw_payload.as_ref().map(Vec::len);
        let mut row = d.row;
        if reveal {
            return Self {
                row,
                fix,
                source_queue: d.source_queue,
                provider_response: d.provider_response,
                payload: d.payload,
                raw_payload: d
                    .raw_payload
                    .map(|r| String::from_utf8_lossy(&r).into_owned()),
                raw_payload_bytes: raw_bytes,
                replayed_at: d.replayed_at,
                trace_id,
                revealed: true,
            };
        }
        let secrets = mask::secrets_of(d.payload.as_ref());
        row.reason = mask::scrub(&row.reason, &secrets);
        Self {
            row,
            fix,
            source_queue: d.source_queue,
            provider_response: d
                .provider_response
                .map(|r| mask::digit_runs(&mask::scrub(&r, &secrets))),
            payload: d.payload.as_ref().map(mask::payload),
            raw_payload: None,
            raw_payload_bytes: raw_bytes,
            replayed_at: d.replayed_at,
            trace_id,
            revealed: false,
        }
    }
}

/// One ledger row, recipient masked unless revealed.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DeliveryView {
    #[serde(flatten)]
    pub(crate) delivery: Delivery,
}

impl DeliveryView {
    pub(crate) fn new(mut delivery: Delivery, reveal: bool) -> Self {
        if !reveal {
            delivery.recipient = delivery.recipient.as_deref().map(mask::recipient);
        }
        Self { delivery }
    }
}

/// A group with its fix, and a sentence an operator can read at a glance.
pub(crate) fn group_json(g: &Group) -> Value {
    json!({
        "provider": g.provider,
        "error_code": g.error_code,
        "http_status": g.http_status,
        "count": g.count,
        "open": g.open,
        "first_seen": g.first_seen,
        "last_seen": g.last_seen,
        "reason": mask::digit_runs(&g.reason),
        "fix": fix_for(&g.error_code),
        "summary": summary(g),
    })
}

/// "412 jobs: telnxo invalid_api_key since 2026-12-03T10:02:00Z, verify the key".
pub(crate) fn summary(g: &Group) -> String {
    format!(
        "{} open of {} jobs: {} {}{} since {}; {}",
        g.open,
        g.count,
        g.provider.as_deref().unwrap_or("no provider"),
        g.error_code,
        g.http_status.map(|s| format!(" ({s})")).unwrap_or_default(),
        g.first_seen,
        fix_for(&g.error_code)
    )
}
