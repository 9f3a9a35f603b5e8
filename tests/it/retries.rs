//! Transient failures: retried with backoff, `Retry-After` honoured, and
//! exactly NOTIFY_MAX_ATTEMPTS calls before `retries_exhausted`.

use crate::support::*;
use std::time::{Duration, SystemTime};

#[tokio::test]
async fn transient_statuses_are_retried_until_sent() {
    let env = TestEnv::new().await;
    let email = FakeProvider::start(|c| match c.nth {
        1 => Reply::status(503, "busy"),
        2 => Reply::status(429, r#"{"error":"rate_limited"}"#),
        3 => Reply::status(408, ""),
        4 => Reply::status(425, ""),
        _ => Reply::ok(),
    })
    .await;
    let sms = FakeProvider::start(|c| {
        if c.nth < 3 {
            Reply::status(502, "")
        } else {
            Reply::ok()
        }
    })
    .await;
    let worker = env.worker(&email, &sms, &["--max-attempts", "5"]).await;
    env.publish("email", &email_job("t-e", "t@example.com"))
        .await;
    env.publish("sms", &sms_job("t-s", "+919876543210")).await;
    email.wait_calls_to("t@example.com", 5).await;
    sms.wait_calls_to("+919876543210", 3).await;
    worker.stop().await;
    assert!(
        env.rows().await.is_empty(),
        "sent on the last try: no dead letter"
    );
    assert_eq!(email.calls().len(), 5);
    assert_eq!(sms.calls().len(), 3);
    assert_eq!(env.ready(&env.email_queue).await, 0);
    env.cleanup().await;
}

#[tokio::test]
async fn retry_after_seconds_and_http_date_are_honoured() {
    let env = TestEnv::new().await;
    // Backoff alone would wait at most 200 ms here; Retry-After asks for more.
    let email = FakeProvider::start(|c| match c.nth {
        1 => Reply::status(429, "").header("retry-after", "2"),
        _ => Reply::ok(),
    })
    .await;
    let sms = FakeProvider::start(|c| match c.nth {
        1 => Reply::status(503, "").header(
            "retry-after",
            &httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3)),
        ),
        _ => Reply::ok(),
    })
    .await;
    let worker = env.worker(&email, &sms, &[]).await;
    env.publish("email", &email_job("ra-e", "ra@example.com"))
        .await;
    env.publish("sms", &sms_job("ra-s", "+919876543211")).await;
    let e = email.wait_calls_to("ra@example.com", 2).await;
    let s = sms.wait_calls_to("+919876543211", 2).await;
    worker.stop().await;
    let gap_e = e[1].at - e[0].at;
    let gap_s = s[1].at - s[0].at;
    assert!(
        gap_e >= Duration::from_millis(1900),
        "Retry-After: 2 gave a gap of {gap_e:?}"
    );
    // An HTTP date has one-second resolution.
    assert!(
        gap_s >= Duration::from_millis(1900),
        "Retry-After date gave a gap of {gap_s:?}"
    );
    assert!(env.rows().await.is_empty());
    env.cleanup().await;
}

#[tokio::test]
async fn exactly_max_attempts_calls_then_retries_exhausted() {
    let env = TestEnv::new().await;
    let email = FakeProvider::start(|_| {
        Reply::status(500, r#"{"error":{"code":"internal","message":"boom"}}"#)
    })
    .await;
    let sms = FakeProvider::start(|_| Reply::status(503, "unavailable")).await;
    let worker = env.worker(&email, &sms, &["--max-attempts", "4"]).await;
    env.publish("email", &email_job("ex-e", "ex@example.com"))
        .await;
    env.publish("sms", &sms_job("ex-s", "+919876543212")).await;
    let rows = env.wait_rows(2).await;
    // Settled (acked): no further call can come for these jobs.
    for channel in ["email", "sms"] {
        let series = format!(r#"notify_jobs_total{{channel="{channel}",outcome="dead_lettered"}}"#);
        worker.wait_metric(&series, 1.0).await;
    }
    worker.stop().await;
    assert_eq!(email.calls().len(), 4);
    assert_eq!(sms.calls().len(), 4);
    let e = rows.iter().find(|r| r.job_id == "ex-e").unwrap();
    assert_eq!(
        (e.error_code.as_str(), e.attempts, e.http_status),
        ("retries_exhausted", 4, Some(500))
    );
    assert!(e.reason.contains("HTTP 500 internal"), "{}", e.reason);
    assert!(e.provider_response.as_deref().unwrap().contains("boom"));
    let s = rows.iter().find(|r| r.job_id == "ex-s").unwrap();
    assert_eq!(
        (s.error_code.as_str(), s.attempts, s.provider.as_deref()),
        ("retries_exhausted", 4, Some("telnxo"))
    );
    assert_eq!(env.ready(&env.sms_queue).await, 0);
    env.cleanup().await;
}

#[tokio::test]
async fn connect_errors_and_timeouts_are_transient() {
    transport_failures_are_transient("http1").await;
}

#[tokio::test]
async fn connect_errors_and_timeouts_are_transient_over_http2() {
    transport_failures_are_transient("http2").await;
}

async fn transport_failures_are_transient(http: &str) {
    let env = TestEnv::new().await;
    // A port nobody listens on: connection refused on every call.
    let closed_url = closed_url().await;
    let slow = FakeProvider::start(|_| Reply::ok().after(Duration::from_secs(5))).await;
    let email = FakeProvider::accepting().await;
    let mut args = env.args(&email, &slow);
    for [flag, value] in [
        ["--migosmtp-base-url", closed_url.as_str()],
        ["--migosmtp-api-key", EMAIL_KEY],
        ["--telnxo-api-key", SMS_KEY],
        ["--max-attempts", "2"],
        ["--request-timeout-ms", "300"],
        ["--provider-http", http],
    ] {
        set_arg(&mut args, flag, Some(value));
    }
    let worker = TestWorker::start(args).await;
    env.publish("email", &email_job("conn", "conn@example.com"))
        .await;
    env.publish("sms", &sms_job("slow", "+919876543213")).await;
    let rows = env.wait_rows(2).await;
    worker.stop().await;
    let conn = rows.iter().find(|r| r.job_id == "conn").unwrap();
    assert_eq!(
        (conn.error_code.as_str(), conn.attempts, conn.http_status),
        ("retries_exhausted", 2, None)
    );
    assert!(conn.reason.contains("connect"), "{}", conn.reason);
    let slow_row = rows.iter().find(|r| r.job_id == "slow").unwrap();
    assert_eq!(
        (slow_row.error_code.as_str(), slow_row.attempts),
        ("retries_exhausted", 2)
    );
    assert!(slow_row.reason.contains("timeout"), "{}", slow_row.reason);
    env.cleanup().await;
}

/// A provider restart closes the HTTP/2 connection under calls in flight:
/// the call under way is retried and sent on a new connection, and the next
/// job opens one too. Nothing is lost or dead-lettered.
#[tokio::test]
async fn http2_calls_survive_the_provider_dropping_its_connections() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let env = TestEnv::new().await;
    let slow_calls = AtomicUsize::new(0);
    let email = FakeProvider::start(move |c| {
        // Only the first call of "slow" hangs; its retry answers at once.
        if c.to() == "slow@example.com" && slow_calls.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::ok().after(Duration::from_secs(30))
        } else {
            Reply::ok()
        }
    })
    .await;
    let sms = FakeProvider::accepting().await;
    let worker = env
        .worker(
            &email,
            &sms,
            &["--provider-http", "http2", "--request-timeout-ms", "20000"],
        )
        .await;
    env.publish("email", &email_job("before", "before@example.com"))
        .await;
    let before = email.wait_calls_to("before@example.com", 1).await[0].peer;
    env.publish("email", &email_job("slow", "slow@example.com"))
        .await;
    eventually(
        "the slow call under way",
        Duration::from_secs(20),
        || async { (email.in_flight() == 1).then_some(()) },
    )
    .await;
    email.drop_connections();
    let slow = email.wait_calls_to("slow@example.com", 1).await[0].peer;
    env.publish("email", &email_job("after", "after@example.com"))
        .await;
    let after = email.wait_calls_to("after@example.com", 1).await[0].peer;
    worker.stop().await;
    assert_ne!(slow, before, "the retry went out on a new connection");
    assert_eq!(after, slow, "later calls share the new connection");
    assert!(env.rows().await.is_empty());
    assert_eq!(env.ready(&env.email_queue).await, 0);
    env.cleanup().await;
}

/// An HTTP/2 provider that refuses the first stream unprocessed
/// (REFUSED_STREAM) and answers the rest 200; returns its URL and the
/// streams it saw.
async fn refusing_h2_provider() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let streams = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&streams);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                while let Some(Ok((_request, mut respond))) = conn.accept().await {
                    if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        continue;
                    }
                    let response = axum::http::Response::new(());
                    if let Ok(mut body) = respond.send_response(response, false) {
                        let _ = body.send_data(axum::body::Bytes::from_static(b"{}"), true);
                    }
                }
            });
        }
    });
    (url, streams)
}

/// A stream the provider refused unprocessed is sent again at once, as
/// HTTP/2 allows: with one attempt allowed, the job is still sent, not
/// dead-lettered.
#[tokio::test]
async fn a_stream_refused_unprocessed_is_sent_again_at_once() {
    use std::sync::atomic::Ordering;
    let env = TestEnv::new().await;
    let (url, streams) = refusing_h2_provider().await;
    let sms = FakeProvider::accepting().await;
    let mut args = env.args(&sms, &sms);
    for [flag, value] in [
        ["--migosmtp-base-url", url.as_str()],
        ["--migosmtp-api-key", EMAIL_KEY],
        ["--telnxo-api-key", SMS_KEY],
        ["--max-attempts", "1"],
        ["--provider-http", "http2"],
    ] {
        set_arg(&mut args, flag, Some(value));
    }
    let worker = TestWorker::start(args).await;
    env.publish("email", &email_job("refused", "r@example.com"))
        .await;
    eventually("the job sent", Duration::from_secs(20), || async {
        (env.ready(&env.email_queue).await == 0 && streams.load(Ordering::SeqCst) >= 2)
            .then_some(())
    })
    .await;
    worker.stop().await;
    assert_eq!(streams.load(Ordering::SeqCst), 2);
    assert!(env.rows().await.is_empty(), "{:?}", env.rows().await);
    env.cleanup().await;
}

/// A provider whose certificate is not trusted: every call is a connect
/// error naming the certificate, and the job ends as `retries_exhausted`.
#[tokio::test]
async fn an_untrusted_certificate_is_a_connect_error() {
    let env = TestEnv::new().await;
    // No SSL_CERT_FILE for the worker: the test CA is not trusted.
    let email = FakeProvider::start_tls(&["h2", "http/1.1"], |_| Reply::ok()).await;
    let sms = FakeProvider::accepting().await;
    let mut args = env.args(&email, &sms);
    for [flag, value] in [
        ["--migosmtp-api-key", EMAIL_KEY],
        ["--telnxo-api-key", SMS_KEY],
        ["--max-attempts", "1"],
    ] {
        set_arg(&mut args, flag, Some(value));
    }
    let worker = ChildWorker::start(args).await;
    env.publish("email", &email_job("untrusted", "u@example.com"))
        .await;
    env.wait_rows(1).await;
    worker.stop().await;
    let row = env.row("untrusted").await;
    assert_eq!(
        (row.error_code.as_str(), row.http_status),
        ("retries_exhausted", None)
    );
    assert!(
        row.reason.contains("connect error") && row.reason.contains("certificate"),
        "{}",
        row.reason
    );
    assert!(email.calls().is_empty());
    assert_eq!(env.ready(&env.email_queue).await, 0);
    env.cleanup().await;
}
