//! The delivery ledger end to end: a redelivered job is not sent twice,
//! every send is on record, stale jobs are never sent.

use crate::support::*;
use std::time::{Duration, Instant};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap()
}

fn sms_expiring(id: &str, to: &str, at: OffsetDateTime) -> Vec<u8> {
    serde_json::json!({"id": id, "from": "YOURBRAND", "to": to,
        "message": "Your OTP is 482910. Valid for 10 minutes.", "expires_at": rfc3339(at)})
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn a_job_sent_once_is_acked_unsent_when_it_comes_again_and_is_on_record() {
    let env = TestEnv::new().await;
    let email = FakeProvider::accepting().await;
    let sms = FakeProvider::start(|_| Reply::status(200, r#"{"data":{"id":"tx_77"}}"#)).await;
    let worker = env.worker(&email, &sms, &[]).await;
    env.publish("sms", &sms_job("otp-1", "+919876500001")).await;
    env.wait_ledger("otp-1", "sent").await;
    // The same job again (a producer retry, or a redelivery after a lost ack).
    env.publish("sms", &sms_job("otp-1", "+919876500001")).await;
    worker
        .wait_metric(
            r#"notify_jobs_total{channel="sms",outcome="duplicate_suppressed"}"#,
            1.0,
        )
        .await;
    let calls = sms.calls();
    assert_eq!(calls.len(), 1, "sent once");
    assert_eq!(calls[0].idempotency_key.as_deref(), Some("otp-1"));
    assert_eq!(
        env.ledger("otp-1").await,
        vec![("sent".to_owned(), 1, Some("tx_77".to_owned()))]
    );
    assert!(env.rows().await.is_empty());

    let (code, out, err) = env.cli(&["deliveries", "show", "otp-1"], None).await;
    assert_eq!(code, 0, "{err}");
    for want in [
        "status:              sent",
        "tx_77",
        "+919876500001",
        "telnxo",
    ] {
        assert!(out.contains(want), "{want} missing in:\n{out}");
    }
    let (code, out, _) = env
        .cli(
            &["deliveries", "list", "--to", "+919876500001", "--json"],
            None,
        )
        .await;
    assert_eq!(code, 0);
    let row: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(row["status"], "sent");
    assert_eq!(row["provider_message_id"], "tx_77");
    assert!(row.get("message").is_none(), "no body in the ledger");
    let (code, _, err) = env.cli(&["deliveries", "show", "nope"], None).await;
    assert_eq!(code, 1);
    assert!(err.contains("no ledger record of job nope"), "{err}");
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn an_expired_job_is_never_sent_whether_stale_on_arrival_in_a_503_storm_or_in_a_pause() {
    let env = TestEnv::new().await;
    let email = FakeProvider::accepting().await;
    let sms = FakeProvider::start(|c| match c.to() {
        "+919876500002" => Reply::status(503, r#"{"error":"unavailable"}"#),
        "+919876500003" => Reply::status(401, r#"{"error":"invalid_api_key"}"#),
        _ => Reply::ok(),
    })
    .await;
    let worker = env
        .worker(
            &email,
            &sms,
            &["--max-attempts", "100", "--breaker-failures", "0"],
        )
        .await;
    let now = OffsetDateTime::now_utc();
    // Stale on arrival.
    env.publish(
        "sms",
        &sms_expiring("stale", "+919876500001", now - time::Duration::minutes(1)),
    )
    .await;
    // Expires during a 503 storm.
    let storm_ends = now + time::Duration::milliseconds(3000);
    env.publish("sms", &sms_expiring("storm", "+919876500002", storm_ends))
        .await;
    let storm_deadline = Instant::now() + Duration::from_millis(3000);
    // Its first call before the pause below (which would hold it instead).
    sms.wait_calls_to("+919876500002", 1).await;
    // An auth failure pauses Telnxo for 30 s; a job expiring in 1 s waits
    // in the pause and must not be sent after it.
    env.publish("sms", &sms_job("auth", "+919876500003")).await;
    sms.wait_calls_to("+919876500003", 1).await;
    env.publish(
        "sms",
        &sms_expiring(
            "paused",
            "+919876500004",
            OffsetDateTime::now_utc() + time::Duration::seconds(1),
        ),
    )
    .await;
    for job in ["stale", "storm", "paused"] {
        env.wait_ledger(job, "expired").await;
        let row = env.row(job).await;
        assert_eq!(row.error_code, "expired", "{job}");
        assert!(row.reason.contains("expired at"), "{}", row.reason);
    }
    assert!(sms.calls_to("+919876500001").is_empty(), "stale job sent");
    assert!(sms.calls_to("+919876500004").is_empty(), "paused job sent");
    let storm = sms.calls_to("+919876500002");
    assert!(!storm.is_empty());
    assert!(
        storm.iter().all(|c| c.at <= storm_deadline),
        "a call after expires_at"
    );
    let row = env.row("storm").await;
    assert_eq!(row.http_status, Some(503));
    assert_eq!(row.attempts as usize, storm.len());
    worker
        .wait_metric(
            r#"notify_dead_letters_total{channel="sms",error_code="expired"}"#,
            3.0,
        )
        .await;
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_replayed_dead_letter_is_sent_and_recorded() {
    let env = TestEnv::new().await;
    let email = FakeProvider::accepting().await;
    let sms = FakeProvider::start(|c| {
        if c.nth == 1 {
            Reply::status(422, r#"{"error":"bad_sender"}"#)
        } else {
            Reply::ok()
        }
    })
    .await;
    let worker = env.worker(&email, &sms, &[]).await;
    env.publish("sms", &sms_job("again", "+919876500005")).await;
    env.wait_ledger("again", "dead_lettered").await;
    let (code, _, err) = env.cli(&["dead-letters", "replay", "--all"], None).await;
    assert_eq!(code, 0, "{err}");
    env.wait_ledger("again", "sent").await;
    let calls = sms.calls_to("+919876500005");
    assert_eq!(calls.len(), 2);
    assert!(
        calls
            .iter()
            .all(|c| c.idempotency_key.as_deref() == Some("again"))
    );
    assert_eq!(env.ledger("again").await[0].1, 2, "attempts of both claims");
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn with_the_ledger_off_no_row_is_written_and_jobs_still_flow() {
    let env = TestEnv::new().await;
    let (email, sms) = (
        FakeProvider::accepting().await,
        FakeProvider::accepting().await,
    );
    let worker = env.worker(&email, &sms, &["--ledger", "off"]).await;
    env.publish_emails("off", 3).await;
    email.wait_calls(3).await;
    worker
        .wait_metric(r#"notify_jobs_total{channel="email",outcome="sent"}"#, 3.0)
        .await;
    assert!(env.ledger("off-0").await.is_empty());
    worker.stop().await;
    env.cleanup().await;
}

/// An operator's constraint the worker cannot know of refuses a claim or
/// a record for its content: the job is not held forever. A refused
/// claim is sent unrecorded; a refused record still lets the sent job be
/// acked; the jobs around them are claimed and recorded as usual.
#[tokio::test]
async fn rows_the_ledger_table_refuses_never_hold_a_job() {
    let env = TestEnv::new().await;
    let email = FakeProvider::accepting().await;
    let sms = FakeProvider::start(|c| match c.to() {
        "+919876500007" => Reply::status(200, r#"{"id":"refuse-me"}"#),
        _ => Reply::ok(),
    })
    .await;
    let worker = env.worker(&email, &sms, &[]).await;
    for check in [
        "ALTER TABLE deliveries ADD CONSTRAINT op_recipient CHECK (recipient <> '+919876500006')",
        "ALTER TABLE deliveries ADD CONSTRAINT op_msgid CHECK (provider_message_id <> 'refuse-me')",
    ] {
        sqlx::query(check).execute(&env.db).await.unwrap();
    }
    env.publish("sms", &sms_job("refused-claim", "+919876500006"))
        .await;
    env.publish("sms", &sms_job("refused-record", "+919876500007"))
        .await;
    env.publish("sms", &sms_job("fine", "+919876500008")).await;
    worker
        .wait_metric(r#"notify_jobs_total{channel="sms",outcome="sent"}"#, 3.0)
        .await;
    eventually("queue drained", Duration::from_secs(10), || async {
        (env.ready(&env.sms_queue).await == 0).then_some(())
    })
    .await;
    for to in ["+919876500006", "+919876500007", "+919876500008"] {
        assert_eq!(sms.calls_to(to).len(), 1, "{to}");
    }
    assert!(env.ledger("refused-claim").await.is_empty());
    assert_eq!(env.ledger("refused-record").await[0].0, "claimed");
    env.wait_ledger("fine", "sent").await;
    assert!(
        worker
            .metric(r#"notify_ledger_errors_total{op="record"}"#)
            .await
            .unwrap()
            >= 1.0
    );
    assert_eq!(
        worker
            .metric(r#"notify_ledger_unrecorded_total{channel="sms"}"#)
            .await,
        Some(1.0)
    );
    worker.stop().await;
    env.cleanup().await;
}
