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
    let body = eventually("readyz 503", Duration::from_secs(10), || async {
        let (status, body) = worker.get("/readyz").await;
        (status == 503).then_some(body)
    })
    .await;
    assert_eq!(
        body, "not ready: database unreachable\n",
        "only the database"
    );
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
    env.wait_rows(1).await;
    // Settled, as this worker's own metrics count them.
    for series in [
        r#"notify_jobs_total{channel="email",outcome="sent"}"#,
        r#"notify_jobs_total{channel="email",outcome="dead_lettered"}"#,
        r#"notify_jobs_total{channel="sms",outcome="sent"}"#,
    ] {
        worker.wait_metric(series, 1.0).await;
    }
    let (status, text) = worker.get("/metrics").await;
    worker.stop().await;
    assert_eq!(status, 200);
    for (series, value) in [
        (r#"notify_jobs_total{channel="email",outcome="sent"}"#, 1.0),
        (
            r#"notify_jobs_total{channel="email",outcome="dead_lettered"}"#,
            1.0,
        ),
        (r#"notify_jobs_total{channel="sms",outcome="sent"}"#, 1.0),
        (
            r#"notify_jobs_total{channel="sms",outcome="dead_lettered"}"#,
            0.0,
        ),
        (
            r#"notify_dead_letters_total{channel="email",error_code="invalid_api_key"}"#,
            1.0,
        ),
        (r#"notify_retries_total{channel="sms"}"#, 1.0),
        (r#"notify_retries_total{channel="email"}"#, 0.0),
        (
            r#"notify_provider_request_duration_seconds_count{provider="telnxo",status_class="5xx"}"#,
            1.0,
        ),
        (
            r#"notify_provider_request_duration_seconds_count{provider="telnxo",status_class="2xx"}"#,
            1.0,
        ),
        (
            r#"notify_provider_request_duration_seconds_count{provider="migosmtp",status_class="4xx"}"#,
            1.0,
        ),
        (r#"notify_jobs_in_flight{channel="email"}"#, 0.0),
        // The SMS queue's consumer and its urgent lane's.
        (r#"notify_consumers_running{channel="sms"}"#, 2.0),
    ] {
        assert_eq!(metric(&text, series), Some(value), "{series} in:\n{text}");
    }
    promtool_accepts(&text);
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
    let row = env.row("metric-job-2").await;
    assert!(!format!("{row:?}").contains(EMAIL_KEY), "{row:?}");
    assert!(
        row.provider_response
            .as_deref()
            .unwrap()
            .contains("[redacted]")
    );
    env.cleanup().await;
}

/// `promtool check metrics` (Debian's prometheus package; CI installs it)
/// on a scrape: HELP on every metric, names and units by convention.
fn promtool_accepts(scrape: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`) must be installed to lint /metrics");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(scrape.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}"
    );
}
