//! A provider's state as the console and `GET /api/v1/providers` show it:
//! pause and why, breaker, and flow control. Read under the gate's lock,
//! copied out; nothing here changes the gate.

use super::{flow::Flow, gate::Gate, pause::PauseView};
use crate::domain::{Channel, PauseReason, fix_for};
use serde::Serialize;
use std::time::{Instant, SystemTime};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// One provider, now.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ProviderState {
    pub(crate) provider: &'static str,
    pub(crate) channel: &'static str,
    /// `null` while calls flow; else why they are held back.
    pub(crate) pause: Option<PauseState>,
    pub(crate) breaker: Breaker,
    pub(crate) flow: FlowState,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct PauseState {
    /// `auth` (401/402/403) or `outage` (the breaker opened).
    pub(crate) kind: &'static str,
    /// The provider's auth code, or `outage`.
    pub(crate) reason: String,
    pub(crate) fix: &'static str,
    /// When the next probe may go; `null` while one is out.
    pub(crate) until: Option<String>,
    pub(crate) probing: bool,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Breaker {
    /// `closed`, `open` (an outage pause) or `probing`.
    pub(crate) state: &'static str,
    pub(crate) failures_in_a_row: u32,
    /// Failures in a row that open it; 0 when it is off.
    pub(crate) threshold: u32,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct FlowState {
    pub(crate) in_flight: usize,
    pub(crate) in_flight_limit: usize,
    /// Calls a second sends are held to (learnt from 429s, under the
    /// ceiling); `null` while unpaced.
    pub(crate) pace_per_second: Option<f64>,
    pub(crate) ceiling_per_second: Option<f64>,
    /// A `Retry-After` holding every call back until then.
    pub(crate) held_until: Option<String>,
}

/// An instant as wall-clock RFC 3339 time.
fn wall(at: Instant, now: Instant) -> Option<String> {
    let system = SystemTime::now() + at.saturating_duration_since(now);
    OffsetDateTime::from(system).format(&Rfc3339).ok()
}

impl ProviderState {
    pub(crate) fn read(gate: &Gate, view: PauseView, flow: &Flow, now: Instant) -> Self {
        let provider = gate.provider();
        let pause = view.why.as_ref().map(|why| {
            let (kind, reason, fix) = match why {
                PauseReason::Auth(code) => ("auth", code.to_string(), fix_for(code.as_str())),
                PauseReason::Outage => (
                    "outage",
                    why.to_string(),
                    "the provider failed many calls in a row: calls resume after a successful probe",
                ),
            };
            PauseState {
                kind,
                reason,
                fix,
                until: view.until.and_then(|u| wall(u, now)),
                probing: view.probing,
            }
        });
        let breaker = match &view.why {
            Some(PauseReason::Outage) if view.probing => "probing",
            Some(PauseReason::Outage) => "open",
            _ => "closed",
        };
        Self {
            provider: provider.as_str(),
            channel: Channel::ALL
                .into_iter()
                .find(|c| crate::domain::Provider::for_channel(*c) == provider)
                .map_or("", Channel::as_str),
            pause,
            breaker: Breaker {
                state: breaker,
                failures_in_a_row: view.failures_in_a_row,
                threshold: view.breaker_threshold,
            },
            flow: FlowState {
                in_flight: flow.in_flight(),
                in_flight_limit: flow.limit(),
                pace_per_second: flow.pace(),
                ceiling_per_second: flow.ceiling(),
                held_until: flow.resume_at(now).and_then(|u| wall(u, now)),
            },
        }
    }
}
