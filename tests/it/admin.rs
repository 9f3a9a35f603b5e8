//! Admin HTTP: health, readiness with real checks, metrics.

use crate::support::*;
use std::time::Duration;

#[tokio::test]
async fn readyz_turns_503_when_the_database_goes_away() {
    let env = TestEnv::new().await;
    let (email, sms) = (
        FakeProvider::accepting().await,
        FakeProvider::accepting().await,
    );
    let worker = env.worker(&email, &sms, &[]).await;
    assert_eq!(worker.get("/healthz").await.0, 200);
    assert_eq!(worker.get("/readyz").await, (200, "ready\n".to_owned()));

    // Drop the worker's database from under it.
    let admin = sqlx::PgPool::connect(ADMIN_DB).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE nw_test_{} WITH (FORCE)",
        env.suffix
    )))
    .execute(&admin)
    .await
    .unwrap();
    let (status, body) = eventually("readyz 503", Duration::from_secs(10), || async {
        let r = worker.get("/readyz").await;
        (r.0 == 503).then_some(r)
    })
    .await;
    assert_eq!(status, 503);
    assert!(body.contains("database unreachable"), "{body}");
    assert_eq!(
        worker.get("/healthz").await.0,
        200,
        "the process still works"
    );
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn metrics_count_outcomes_and_never_hold_keys_recipients_or_ids() {
    let env = TestEnv::new().await;
    let email = FakeProvider::start(|c| match c.to() {
        "revoked@example.com" => Reply::status(
            401,
            &format!(r#"{{"error":"invalid_api_key","message":"key {EMAIL_KEY} revoked"}}"#),
        ),
        _ => Reply::ok(),
    })
    .await;
    let sms = FakeProvider::start(|c| {
        if c.nth == 1 {
            Reply::status(503, "")
        } else {
            Reply::ok()
        }
    })
    .await;
    let worker = env.worker(&email, &sms, &["--auth-pause-secs", "0"]).await;
    env.publish("email", &email_job("metric-job-1", "ok@example.com"))
        .await;
    env.publish("email", &email_job("metric-job-2", "revoked@example.com"))
        .await;
    env.publish("sms", &sms_job("metric-job-3", "+919876543299"))
        .await;
    let rows = env.wait_rows(1).await;
    sms.wait_calls_to("+919876543299", 2).await;
    let (status, text) = eventually("metrics", Duration::from_secs(10), || async {
        let (s, t) = worker.get("/metrics").await;
        t.contains("outcome=\"sent\"").then_some((s, t))
    })
    .await;
    worker.stop().await;
    assert_eq!(status, 200);
    for name in [
        "notify_jobs_total",
        "notify_dead_letters_total",
        "notify_retries_total",
        "notify_provider_request_duration_seconds_bucket",
        "notify_jobs_in_flight",
        "notify_consumers_running",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    assert!(text.contains(r#"error_code="invalid_api_key""#));
    assert!(text.contains(r#"status_class="5xx""#));
    for secret in [
        EMAIL_KEY,
        SMS_KEY,
        "ok@example.com",
        "+919876543299",
        "metric-job-",
    ] {
        assert!(!text.contains(secret), "{secret} in /metrics");
    }
    // The provider echoed the key in its error body: the row holds a redaction.
    let row = &rows[0];
    assert!(!format!("{row:?}").contains(EMAIL_KEY), "{row:?}");
    assert!(
        row.provider_response
            .as_deref()
            .unwrap()
            .contains("[redacted]")
    );
    env.cleanup().await;
}
