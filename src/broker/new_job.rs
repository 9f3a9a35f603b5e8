//! Jobs as producers build them, to publish: the same fields the worker
//! decodes, with `channel` choosing the queue.

use crate::domain::Channel;
use serde::{Deserialize, Serialize};

/// An email job as producers build it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEmail {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub from: String,
    pub to: String,
    pub subject: String,
    pub html: String,
    /// RFC 3339; never sent after it (contract section 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// `"urgent"`: published to the channel's urgent lane, which the worker
    /// serves first (an OTP overtakes a campaign).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
}

/// An SMS job as producers build it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewSms {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub from: String,
    pub to: String,
    pub message: String,
    /// RFC 3339; never sent after it (contract section 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// `"urgent"`: published to the channel's urgent lane, which the worker
    /// serves first (an OTP overtakes a campaign).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
}

/// A job to publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "channel", rename_all = "lowercase")]
pub enum NewJob {
    Email(NewEmail),
    Sms(NewSms),
}

impl NewJob {
    pub fn channel(&self) -> Channel {
        match self {
            NewJob::Email(_) => Channel::Email,
            NewJob::Sms(_) => Channel::Sms,
        }
    }

    /// Sets `expires_at` unless the job has one.
    pub fn expire_at(&mut self, at: &str) {
        let slot = match self {
            NewJob::Email(e) => &mut e.expires_at,
            NewJob::Sms(s) => &mut s.expires_at,
        };
        slot.get_or_insert_with(|| at.to_owned());
    }

    /// Marks the job urgent (`"priority": "urgent"`).
    pub fn make_urgent(&mut self) {
        let slot = match self {
            NewJob::Email(e) => &mut e.priority,
            NewJob::Sms(s) => &mut s.priority,
        };
        *slot = Some("urgent".to_owned());
    }

    /// Whether it goes to the urgent lane.
    pub fn is_urgent(&self) -> bool {
        let p = match self {
            NewJob::Email(e) => &e.priority,
            NewJob::Sms(s) => &s.priority,
        };
        p.as_deref() == Some("urgent")
    }

    /// Its routing key: the channel's, or the channel's urgent lane.
    pub(crate) fn routing_key(&self) -> &'static str {
        if self.is_urgent() {
            self.channel().urgent_key()
        } else {
            self.channel().as_str()
        }
    }

    /// The message body: the job's fields without the `channel` tag.
    pub fn body(&self) -> Vec<u8> {
        let body = match self {
            NewJob::Email(e) => serde_json::to_vec(e),
            NewJob::Sms(s) => serde_json::to_vec(s),
        };
        // Serialising plain strings cannot fail.
        body.unwrap_or_default()
    }
}
