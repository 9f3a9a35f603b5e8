//! Job messages (contract section 2) as types: a [`Job`] can only be built
//! by [`super::decode`], so one that reaches a provider client is well formed.

use super::Channel;
use serde::Serialize;
use serde_json::Value;
use std::fmt;

/// Longest `id` a producer may give.
pub const MAX_ID_CHARS: usize = 128;

/// Largest job body accepted by default (`NOTIFY_MAX_BODY_BYTES`).
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024;

/// A job's identity, stable across redeliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobId(String);

impl JobId {
    /// Id derived from the body bytes (UUIDv5), so a redelivery keeps its id.
    pub fn derived(body: &[u8]) -> Self {
        // A fixed namespace of our own: ids stay stable across versions.
        const NAMESPACE: uuid::Uuid =
            uuid::Uuid::from_u128(0x6e6f_7469_6679_2d77_6f72_6b65_7200_0001);
        Self(uuid::Uuid::new_v5(&NAMESPACE, body).to_string())
    }

    /// An id a producer gave (the `id` field or the AMQP `message_id`).
    pub(crate) fn parse(value: &str) -> Result<Self, String> {
        check_id(value).map(|()| Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// When this id was made, if it is a UUIDv7 (as our publishers' ids
    /// are): no claim of the job can be older, so the ledger need not look
    /// at earlier partitions. An hour of clock skew is allowed for; a time
    /// in the future is not believed.
    pub(crate) fn minted_after(&self) -> Option<time::OffsetDateTime> {
        let id = uuid::Uuid::try_parse(&self.0).ok()?;
        if id.get_version() != Some(uuid::Version::SortRand) {
            return None;
        }
        let (secs, _) = id.get_timestamp()?.to_unix();
        let minted = time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).ok()?).ok()?;
        let skew = time::Duration::hours(1);
        (minted <= time::OffsetDateTime::now_utc() + skew).then(|| minted - skew)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_id(id: &str) -> Result<(), String> {
    if id.trim().is_empty() {
        return Err("field `id` is empty".into());
    }
    let chars = id.chars().count();
    if chars > MAX_ID_CHARS {
        return Err(format!(
            "field `id` is {chars} characters long, over the limit of {MAX_ID_CHARS}"
        ));
    }
    if id.chars().any(char::is_control) {
        return Err("field `id` contains a control character".into());
    }
    Ok(())
}

/// A string that is not empty nor only whitespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Text(String);

impl Text {
    pub(crate) fn parse(name: &str, value: &str) -> Result<Self, String> {
        if value.trim().is_empty() {
            Err(format!("field `{name}` is empty"))
        } else {
            Ok(Self(value.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One email address (it has an `@`, and is not a list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct EmailAddress(String);

impl EmailAddress {
    pub(crate) fn parse(value: &str) -> Result<Self, String> {
        let ok = value.chars().count() <= 254
            && value.matches('@').count() == 1
            && !value.starts_with('@')
            && !value.ends_with('@')
            && !value
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || matches!(c, ',' | ';' | '<' | '>'));
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err("field `to` must be one email address with an `@`".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An E.164 phone number: `+` then 8 to 15 digits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    pub(crate) fn parse(value: &str) -> Result<Self, String> {
        let digits = value.strip_prefix('+').unwrap_or("");
        if (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(value.to_owned()))
        } else {
            Err("field `to` must be an E.164 phone number: `+` then 8 to 15 digits".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The MigoSMTP request body, exactly as the contract fixes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EmailJob {
    pub from: Text,
    pub to: EmailAddress,
    pub subject: Text,
    pub html: Text,
}

/// The Telnxo request body, exactly as the contract fixes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SmsJob {
    pub from: Text,
    pub to: PhoneNumber,
    pub message: Text,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Email(EmailJob),
    Sms(SmsJob),
}

/// A decoded job, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: JobId,
    pub message: Message,
    /// Never sent after this (contract section 8).
    pub expires_at: Option<time::OffsetDateTime>,
}

impl Job {
    pub fn channel(&self) -> Channel {
        match self.message {
            Message::Email(_) => Channel::Email,
            Message::Sms(_) => Channel::Sms,
        }
    }

    /// The recipient, as the ledger records it.
    pub fn recipient(&self) -> &str {
        match &self.message {
            Message::Email(e) => e.to.as_str(),
            Message::Sms(s) => s.to.as_str(),
        }
    }

    /// True once `expires_at` has passed at `now`.
    pub fn expired_at(&self, now: time::OffsetDateTime) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }
}

/// A body that cannot become a job. It carries what the dead-letter row needs.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidJob {
    pub job_id: JobId,
    /// Names the field at fault (or says why the body as a whole is refused).
    pub reason: String,
    /// The body when it parsed as JSON.
    pub payload: Option<Value>,
}
