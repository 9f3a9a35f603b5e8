use super::*;
use proptest::prelude::*;
use serde_json::Value;

/// The former reading, through a `Value`: what the new one must answer.
fn through_value(body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    let id = ["id", "message_id", "messageId"]
        .into_iter()
        .find_map(|k| value.get(k).filter(|v| !v.is_null()))
        .or_else(|| value.get("data")?.get("id"))?;
    let id = match id {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    (!id.is_empty() && id.chars().count() <= 256 && !id.chars().any(char::is_control)).then_some(id)
}

#[test]
fn provider_message_id_is_read_from_each_shape_and_bounded() {
    for body in [
        r#"{"id":"m1"}"#,
        r#"{"message_id":"m1"}"#,
        r#"{"messageId":"m1"}"#,
        r#"{"data":{"id":"m1"}}"#,
        r#"{"id":null,"message_id":" m1 "}"#,
        r#"{"\u0069d":"m1","status":"queued"}"#,
        r#"{"id":"m0","id":"m1"}"#,
        r#"{"id":"m1","data":"not an object"}"#,
    ] {
        assert_eq!(provider_message_id(body).as_deref(), Some("m1"), "{body}");
    }
    assert_eq!(provider_message_id(r#"{"id":42}"#).as_deref(), Some("42"));
    assert_eq!(
        provider_message_id(r#"{"id":-1.5e3}"#).as_deref(),
        Some("-1500.0")
    );
    let long = format!(r#"{{"id":"{}"}}"#, "x".repeat(257));
    for body in [
        "",
        "not json",
        "[]",
        r#"{"id":{}}"#,
        r#"{"id":true,"message_id":"m1"}"#,
        r#"{"id":"a\u0000b"}"#,
        r#"{"data":{"id":null}}"#,
        r#"{"id":"m1"} trailing"#,
        &long,
    ] {
        assert_eq!(provider_message_id(body), None, "{body}");
    }
}

/// JSON values that reach every branch: the keys read, escaped spellings
/// of them, nulls, strings of any text, numbers, and nesting.
fn json() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("id".to_owned()),
        Just("message_id".to_owned()),
        Just("messageId".to_owned()),
        Just("data".to_owned()),
        Just("\\u0069d".to_owned()),
        Just("status".to_owned()),
        "[a-z_]{0,6}",
    ];
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:e}")),
        any::<String>().prop_map(|s| Value::String(s).to_string()),
        "[ a-z0-9\\\\\"]{0,12}".prop_map(|s| format!("\"{s}\"")),
    ];
    leaf.prop_recursive(3, 24, 5, move |inner| {
        prop_oneof![
            prop::collection::vec((key.clone(), inner.clone()), 0..5).prop_map(|kv| {
                let kv: Vec<String> = kv
                    .into_iter()
                    .map(|(k, v)| format!("\"{k}\" : {v}"))
                    .collect();
                format!("{{{}}}", kv.join(","))
            }),
            prop::collection::vec(inner, 0..4).prop_map(|v| format!("[{}]", v.join(","))),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn ids_are_read_as_through_a_value(body in json()) {
        prop_assert_eq!(provider_message_id(&body), through_value(&body));
    }

    #[test]
    fn any_text_is_read_as_through_a_value(body in any::<String>()) {
        prop_assert_eq!(provider_message_id(&body), through_value(&body));
    }
}
