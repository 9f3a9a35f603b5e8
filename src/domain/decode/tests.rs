//! Decoding: each refusal's wording, and the fast reading against the `Value` one.

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
    let body =
        br#"{"id":"j1","from":"a@x.io","to":"b@y.io","subject":"S","html":"<p>h</p>","extra":1}"#;
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

    /// The fast reading decides every body as the `Value` one does: the
    /// same job, or the same refusal. Half the bodies are shaped like jobs
    /// (most of those are accepted), half are any JSON.
    #[test]
    fn the_fast_reading_agrees_with_the_value_one(
        value in prop_oneof![arb_json(), arb_job_like()]
    ) {
        let body = serde_json::to_vec(&value).unwrap();
        for channel in Channel::ALL {
            prop_assert_eq!(
                decode_with(input(channel, &body), true),
                decode_with(input(channel, &body), false)
            );
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

/// Each known field absent or present, mostly with a fitting string.
fn arb_job_like() -> impl Strategy<Value = Value> {
    let value = prop_oneof![
        4 => prop_oneof![
            "[A-Za-z0-9 ]{1,12}",
            "\\+[0-9]{8,15}",
            "[a-z]{1,5}@[a-z]{1,5}\\.io",
            "2026-12-0[1-9]T1[0-9]:[0-5][0-9]:00(Z|\\+05:30)",
            "[\"\\\\\\n\\t\u{e9}\u{1F600}<>&a]{0,8}",
        ]
        .prop_map(Value::String),
        1 => Just(Value::Null),
        1 => any::<i64>().prop_map(Value::from),
    ];
    let names = [
        "id",
        "from",
        "to",
        "subject",
        "html",
        "message",
        "expires_at",
        "x",
    ];
    proptest::collection::vec(proptest::option::weighted(0.8, value), names.len()).prop_map(
        move |values| {
            let map = names
                .iter()
                .zip(values)
                .filter_map(|(n, v)| Some(((*n).to_owned(), v?)))
                .collect();
            Value::Object(map)
        },
    )
}

#[test]
fn the_fast_reading_leaves_odd_bodies_to_the_value_one() {
    let cases: [&[u8]; 5] = [
        // A key twice: the `Value` keeps the last, the fast reading refuses.
        br#"{"from":"B","to":"+919876543210","message":"first","message":"second"}"#,
        // Escapes in keys and values.
        br#"{"fr\u006fm":"B\n","to":"+919876543210","message":"\"hi\" \u00e9"}"#,
        // A field the channel does not read may be of any kind.
        br#"{"from":"B","to":"+919876543210","message":"m","html":5,"subject":[1]}"#,
        br#"{"from":"B","to":"+919876543210","message":7}"#,
        br#"["from","B"]"#,
    ];
    for body in cases {
        let fast = decode_with(input(Channel::Sms, body), true);
        assert_eq!(
            fast,
            decode_with(input(Channel::Sms, body), false),
            "{body:?}"
        );
    }
    let twice = decode(input(Channel::Sms, cases[0])).unwrap();
    let Message::Sms(sms) = twice.message else {
        panic!("not sms")
    };
    assert_eq!(sms.message.as_str(), "second");
    let escaped = decode(input(Channel::Sms, cases[1])).unwrap();
    let Message::Sms(sms) = escaped.message else {
        panic!("not sms")
    };
    assert_eq!(
        (sms.from.as_str(), sms.message.as_str()),
        ("B\n", "\"hi\" \u{e9}")
    );
    assert!(decode(input(Channel::Sms, cases[2])).is_ok());
}

fn arb_json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("id".to_owned()),
        Just("from".to_owned()),
        Just("to".to_owned()),
        Just("subject".to_owned()),
        Just("html".to_owned()),
        Just("message".to_owned()),
        Just("expires_at".to_owned()),
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
        "2026-12-0[1-9]T1[0-9]:[0-5][0-9]:00(Z|\\+05:30)".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(key.clone(), inner, 0..7)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn the_fast_reading_borrows_what_has_no_escapes() {
    let fast: Fast<'_> = serde_json::from_str(r#"{"from":"plain","to":"a\"b"}"#).unwrap();
    assert!(matches!(fast.from, Some(Str(Cow::Borrowed("plain")))));
    assert!(matches!(&fast.to, Some(Str(Cow::Owned(s))) if s == "a\"b"));
    assert!(fast.message.is_none());
}
