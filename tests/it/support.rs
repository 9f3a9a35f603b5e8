// Shared by two test binaries (it, chaos); each uses a part of it.
#![allow(dead_code)]

//! Test support: a fresh database and uniquely named broker objects per test,
//! fake providers over real HTTP on loopback, and an in-process worker.

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use clap::Parser;
use futures_util::StreamExt;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties,
    options::{
        BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    },
    types::FieldTable,
};
use notify_worker::{
    Worker, WorkerConfig,
    cli::{Cli, Command},
};
use serde_json::Value;
use sqlx::{PgPool, postgres::PgPoolOptions};
use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use tokio_util::sync::CancellationToken;

#[path = "../common/tls.rs"]
mod tls;

pub const EMAIL_KEY: &str = "mk_test_EMAILKEY_4f9a2c";
pub const SMS_KEY: &str = "tk_test_SMSKEY_8b1d7e";
pub const ADMIN_DB: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Polls `check` until it returns `Some`, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One call received by a fake provider.
#[derive(Debug, Clone)]
pub struct Call {
    pub path: String,
    pub query: Option<String>,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub body: Value,
    pub raw_headers: String,
    /// The W3C trace context sent, if any.
    pub traceparent: Option<String>,
    pub idempotency_key: Option<String>,
    /// HTTP version the call came over, and the client's address (one per
    /// connection).
    pub version: axum::http::Version,
    pub peer: SocketAddr,
    pub at: Instant,
    /// How many calls for the same `to` this is, from 1.
    pub nth: usize,
}

impl Call {
    pub fn to(&self) -> &str {
        self.body["to"].as_str().unwrap_or("")
    }
}

/// The answer a fake gives.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    pub delay: Duration,
    /// Send the head and the body, then nothing more, never ending.
    pub stall: bool,
}

impl Reply {
    pub fn ok() -> Self {
        Self::status(200, r#"{"id":"msg_1","status":"queued"}"#)
    }
    pub fn status(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.to_owned(),
            delay: Duration::ZERO,
            stall: false,
        }
    }
    /// The body's end never comes: the response stalls after it.
    pub fn stalling(mut self) -> Self {
        self.stall = true;
        self
    }
    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

type Responder = Arc<dyn Fn(&Call) -> Reply + Send + Sync>;

struct FakeState {
    calls: Mutex<Vec<Call>>,
    /// Calls recorded per recipient (a scan of `calls` is quadratic).
    per_to: Mutex<std::collections::HashMap<String, usize>>,
    responder: Responder,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// A fake MigoSMTP or Telnxo API on loopback.
#[derive(Clone)]
pub struct FakeProvider {
    pub addr: SocketAddr,
    state: Arc<FakeState>,
    tls: bool,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl FakeProvider {
    pub async fn start(responder: impl Fn(&Call) -> Reply + Send + Sync + 'static) -> Self {
        Self::serve(None, responder).await
    }

    /// The same fake over TLS (certificate for 127.0.0.1 from
    /// `tests/fixtures/tls`), offering `alpn` (e.g. `["h2", "http/1.1"]`).
    pub async fn start_tls(
        alpn: &[&str],
        responder: impl Fn(&Call) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let acceptor = tls::acceptor(alpn);
        Self::serve(Some(acceptor), responder).await
    }

    /// Serves HTTP/1.1 and HTTP/2 (h2c by prior knowledge on plain TCP,
    /// ALPN over TLS), each connection a task [`Self::drop_connections`]
    /// can end.
    async fn serve(
        acceptor: Option<tokio_rustls::TlsAcceptor>,
        responder: impl Fn(&Call) -> Reply + Send + Sync + 'static,
    ) -> Self {
        use hyper_util::{
            rt::{TokioExecutor, TokioIo},
            server::conn::auto,
            service::TowerToHyperService,
        };
        let state = Arc::new(FakeState {
            calls: Mutex::new(Vec::new()),
            per_to: Mutex::new(std::collections::HashMap::new()),
            responder: Arc::new(responder),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let app = Router::new()
            .fallback(post(handle))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(Mutex::new(Vec::<tokio::task::AbortHandle>::new()));
        let tls = acceptor.is_some();
        let open = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((tcp, peer)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let service = TowerToHyperService::new(
                    app.clone()
                        .layer(axum::Extension(axum::extract::ConnectInfo(peer))),
                );
                let task = tokio::spawn(async move {
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let _ = match acceptor {
                        None => builder.serve_connection(TokioIo::new(tcp), service).await,
                        Some(acceptor) => {
                            let Ok(tls) = acceptor.accept(tcp).await else {
                                return;
                            };
                            builder.serve_connection(TokioIo::new(tls), service).await
                        }
                    };
                });
                open.lock().unwrap().push(task.abort_handle());
            }
        });
        Self {
            addr,
            state,
            tls,
            connections,
        }
    }

    /// Closes every open connection at once, as a provider restart would;
    /// calls under way on them get no answer.
    pub fn drop_connections(&self) {
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// The CA file that makes [`FakeProvider::start_tls`]'s certificate
    /// trusted (through `SSL_CERT_FILE`).
    pub fn test_ca() -> &'static str {
        tls::CA
    }

    /// Allows `per_second` calls a second (a token bucket holding a second's
    /// worth) and answers 429 with `Retry-After: 1` beyond that.
    pub async fn rate_limited(per_second: f64) -> Self {
        let bucket = Mutex::new((per_second, Instant::now()));
        Self::start(move |_| {
            let mut bucket = bucket.lock().unwrap();
            let now = Instant::now();
            let (tokens, last) = *bucket;
            let tokens = (tokens + (now - last).as_secs_f64() * per_second).min(per_second);
            if tokens >= 1.0 {
                *bucket = (tokens - 1.0, now);
                Reply::ok()
            } else {
                *bucket = (tokens, now);
                Reply::status(429, r#"{"error":"rate_limited"}"#).header("retry-after", "1")
            }
        })
        .await
    }

    /// Answers 200 to everything.
    pub async fn accepting() -> Self {
        Self::start(|_| Reply::ok()).await
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().unwrap().clone()
    }

    pub fn calls_to(&self, to: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.to() == to).collect()
    }

    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// Waits until `n` calls have been answered; returns them all.
    pub async fn wait_calls(&self, n: usize) -> Vec<Call> {
        eventually(&format!("{n} calls"), Duration::from_secs(30), || async {
            let calls = self.calls();
            (calls.len() >= n).then_some(calls)
        })
        .await
    }

    /// Waits until a call for `to` has been answered `n` times.
    pub async fn wait_calls_to(&self, to: &str, n: usize) -> Vec<Call> {
        eventually(
            &format!("{n} calls to {to}"),
            Duration::from_secs(20),
            || async {
                let calls = self.calls_to(to);
                (calls.len() >= n).then_some(calls)
            },
        )
        .await
    }
}

async fn handle(
    State(state): State<Arc<FakeState>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    version: axum::http::Version,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let to = body["to"].as_str().unwrap_or("").to_owned();
    let mut call = Call {
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        authorization: header("authorization"),
        content_type: header("content-type"),
        raw_headers: format!("{headers:?}"),
        traceparent: header("traceparent"),
        idempotency_key: header("idempotency-key"),
        version,
        peer,
        body,
        at: Instant::now(),
        nth: 0,
    };
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    call.nth = state.per_to.lock().unwrap().get(&to).copied().unwrap_or(0) + 1;
    let reply = (state.responder)(&call);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    *state.per_to.lock().unwrap().entry(to).or_default() += 1;
    state.calls.lock().unwrap().push(call);
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    let status = StatusCode::from_u16(reply.status).unwrap();
    let mut response = if reply.stall {
        let first =
            futures_util::stream::once(
                async move { Ok::<_, std::io::Error>(Bytes::from(reply.body)) },
            );
        let body = axum::body::Body::from_stream(first.chain(futures_util::stream::pending()));
        (status, body).into_response()
    } else {
        (status, reply.body).into_response()
    };
    for (name, value) in reply.headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

/// A loopback URL whose server reads each request and closes the
/// connection without a word, as a crashing provider would.
pub async fn cutting_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
            });
        }
    });
    url
}

/// A loopback URL nobody listens on: every connection is refused, for as
/// long as it is kept. Its port stays bound (not listening), so another
/// test's server cannot be given it meanwhile (one was, and answered 404).
pub struct ClosedUrl {
    _port: tokio::net::TcpSocket,
    url: String,
}

impl ClosedUrl {
    pub fn as_str(&self) -> &str {
        &self.url
    }
}

pub async fn closed_url() -> ClosedUrl {
    let port = tokio::net::TcpSocket::new_v4().unwrap();
    port.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("http://{}", port.local_addr().unwrap());
    ClosedUrl { _port: port, url }
}

/// A dead-letter row as tests read it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DlRow {
    pub job_id: String,
    pub channel: String,
    pub provider: Option<String>,
    pub error_code: String,
    pub reason: String,
    pub http_status: Option<i32>,
    pub provider_response: Option<String>,
    pub payload: Option<Value>,
    pub raw_payload: Option<Vec<u8>>,
    pub attempts: i32,
    pub source_queue: String,
}

/// A fresh database and uniquely named exchange and queues.
pub struct TestEnv {
    pub suffix: String,
    pub database_url: String,
    pub db: PgPool,
    pub exchange: String,
    pub email_queue: String,
    pub sms_queue: String,
    pub amqp: Connection,
    pub publisher: Channel,
}

impl TestEnv {
    pub async fn new() -> Self {
        let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(ADMIN_DB)
            .await
            .expect("postgres on 127.0.0.1:5432");
        let db_name = format!("nw_test_{suffix}");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let database_url = format!("postgres://postgres@127.0.0.1:5432/{db_name}");
        let db = PgPoolOptions::new()
            .max_connections(2)
            .connect(&database_url)
            .await
            .unwrap();
        let amqp = Connection::connect(AMQP, ConnectionProperties::default())
            .await
            .expect("rabbitmq on 127.0.0.1:5672");
        let publisher = amqp.create_channel().await.unwrap();
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        Self {
            exchange: format!("nw-test-{suffix}"),
            email_queue: format!("nw-test-{suffix}.email"),
            sms_queue: format!("nw-test-{suffix}.sms"),
            suffix,
            database_url,
            db,
            amqp,
            publisher,
        }
    }

    /// This environment's topology, with quorum queues.
    pub fn topology(&self) -> notify_worker::Topology {
        notify_worker::Topology::new(
            &self.exchange,
            &self.email_queue,
            &self.sms_queue,
            notify_worker::QueueType::Quorum,
        )
    }

    /// A fresh broker connection for publishing, after the old one died.
    pub async fn reconnect(&mut self) {
        self.amqp = Connection::connect(AMQP, ConnectionProperties::default())
            .await
            .expect("rabbitmq");
        self.publisher = self.amqp.create_channel().await.unwrap();
        self.publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
    }

    /// `notify-worker run` arguments for this environment.
    pub fn args(&self, email: &FakeProvider, sms: &FakeProvider) -> Vec<String> {
        [
            "--amqp-url",
            AMQP,
            "--database-url",
            &self.database_url,
            "--migosmtp-base-url",
            &email.url(),
            "--telnxo-base-url",
            &sms.url(),
            "--exchange",
            &self.exchange,
            "--email-queue",
            &self.email_queue,
            "--sms-queue",
            &self.sms_queue,
            "--admin-addr",
            "127.0.0.1:0",
            "--retry-base-ms",
            "20",
            "--retry-max-ms",
            "200",
            "--request-timeout-ms",
            "2000",
            "--drain-timeout-secs",
            "10",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Starts an in-process worker with keys given directly, plus `extra` flags.
    pub async fn worker(
        &self,
        email: &FakeProvider,
        sms: &FakeProvider,
        extra: &[&str],
    ) -> TestWorker {
        let mut args = self.args(email, sms);
        args.extend([
            "--migosmtp-api-key".into(),
            EMAIL_KEY.into(),
            "--telnxo-api-key".into(),
            SMS_KEY.into(),
        ]);
        for pair in extra.chunks(2) {
            set_arg(&mut args, pair[0], pair.get(1).copied());
        }
        TestWorker::start(args).await
    }

    /// Publishes `n` email jobs `{prefix}-{i}` to `{prefix}{i}@example.com`.
    pub async fn publish_emails(&self, prefix: &str, n: usize) {
        for i in 0..n {
            let job = email_job(
                &format!("{prefix}-{i}"),
                &format!("{prefix}{i}@example.com"),
            );
            self.publish("email", &job).await;
        }
    }

    pub async fn publish(&self, routing_key: &str, body: &[u8]) {
        self.publish_with(
            &self.exchange,
            routing_key,
            body,
            BasicProperties::default(),
        )
        .await;
    }

    pub async fn publish_with(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) {
        let props = props
            .with_content_type("application/json".into())
            .with_delivery_mode(2);
        let confirm = self
            .publisher
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await
            .unwrap();
        assert!(confirm.await.unwrap().is_ack(), "publish not confirmed");
    }

    /// Ready messages in `queue` (unacked ones are not counted).
    pub async fn ready(&self, queue: &str) -> u32 {
        let ch = self.amqp.create_channel().await.unwrap();
        let q = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let _ = ch.close(200, "ok".into()).await;
        q.message_count()
    }

    /// Every dead-letter row, oldest first. A query that fails (no table,
    /// no database) fails the test: it is never "no rows".
    pub async fn rows(&self) -> Vec<DlRow> {
        sqlx::query_as(
            "SELECT job_id, channel, provider, error_code, reason, http_status, provider_response, \
             payload, raw_payload, attempts, source_queue FROM dead_letters ORDER BY id",
        )
        .fetch_all(&self.db)
        .await
        .unwrap_or_else(|e| panic!("cannot read dead_letters: {e}"))
    }

    /// The row of `job_id`; fails the test unless there is exactly one.
    pub async fn row(&self, job_id: &str) -> DlRow {
        let mut rows: Vec<DlRow> = self
            .rows()
            .await
            .into_iter()
            .filter(|r| r.job_id == job_id)
            .collect();
        assert_eq!(rows.len(), 1, "rows for job {job_id}: {rows:?}");
        rows.remove(0)
    }

    pub async fn wait_rows(&self, n: usize) -> Vec<DlRow> {
        eventually(
            &format!("{n} dead-letter rows"),
            Duration::from_secs(20),
            || async {
                let rows = self.rows().await;
                (rows.len() >= n).then_some(rows)
            },
        )
        .await
    }

    /// The ledger rows of `job_id` as (status, attempts, provider message id).
    pub async fn ledger(&self, job_id: &str) -> Vec<(String, i32, Option<String>)> {
        sqlx::query_as(
            "SELECT status, attempts, provider_message_id FROM deliveries WHERE job_id = $1",
        )
        .bind(job_id)
        .fetch_all(&self.db)
        .await
        .unwrap_or_else(|e| panic!("cannot read deliveries: {e}"))
    }

    /// Waits until the ledger says `status` for `job_id`.
    pub async fn wait_ledger(&self, job_id: &str, status: &str) {
        eventually(
            &format!("ledger {status} for {job_id}"),
            Duration::from_secs(20),
            || async {
                let rows = self.ledger(job_id).await;
                rows.iter().any(|r| r.0 == status).then_some(())
            },
        )
        .await
    }

    /// Deletes this test's queues, exchange and database.
    pub async fn cleanup(self) {
        let ch = self.amqp.create_channel().await.unwrap();
        // RabbitMQ deletes what does not exist without complaint.
        for base in [&self.email_queue, &self.sms_queue] {
            let shards = (0..8).map(|i| format!("{base}.{i}"));
            for q in [base.clone(), format!("{base}.urgent")]
                .into_iter()
                .chain(shards)
            {
                let _ = ch
                    .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
        }
        for x in [
            self.exchange.clone(),
            format!("{}.email.shards", self.exchange),
            format!("{}.sms.shards", self.exchange),
        ] {
            let _ = ch
                .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
        let _ = self.amqp.close(200, "bye".into()).await;
        self.db.close().await;
        if let Ok(admin) = PgPoolOptions::new()
            .max_connections(1)
            .connect(ADMIN_DB)
            .await
        {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS nw_test_{} WITH (FORCE)",
                self.suffix
            )))
            .execute(&admin)
            .await;
        }
    }
}

impl TestEnv {
    /// Runs a `notify-worker` command against this environment.
    pub async fn cli(&self, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
        use tokio::io::AsyncWriteExt;
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_notify-worker"));
        cmd.env_clear()
            .env("AMQP_URL", AMQP)
            .env("DATABASE_URL", &self.database_url)
            .env("NOTIFY_EXCHANGE", &self.exchange)
            .env("NOTIFY_EMAIL_QUEUE", &self.email_queue)
            .env("NOTIFY_SMS_QUEUE", &self.sms_queue)
            .env("NOTIFY_LOG_LEVEL", "warn")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).await.unwrap();
        }
        drop(input);
        let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// Sets `flag` to `value` in `args`, replacing an earlier value.
pub fn set_arg(args: &mut Vec<String>, flag: &str, value: Option<&str>) {
    match (args.iter().position(|a| a == flag), value) {
        (Some(at), Some(v)) => args[at + 1] = v.to_owned(),
        (Some(_), None) => {}
        (None, v) => {
            args.push(flag.to_owned());
            args.extend(v.map(str::to_owned));
        }
    }
}

/// The value of one series (`name{labels}` exactly) in a Prometheus text
/// scrape, if the scrape has it.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// A worker's admin endpoints, in process or not: each worker has its own
/// metrics, so what they show is this worker's alone.
#[allow(async_fn_in_trait)] // test code: no Send bound needed
pub trait Admin {
    fn admin_url(&self) -> String;

    /// Status and body of a GET; `(0, "")` when nothing answers.
    async fn get(&self, path: &str) -> (u16, String) {
        match reqwest::get(format!("{}{path}", self.admin_url())).await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(_) => (0, String::new()),
        }
    }

    /// The current value of `series` in `/metrics`.
    async fn metric(&self, series: &str) -> Option<f64> {
        metric(&self.get("/metrics").await.1, series)
    }

    /// Waits until `series` reads at least `at_least`; returns the value.
    async fn wait_metric(&self, series: &str, at_least: f64) -> f64 {
        self.wait_metric_for(series, at_least, Duration::from_secs(20))
            .await
    }

    /// [`Admin::wait_metric`], waiting at most `limit`.
    async fn wait_metric_for(&self, series: &str, at_least: f64, limit: Duration) -> f64 {
        eventually(&format!("{series} >= {at_least}"), limit, || async {
            self.metric(series).await.filter(|v| *v >= at_least)
        })
        .await
    }
}

impl Admin for TestWorker {
    fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }
}

impl Admin for ChildWorker {
    fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }
}

/// A worker running in this process.
pub struct TestWorker {
    pub admin: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), notify_worker::WorkerError>>,
}

impl TestWorker {
    pub async fn start(args: Vec<String>) -> Self {
        let argv = std::iter::once("notify-worker".to_owned())
            .chain(std::iter::once("run".to_owned()))
            .chain(args);
        let cli = Cli::try_parse_from(argv).expect("valid test arguments");
        let Command::Run(run) = cli.command else {
            unreachable!()
        };
        let config = WorkerConfig::try_from(*run).expect("valid test config");
        let worker = Worker::start(config).await.expect("worker starts");
        let admin = worker.admin_addr();
        let shutdown = worker.shutdown_token();
        let task = tokio::spawn(worker.run());
        Self {
            admin,
            shutdown,
            task,
        }
    }

    /// Stops the worker gracefully and returns its result.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task
            .await
            .expect("worker task")
            .expect("worker stops cleanly");
    }
}

/// The worker binary as a child process, for what only a process has:
/// signals, exit codes, environment variables, its own output.
pub struct ChildWorker {
    pub admin: String,
    child: tokio::process::Child,
}

impl ChildWorker {
    pub async fn start(args: Vec<String>) -> Self {
        Self::start_with_env(args, &[]).await
    }

    /// Like [`ChildWorker::start`], with these environment variables.
    pub async fn start_with_env(mut args: Vec<String>, env: &[(&str, &str)]) -> Self {
        let admin = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        set_arg(&mut args, "--admin-addr", Some(&admin));
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_notify-worker"))
            .env_clear()
            .env("NOTIFY_LOG_LEVEL", "warn")
            .envs(env.iter().copied())
            .arg("run")
            .args(&args)
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let worker = Self { admin, child };
        eventually("child worker ready", Duration::from_secs(30), || async {
            (worker.get("/readyz").await.0 == 200).then_some(())
        })
        .await;
        worker
    }

    /// SIGKILL: no drain, no goodbye to the broker (a crash, an OOM kill).
    pub async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn stop(mut self) {
        let pid = self.child.id().unwrap().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "worker exited with {status}");
    }
}

/// Calls in the busiest one-second window of `at`, and calls a second
/// from the first to the last.
pub fn windows(mut at: Vec<Instant>) -> (usize, f64) {
    at.sort();
    let mut busiest = 0;
    let mut lo = 0;
    for hi in 0..at.len() {
        while at[hi].duration_since(at[lo]) >= Duration::from_secs(1) {
            lo += 1;
        }
        busiest = busiest.max(hi - lo + 1);
    }
    let span = match (at.first(), at.last()) {
        (Some(a), Some(b)) => b.duration_since(*a).as_secs_f64(),
        _ => 0.0,
    };
    (busiest, at.len().saturating_sub(1) as f64 / span)
}

pub fn email_job(id: &str, to: &str) -> Vec<u8> {
    serde_json::json!({"id": id, "from": "hello@yourdomain.com", "to": to, "subject": "Hello from MigoSMTP", "html": "<p>Your message here</p>"})
        .to_string()
        .into_bytes()
}

pub fn sms_job(id: &str, to: &str) -> Vec<u8> {
    serde_json::json!({"id": id, "from": "YOURBRAND", "to": to, "message": "Your OTP is 482910. Valid for 10 minutes."})
        .to_string()
        .into_bytes()
}
