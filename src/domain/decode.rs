//! Parsing a delivery body into a [`Job`]: every refusal names the field
//! at fault, and carries the id the dead-letter row is filed under.

use super::{
    Channel,
    job::{EmailAddress, EmailJob, InvalidJob, Job, JobId, Message, PhoneNumber, SmsJob, Text},
};
use serde_json::{Map, Value};
use std::borrow::Cow;

/// What [`decode`] needs besides the body.
#[derive(Debug, Clone, Copy)]
pub struct DecodeInput<'a> {
    pub channel: Channel,
    pub body: &'a [u8],
    /// The AMQP `message_id` property, the fallback id.
    pub message_id: Option<&'a str>,
    /// Largest body accepted, in bytes.
    pub max_bytes: usize,
}

/// Parses a delivery body into a [`Job`] for `channel`.
pub fn decode(input: DecodeInput<'_>) -> Result<Job, Box<InvalidJob>> {
    decode_with(input, true)
}

/// `fast: false` reads every body through a `Value` (tests compare the two).
fn decode_with(input: DecodeInput<'_>, fast: bool) -> Result<Job, Box<InvalidJob>> {
    let fallback_id = || {
        input
            .message_id
            .and_then(|id| JobId::parse(id).ok())
            .unwrap_or_else(|| JobId::derived(input.body))
    };
    let invalid = |reason: String, payload: Option<Value>, id: Option<JobId>| {
        Box::new(InvalidJob {
            job_id: id.unwrap_or_else(fallback_id),
            reason,
            payload,
        })
    };

    if input.body.len() > input.max_bytes {
        return Err(invalid(
            format!(
                "body is {} bytes, over the limit of {} bytes",
                input.body.len(),
                input.max_bytes
            ),
            None,
            None,
        ));
    }
    let text = std::str::from_utf8(input.body).map_err(|e| {
        invalid(
            format!(
                "body is not UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            ),
            None,
            None,
        )
    })?;
    // Most bodies are well-formed: read them without building a `Value`
    // (a map of owned strings, about 70 % of decoding a job). Any refusal
    // is decided again below from the `Value`, which the dead letter carries.
    if fast
        && let Ok(fast) = serde_json::from_str::<Fast<'_>>(text)
        && let Ok((id, message, expires_at)) = fields_of(&fast, input.channel)
    {
        return Ok(Job {
            id: id.unwrap_or_else(fallback_id),
            message,
            expires_at,
        });
    }
    let value: Value = serde_json::from_str(text)
        .map_err(|e| invalid(format!("body is not valid JSON: {e}"), None, None))?;
    let Value::Object(fields) = &value else {
        let kind = type_name(&value);
        return Err(invalid(
            format!("body must be a JSON object, got {kind}"),
            Some(value),
            None,
        ));
    };
    match fields_of(fields, input.channel) {
        Ok((id, message, expires_at)) => Ok(Job {
            id: id.unwrap_or_else(fallback_id),
            message,
            expires_at,
        }),
        Err((reason, id)) => Err(invalid(reason, Some(value), id)),
    }
}

/// A job's fields as the body has them. Only strings and null are
/// accepted here, a key twice is refused: anything else goes the slow way,
/// which words the refusal.
#[derive(Default, serde::Deserialize)]
#[serde(default)]
struct Fast<'a> {
    #[serde(borrow)]
    id: Option<Str<'a>>,
    #[serde(borrow)]
    from: Option<Str<'a>>,
    #[serde(borrow)]
    to: Option<Str<'a>>,
    #[serde(borrow)]
    subject: Option<Str<'a>>,
    #[serde(borrow)]
    html: Option<Str<'a>>,
    #[serde(borrow)]
    message: Option<Str<'a>>,
    #[serde(borrow)]
    expires_at: Option<Str<'a>>,
}

/// A string borrowed from the body, or copied where it has escapes. (serde
/// borrows a `Cow` only as a field's whole type: inside an `Option` it
/// always copied.)
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Str<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(s)))
            }
        }
        d.deserialize_str(Visit)
    }
}

/// One field of a body: absent (or null), a string, or another kind.
enum Field<'a> {
    Absent,
    Str(&'a str),
    Other(&'static str),
}

/// Reads a body's fields by name, from either form.
trait Fields {
    fn field(&self, name: &str) -> Field<'_>;
}

impl Fields for Map<String, Value> {
    fn field(&self, name: &str) -> Field<'_> {
        match self.get(name) {
            None | Some(Value::Null) => Field::Absent,
            Some(Value::String(s)) => Field::Str(s),
            Some(other) => Field::Other(type_name(other)),
        }
    }
}

impl Fields for Fast<'_> {
    fn field(&self, name: &str) -> Field<'_> {
        let value = match name {
            "id" => &self.id,
            "from" => &self.from,
            "to" => &self.to,
            "subject" => &self.subject,
            "html" => &self.html,
            "message" => &self.message,
            "expires_at" => &self.expires_at,
            _ => &None,
        };
        value.as_ref().map_or(Field::Absent, |s| Field::Str(&s.0))
    }
}

/// The job's id (if given), message and expiry; or why not, with the id
/// when it was read before the fault.
type Parsed = (Option<JobId>, Message, Option<time::OffsetDateTime>);

fn fields_of(fields: &impl Fields, channel: Channel) -> Result<Parsed, (String, Option<JobId>)> {
    // The id first: every later error is reported under the job's own id.
    let id = match fields.field("id") {
        Field::Absent => None,
        Field::Str(s) => Some(JobId::parse(s).map_err(|reason| (reason, None))?),
        Field::Other(kind) => {
            return Err((format!("field `id` must be a string, got {kind}"), None));
        }
    };
    let parsed = match channel {
        Channel::Email => parse_email(fields).map(Message::Email),
        Channel::Sms => parse_sms(fields).map(Message::Sms),
    }
    .and_then(|message| Ok((message, expires_at(fields)?)));
    match parsed {
        Ok((message, expires_at)) => Ok((id, message, expires_at)),
        Err(reason) => Err((reason, id)),
    }
}

/// `expires_at`: absent, null, or an RFC 3339 time with its offset.
fn expires_at(fields: &impl Fields) -> Result<Option<time::OffsetDateTime>, String> {
    use time::format_description::well_known::Rfc3339;
    match fields.field("expires_at") {
        Field::Absent => Ok(None),
        Field::Str(s) => time::OffsetDateTime::parse(s.trim(), &Rfc3339)
            .map(Some)
            .map_err(|_| {
                "field `expires_at` must be an RFC 3339 time, e.g. 2026-12-03T10:15:00Z".into()
            }),
        Field::Other(kind) => Err(format!("field `expires_at` must be a string, got {kind}")),
    }
}

fn parse_email(fields: &impl Fields) -> Result<EmailJob, String> {
    Ok(EmailJob {
        from: text(fields, "from")?,
        to: EmailAddress::parse(text(fields, "to")?.as_str())?,
        subject: text(fields, "subject")?,
        html: text(fields, "html")?,
    })
}

fn parse_sms(fields: &impl Fields) -> Result<SmsJob, String> {
    Ok(SmsJob {
        from: text(fields, "from")?,
        to: PhoneNumber::parse(text(fields, "to")?.as_str())?,
        message: text(fields, "message")?,
    })
}

fn text(fields: &impl Fields, name: &str) -> Result<Text, String> {
    match fields.field(name) {
        Field::Absent => Err(format!("field `{name}` is missing")),
        Field::Str(s) => Text::parse(name, s),
        Field::Other(kind) => Err(format!("field `{name}` must be a string, got {kind}")),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
