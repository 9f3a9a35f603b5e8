//! Every outcome class for both channels, as rows and acks.

use crate::support::*;
use lapin::BasicProperties;
use std::time::Duration;

#[tokio::test]
async fn sent_jobs_reach_the_provider_exactly_as_the_contract_says_and_are_acked() {
    let env = TestEnv::new().await;
    let (email, sms) = (
        FakeProvider::accepting().await,
        FakeProvider::accepting().await,
    );
    let worker = env.worker(&email, &sms, &[]).await;

    env.publish("email", &email_job("e-1", "recipient@example.com"))
        .await;
    env.publish("sms", &sms_job("s-1", "+919876543210")).await;
    // Straight to the queue through the default exchange works too.
    env.publish_with(
        "",
        &env.sms_queue,
        &sms_job("s-2", "+14155550100"),
        BasicProperties::default(),
    )
    .await;

    let e = email.wait_calls_to("recipient@example.com", 1).await;
    assert_eq!(e[0].path, "/v1/email/send");
    assert_eq!(
        e[0].authorization.as_deref(),
        Some(format!("Bearer {EMAIL_KEY}").as_str())
    );
    assert_eq!(e[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(e[0].query, None, "nothing in the URL");
    assert_eq!(
        e[0].body,
        serde_json::json!({"from": "hello@yourdomain.com", "to": "recipient@example.com", "subject": "Hello from MigoSMTP", "html": "<p>Your message here</p>"})
    );
    let s = sms.wait_calls_to("+919876543210", 1).await;
    assert_eq!(s[0].path, "/v1/sms/send");
    assert_eq!(
        s[0].authorization.as_deref(),
        Some(format!("Bearer {SMS_KEY}").as_str())
    );
    assert_eq!(
        s[0].body,
        serde_json::json!({"from": "YOURBRAND", "to": "+919876543210", "message": "Your OTP is 482910. Valid for 10 minutes."})
    );
    sms.wait_calls_to("+14155550100", 1).await;

    worker.stop().await;
    assert_eq!(env.ready(&env.email_queue).await, 0);
    assert_eq!(env.ready(&env.sms_queue).await, 0);
    assert!(env.rows().await.is_empty());
    // Each key went only to its own platform.
    assert!(
        email
            .calls()
            .iter()
            .all(|c| !c.raw_headers.contains(SMS_KEY))
    );
    assert!(
        sms.calls()
            .iter()
            .all(|c| !c.raw_headers.contains(EMAIL_KEY))
    );
    env.cleanup().await;
}

#[tokio::test]
async fn each_known_auth_code_is_dead_lettered_once_with_cause_and_fix_and_not_retried() {
    let env = TestEnv::new().await;
    // The recipient's local part picks the provider's answer.
    let answer = |c: &Call| {
        let to = c.to().to_owned();
        match to.split('@').next().unwrap_or("") {
            "missing" => Reply::status(
                401,
                r#"{"error":{"code":"authentication_failed","message":"Authorization header missing"}}"#,
            ),
            "revoked" => Reply::status(
                401,
                r#"{"error":"invalid_api_key","message":"API key revoked"}"#,
            ),
            "scope" => Reply::status(
                403,
                r#"{"code":"insufficient_scope","message":"needs email:send"}"#,
            ),
            "suspended" => Reply::status(402, r#"{"error_code":"account_suspended"}"#),
            "ip" => Reply::status(
                403,
                r#"{"error":{"code":"ip_not_whitelisted","message":"203.0.113.9"}}"#,
            ),
            "bare401" => Reply::status(401, "Unauthorized"),
            "bare402" => Reply::status(402, ""),
            "bare403" => Reply::status(403, "<html>nope</html>"),
            _ => Reply::ok(),
        }
    };
    let email = FakeProvider::start(answer).await;
    let sms = FakeProvider::start(|c| match c.to() {
        "+15550000001" => Reply::status(
            401,
            r#"{"error":{"code":"invalid_api_key","message":"bad key"}}"#,
        ),
        _ => Reply::ok(),
    })
    .await;
    let worker = env.worker(&email, &sms, &["--auth-pause-secs", "0"]).await;

    let cases = [
        (
            "missing",
            "authentication_failed",
            401,
            "send `Authorization: Bearer KEY`",
        ),
        (
            "revoked",
            "invalid_api_key",
            401,
            "generate a new one if revoked",
        ),
        (
            "scope",
            "insufficient_scope",
            403,
            "generate a key with the right scope",
        ),
        (
            "suspended",
            "account_suspended",
            402,
            "pay the outstanding invoice in the Rackwave portal",
        ),
        (
            "ip",
            "ip_not_whitelisted",
            403,
            "add the server's IP to the key's allowed list",
        ),
        ("bare401", "unauthorized", 401, "Fix:"),
        ("bare402", "payment_required", 402, "Fix:"),
        ("bare403", "forbidden", 403, "Fix:"),
    ];
    for (who, ..) in cases {
        env.publish(
            "email",
            &email_job(&format!("auth-{who}"), &format!("{who}@example.com")),
        )
        .await;
    }
    env.publish("sms", &sms_job("auth-sms", "+15550000001"))
        .await;
    let rows = env.wait_rows(cases.len() + 1).await;
    worker.stop().await;

    for (who, code, status, fix) in cases {
        let row = rows
            .iter()
            .find(|r| r.job_id == format!("auth-{who}"))
            .unwrap_or_else(|| panic!("row for {who}"));
        assert_eq!(row.error_code, code, "{who}");
        assert_eq!(row.http_status, Some(status), "{who}");
        assert!(row.reason.contains(fix), "{who}: {}", row.reason);
        assert_eq!(row.provider.as_deref(), Some("migosmtp"));
        assert_eq!(row.channel, "email");
        assert_eq!(row.attempts, 1, "auth failures are not retried");
        assert_eq!(row.source_queue, env.email_queue);
        assert_eq!(
            row.payload.as_ref().unwrap()["to"],
            format!("{who}@example.com")
        );
        assert_eq!(
            email.calls_to(&format!("{who}@example.com")).len(),
            1,
            "{who} called once"
        );
    }
    let sms_row = rows.iter().find(|r| r.job_id == "auth-sms").unwrap();
    assert_eq!(
        (sms_row.error_code.as_str(), sms_row.provider.as_deref()),
        ("invalid_api_key", Some("telnxo"))
    );
    assert_eq!(
        sms_row.provider_response.as_deref(),
        Some(r#"{"error":{"code":"invalid_api_key","message":"bad key"}}"#)
    );
    assert_eq!(env.ready(&env.email_queue).await, 0);
    assert_eq!(env.ready(&env.sms_queue).await, 0);
    env.cleanup().await;
}

#[tokio::test]
async fn other_4xx_is_rejected_with_status_and_body_for_both_channels() {
    let env = TestEnv::new().await;
    let email = FakeProvider::start(|_| {
        Reply::status(
            422,
            r#"{"error":{"code":"invalid_recipient","message":"domain has no MX"}}"#,
        )
    })
    .await;
    let sms = FakeProvider::start(|_| {
        Reply::status(
            400,
            r#"{"code":"unsupported_region","message":"region blocked"}"#,
        )
    })
    .await;
    let worker = env.worker(&email, &sms, &[]).await;
    env.publish("email", &email_job("rej-e", "a@nomx.example"))
        .await;
    env.publish("sms", &sms_job("rej-s", "+8613800138000"))
        .await;
    let rows = env.wait_rows(2).await;
    worker.stop().await;
    let e = rows.iter().find(|r| r.job_id == "rej-e").unwrap();
    assert_eq!(
        (e.error_code.as_str(), e.http_status, e.attempts),
        ("rejected", Some(422), 1)
    );
    assert!(
        e.reason.contains("invalid_recipient") && e.reason.contains("domain has no MX"),
        "{}",
        e.reason
    );
    assert!(
        e.provider_response
            .as_deref()
            .unwrap()
            .contains("invalid_recipient")
    );
    let s = rows.iter().find(|r| r.job_id == "rej-s").unwrap();
    assert_eq!(
        (s.error_code.as_str(), s.http_status, s.provider.as_deref()),
        ("rejected", Some(400), Some("telnxo"))
    );
    assert_eq!(
        email.calls().len() + sms.calls().len(),
        2,
        "rejections are not retried"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_redelivered_dead_lettered_job_makes_no_second_row() {
    let env = TestEnv::new().await;
    let email = FakeProvider::start(|_| Reply::status(401, r#"{"error":"invalid_api_key"}"#)).await;
    let sms = FakeProvider::accepting().await;
    let worker = env.worker(&email, &sms, &["--auth-pause-secs", "0"]).await;
    let job = email_job("same-id", "dup@example.com");
    env.publish("email", &job).await;
    env.wait_rows(1).await;
    env.publish("email", &job).await;
    // The ledger says dead_lettered: acked without a second call.
    worker
        .wait_metric(
            r#"notify_jobs_total{channel="email",outcome="duplicate_suppressed"}"#,
            1.0,
        )
        .await;
    assert_eq!(email.calls_to("dup@example.com").len(), 1);
    // An invalid body twice: same derived id, one row.
    env.publish("sms", b"not json").await;
    env.publish("sms", b"not json").await;
    eventually("both queues drained", Duration::from_secs(10), || async {
        (env.ready(&env.email_queue).await == 0 && env.ready(&env.sms_queue).await == 0)
            .then_some(())
    })
    .await;
    worker.stop().await;
    let rows = env.rows().await;
    assert_eq!(rows.iter().filter(|r| r.job_id == "same-id").count(), 1);
    assert_eq!(
        rows.iter()
            .filter(|r| r.error_code == "invalid_job")
            .count(),
        1
    );
    assert_eq!(rows.len(), 2);
    assert_eq!(
        env.ready(&env.email_queue).await,
        0,
        "the duplicate was acked too"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_failed_dead_letter_insert_leaves_the_job_unacked() {
    let env = TestEnv::new().await;
    let email =
        FakeProvider::start(|_| Reply::status(403, r#"{"error":{"code":"insufficient_scope"}}"#))
            .await;
    let sms = FakeProvider::accepting().await;
    let worker = env.worker(&email, &sms, &["--auth-pause-secs", "0"]).await;
    // Every insert fails while the table is away, as in a database outage.
    sqlx::query("ALTER TABLE dead_letters RENAME TO dead_letters_away")
        .execute(&env.db)
        .await
        .unwrap();
    env.publish("email", &email_job("held", "held@example.com"))
        .await;
    email.wait_calls_to("held@example.com", 1).await;
    // Two failed tries: the insert is retried, not given up.
    worker
        .wait_metric("notify_dead_letter_write_failures_total", 2.0)
        .await;
    // A table missing during a migration is the database's trouble: the
    // delivery is held, visibly.
    assert_eq!(
        worker.metric("notify_dead_letter_writes_held").await,
        Some(1.0)
    );
    let (_, metrics) = worker.get("/metrics").await;
    assert!(!metrics.contains(EMAIL_KEY));
    assert_eq!(
        metric(
            &metrics,
            r#"notify_jobs_total{channel="email",outcome="dead_lettered"}"#
        ),
        Some(0.0),
        "not settled while its row cannot be written"
    );
    // Stopping now gives the job back: it had not been acked.
    worker.stop().await;
    assert_eq!(
        env.ready(&env.email_queue).await,
        1,
        "the job is back in the queue"
    );

    sqlx::query("ALTER TABLE dead_letters_away RENAME TO dead_letters")
        .execute(&env.db)
        .await
        .unwrap();
    assert!(
        env.rows().await.is_empty(),
        "nothing was written while the table was away"
    );
    let worker = env.worker(&email, &sms, &["--auth-pause-secs", "0"]).await;
    env.wait_rows(1).await;
    worker.stop().await;
    assert_eq!(env.row("held").await.error_code, "insufficient_scope");
    assert_eq!(env.ready(&env.email_queue).await, 0);
    env.cleanup().await;
}

#[tokio::test]
async fn jobs_run_concurrently_up_to_the_prefetch_window() {
    let env = TestEnv::new().await;
    let email = FakeProvider::start(|_| Reply::ok().after(Duration::from_millis(700))).await;
    let sms = FakeProvider::accepting().await;
    let worker = env.worker(&email, &sms, &["--prefetch", "16"]).await;
    env.publish_emails("c", 32).await;
    email.wait_calls(32).await;
    worker.stop().await;
    let max = email.max_in_flight();
    assert!(max > 8 && max <= 16, "calls in flight at once: {max}");
    env.cleanup().await;
}

/// A deep window does not mean as many calls at once: the jobs beyond
/// `NOTIFY_MAX_CALLS_IN_FLIGHT` wait their turn and are all delivered.
#[tokio::test]
async fn calls_in_flight_stay_within_their_bound_below_a_deeper_window() {
    let env = TestEnv::new().await;
    let email = FakeProvider::start(|_| Reply::ok().after(Duration::from_millis(300))).await;
    let sms = FakeProvider::accepting().await;
    let args = ["--prefetch", "40", "--max-calls-in-flight", "6"];
    let worker = env.worker(&email, &sms, &args).await;
    env.publish_emails("cap", 30).await;
    email.wait_calls(30).await;
    worker.stop().await;
    let max = email.max_in_flight();
    assert!((4..=6).contains(&max), "calls in flight at once: {max}");
    assert_eq!(email.calls().len(), 30, "one call each");
    assert_eq!(env.ready(&env.email_queue).await, 0);
    env.cleanup().await;
}

#[tokio::test]
async fn http2_spreads_calls_over_a_connection_per_share_of_streams() {
    let env = TestEnv::new().await;
    let email = FakeProvider::start(|_| Reply::ok().after(Duration::from_millis(700))).await;
    let sms = FakeProvider::accepting().await;
    let args = [
        "--prefetch",
        "20",
        "--provider-http",
        "http2",
        "--http2-streams",
        "5",
    ];
    let worker = env.worker(&email, &sms, &args).await;
    env.publish_emails("h2", 20).await;
    env.publish("sms", &sms_job("h2-sms", "+15550001111")).await;
    eventually("21 calls", Duration::from_secs(30), || async {
        (email.calls().len() >= 20 && !sms.calls().is_empty()).then_some(())
    })
    .await;
    worker.stop().await;
    let calls = email.calls();
    assert!(
        calls
            .iter()
            .all(|c| c.version == axum::http::Version::HTTP_2)
    );
    assert_eq!(sms.calls()[0].version, axum::http::Version::HTTP_2);
    // The contract's request, whatever the version.
    let bearer = format!("Bearer {EMAIL_KEY}");
    assert!(calls.iter().all(|c| {
        c.path == "/v1/email/send"
            && c.authorization.as_deref() == Some(bearer.as_str())
            && c.content_type.as_deref() == Some("application/json")
            && c.body["to"]
                .as_str()
                .is_some_and(|to| to.ends_with("@example.com"))
    }));
    // 20 calls at once, 5 per connection: 4 connections, not 1 and not 20.
    let max = email.max_in_flight();
    let connections: std::collections::HashSet<_> = calls.iter().map(|c| c.peer).collect();
    assert!(max > 10, "calls in flight at once: {max}");
    assert_eq!(connections.len(), 4, "connections: {connections:?}");
    assert_eq!(env.ready(&env.email_queue).await, 0);
    env.cleanup().await;
}

/// Plain http has no ALPN: the default (`auto`) speaks HTTP/1.1 there.
#[tokio::test]
async fn http1_takes_a_connection_per_call_in_flight() {
    let env = TestEnv::new().await;
    let email = FakeProvider::start(|_| Reply::ok().after(Duration::from_millis(700))).await;
    let sms = FakeProvider::accepting().await;
    let worker = env.worker(&email, &sms, &["--prefetch", "8"]).await;
    env.publish_emails("h1", 8).await;
    email.wait_calls(8).await;
    worker.stop().await;
    let calls = email.calls();
    assert!(
        calls
            .iter()
            .all(|c| c.version == axum::http::Version::HTTP_11)
    );
    let connections: std::collections::HashSet<_> = calls.iter().map(|c| c.peer).collect();
    assert_eq!(connections.len(), email.max_in_flight());
    env.cleanup().await;
}

/// Over https the version is negotiated by ALPN: `auto` (the default) and
/// `http2` offer h2 and fall back to HTTP/1.1 when the provider only speaks
/// that; `http1` never offers h2.
#[tokio::test]
async fn over_tls_alpn_picks_the_version() {
    use axum::http::Version;
    for (setting, offered, expected) in [
        ("auto", &["h2", "http/1.1"][..], Version::HTTP_2),
        ("auto", &["http/1.1"][..], Version::HTTP_11),
        ("http2", &["h2", "http/1.1"][..], Version::HTTP_2),
        ("http2", &["http/1.1"][..], Version::HTTP_11),
        ("http1", &["h2", "http/1.1"][..], Version::HTTP_11),
    ] {
        let env = TestEnv::new().await;
        let email = FakeProvider::start_tls(offered, |_| Reply::ok()).await;
        let sms = FakeProvider::start_tls(offered, |_| Reply::ok()).await;
        let mut args = env.args(&email, &sms);
        set_arg(&mut args, "--provider-http", Some(setting));
        set_arg(&mut args, "--migosmtp-api-key", Some(EMAIL_KEY));
        set_arg(&mut args, "--telnxo-api-key", Some(SMS_KEY));
        let worker =
            ChildWorker::start_with_env(args, &[("SSL_CERT_FILE", FakeProvider::test_ca())]).await;
        env.publish("email", &email_job("tls-e", "tls@example.com"))
            .await;
        env.publish("sms", &sms_job("tls-s", "+15550002222")).await;
        eventually("both sent", Duration::from_secs(20), || async {
            (!email.calls().is_empty() && !sms.calls().is_empty()).then_some(())
        })
        .await;
        worker.stop().await;
        let versions = [email.calls()[0].version, sms.calls()[0].version];
        assert_eq!(versions, [expected; 2], "{setting} against {offered:?}");
        assert_eq!(env.ready(&env.email_queue).await, 0);
        env.cleanup().await;
    }
}

#[tokio::test]
async fn classic_queues_are_a_setting() {
    let env = TestEnv::new().await;
    let (email, sms) = (
        FakeProvider::accepting().await,
        FakeProvider::accepting().await,
    );
    let worker = env.worker(&email, &sms, &["--queue-type", "classic"]).await;
    env.publish("sms", &sms_job("classic-1", "+919876504001"))
        .await;
    sms.wait_calls_to("+919876504001", 1).await;
    worker.stop().await;
    // A passive declare does not say the type; a quorum declare of the same name must now fail.
    let ch = env.amqp.create_channel().await.unwrap();
    let mut args = lapin::types::FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        lapin::types::AMQPValue::LongString("quorum".into()),
    );
    let redeclare = ch
        .queue_declare(
            env.sms_queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await;
    assert!(redeclare.is_err(), "the queue was declared classic");
    assert_eq!(env.ready(&env.sms_queue).await, 0);
    env.cleanup().await;
}

/// A send endpoint that redirects is misconfigured: its 3xx is the answer
/// (rejected, with the status), never followed to another host with the
/// job, whatever the HTTP version.
#[tokio::test]
async fn a_redirect_is_not_followed() {
    for http in ["http1", "http2"] {
        let env = TestEnv::new().await;
        let elsewhere = FakeProvider::accepting().await;
        let location = format!("{}/v1/email/send", elsewhere.url());
        let email =
            FakeProvider::start(move |_| Reply::status(307, "moved").header("location", &location))
                .await;
        let sms = FakeProvider::accepting().await;
        let worker = env.worker(&email, &sms, &["--provider-http", http]).await;
        env.publish("email", &email_job("moved", "m@example.com"))
            .await;
        env.wait_rows(1).await;
        worker.stop().await;
        let row = env.row("moved").await;
        assert_eq!(
            (row.error_code.as_str(), row.http_status),
            ("rejected", Some(307)),
            "{http}"
        );
        assert!(
            elsewhere.calls().is_empty(),
            "{http}: the redirect was followed"
        );
        env.cleanup().await;
    }
}

/// reqwest honours HTTP_PROXY and friends; the HTTP/2 client does not
/// tunnel, so with a proxy set calls go through it in HTTP/1.1 even when
/// HTTP/2 is asked for.
#[tokio::test]
async fn a_proxy_from_the_environment_is_used_even_with_http2() {
    let env = TestEnv::new().await;
    let proxy = FakeProvider::accepting().await;
    // Nobody listens at the providers' own address: only the proxy answers.
    let nowhere = closed_url().await;
    let mut args = env.args(&proxy, &proxy);
    for [flag, value] in [
        ["--migosmtp-base-url", nowhere.as_str()],
        ["--telnxo-base-url", nowhere.as_str()],
        ["--migosmtp-api-key", EMAIL_KEY],
        ["--telnxo-api-key", SMS_KEY],
        ["--provider-http", "http2"],
    ] {
        set_arg(&mut args, flag, Some(value));
    }
    let worker = ChildWorker::start_with_env(args, &[("HTTP_PROXY", &proxy.url())]).await;
    env.publish("email", &email_job("proxied", "p@example.com"))
        .await;
    let calls = proxy.wait_calls_to("p@example.com", 1).await;
    worker.stop().await;
    assert_eq!(calls[0].version, axum::http::Version::HTTP_11);
    assert_eq!(calls[0].path, "/v1/email/send");
    assert_eq!(
        calls[0].authorization.as_deref(),
        Some(&format!("Bearer {EMAIL_KEY}")[..])
    );
    assert!(env.rows().await.is_empty());
    env.cleanup().await;
}
