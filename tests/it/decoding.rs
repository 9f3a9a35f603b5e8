//! Malformed input: dead-lettered as `invalid_job` with a reason naming the
//! field, acked, and the worker goes on to deliver the next good job.

use crate::support::*;
use lapin::BasicProperties;

#[tokio::test]
async fn every_malformed_input_is_dead_lettered_and_the_next_good_job_is_delivered() {
    let env = TestEnv::new().await;
    let (email, sms) = (
        FakeProvider::accepting().await,
        FakeProvider::accepting().await,
    );
    let worker = env
        .worker(&email, &sms, &["--max-body-bytes", "4096"])
        .await;
    let long_id = "x".repeat(500);
    let oversize = format!(
        r#"{{"id":"big","from":"B","to":"+919876543210","message":"{}"}}"#,
        "a".repeat(5000)
    );
    let refused_id =
        format!(r#"{{"id":"{long_id}","from":"B","to":"+919876543210","message":"hi"}}"#);
    // (routing key, body, reason expected, the row's job id). Each is
    // published with `message_id` case-N, the fallback when the body gives
    // no usable id, except the refused id, which falls back to one derived
    // from the body.
    let cases: Vec<(&str, Vec<u8>, &str, String)> = vec![
        (
            "sms",
            b"this is not json".to_vec(),
            "body is not valid JSON",
            "case-0".into(),
        ),
        (
            "sms",
            b"\xff\xfe\x00garbage".to_vec(),
            "body is not UTF-8",
            "case-1".into(),
        ),
        (
            "email",
            br#"["an","array"]"#.to_vec(),
            "body must be a JSON object, got an array",
            "case-2".into(),
        ),
        (
            "sms",
            br#"{"id":"m1","from":"B","message":"hi"}"#.to_vec(),
            "field `to` is missing",
            "m1".into(),
        ),
        (
            "sms",
            br#"{"id":"m2","from":"","to":"+919876543210","message":"hi"}"#.to_vec(),
            "field `from` is empty",
            "m2".into(),
        ),
        (
            "email",
            br#"{"id":"m3","from":"a@b.c","to":"r@x.io","subject":["s"],"html":"h"}"#.to_vec(),
            "field `subject` must be a string, got an array",
            "m3".into(),
        ),
        (
            "sms",
            br#"{"id":"m4","from":"B","to":"+12","message":"hi"}"#.to_vec(),
            "field `to` must be an E.164 phone number",
            "m4".into(),
        ),
        (
            "email",
            br#"{"id":"m5","from":"a@b.c","to":"not-an-address","subject":"s","html":"h"}"#
                .to_vec(),
            "field `to` must be one email address",
            "m5".into(),
        ),
        (
            "sms",
            oversize.into_bytes(),
            "over the limit of 4096 bytes",
            "case-8".into(),
        ),
        (
            "sms",
            refused_id.clone().into_bytes(),
            "field `id` is 500 characters long",
            notify_worker::JobId::derived(refused_id.as_bytes()).to_string(),
        ),
        // jsonb cannot hold \u0000: such a body is kept as bytes instead.
        (
            "sms",
            br#"{"id":"m7","from":"B","to":"\u0000","message":"hi"}"#.to_vec(),
            "field `to` must be an E.164",
            "m7".into(),
        ),
    ];
    for (i, (key, body, _, _)) in cases.iter().enumerate() {
        let props = if i == 9 {
            BasicProperties::default()
        } else {
            BasicProperties::default().with_message_id(format!("case-{i}").into())
        };
        env.publish_with(&env.exchange, key, body, props).await;
        // A good job after each bad one is still delivered.
        let good_to = format!("+9198765{i:05}");
        env.publish("sms", &sms_job(&format!("good-{i}"), &good_to))
            .await;
        sms.wait_calls_to(&good_to, 1).await;
    }
    // A NUL inside a string is still JSON text, and a valid job: it is sent.
    env.publish(
        "email",
        br#"{"id":"m6","from":"a@b.c","to":"r@x.io","subject":"s","html":"h\u0000"}"#,
    )
    .await;
    email.wait_calls_to("r@x.io", 1).await;
    let rows = env.wait_rows(cases.len()).await;
    worker.stop().await;
    assert_eq!(rows.len(), cases.len(), "one row per bad job: {rows:?}");
    for (key, body, expected, job_id) in &cases {
        let row = env.row(job_id).await;
        assert_eq!(row.error_code, "invalid_job");
        assert!(
            row.reason.contains(expected),
            "expected {expected:?} in {:?}",
            row.reason
        );
        assert_eq!(row.channel, *key);
        assert_eq!(row.provider, None, "no call was made");
        assert_eq!(row.attempts, 0);
        match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(v) if body.len() <= 4096 && !body.windows(6).any(|w| w == b"\\u0000") => {
                assert_eq!(
                    row.payload.as_ref(),
                    Some(&v),
                    "payload kept as JSON, unknown fields too"
                );
                assert_eq!(row.raw_payload, None);
            }
            _ => {
                assert_eq!(row.payload, None, "{job_id}");
                assert_eq!(
                    row.raw_payload.as_deref(),
                    Some(&body[..body.len().min(4096)]),
                    "{job_id}"
                );
            }
        }
    }
    assert!(
        rows.iter().all(|r| r.job_id != "m6"),
        "the valid job was sent"
    );
    assert_eq!(env.ready(&env.sms_queue).await, 0);
    assert_eq!(env.ready(&env.email_queue).await, 0);
    env.cleanup().await;
}

#[tokio::test]
async fn the_amqp_message_id_names_a_job_without_an_id() {
    let env = TestEnv::new().await;
    let (email, sms) = (
        FakeProvider::accepting().await,
        FakeProvider::accepting().await,
    );
    let worker = env.worker(&email, &sms, &[]).await;
    let props = BasicProperties::default().with_message_id("amqp-msg-42".into());
    env.publish_with(&env.exchange, "sms", br#"{"from":"B","to":"+12"}"#, props)
        .await;
    env.wait_rows(1).await;
    worker.stop().await;
    let row = env.row("amqp-msg-42").await;
    assert!(
        row.reason.contains("field `to` must be an E.164"),
        "{}",
        row.reason
    );
    env.cleanup().await;
}
