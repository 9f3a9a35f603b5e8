//! The built binary as a child process: signals, exit codes, start-up
//! errors, and what reaches its output.

use crate::support::*;
use lapin::{
    options::QueueDeclareOptions,
    types::{AMQPValue, FieldTable},
};
use std::{
    io::Write,
    process::{Command, Output, Stdio},
    time::Duration,
};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_notify-worker");

fn key_file(key_with_newline: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(key_with_newline.as_bytes()).unwrap();
    f
}

/// A loopback address with a port free at the time of asking.
pub(crate) fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

pub(crate) async fn wait_ready(admin: &str) {
    eventually("worker ready", Duration::from_secs(30), || async {
        let r = reqwest::get(format!("http://{admin}/readyz")).await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
}

/// Runs the binary to completion with only `env` set, within 30 s.
async fn run_to_end(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.env_clear()
        .args(args)
        .envs(env.iter().copied())
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("exits within 30 s")
        .unwrap()
}

#[tokio::test]
async fn sigterm_lets_in_flight_jobs_finish_acks_them_and_exits_zero() {
    sigterm_drain_without_secrets("http1").await;
}

/// The same over HTTP/2 (h2c), whose client is hyper's own: its trace logs
/// must not carry a key either.
#[tokio::test]
async fn sigterm_drain_and_secrets_over_http2() {
    sigterm_drain_without_secrets("http2").await;
}

async fn sigterm_drain_without_secrets(http: &str) {
    let env = TestEnv::new().await;
    let email = FakeProvider::start(|_| Reply::ok().after(Duration::from_millis(1500))).await;
    let sms = FakeProvider::start(|c| {
        // Echo what arrived, as a careless provider might: nothing secret may follow it into logs.
        Reply::status(
            401,
            &format!(
                r#"{{"error":"invalid_api_key","message":"bad key {}"}}"#,
                c.authorization.clone().unwrap_or_default()
            ),
        )
    })
    .await;
    let email_key = key_file(&format!("{EMAIL_KEY}\n"));
    let sms_key = key_file(&format!("  {SMS_KEY}\r\n"));
    let mut args = env.args(&email, &sms);
    let admin = free_addr();
    set_arg(&mut args, "--admin-addr", Some(&admin));
    set_arg(
        &mut args,
        "--migosmtp-api-key-file",
        email_key.path().to_str(),
    );
    set_arg(&mut args, "--telnxo-api-key-file", sms_key.path().to_str());
    let child = tokio::process::Command::new(BIN)
        .env_clear()
        .env("NOTIFY_LOG_FORMAT", "json")
        .env("NOTIFY_LOG_LEVEL", "trace")
        .env("NOTIFY_AUTH_PAUSE_SECS", "0")
        .env("NOTIFY_PROVIDER_HTTP", http)
        .arg("run")
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap().to_string();
    // Read the output while the worker runs, so a full pipe never blocks it.
    let exited = tokio::spawn(child.wait_with_output());
    wait_ready(&admin).await;

    env.publish("sms", &sms_job("revoked-1", "+919876543201"))
        .await;
    for i in 0..10 {
        env.publish(
            "email",
            &email_job(&format!("drain-{i}"), &format!("d{i}@example.com")),
        )
        .await;
    }
    env.wait_rows(1).await;
    eventually("10 calls in flight", Duration::from_secs(20), || async {
        (email.in_flight() == 10).then_some(())
    })
    .await;
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let output = tokio::time::timeout(Duration::from_secs(30), exited)
        .await
        .expect("exits after SIGTERM")
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");

    // Every in-flight job finished and was acked: nothing comes back.
    assert_eq!(email.calls().len(), 10);
    let version = match http {
        "http2" => axum::http::Version::HTTP_2,
        _ => axum::http::Version::HTTP_11,
    };
    assert!(email.calls().iter().all(|c| c.version == version));
    assert_eq!(env.ready(&env.email_queue).await, 0, "no job left unacked");
    assert_eq!(env.ready(&env.sms_queue).await, 0);
    // The keys from files were trimmed and sent exactly.
    assert!(
        email
            .calls()
            .iter()
            .all(|c| c.authorization.as_deref() == Some(&format!("Bearer {EMAIL_KEY}")[..]))
    );
    assert_eq!(
        sms.calls()[0].authorization.as_deref(),
        Some(&format!("Bearer {SMS_KEY}")[..])
    );

    // One JSON line per job outcome, with id, channel, outcome, attempts, status.
    let settled: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "job settled")
        .collect();
    assert_eq!(settled.len(), 11, "{stdout}");
    let one = settled.iter().find(|v| v["job_id"] == "drain-3").unwrap();
    assert_eq!(
        (
            one["channel"].as_str(),
            one["outcome"].as_str(),
            one["attempts"].as_u64(),
            one["status"].as_u64()
        ),
        (Some("email"), Some("sent"), Some(1), Some(200))
    );
    // Keys never reach logs or rows, even at trace level and when a provider echoes them.
    for secret in [EMAIL_KEY, SMS_KEY] {
        assert!(!stdout.contains(secret), "{secret} in stdout");
        assert!(!stderr.contains(secret), "{secret} in stderr");
        for row in env.rows().await {
            assert!(!format!("{row:?}").contains(secret), "{secret} in a row");
        }
    }
    // Message bodies are personal data: not at info level.
    assert!(!stdout.contains("Your OTP is"), "message body logged");
    env.cleanup().await;
}

#[tokio::test]
async fn bad_settings_stop_start_up_with_exit_2_naming_the_setting() {
    let base = [
        ("AMQP_URL", AMQP),
        ("DATABASE_URL", ADMIN_DB),
        ("NOTIFY_ADMIN_ADDR", "127.0.0.1:0"),
    ];
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[
                ("MIGOSMTP_API_KEY", "mk_live ab"),
                ("TELNXO_API_KEY", SMS_KEY),
            ],
            "MIGOSMTP_API_KEY contains whitespace",
        ),
        (
            &[("MIGOSMTP_API_KEY", EMAIL_KEY), ("TELNXO_API_KEY", "  \n")],
            "TELNXO_API_KEY is empty",
        ),
        (
            &[("TELNXO_API_KEY", SMS_KEY)],
            "MIGOSMTP_API_KEY is not set",
        ),
        (
            &[
                ("MIGOSMTP_API_KEY", EMAIL_KEY),
                ("MIGOSMTP_API_KEY_FILE", "/nonexistent"),
                ("TELNXO_API_KEY", SMS_KEY),
            ],
            "set only one",
        ),
        (
            &[
                ("MIGOSMTP_API_KEY_FILE", "/nonexistent/key"),
                ("TELNXO_API_KEY", SMS_KEY),
            ],
            "MIGOSMTP_API_KEY_FILE: cannot read key file /nonexistent/key",
        ),
        (
            &[
                ("MIGOSMTP_API_KEY", EMAIL_KEY),
                ("TELNXO_API_KEY", SMS_KEY),
                ("NOTIFY_MAX_ATTEMPTS", "0"),
            ],
            "NOTIFY_MAX_ATTEMPTS",
        ),
        (
            &[
                ("MIGOSMTP_API_KEY", EMAIL_KEY),
                ("TELNXO_API_KEY", SMS_KEY),
                ("NOTIFY_QUEUE_TYPE", "stream"),
            ],
            "NOTIFY_QUEUE_TYPE",
        ),
        (
            &[
                ("MIGOSMTP_API_KEY", EMAIL_KEY),
                ("TELNXO_API_KEY", SMS_KEY),
                ("TELNXO_BASE_URL", "not a url"),
            ],
            "TELNXO_BASE_URL is not a valid base URL",
        ),
        (
            &[
                ("MIGOSMTP_API_KEY", EMAIL_KEY),
                ("TELNXO_API_KEY", SMS_KEY),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ],
            "OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not supported",
        ),
    ];
    for (extra, expected) in cases {
        let env: Vec<(&str, &str)> = base.iter().chain(extra.iter()).copied().collect();
        let out = run_to_end(&["run"], &env).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{expected}: {stderr}");
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in {stderr:?}"
        );
        assert!(!stderr.contains("panicked"));
        assert!(
            !stderr.contains("mk_live ab")
                && !stderr.contains(EMAIL_KEY)
                && !stderr.contains(SMS_KEY)
        );
    }
}

#[tokio::test]
async fn unreachable_services_and_a_mismatched_queue_give_one_clear_line() {
    let env = TestEnv::new().await;
    let keys = [
        ("MIGOSMTP_API_KEY", EMAIL_KEY),
        ("TELNXO_API_KEY", SMS_KEY),
        ("NOTIFY_ADMIN_ADDR", "127.0.0.1:0"),
    ];
    let names = [
        ("NOTIFY_EXCHANGE", env.exchange.as_str()),
        ("NOTIFY_EMAIL_QUEUE", env.email_queue.as_str()),
        ("NOTIFY_SMS_QUEUE", env.sms_queue.as_str()),
    ];

    let no_broker = [
        ("AMQP_URL", "amqp://guest:hunter2@127.0.0.1:1/%2f"),
        ("DATABASE_URL", env.database_url.as_str()),
    ];
    let no_db = [
        ("AMQP_URL", AMQP),
        ("DATABASE_URL", "postgres://postgres:hunter2@127.0.0.1:1/x"),
    ];
    for (services, expected) in [
        (
            &no_broker,
            "cannot connect to RabbitMQ at amqp://guest:***@127.0.0.1:1/%2f",
        ),
        (
            &no_db,
            "cannot connect to the database at postgres://postgres:***@127.0.0.1:1/x",
        ),
    ] {
        let all: Vec<_> = keys
            .iter()
            .chain(names.iter())
            .chain(services.iter())
            .copied()
            .collect();
        let out = run_to_end(&["run"], &all).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in {stderr:?}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(!stderr.contains("hunter2"));
    }

    // The SMS queue exists already as a classic queue; the worker wants quorum.
    let ch = env.amqp.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("classic".into()),
    );
    ch.queue_declare(
        env.sms_queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap();
    let services = [
        ("AMQP_URL", AMQP),
        ("DATABASE_URL", env.database_url.as_str()),
    ];
    let all: Vec<_> = keys
        .iter()
        .chain(names.iter())
        .chain(services.iter())
        .copied()
        .collect();
    let out = run_to_end(&["run"], &all).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("queue `{}`", env.sms_queue)) && stderr.contains("x-queue-type"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    env.cleanup().await;
}

#[tokio::test]
async fn help_never_shows_a_key() {
    let out = run_to_end(
        &["run", "--help"],
        &[
            ("MIGOSMTP_API_KEY", EMAIL_KEY),
            ("TELNXO_API_KEY", SMS_KEY),
            ("AMQP_URL", "amqp://u:hunter2@h/v"),
        ],
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text.contains("MIGOSMTP_API_KEY") && text.contains("NOTIFY_PREFETCH"),
        "{text}"
    );
    for secret in [EMAIL_KEY, SMS_KEY, "hunter2"] {
        assert!(!text.contains(secret), "{secret} in --help");
    }
}

#[tokio::test]
async fn migrate_applies_the_schema_and_is_idempotent() {
    let env = TestEnv::new().await;
    for _ in 0..2 {
        let out = run_to_end(&["migrate"], &[("DATABASE_URL", env.database_url.as_str())]).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Text logs piped (not a terminal) carry no colour escape codes.
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("migrations applied"), "{stdout}");
        assert!(!stdout.contains('\u{1b}'), "escape codes in {stdout:?}");
    }
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes WHERE tablename = 'dead_letters' ORDER BY 1",
    )
    .fetch_all(&env.db)
    .await
    .unwrap();
    assert!(
        indexes.contains(&"dead_letters_open_job".to_owned()),
        "{indexes:?}"
    );
    assert!(indexes.contains(&"dead_letters_failed_at".to_owned()));
    env.cleanup().await;
}

#[tokio::test]
async fn the_database_can_be_reached_over_tls() {
    // The local PostgreSQL serves TLS with a self-signed certificate.
    let env = TestEnv::new().await;
    let require = format!("{}?sslmode=require", env.database_url);
    let out = run_to_end(&["migrate"], &[("DATABASE_URL", require.as_str())]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Verifying the certificate fails, which shows a TLS handshake took place.
    let verify = format!("{}?sslmode=verify-full", env.database_url);
    let out = run_to_end(&["migrate"], &[("DATABASE_URL", verify.as_str())]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("certificate"), "{stderr}");
    env.cleanup().await;
}

/// Acks go out in batches (`multiple`), but never past a delivery still in
/// flight: after a crash with one slow job unfinished and 30 later ones
/// settled, exactly that one comes back.
#[tokio::test]
async fn batched_acks_never_cover_a_delivery_still_in_flight() {
    let env = TestEnv::new().await;
    let email = FakeProvider::start(|c| {
        if c.to() == "slow@example.com" {
            Reply::ok().after(Duration::from_secs(60))
        } else {
            Reply::ok()
        }
    })
    .await;
    let sms = FakeProvider::accepting().await;
    let mut args = env.args(&email, &sms);
    set_arg(&mut args, "--prefetch", Some("50"));
    set_arg(&mut args, "--migosmtp-api-key", Some(EMAIL_KEY));
    set_arg(&mut args, "--telnxo-api-key", Some(SMS_KEY));
    let worker = ChildWorker::start(args).await;
    env.publish("email", &email_job("slow", "slow@example.com"))
        .await;
    eventually(
        "the slow call in flight",
        Duration::from_secs(20),
        || async { (email.in_flight() == 1).then_some(()) },
    )
    .await;
    for i in 0..30 {
        env.publish(
            "email",
            &email_job(&format!("fast-{i}"), &format!("f{i}@example.com")),
        )
        .await;
    }
    // Counted once each ack frame is on the socket.
    worker
        .wait_metric(r#"notify_jobs_total{channel="email",outcome="sent"}"#, 30.0)
        .await;
    worker.kill().await;
    let back = eventually("the broker requeues", Duration::from_secs(20), || async {
        let n = env.ready(&env.email_queue).await;
        (n > 0).then_some(n)
    })
    .await;
    assert_eq!(back, 1, "only the job still in flight comes back");
    env.cleanup().await;
}
