//! Traces end to end: a producer's trace context through the real broker,
//! the worker binary's spans exported by OTLP/HTTP to a receiver in this
//! test, and the context the provider receives; across a retry, a dead
//! letter and its replay.

use crate::{
    binary::{BIN, free_addr, wait_ready},
    support::*,
};
use axum::{Router, body::Bytes, extract::State, routing::post};
use notify_worker::{NewEmail, NewJob, Publisher};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, KeyValue, any_value},
    trace::v1::{Span, span::SpanKind},
};
use prost::Message;
use std::{
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

/// An OTLP/HTTP trace receiver: keeps each export request's raw body.
#[derive(Clone, Default)]
struct Receiver {
    bodies: Arc<Mutex<Vec<Bytes>>>,
}

impl Receiver {
    async fn start() -> (String, Self) {
        let receiver = Receiver::default();
        let app = Router::new()
            .route(
                "/v1/traces",
                post(|State(r): State<Receiver>, body: Bytes| async move {
                    r.bodies.lock().unwrap().push(body);
                    (
                        [("content-type", "application/x-protobuf")],
                        Vec::<u8>::new(),
                    )
                }),
            )
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, receiver)
    }

    fn raw(&self) -> Vec<u8> {
        self.bodies.lock().unwrap().concat()
    }

    fn spans(&self) -> Vec<Span> {
        let bodies = self.bodies.lock().unwrap().clone();
        bodies
            .iter()
            .flat_map(|b| {
                ExportTraceServiceRequest::decode(b.as_ref())
                    .expect("an OTLP protobuf export")
                    .resource_spans
            })
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans)
            .collect()
    }
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a any_value::Value> {
    span.attributes
        .iter()
        .find(|KeyValue { key: k, .. }| k == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|AnyValue { value }| value.as_ref())
}

fn text(span: &Span, key: &str) -> Option<String> {
    match attr(span, key)? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn int(span: &Span, key: &str) -> Option<i64> {
    match attr(span, key)? {
        any_value::Value::IntValue(i) => Some(*i),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The producer's trace: the message carries it, the worker's consumer span
/// continues it, each provider call is a client span under that, and the
/// provider is sent the call's own `traceparent`; a failed job's span says
/// why; a replay starts a new trace linked to the failed one; a job without
/// context starts a trace of its own. Keys reach no span.
#[tokio::test]
async fn the_producers_trace_reaches_the_exported_spans_and_the_provider() {
    let env = TestEnv::new().await;
    let (otlp, receiver) = Receiver::start().await;
    let email = FakeProvider::start(|c| match (c.to(), c.nth) {
        ("retry@example.com", 1) => Reply::status(503, "busy"),
        ("dead@example.com", _) => Reply::status(
            401,
            &format!(r#"{{"error":"invalid_api_key","message":"key {EMAIL_KEY} revoked"}}"#),
        ),
        _ => Reply::ok(),
    })
    .await;
    let sms = FakeProvider::accepting().await;
    let mut args = env.args(&email, &sms);
    let admin = free_addr();
    set_arg(&mut args, "--admin-addr", Some(&admin));
    set_arg(&mut args, "--migosmtp-api-key", Some(EMAIL_KEY));
    set_arg(&mut args, "--telnxo-api-key", Some(SMS_KEY));
    let child = tokio::process::Command::new(BIN)
        .env_clear()
        .env("NOTIFY_LOG_FORMAT", "json")
        .env("NOTIFY_LOG_LEVEL", "info,notify_worker=debug")
        .env("NOTIFY_AUTH_PAUSE_SECS", "0")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .arg("run")
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap().to_string();
    let exited = tokio::spawn(child.wait_with_output());
    wait_ready(&admin).await;

    let (trace_a, trace_b) = (
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "0af7651916cd43dd8448eb211c80319c",
    );
    let publisher = Publisher::connect(AMQP, &env.topology()).await.unwrap();
    let job = |id: &str, to: &str| {
        NewJob::Email(NewEmail {
            priority: None,
            expires_at: None,
            id: Some(id.into()),
            from: "a@b.c".into(),
            to: to.into(),
            subject: "s".into(),
            html: "h".into(),
        })
    };
    let producer = |trace: &str| {
        notify_worker::traces::parse_traceparent(&format!("00-{trace}-00f067aa0ba902b7-01"))
    };
    publisher
        .publish_in(
            &job("traced-retry", "retry@example.com"),
            &producer(trace_a),
        )
        .await
        .unwrap();
    publisher
        .publish_in(&job("traced-dead", "dead@example.com"), &producer(trace_b))
        .await
        .unwrap();
    publisher
        .publish(&job("untraced", "plain@example.com"))
        .await
        .unwrap();
    publisher.close().await;
    env.wait_rows(1).await;
    email.wait_calls_to("retry@example.com", 2).await;
    email.wait_calls_to("plain@example.com", 1).await;

    // SIGTERM: the worker drains and exports what is left before it exits.
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let output = tokio::time::timeout(Duration::from_secs(30), exited)
        .await
        .expect("exits after SIGTERM")
        .unwrap()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let logs = String::from_utf8_lossy(&output.stdout).into_owned();
    let spans = receiver.spans();

    // The retried job: one consumer span in the producer's trace...
    let of_trace =
        |t: &str| -> Vec<&Span> { spans.iter().filter(|s| hex(&s.trace_id) == t).collect() };
    let a = of_trace(trace_a);
    let consumer: Vec<_> = a
        .iter()
        .filter(|s| s.kind == SpanKind::Consumer as i32)
        .collect();
    assert_eq!(consumer.len(), 1, "{a:#?}");
    let consumer = consumer[0];
    assert_eq!(hex(&consumer.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(consumer.name, format!("process {}", env.exchange));
    assert_eq!(
        text(consumer, "messaging.system").as_deref(),
        Some("rabbitmq")
    );
    assert_eq!(
        text(consumer, "messaging.destination.name").as_deref(),
        Some(env.exchange.as_str())
    );
    assert_eq!(
        text(consumer, "messaging.rabbitmq.destination.routing_key").as_deref(),
        Some("email")
    );
    assert_eq!(
        text(consumer, "messaging.message.id").as_deref(),
        Some("traced-retry")
    );
    assert_eq!(text(consumer, "error.type"), None);
    // ...two client spans under it, the first failed with 503...
    let mut calls: Vec<_> = a
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect();
    calls.sort_by_key(|s| s.start_time_unix_nano);
    assert_eq!(calls.len(), 2, "{a:#?}");
    for call in &calls {
        assert_eq!(call.parent_span_id, consumer.span_id);
        assert_eq!(text(call, "http.request.method").as_deref(), Some("POST"));
    }
    assert_eq!(int(calls[0], "http.response.status_code"), Some(503));
    assert_eq!(text(calls[0], "error.type").as_deref(), Some("503"));
    assert_eq!(int(calls[1], "http.response.status_code"), Some(200));
    assert_eq!(int(calls[1], "http.request.resend_count"), Some(1));
    // ...and each provider call carried its own span as parent.
    let sent: Vec<String> = email
        .calls_to("retry@example.com")
        .iter()
        .map(|c| c.traceparent.clone().unwrap_or_default())
        .collect();
    let expected: Vec<String> = calls
        .iter()
        .map(|s| format!("00-{trace_a}-{}-01", hex(&s.span_id)))
        .collect();
    assert_eq!(sent, expected);

    // The dead letter: its span says why, its row keeps its context.
    let b = of_trace(trace_b);
    let dead = b
        .iter()
        .find(|s| s.kind == SpanKind::Consumer as i32)
        .expect("a consumer span for the dead letter");
    assert_eq!(text(dead, "error.type").as_deref(), Some("invalid_api_key"));
    let row = env.row("traced-dead").await;
    let stored: Option<String> =
        sqlx::query_scalar("SELECT trace_parent FROM dead_letters WHERE job_id = 'traced-dead'")
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert_eq!(
        stored,
        Some(format!("00-{trace_b}-{}-01", hex(&dead.span_id))),
        "{row:?}"
    );

    // No context: a trace of its own, no parent.
    let plain: Vec<_> = spans
        .iter()
        .filter(|s| text(s, "messaging.message.id").as_deref() == Some("untraced"))
        .collect();
    assert_eq!(plain.len(), 1);
    assert!(plain[0].parent_span_id.is_empty());
    assert!(![trace_a, trace_b].contains(&hex(&plain[0].trace_id).as_str()));

    // The JSON log line of each job names its trace and span.
    let line = logs
        .lines()
        .find(|l| l.contains("job settled") && l.contains("traced-retry"))
        .expect("the job's log line");
    let line: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(line["trace_id"], trace_a);
    assert_eq!(line["span_id"], hex(&consumer.span_id));
    // So does what it logged on its way (the retry), under "span".
    let retry: serde_json::Value = logs
        .lines()
        .filter(|l| l.contains("will retry"))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["span"]["trace_id"] == trace_a)
        .expect("the retry's log line in the job's trace");
    assert_eq!(retry["span"]["span_id"], hex(&consumer.span_id));

    // Replay: a new trace whose producer span links to the failed one.
    let replay = tokio::process::Command::new(BIN)
        .env_clear()
        .env("AMQP_URL", AMQP)
        .env("DATABASE_URL", &env.database_url)
        .env("NOTIFY_EXCHANGE", &env.exchange)
        .env("NOTIFY_EMAIL_QUEUE", &env.email_queue)
        .env("NOTIFY_SMS_QUEUE", &env.sms_queue)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)
        .args(["dead-letters", "replay", "--all"])
        .output()
        .await
        .unwrap();
    assert!(replay.status.success(), "{replay:?}");
    let spans = receiver.spans();
    let published: Vec<_> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Producer as i32)
        .collect();
    assert_eq!(published.len(), 1, "{published:#?}");
    let link = &published[0].links;
    assert_eq!(link.len(), 1);
    assert_eq!(hex(&link[0].trace_id), trace_b);
    assert_eq!(link[0].span_id, dead.span_id);
    assert_ne!(hex(&published[0].trace_id), trace_b);

    let raw = receiver.raw();
    for secret in [EMAIL_KEY, SMS_KEY] {
        assert!(
            !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} in an exported span"
        );
    }
    env.cleanup().await;
}
