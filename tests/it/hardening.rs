//! What real peers do that nobody named: bodies that are huge, hold NUL,
//! stall or never come; a table that refuses a row, is locked, or is
//! renamed away; identical jobs. Each ends where a person can see it.

use crate::support::*;

/// A provider's error body with NUL right at the 4 KiB cut: the row is
/// stored (NUL replaced, then cut on a character boundary) and the job
/// acked, for an auth failure and a rejection alike.
#[tokio::test]
async fn a_provider_body_with_nul_at_the_cut_still_makes_a_storable_row() {
    let env = TestEnv::new().await;
    let body = format!(
        r#"{{"error":{{"code":"bad\u0000","message":"m"}}}}{}{}"#,
        "é".repeat(2040),
        "\0".repeat(40)
    );
    let rejected = body.clone();
    let email = FakeProvider::start(move |_| Reply::status(422, &rejected)).await;
    let sms = FakeProvider::start(move |_| Reply::status(401, &body)).await;
    let worker = env.worker(&email, &sms, &["--auth-pause-secs", "0"]).await;
    env.publish("email", &email_job("nul-e", "nul@example.com"))
        .await;
    env.publish("sms", &sms_job("nul-s", "+919876504101")).await;
    env.wait_rows(2).await;
    for channel in ["email", "sms"] {
        let series = format!(r#"notify_jobs_total{{channel="{channel}",outcome="dead_lettered"}}"#);
        worker.wait_metric(&series, 1.0).await;
    }
    worker.stop().await;
    for (job, code) in [("nul-e", "rejected"), ("nul-s", "unauthorized")] {
        let row = env.row(job).await;
        assert_eq!(row.error_code, code, "{job}: {}", row.reason);
        let response = row.provider_response.unwrap();
        assert!(response.len() <= 4096, "{job}: {} bytes", response.len());
        assert!(!response.contains('\0') && !row.reason.contains('\0'));
    }
    assert_eq!(env.ready(&env.email_queue).await, 0);
    assert_eq!(env.ready(&env.sms_queue).await, 0);
    env.cleanup().await;
}

/// 20 MiB answers, error and success, over both HTTP versions: read up to
/// the bound, 4 KiB kept in the row, the jobs settled.
#[tokio::test]
async fn huge_provider_bodies_are_read_only_up_to_the_bound() {
    const HUGE: usize = 20 * 1024 * 1024;
    for http in ["http1", "http2"] {
        let env = TestEnv::new().await;
        let email = FakeProvider::start(|_| Reply::status(422, &"x".repeat(HUGE))).await;
        let sms = FakeProvider::start(|_| Reply::status(200, &"y".repeat(HUGE))).await;
        let worker = env.worker(&email, &sms, &["--provider-http", http]).await;
        env.publish("email", &email_job("huge-e", "huge@example.com"))
            .await;
        env.publish("sms", &sms_job("huge-s", "+919876504102"))
            .await;
        worker
            .wait_metric(r#"notify_jobs_total{channel="sms",outcome="sent"}"#, 1.0)
            .await;
        worker
            .wait_metric(
                r#"notify_jobs_total{channel="email",outcome="dead_lettered"}"#,
                1.0,
            )
            .await;
        worker.stop().await;
        let row = env.row("huge-e").await;
        assert_eq!(
            (row.error_code.as_str(), row.http_status),
            ("rejected", Some(422)),
            "{http}"
        );
        assert_eq!(row.provider_response.unwrap().len(), 4096, "{http}");
        assert_eq!(env.rows().await.len(), 1, "{http}: the 200 was sent");
        assert_eq!(sms.calls().len(), 1, "{http}: sent once");
        env.cleanup().await;
    }
}

/// Head sent, body never finished: the status stands. A 200 is sent (not
/// sent again); a 503 is transient, retried, then `retries_exhausted`.
#[tokio::test]
async fn a_body_that_stalls_after_the_head_ends_at_the_deadline() {
    for http in ["http1", "http2"] {
        let env = TestEnv::new().await;
        let email = FakeProvider::start(|_| Reply::status(503, "busy").stalling()).await;
        let sms = FakeProvider::start(|_| Reply::ok().stalling()).await;
        let args = [
            "--provider-http",
            http,
            "--request-timeout-ms",
            "300",
            "--max-attempts",
            "2",
        ];
        let worker = env.worker(&email, &sms, &args).await;
        env.publish("email", &email_job("stall-e", "stall@example.com"))
            .await;
        env.publish("sms", &sms_job("stall-s", "+919876504103"))
            .await;
        env.wait_rows(1).await;
        worker
            .wait_metric(r#"notify_jobs_total{channel="sms",outcome="sent"}"#, 1.0)
            .await;
        worker.stop().await;
        let row = env.row("stall-e").await;
        assert_eq!(
            (row.error_code.as_str(), row.http_status, row.attempts),
            ("retries_exhausted", Some(503), 2),
            "{http}"
        );
        assert_eq!(row.provider_response.as_deref(), Some("busy"), "{http}");
        assert_eq!(
            sms.calls().len(),
            1,
            "{http}: a stalled 200 is not sent again"
        );
        assert_eq!(env.rows().await.len(), 1, "{http}");
        env.cleanup().await;
    }
}

/// A provider that takes the request and closes the connection without a
/// word: transient, retried, then `retries_exhausted` naming the cut.
#[tokio::test]
async fn a_connection_cut_with_no_answer_is_transient() {
    let env = TestEnv::new().await;
    let cutting = cutting_url().await;
    let sms = FakeProvider::accepting().await;
    let mut args = env.args(&sms, &sms);
    for [flag, value] in [
        ["--migosmtp-base-url", cutting.as_str()],
        ["--migosmtp-api-key", EMAIL_KEY],
        ["--telnxo-api-key", SMS_KEY],
        ["--max-attempts", "3"],
    ] {
        set_arg(&mut args, flag, Some(value));
    }
    let worker = TestWorker::start(args).await;
    env.publish("email", &email_job("cut", "cut@example.com"))
        .await;
    env.wait_rows(1).await;
    worker.stop().await;
    let row = env.row("cut").await;
    assert_eq!(
        (row.error_code.as_str(), row.attempts, row.http_status),
        ("retries_exhausted", 3, None)
    );
    assert!(
        row.reason.contains("connection closed") || row.reason.contains("reset"),
        "{}",
        row.reason
    );
    env.cleanup().await;
}

/// An operator's constraint refuses the row's content: stored degraded
/// (payload and provider response dropped, the reason saying so), acked,
/// never retried forever.
#[tokio::test]
async fn a_row_the_table_refuses_is_stored_degraded_and_acked() {
    let env = TestEnv::new().await;
    let email = FakeProvider::start(|_| Reply::status(422, "contains forbidden-word")).await;
    let sms = FakeProvider::accepting().await;
    let worker = env.worker(&email, &sms, &[]).await;
    sqlx::query(
        "ALTER TABLE dead_letters ADD CONSTRAINT no_forbidden \
         CHECK (provider_response NOT LIKE '%forbidden-word%')",
    )
    .execute(&env.db)
    .await
    .unwrap();
    env.publish("email", &email_job("refused", "refused@example.com"))
        .await;
    env.wait_rows(1).await;
    worker
        .wait_metric(
            r#"notify_jobs_total{channel="email",outcome="dead_lettered"}"#,
            1.0,
        )
        .await;
    let (_, metrics) = worker.get("/metrics").await;
    worker.stop().await;
    assert_eq!(
        metric(&metrics, "notify_dead_letters_degraded_total"),
        Some(1.0)
    );
    let row = env.row("refused").await;
    assert_eq!(
        (row.error_code.as_str(), row.http_status),
        ("rejected", Some(422))
    );
    assert_eq!((row.provider_response, row.payload), (None, None));
    assert!(
        row.reason.contains("stored degraded") && row.reason.contains("no_forbidden"),
        "{}",
        row.reason
    );
    assert_eq!(env.ready(&env.email_queue).await, 0);
    env.cleanup().await;
}

/// Another transaction holds the table locked: inserts end at the
/// statement timeout, transient; the delivery is held, counted and aged in
/// /metrics; when the lock goes, the row is written and the job acked.
#[tokio::test]
async fn a_locked_table_holds_the_delivery_visibly_until_it_is_free() {
    let env = TestEnv::new().await;
    let email = FakeProvider::start(|_| Reply::status(422, "no")).await;
    let sms = FakeProvider::accepting().await;
    let worker = env
        .worker(&email, &sms, &["--db-statement-timeout-secs", "1"])
        .await;
    let mut lock = env.db.begin().await.unwrap();
    sqlx::query("LOCK TABLE dead_letters IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    env.publish("email", &email_job("locked", "locked@example.com"))
        .await;
    worker
        .wait_metric("notify_dead_letter_writes_held", 1.0)
        .await;
    let age = worker
        .wait_metric("notify_dead_letter_oldest_held_seconds", 1.5)
        .await;
    assert_eq!(
        worker
            .metric(r#"notify_jobs_total{channel="email",outcome="dead_lettered"}"#)
            .await,
        Some(0.0),
        "held, not settled (oldest waited {age} s)"
    );
    lock.rollback().await.unwrap();
    worker
        .wait_metric(
            r#"notify_jobs_total{channel="email",outcome="dead_lettered"}"#,
            1.0,
        )
        .await;
    assert_eq!(
        worker.metric("notify_dead_letter_writes_held").await,
        Some(0.0)
    );
    assert_eq!(
        worker
            .metric("notify_dead_letter_oldest_held_seconds")
            .await,
        Some(0.0)
    );
    worker.stop().await;
    assert_eq!(env.row("locked").await.error_code, "rejected");
    assert_eq!(env.ready(&env.email_queue).await, 0);
    env.cleanup().await;
}

/// Two identical jobs enqueued without an id are two jobs: each gets its
/// own `message_id`, so both failures are kept.
#[tokio::test]
async fn two_identical_enqueued_jobs_keep_two_rows() {
    let env = TestEnv::new().await;
    let email = FakeProvider::start(|_| Reply::status(422, "no")).await;
    let sms = FakeProvider::accepting().await;
    let worker = env.worker(&email, &sms, &[]).await;
    let job = [
        "enqueue",
        "email",
        "--from",
        "a@b.c",
        "--to",
        "twice@example.com",
        "--subject",
        "s",
        "--html",
        "h",
    ];
    for _ in 0..2 {
        let (code, out, err) = env.cli(&job, None).await;
        assert_eq!(code, 0, "{out}{err}");
    }
    let rows = env.wait_rows(2).await;
    worker.stop().await;
    assert_eq!(rows.len(), 2);
    assert_ne!(rows[0].job_id, rows[1].job_id);
    for row in &rows {
        let id = uuid::Uuid::parse_str(&row.job_id).expect("a UUID");
        assert_eq!(id.get_version_num(), 7, "{}", row.job_id);
    }
    env.cleanup().await;
}
