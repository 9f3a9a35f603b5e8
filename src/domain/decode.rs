//! Parsing a delivery body into a [`Job`]: every refusal names the field
//! at fault, and carries the id the dead-letter row is filed under.

use super::{
    Channel,
    job::{EmailAddress, EmailJob, InvalidJob, Job, JobId, Message, PhoneNumber, SmsJob, Text},
};
use serde_json::{Map, Value};

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

    // The id first: every later error is reported under the job's own id.
    let id = match fields.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match JobId::parse(s) {
            Ok(id) => Some(id),
            Err(reason) => return Err(invalid(reason, Some(value), None)),
        },
        Some(other) => {
            let reason = format!("field `id` must be a string, got {}", type_name(other));
            return Err(invalid(reason, Some(value), None));
        }
    };
    let parsed = match input.channel {
        Channel::Email => parse_email(fields).map(Message::Email),
        Channel::Sms => parse_sms(fields).map(Message::Sms),
    }
    .and_then(|message| Ok((message, expires_at(fields)?)));
    match parsed {
        Ok((message, expires_at)) => Ok(Job {
            id: id.unwrap_or_else(fallback_id),
            message,
            expires_at,
        }),
        Err(reason) => Err(invalid(reason, Some(value), id)),
    }
}

/// `expires_at`: absent, null, or an RFC 3339 time with its offset.
fn expires_at(fields: &Map<String, Value>) -> Result<Option<time::OffsetDateTime>, String> {
    use time::format_description::well_known::Rfc3339;
    match fields.get("expires_at") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => time::OffsetDateTime::parse(s.trim(), &Rfc3339)
            .map(Some)
            .map_err(|_| {
                "field `expires_at` must be an RFC 3339 time, e.g. 2026-12-03T10:15:00Z".into()
            }),
        Some(other) => Err(format!(
            "field `expires_at` must be a string, got {}",
            type_name(other)
        )),
    }
}

fn parse_email(fields: &Map<String, Value>) -> Result<EmailJob, String> {
    Ok(EmailJob {
        from: text(fields, "from")?,
        to: EmailAddress::parse(text(fields, "to")?.as_str())?,
        subject: text(fields, "subject")?,
        html: text(fields, "html")?,
    })
}

fn parse_sms(fields: &Map<String, Value>) -> Result<SmsJob, String> {
    Ok(SmsJob {
        from: text(fields, "from")?,
        to: PhoneNumber::parse(text(fields, "to")?.as_str())?,
        message: text(fields, "message")?,
    })
}

fn text(fields: &Map<String, Value>, name: &str) -> Result<Text, String> {
    match fields.get(name) {
        None | Some(Value::Null) => Err(format!("field `{name}` is missing")),
        Some(Value::String(s)) => Text::parse(name, s),
        Some(other) => Err(format!(
            "field `{name}` must be a string, got {}",
            type_name(other)
        )),
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
mod tests {
    use super::*;
    use crate::domain::MAX_ID_CHARS;
    use proptest::prelude::*;

    fn input(channel: Channel, body: &[u8]) -> DecodeInput<'_> {
        DecodeInput {
            channel,
            body,
            message_id: None,
            max_bytes: crate::domain::DEFAULT_MAX_BODY_BYTES,
        }
    }

    #[test]
    fn decodes_email_and_keeps_given_id() {
        let body = br#"{"id":"j1","from":"a@x.io","to":"b@y.io","subject":"S","html":"<p>h</p>","extra":1}"#;
        let job = decode(input(Channel::Email, body)).unwrap();
        assert_eq!(job.id.as_str(), "j1");
        assert_eq!(job.channel(), Channel::Email);
    }

    #[test]
    fn id_falls_back_to_message_id_then_to_a_stable_hash() {
        let body = br#"{"from":"BRAND","to":"+919876543210","message":"OTP 1"}"#;
        let mut with_prop = input(Channel::Sms, body);
        with_prop.message_id = Some("amqp-id-7");
        assert_eq!(decode(with_prop).unwrap().id.as_str(), "amqp-id-7");
        let a = decode(input(Channel::Sms, body)).unwrap().id;
        let b = decode(input(Channel::Sms, body)).unwrap().id;
        assert_eq!(a, b);
        assert_eq!(a.as_str().len(), 36);
    }

    #[test]
    fn expires_at_is_rfc3339_with_an_offset() {
        let body = br#"{"from":"B","to":"+919876543210","message":"m","expires_at":"2026-12-03T10:15:00+05:30"}"#;
        let job = decode(input(Channel::Sms, body)).unwrap();
        let at = job.expires_at.unwrap();
        assert_eq!(at.unix_timestamp(), 1_796_273_100);
        assert!(job.expired_at(at));
        assert!(!job.expired_at(at - time::Duration::SECOND));
        let none = br#"{"from":"B","to":"+919876543210","message":"m","expires_at":null}"#;
        assert_eq!(decode(input(Channel::Sms, none)).unwrap().expires_at, None);
        for bad in [
            &br#"{"from":"B","to":"+919876543210","message":"m","expires_at":"tomorrow"}"#[..],
            br#"{"from":"B","to":"+919876543210","message":"m","expires_at":1764737100}"#,
        ] {
            let err = decode(input(Channel::Sms, bad)).unwrap_err();
            assert!(err.reason.contains("field `expires_at`"), "{}", err.reason);
        }
    }

    #[test]
    fn uuid_v7_ids_say_when_they_were_minted() {
        let v7 = JobId::parse(&uuid::Uuid::now_v7().to_string()).unwrap();
        let after = v7.minted_after().unwrap();
        let now = time::OffsetDateTime::now_utc();
        assert!(after < now && after > now - time::Duration::minutes(61));
        let v4 = JobId::parse(&uuid::Uuid::new_v4().to_string()).unwrap();
        assert_eq!(v4.minted_after(), None);
        assert_eq!(JobId::parse("otp-1").unwrap().minted_after(), None);
    }

    #[test]
    fn each_error_names_its_field() {
        let cases: &[(Channel, &[u8], &str)] = &[
            (
                Channel::Sms,
                br#"{"from":"B","to":"+91987","message":"m"}"#,
                "field `to` must be an E.164",
            ),
            (
                Channel::Sms,
                br#"{"from":"B","to":"919876543210","message":"m"}"#,
                "field `to` must be an E.164",
            ),
            (
                Channel::Sms,
                br#"{"from":"B","to":"+919876543210"}"#,
                "field `message` is missing",
            ),
            (
                Channel::Sms,
                br#"{"from":" ","to":"+919876543210","message":"m"}"#,
                "field `from` is empty",
            ),
            (
                Channel::Email,
                br#"{"from":"a","to":"nobody","subject":"s","html":"h"}"#,
                "field `to` must be one email",
            ),
            (
                Channel::Email,
                br#"{"from":"a","to":"a@b,c@d","subject":"s","html":"h"}"#,
                "field `to` must be one email",
            ),
            (
                Channel::Email,
                br#"{"from":"a","to":"a@b","subject":5,"html":"h"}"#,
                "field `subject` must be a string, got a number",
            ),
            (
                Channel::Email,
                br#"[1,2]"#,
                "body must be a JSON object, got an array",
            ),
            (
                Channel::Email,
                br#"{"id":7}"#,
                "field `id` must be a string",
            ),
            (Channel::Email, b"\xff\xfe{}", "body is not UTF-8"),
            (Channel::Email, b"{not json", "body is not valid JSON"),
        ];
        for (channel, body, expected) in cases {
            let err = decode(input(*channel, body)).unwrap_err();
            assert!(
                err.reason.starts_with(expected),
                "{:?}: {}",
                String::from_utf8_lossy(body),
                err.reason
            );
        }
    }

    #[test]
    fn refuses_oversize_bodies_and_long_ids() {
        let mut small = input(Channel::Sms, b"{}");
        small.max_bytes = 1;
        assert!(
            decode(small)
                .unwrap_err()
                .reason
                .contains("over the limit of 1 bytes")
        );
        let long = format!(
            r#"{{"id":"{}","from":"B","to":"+919876543210","message":"m"}}"#,
            "x".repeat(500)
        );
        let err = decode(input(Channel::Sms, long.as_bytes())).unwrap_err();
        assert!(err.reason.contains("field `id` is 500 characters long"));
        assert_eq!(
            err.job_id.as_str().len(),
            36,
            "a refused id is not used as the row's id"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            for channel in Channel::ALL {
                let _ = decode(input(channel, &body));
            }
        }

        #[test]
        fn arbitrary_json_never_panics(value in arb_json()) {
            let body = serde_json::to_vec(&value).unwrap();
            for channel in Channel::ALL {
                match decode(input(channel, &body)) {
                    Ok(job) => prop_assert!(job.id.as_str().chars().count() <= MAX_ID_CHARS),
                    Err(invalid) => prop_assert!(!invalid.reason.is_empty()),
                }
            }
        }
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("id".to_owned()),
            Just("from".to_owned()),
            Just("to".to_owned()),
            Just("subject".to_owned()),
            Just("html".to_owned()),
            Just("message".to_owned()),
            "[a-z]{1,6}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,40}".prop_map(Value::String),
            "\\+[0-9]{6,17}".prop_map(Value::String),
            "[a-z]{0,5}@[a-z]{0,5}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 32, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(key.clone(), inner, 0..7)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
