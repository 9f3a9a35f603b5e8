//! Benchmark against the local RabbitMQ and PostgreSQL, the worker running
//! as its own process (the release binary) and the fake providers in this
//! one. Each figure is measured next to its baseline in the same run.
//!
//!   cargo bench --bench pipeline                 # full run, medians of 3
//!   cargo bench --bench pipeline -- --smoke      # tiny sizes, one run (CI)
//!
//! (a) the broker's limit: a plain lapin consumer that acks each delivery,
//!     awaiting each ack (and, for reference, with acks pipelined);
//! (b) the worker end to end with an instant provider;
//! (c) a 200 ms provider: jobs/s against K calls in flight;
//! (d) worker RSS idle, at 1,000 and at 10,000 calls in flight;
//! (e) a revoked-key storm (auth pause off): dead-letter rows/s;
//! (f) peak RSS with K calls in flight whose answers are multi-MiB bodies,
//!     against the same K with small bodies;
//! (g) a provider allowing L calls/s per API (429 + Retry-After beyond),
//!     one and three worker processes: deliveries/s, 429 share;
//! (h) an 8 s outage: how soon after recovery jobs flow again;
//! (i) the worker against a no-op relay: jobs/s, CPU per job of each and
//!     of the broker (pipeline/thrift.rs);
//! (j) `enqueue --file`: confirms in flight against one at a time, and a
//!     bare lapin publisher (pipeline/bulk.rs);
//! (k) traces: worker CPU per job with spans exported by OTLP/HTTP against
//!     traces off, jobs carrying a `traceparent` (pipeline/traced.rs);
//! (l) the delivery ledger: relay, worker with `--ledger off`, worker with
//!     the ledger, same jobs, same run; CPU per job of each and of
//!     PostgreSQL, and commits and ledger rows per job (pipeline/ledger.rs);
//! (m) shards: jobs/s and CPU per job of the worker and the broker with 1, 2
//!     and 4 queues per channel (pipeline/scale.rs);
//! (n) the urgent lane: latency of urgent jobs published while a backlog
//!     drains, against jobs published at the same moments to the bulk lane;
//! (o) as (g), against a provider counting calls in fixed one-second
//!     windows (pipeline/flow.rs).
//!
//! For profiling: `--only d` runs some scenarios; `BENCH_RUNS`, `BENCH_JOBS`,
//! `BENCH_RSS_IN_FLIGHT=2000`, `BENCH_KS=2000` ((c)'s calls in flight),
//! `BENCH_SOAK=0` and `BENCH_HTTP=http2` shrink a run;
//! `BENCH_WRAP="valgrind --tool=massif"` runs the worker under a tool;
//! `BENCH_TIMELINE=1` prints (g)'s and (o)'s calls taken and refused per
//! second; `BENCH_WORKER_LOG=<filter>` shows the workers' logs;
//! `BENCH_WORKER_ENV="NOTIFY_X=1 ..."` gives the workers settings to try;
//! `BENCH_DB_OPTS="sslmode=disable"` their database URL's options.

use axum::{Router, extract::State, http::StatusCode, routing::post};
use futures_util::StreamExt;
use lapin::{
    BasicProperties, Connection, ConnectionProperties,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, QueueDeleteOptions,
    },
    types::FieldTable,
};
use notify_worker::{QueueType, Topology, declare};
use sqlx::PgPool;
use std::{
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const ADMIN_DB: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const BIN: &str = env!("CARGO_BIN_EXE_notify-worker");
const EMAIL_KEY: &str = "mk_bench_key";
const SMS_KEY: &str = "tk_bench_key";
/// The worker's default `NOTIFY_PREFETCH`, for the runs "at its defaults".
const WORKER_PREFETCH: usize = 1000;

/// A slow provider's flags: `http` spoken, `cap` calls in flight at most,
/// and a timeout no call reaches.
fn slow_flags<'a>(http: &'a str, cap: &'a str) -> [&'a str; 6] {
    [
        "--request-timeout-ms",
        "30000",
        "--provider-http",
        http,
        "--max-calls-in-flight",
        cap,
    ]
}

struct Sizes {
    runs: usize,
    jobs: usize,
    ks: Vec<usize>,
    storm: usize,
    rss_in_flight: Vec<usize>,
    soak: usize,
    /// (f): calls in flight, MiB per body.
    huge: (usize, Vec<usize>),
    /// (g): the provider's calls per second per API, and jobs per API.
    limits: Vec<(f64, usize)>,
    /// (i): jobs per run.
    thrift: usize,
    /// (j): jobs per file.
    bulk: usize,
}

/// Completion times of provider calls, and what to answer.
struct Fake {
    done: Mutex<Vec<Instant>>,
    /// Calls that came over HTTP/2.
    h2: std::sync::atomic::AtomicUsize,
    status: StatusCode,
    delay: Duration,
    /// The body of every answer, when not the usual small one.
    body: Option<bytes::Bytes>,
}

async fn fake(status: StatusCode, delay: Duration) -> (String, Arc<Fake>) {
    fake_on(status, delay, false).await
}

/// The fake, over TLS if `tls` (the test certificate for 127.0.0.1 in
/// `tests/fixtures/tls`, offering h2 and http/1.1 by ALPN).
async fn fake_on(status: StatusCode, delay: Duration, tls: bool) -> (String, Arc<Fake>) {
    fake_with(status, delay, tls, None).await
}

async fn fake_with(
    status: StatusCode,
    delay: Duration,
    tls: bool,
    body: Option<bytes::Bytes>,
) -> (String, Arc<Fake>) {
    let state = Arc::new(Fake {
        done: Mutex::new(Vec::with_capacity(100_000)),
        h2: Default::default(),
        status,
        delay,
        body,
    });
    let app = Router::new()
        .fallback(post(
            |State(s): State<Arc<Fake>>, version: axum::http::Version| async move {
                if version == axum::http::Version::HTTP_2 {
                    s.h2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                if !s.delay.is_zero() {
                    tokio::time::sleep(s.delay).await;
                }
                s.done.lock().unwrap().push(Instant::now());
                let body = match &s.body {
                    // Shared, not copied: the fake's own memory stays flat.
                    Some(body) => body.clone(),
                    None if s.status == StatusCode::OK => {
                        bytes::Bytes::from_static(br#"{"id":"m","status":"queued"}"#)
                    }
                    None => bytes::Bytes::from_static(
                        br#"{"error":{"code":"invalid_api_key","message":"revoked"}}"#,
                    ),
                };
                (s.status, body)
            },
        ))
        .with_state(Arc::clone(&state));
    let listener = fake_listener();
    let addr = listener.local_addr().unwrap();
    if !tls {
        tokio::spawn(async move { axum::serve(listener, app).await });
        return (format!("http://{addr}"), state);
    }
    let acceptor = tls::acceptor(&["h2", "http/1.1"]);
    tokio::spawn(async move {
        use hyper_util::{
            rt::{TokioExecutor, TokioIo},
            server::conn::auto,
            service::TowerToHyperService,
        };
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                    .await;
            });
        }
    });
    (format!("https://{addr}"), state)
}

#[path = "../tests/common/tls.rs"]
mod tls;

#[path = "pipeline/bulk.rs"]
mod bulk;
#[path = "pipeline/flow.rs"]
mod flow;
#[path = "pipeline/ledger.rs"]
mod ledger;
#[path = "pipeline/scale.rs"]
mod scale;
#[path = "pipeline/thrift.rs"]
mod thrift;
#[path = "pipeline/traced.rs"]
mod traced;

impl Fake {
    fn count(&self) -> usize {
        self.done.lock().unwrap().len()
    }
    /// Jobs/s over the middle 80% of completions.
    fn steady_rate(&self) -> f64 {
        let mut t = self.done.lock().unwrap().clone();
        t.sort();
        if t.len() < 10 {
            return f64::NAN;
        }
        let (lo, hi) = (t.len() / 10, t.len() * 9 / 10);
        (hi - lo) as f64 / (t[hi] - t[lo]).as_secs_f64()
    }
    fn first_to_last(&self) -> Duration {
        let t = self.done.lock().unwrap();
        match (t.iter().min(), t.iter().max()) {
            (Some(a), Some(b)) => *b - *a,
            _ => Duration::ZERO,
        }
    }
}

struct Env {
    suffix: String,
    db_url: String,
    db: PgPool,
    amqp: Connection,
    topology: Topology,
}

impl Env {
    async fn new(queue_type: QueueType) -> Self {
        Self::sharded(queue_type, 1).await
    }

    /// With `shards` queues per channel (`--shards`).
    async fn sharded(queue_type: QueueType, shards: u16) -> Self {
        let suffix = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        let admin = PgPool::connect(ADMIN_DB).await.expect("postgres");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE nw_bench_{suffix}"
        )))
        .execute(&admin)
        .await
        .unwrap();
        admin.close().await;
        // `BENCH_DB_OPTS="sslmode=disable"`: the worker's connection options
        // (by default it takes TLS where the server offers it, as here).
        let opts =
            std::env::var("BENCH_DB_OPTS").map_or_else(|_| String::new(), |o| format!("?{o}"));
        let db_url = format!("postgres://postgres@127.0.0.1:5432/nw_bench_{suffix}{opts}");
        let db = PgPool::connect(&db_url).await.unwrap();
        sqlx::migrate!("./migrations").run(&db).await.unwrap();
        let amqp = Connection::connect(AMQP, ConnectionProperties::default())
            .await
            .expect("rabbitmq");
        let topology = Topology {
            shards,
            ..Topology::new(
                &format!("nw-bench-{suffix}"),
                &format!("nw-bench-{suffix}.email"),
                &format!("nw-bench-{suffix}.sms"),
                queue_type,
            )
        };
        declare(&amqp, &topology).await.unwrap();
        Self {
            suffix,
            db_url,
            db,
            amqp,
            topology,
        }
    }

    /// Publishes `n` email jobs (or SMS), confirms pipelined in windows.
    async fn publish(&self, n: usize, sms: bool) {
        let key = if sms { "sms" } else { "email" };
        self.publish_each(key, n, |i| {
            let body = if sms {
                format!(
                    r#"{{"id":"b{i}","from":"BRAND","to":"+91{:010}","message":"Your OTP is 482910"}}"#,
                    i
                )
            } else {
                format!(
                    r#"{{"id":"b{i}","from":"hello@yourdomain.com","to":"r{i}@example.com","subject":"Hello","html":"<p>Your message here</p>"}}"#
                )
            };
            (body, None)
        })
        .await;
    }

    /// Publishes `job(i)` (body, headers) for each i below `n`, persistent,
    /// 1,000 confirms in flight at most.
    async fn publish_each(
        &self,
        routing_key: &str,
        n: usize,
        job: impl Fn(usize) -> (String, Option<FieldTable>),
    ) {
        let ch = self.amqp.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let mut pending = Vec::with_capacity(1000);
        for i in 0..n {
            let (body, headers) = job(i);
            let mut props = BasicProperties::default()
                .with_content_type("application/json".into())
                .with_delivery_mode(2);
            if self.topology.shards > 1 {
                // The consistent-hash exchange spreads by message_id.
                props = props.with_message_id(format!("m{i}").into());
            }
            if let Some(headers) = headers {
                props = props.with_headers(headers);
            }
            let confirm = ch
                .basic_publish(
                    self.topology.exchange.as_str().into(),
                    routing_key.into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    props,
                )
                .await
                .unwrap();
            pending.push(confirm);
            if pending.len() == 1000 {
                for c in pending.drain(..) {
                    c.await.unwrap();
                }
            }
        }
        for c in pending {
            c.await.unwrap();
        }
        let _ = ch.close(200, "ok".into()).await;
    }

    async fn ready(&self, queue: &str) -> u32 {
        let ch = self.amqp.create_channel().await.unwrap();
        let q = ch
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
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

    async fn rows(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM dead_letters")
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    async fn drop_all(self) {
        let ch = self.amqp.create_channel().await.unwrap();
        let t = &self.topology;
        for c in notify_worker::Channel::ALL {
            let shards = (0..t.shards).map(|i| t.shard_queue(c, i));
            let queue = if c == notify_worker::Channel::Email {
                &t.email_queue
            } else {
                &t.sms_queue
            };
            for q in [queue.clone(), t.urgent_queue(c)].into_iter().chain(shards) {
                let _ = ch
                    .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
            let _ = ch
                .exchange_delete(t.shard_exchange(c).as_str().into(), Default::default())
                .await;
        }
        let _ = ch
            .exchange_delete(t.exchange.as_str().into(), Default::default())
            .await;
        let _ = self.amqp.close(200, "ok".into()).await;
        self.db.close().await;
        let admin = PgPool::connect(ADMIN_DB).await.unwrap();
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE nw_bench_{} WITH (FORCE)",
            self.suffix
        )))
        .execute(&admin)
        .await;
    }

    /// Starts the worker binary; returns it once `/readyz` says 200.
    async fn worker(
        &self,
        provider: &str,
        prefetch: usize,
        consumers: usize,
        extra: &[&str],
    ) -> Worker {
        self.worker_with_env(provider, prefetch, consumers, extra, &[])
            .await
    }

    /// [`Env::worker`] with these environment variables.
    async fn worker_with_env(
        &self,
        provider: &str,
        prefetch: usize,
        consumers: usize,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Worker {
        let admin = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        let queue_type = match self.topology.queue_type {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "classic",
        };
        // `BENCH_WRAP="valgrind --tool=massif"` runs the worker under a
        // profiler (same process, so signals and RSS still reach it).
        let wrap = std::env::var("BENCH_WRAP").unwrap_or_default();
        let mut words = wrap.split_whitespace().chain([BIN]);
        let mut command = tokio::process::Command::new(words.next().unwrap_or(BIN));
        let child = command
            .args(words)
            .env_clear()
            // `BENCH_WORKER_LOG=<filter>`: the workers' logs on stdout.
            .env(
                "NOTIFY_LOG_LEVEL",
                std::env::var("BENCH_WORKER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(
                std::env::var("MALLOC_ARENA_MAX")
                    .ok()
                    .map(|v| ("MALLOC_ARENA_MAX", v)),
            )
            // Trusts the test CA of the TLS fake.
            .env("SSL_CERT_FILE", tls::CA)
            .envs(envs.iter().copied())
            // `BENCH_WORKER_ENV="NOTIFY_A=1 NOTIFY_B=2"`: settings to try.
            .envs(
                std::env::var("BENCH_WORKER_ENV")
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect::<Vec<_>>(),
            )
            .args([
                "run",
                "--no-migrate",
                "--amqp-url",
                AMQP,
                "--database-url",
                &self.db_url,
            ])
            .args([
                "--exchange",
                &self.topology.exchange,
                "--email-queue",
                &self.topology.email_queue,
                "--sms-queue",
                &self.topology.sms_queue,
            ])
            .args([
                "--queue-type",
                queue_type,
                "--admin-addr",
                &admin,
                "--prefetch",
                &prefetch.to_string(),
            ])
            .args(["--consumers-per-queue", &consumers.to_string()])
            .args([
                "--migosmtp-base-url",
                provider,
                "--telnxo-base-url",
                provider,
            ])
            .args(["--migosmtp-api-key", EMAIL_KEY, "--telnxo-api-key", SMS_KEY])
            .args(extra)
            .stdout(if std::env::var_os("BENCH_WORKER_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(format!("http://{admin}/readyz")).await
                && r.status() == 200
            {
                break;
            }
            assert!(Instant::now() < deadline, "worker not ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Worker { child }
    }
}

struct Worker {
    child: tokio::process::Child,
}

impl Worker {
    fn rss_mib(&self) -> f64 {
        let pid = self.child.id().unwrap_or(0);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }
    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// The most resident memory the worker has had (VmHWM), MiB.
    fn peak_rss_mib(&self) -> f64 {
        let pid = self.child.id().unwrap_or(0);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }
}

async fn wait_until(what: &str, limit: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// (a) Consumes `n` with a plain lapin consumer; returns jobs/s from the
/// first delivery to the last ack.
async fn baseline(env: &Env, n: usize, prefetch: u16, pipelined: bool) -> f64 {
    env.publish(n, false).await;
    let ch = env.amqp.create_channel().await.unwrap();
    ch.basic_qos(prefetch, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = ch
        .basic_consume(
            env.topology.email_queue.as_str().into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut first = None;
    let mut acks = Vec::new();
    for _ in 0..n {
        let delivery = consumer.next().await.unwrap().unwrap();
        first.get_or_insert_with(Instant::now);
        if pipelined {
            let acker = delivery.acker.clone();
            acks.push(tokio::spawn(async move {
                acker.ack(BasicAckOptions::default()).await
            }));
        } else {
            delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .unwrap();
        }
    }
    for a in acks {
        a.await.unwrap().unwrap();
    }
    let took = first.map_or(Duration::ZERO, |f| f.elapsed());
    let _ = ch.close(200, "ok".into()).await;
    n as f64 / took.as_secs_f64()
}

/// (b) The worker with an instant provider; jobs/s from the first call to
/// the last, once the queue is drained.
async fn end_to_end(env: &Env, n: usize, prefetch: usize) -> f64 {
    let (url, fake) = fake(StatusCode::OK, Duration::ZERO).await;
    env.publish(n, false).await;
    let worker = env.worker(&url, prefetch, 1, &[]).await;
    wait_until("all delivered", Duration::from_secs(300), async || {
        fake.count() >= n
    })
    .await;
    wait_until("queue drained", Duration::from_secs(60), async || {
        env.ready(&env.topology.email_queue).await == 0
    })
    .await;
    worker.stop().await;
    n as f64 / fake.first_to_last().as_secs_f64()
}

/// (c) rounds of `k` calls: with a handful, the middle 80% of completions
/// starts or ends inside a round's burst and the figure depends on how
/// tight the bursts are more than on the rate; twenty make that small.
const ROUNDS: usize = 20;

/// (c) A 200 ms provider with `k` calls in flight over `http`; steady jobs/s.
async fn slow_provider(env: &Env, k: usize, rounds: usize, http: &str) -> f64 {
    let (url, fake) = fake(StatusCode::OK, Duration::from_millis(200)).await;
    let n = k * rounds;
    env.publish(n, false).await;
    // k calls in flight (`--max-calls-in-flight`), in a window deeper by
    // the default prefetch: the jobs claimed or recorded meanwhile do not
    // take places from the calls.
    let window = k + WORKER_PREFETCH;
    let consumers = window.div_ceil(1000);
    let cap = k.to_string();
    let worker = env
        .worker(&url, window / consumers, consumers, &slow_flags(http, &cap))
        .await;
    wait_until("all delivered", Duration::from_secs(300), async || {
        fake.count() >= n
    })
    .await;
    worker.stop().await;
    fake.steady_rate()
}

/// (d) RSS idle, then the peak while `in_flight` calls wait on a 2 s
/// provider, spoken to in `http` (`http1` or `http2`).
async fn memory(env: &Env, in_flight: usize, http: &str) -> (f64, f64) {
    // `auto over TLS` is the default setting against an https provider.
    let (tls, http) = match http.strip_suffix(" over TLS") {
        Some(http) => (true, http),
        None => (false, http),
    };
    let (url, fake) = fake_on(StatusCode::OK, Duration::from_secs(2), tls).await;
    let per_queue = in_flight / 2;
    let consumers = per_queue.div_ceil(1000);
    let cap = per_queue.to_string();
    let worker = env
        .worker(
            &url,
            per_queue / consumers,
            consumers,
            &slow_flags(http, &cap),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = worker.rss_mib();
    let n = in_flight * 2;
    let e = env.publish(n / 2, false);
    let s = env.publish(n / 2, true);
    tokio::join!(e, s);
    let mut peak = 0f64;
    let deadline = Instant::now() + Duration::from_secs(300);
    while fake.count() < n && Instant::now() < deadline {
        peak = peak.max(worker.rss_mib());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worker.stop().await;
    let h2 = fake.h2.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(h2 > 0, http != "http1", "{h2} HTTP/2 calls with {http}");
    (idle, peak)
}

/// (d, long run) RSS sampled at each tenth of `n` jobs through a 20 ms
/// provider with 1,000 calls in flight: a leak shows as a rising line.
async fn soak(env: &Env, n: usize) -> Vec<f64> {
    let (url, fake) = fake(StatusCode::OK, Duration::from_millis(20)).await;
    let worker = env.worker(&url, 500, 1, &[]).await;
    let e = env.publish(n / 2, false);
    let s = env.publish(n / 2, true);
    let mut samples = Vec::new();
    let sample = async {
        let mut next = n / 10;
        while fake.count() < n {
            if fake.count() >= next {
                samples.push(worker.rss_mib());
                next += n / 10;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        samples.push(worker.rss_mib());
    };
    tokio::join!(e, s, sample);
    worker.stop().await;
    samples
}

/// (e) Every call answers 401, the pause is off: dead-letter rows/s.
async fn storm(env: &Env, n: usize) -> f64 {
    let (url, fake) = fake(StatusCode::UNAUTHORIZED, Duration::ZERO).await;
    env.publish(n, false).await;
    let worker = env.worker(&url, 200, 1, &["--auth-pause-secs", "0"]).await;
    wait_until("all rows", Duration::from_secs(300), async || {
        env.rows().await >= n as i64
    })
    .await;
    // From the first provider call to the moment the last row was seen.
    let first = fake
        .done
        .lock()
        .unwrap()
        .iter()
        .min()
        .copied()
        .unwrap_or_else(Instant::now);
    let took = first.elapsed();
    worker.stop().await;
    n as f64 / took.as_secs_f64()
}

/// (f) Peak RSS while `in_flight` calls are answered 422 after 2 s with a
/// body of `body_mib` MiB (0: the usual small body), spoken to in `http`.
async fn huge_bodies(env: &Env, in_flight: usize, body_mib: usize, http: &str) -> f64 {
    let body = (body_mib > 0).then(|| bytes::Bytes::from(vec![b'x'; body_mib << 20]));
    let (url, fake) = fake_with(
        StatusCode::UNPROCESSABLE_ENTITY,
        Duration::from_secs(2),
        false,
        body,
    )
    .await;
    let per_queue = in_flight / 2;
    let cap = per_queue.to_string();
    let worker = env
        .worker(&url, per_queue, 1, &slow_flags(http, &cap))
        .await;
    let e = env.publish(per_queue, false);
    let s = env.publish(per_queue, true);
    tokio::join!(e, s);
    wait_until("every row", Duration::from_secs(300), async || {
        env.rows().await >= in_flight as i64
    })
    .await;
    let peak = worker.peak_rss_mib();
    worker.stop().await;
    assert!(fake.count() >= in_flight);
    peak
}

/// A comma-separated list of numbers from the environment, if set.
/// A loopback listener for a fake provider whose accept queue holds a burst
/// of connections: a worker or the relay opens hundreds at once, the
/// default queue (128 here) overflowed under load, and the kernel retries
/// a dropped SYN only after a second. Those calls then held up the acks of
/// every job behind them (benchmark noise, not the worker's pace).
pub(crate) fn fake_listener() -> tokio::net::TcpListener {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(([127, 0, 0, 1], 0).into()).unwrap();
    socket.listen(4096).unwrap()
}

fn env_list(name: &str) -> Option<Vec<usize>> {
    let v = std::env::var(name).ok()?;
    v.split(',').map(|n| n.trim().parse().ok()).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn fmt_runs(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

// The worker's allocator, so that the no-op relay (a child of this binary)
// is not handicapped against the worker by glibc's malloc.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--relay-child") {
        return thrift::relay_child(&args[at + 1], &args[at + 2]).await;
    }
    let smoke = args.iter().any(|a| a == "--smoke");
    // `--only b,d` runs some scenarios (for profiling); all by default.
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "a,b,c,d,e,f,g,h,i,j,k,l,m,n,o".into());
    let run = |s: &str| {
        only.split(',')
            .any(|o| o == s || (s == "ab" && (o == "a" || o == "b")))
    };
    let sizes = if smoke {
        Sizes {
            runs: 1,
            jobs: 300,
            ks: vec![20],
            storm: 200,
            rss_in_flight: vec![100],
            soak: 1000,
            huge: (50, vec![1]),
            limits: vec![(50.0, 100)],
            thrift: 500,
            bulk: 500,
        }
    } else {
        Sizes {
            runs: 3,
            jobs: 20_000,
            ks: vec![100, 500, 1000, 2000],
            storm: 20_000,
            rss_in_flight: vec![1000, 10_000],
            soak: 200_000,
            huge: (1000, vec![8, 32]),
            limits: vec![(50.0, 1500), (500.0, 15_000)],
            thrift: 30_000,
            bulk: 20_000,
        }
    };
    // `BENCH_RSS_IN_FLIGHT=2000` and `BENCH_RUNS=1` shorten a profiling run.
    let mut sizes = sizes;
    if let Some(v) = env_list("BENCH_RSS_IN_FLIGHT") {
        sizes.rss_in_flight = v;
    }
    if let Some(v) = env_list("BENCH_JOBS").and_then(|v| v.first().copied()) {
        sizes.jobs = v;
        sizes.thrift = v;
    }
    if let Some(v) = env_list("BENCH_KS") {
        sizes.ks = v;
    }
    if let Some(v) = env_list("BENCH_SOAK").and_then(|v| v.first().copied()) {
        sizes.soak = v;
    }
    if let Some(v) = env_list("BENCH_RUNS").and_then(|v| v.first().copied()) {
        sizes.runs = v;
    }
    let prefetch = 200;
    println!(
        "# notify-worker benchmark ({} mode, {} run(s) each, medians)\n",
        if smoke { "smoke" } else { "full" },
        sizes.runs
    );
    if run("ab") {
        println!(
            "| queue | (a) lapin, await each ack | (a) lapin, pipelined acks | (b) worker end to end | (b)/(a) |"
        );
        println!("|---|---|---|---|---|");
        for qt in [QueueType::Classic, QueueType::Quorum] {
            let (mut a, mut ap, mut b, mut ratio) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for _ in 0..sizes.runs {
                let env = Env::new(qt).await;
                let base = baseline(&env, sizes.jobs, prefetch as u16, false).await;
                let piped = baseline(&env, sizes.jobs, prefetch as u16, true).await;
                let worker = end_to_end(&env, sizes.jobs, prefetch).await;
                env.drop_all().await;
                a.push(base);
                ap.push(piped);
                b.push(worker);
                ratio.push(worker / base);
            }
            println!(
                "| {qt:?} ({} jobs, prefetch {prefetch}) | {:.0}/s ({}) | {:.0}/s ({}) | {:.0}/s ({}) | {:.2} ({}) |",
                sizes.jobs,
                median(a.clone()),
                fmt_runs(&a),
                median(ap.clone()),
                fmt_runs(&ap),
                median(b.clone()),
                fmt_runs(&b),
                median(ratio.clone()),
                ratio
                    .iter()
                    .map(|r| format!("{r:.2}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    if run("c") {
        println!(
            "\n| (c) 200 ms provider, quorum | target 90% of K/0.2 s | steady jobs/s | share of K/0.2 s |"
        );
        println!("|---|---|---|---|");
        // The largest K once more over HTTP/2, for comparison.
        let last = sizes.ks.last().copied().map(|k| (k, "http2"));
        for (k, http) in sizes.ks.iter().map(|&k| (k, "http1")).chain(last) {
            let mut rates = Vec::new();
            for _ in 0..sizes.runs {
                let env = Env::new(QueueType::Quorum).await;
                rates.push(slow_provider(&env, k, ROUNDS, http).await);
                env.drop_all().await;
            }
            let ideal = k as f64 / 0.2;
            let m = median(rates.clone());
            println!(
                "| K = {k}, {http} | {:.0}/s | {m:.0}/s ({}) | {:.0}% |",
                0.9 * ideal,
                fmt_runs(&rates),
                100.0 * m / ideal
            );
        }
    }
    if run("d") {
        println!("\n| (d) worker RSS, quorum | idle MiB | peak MiB in flight |");
        println!("|---|---|---|");
        for (n, http) in sizes
            .rss_in_flight
            .iter()
            .flat_map(|&n| [(n, "http1"), (n, "http2"), (n, "auto over TLS")])
            .filter(|(_, h)| std::env::var("BENCH_HTTP").map_or(true, |v| v == *h))
        {
            let (mut idle, mut peak) = (Vec::new(), Vec::new());
            for _ in 0..sizes.runs {
                let env = Env::new(QueueType::Quorum).await;
                let (i, p) = memory(&env, n, http).await;
                env.drop_all().await;
                idle.push(i);
                peak.push(p);
            }
            println!(
                "| {n} calls in flight, {http} | {:.1} ({}) | {:.1} ({}) |",
                median(idle.clone()),
                fmt_runs(&idle),
                median(peak.clone()),
                fmt_runs(&peak)
            );
        }
        let env = Env::new(QueueType::Quorum).await;
        let samples = if sizes.soak > 0 {
            soak(&env, sizes.soak).await
        } else {
            Vec::new()
        };
        env.drop_all().await;
        println!(
            "\nLong run, {} jobs, 1,000 calls in flight: RSS MiB at each tenth: {}",
            sizes.soak,
            samples
                .iter()
                .map(|m| format!("{m:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if run("e") {
        let mut rows = Vec::new();
        for _ in 0..sizes.runs {
            let env = Env::new(QueueType::Quorum).await;
            rows.push(storm(&env, sizes.storm).await);
            env.drop_all().await;
        }
        println!("\n| (e) revoked-key storm, quorum, pause off | rows/s |");
        println!("|---|---|");
        println!(
            "| {} jobs, every call 401 | {:.0} ({}) |",
            sizes.storm,
            median(rows.clone()),
            fmt_runs(&rows)
        );
    }
    if run("f") {
        let (k, mibs) = sizes.huge.clone();
        let heads: Vec<String> = mibs.iter().map(|m| format!("{m} MiB bodies")).collect();
        println!(
            "\n| (f) peak RSS (VmHWM) MiB, {k} calls in flight answered 422, quorum | small bodies | {} |",
            heads.join(" | ")
        );
        println!("|---|---|{}", "---|".repeat(mibs.len()));
        for http in ["http1", "http2"] {
            let mut cells = Vec::new();
            for mib in std::iter::once(0).chain(mibs.iter().copied()) {
                let mut peaks = Vec::new();
                for _ in 0..sizes.runs {
                    let env = Env::new(QueueType::Quorum).await;
                    peaks.push(huge_bodies(&env, k, mib, http).await);
                    env.drop_all().await;
                }
                cells.push(format!(
                    "{:.1} ({})",
                    median(peaks.clone()),
                    fmt_runs(&peaks)
                ));
            }
            println!("| {http} | {} |", cells.join(" | "));
        }
    }
    for (scenario, fixed) in [("g", false), ("o", true)] {
        if !run(scenario) {
            continue;
        }
        println!(
            "\n| ({scenario}) provider allowing L calls/s per API{}, 20 ms, quorum | workers | deliveries/s per API, share of L (email, sms) | 429s after the first 2 s | dead letters |",
            if fixed { " in fixed 1 s windows" } else { "" }
        );
        println!("|---|---|---|---|---|");
        // (o) at the issue's L = 100.
        let limits = match (fixed, smoke) {
            (true, false) => vec![(100.0, 3000)],
            _ => sizes.limits.clone(),
        };
        for (rate, per_api) in limits {
            for workers in [1, 3] {
                let (mut shares, mut late, mut rows) = (Vec::new(), Vec::new(), 0);
                for _ in 0..sizes.runs {
                    let env = Env::new(QueueType::Quorum).await;
                    let apis = if fixed {
                        flow::fixed_window(&env, rate, per_api, workers).await
                    } else {
                        flow::rate_limited(&env, rate, per_api, workers).await
                    };
                    env.drop_all().await;
                    for api in apis {
                        shares.push(api.share);
                        late.push(api.throttled);
                        rows = rows.max(api.dead_letters);
                    }
                }
                let pct = |v: &[f64]| {
                    v.iter()
                        .map(|x| format!("{:.0}%", 100.0 * x))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                println!(
                    "| L = {rate}, {per_api} jobs per API | {workers} | {:.0}% ({}) | {:.1}% ({}) | {rows} |",
                    100.0 * median(shares.clone()),
                    pct(&shares),
                    100.0 * median(late.clone()),
                    pct(&late),
                );
            }
        }
    }
    if run("h") {
        let (mut after, mut rows) = (Vec::new(), 0);
        for _ in 0..sizes.runs {
            let env = Env::new(QueueType::Quorum).await;
            let (first, dead) = flow::outage(&env, Duration::from_secs(8), 500).await;
            env.drop_all().await;
            after.push(first.as_secs_f64());
            rows = rows.max(dead);
        }
        println!(
            "\n| (h) every call 503 for 8 s, then recovery, 500 jobs, quorum | first delivery after recovery | dead letters |"
        );
        println!("|---|---|---|");
        println!(
            "| default settings | {:.2} s ({}) | {rows} |",
            median(after.clone()),
            after
                .iter()
                .map(|a| format!("{a:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if run("i") {
        let n = sizes.thrift;
        println!(
            "\n| (i) {n} jobs of 300 bytes, instant provider | relay jobs/s | worker jobs/s | worker/relay | CPU per job: relay, worker (ratio) | broker CPU per job under relay, worker (ratio) |"
        );
        println!("|---|---|---|---|---|---|");
        for qt in [QueueType::Classic, QueueType::Quorum] {
            let mut runs = Vec::new();
            for _ in 0..sizes.runs {
                let env = Env::new(qt).await;
                let relay = thrift::run(&env, n, false).await;
                let worker = thrift::run(&env, n, true).await;
                env.drop_all().await;
                runs.push((relay, worker));
            }
            let us = |d: Duration| d.as_secs_f64() * 1e6;
            let m = |f: &dyn Fn(&(thrift::Thrift, thrift::Thrift)) -> f64| {
                median(runs.iter().map(f).collect())
            };
            let list = |f: &dyn Fn(&(thrift::Thrift, thrift::Thrift)) -> f64| {
                runs.iter()
                    .map(|r| format!("{:.2}", f(r)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            println!(
                "| {qt:?} | {:.0} | {:.0} | {:.2} ({}) | {:.0} us, {:.0} us ({:.2}; {}) | {:.0} us, {:.0} us ({:.2}; {}) |",
                m(&|r| r.0.jobs_per_sec),
                m(&|r| r.1.jobs_per_sec),
                m(&|r| r.1.jobs_per_sec / r.0.jobs_per_sec),
                list(&|r| r.1.jobs_per_sec / r.0.jobs_per_sec),
                m(&|r| us(r.0.cpu_per_job)),
                m(&|r| us(r.1.cpu_per_job)),
                m(&|r| r.1.cpu_per_job.as_secs_f64() / r.0.cpu_per_job.as_secs_f64()),
                list(&|r| r.1.cpu_per_job.as_secs_f64() / r.0.cpu_per_job.as_secs_f64()),
                m(&|r| us(r.0.broker_per_job)),
                m(&|r| us(r.1.broker_per_job)),
                m(&|r| r.1.broker_per_job.as_secs_f64() / r.0.broker_per_job.as_secs_f64()),
                list(&|r| r.1.broker_per_job.as_secs_f64() / r.0.broker_per_job.as_secs_f64()),
            );
        }
    }
    if run("j") {
        let n = sizes.bulk;
        println!(
            "\n| (j) publishing {n} SMS jobs, confirmed | lapin, 1,000 confirms in flight | enqueue --file, window 1 | enqueue --file, window 1000 (default) | window 1000 / lapin |"
        );
        println!("|---|---|---|---|---|");
        for qt in [QueueType::Classic, QueueType::Quorum] {
            let (mut base, mut one, mut many) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..sizes.runs {
                let env = Env::new(qt).await;
                base.push(bulk::lapin(&env, n).await);
                one.push(bulk::enqueue(&env, n, 1).await);
                many.push(bulk::enqueue(&env, n, 1000).await);
                env.drop_all().await;
            }
            let ratios: Vec<f64> = many.iter().zip(&base).map(|(m, b)| m / b).collect();
            println!(
                "| {qt:?} | {:.0}/s ({}) | {:.0}/s ({}) | {:.0}/s ({}) | {:.2} ({}) |",
                median(base.clone()),
                fmt_runs(&base),
                median(one.clone()),
                fmt_runs(&one),
                median(many.clone()),
                fmt_runs(&many),
                median(ratios.clone()),
                ratios
                    .iter()
                    .map(|r| format!("{r:.2}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    if run("l") {
        let n = sizes.thrift;
        println!(
            "\n| (l) {n} jobs, instant provider, quorum | relay | worker, ledger off | worker, ledger on | on/off | on/relay |"
        );
        println!("|---|---|---|---|---|---|");
        let (mut runs, mut floors) = (Vec::new(), Vec::new());
        for _ in 0..sizes.runs {
            let env = Env::new(QueueType::Quorum).await;
            let relay = ledger::run(&env, n, None).await;
            let off = ledger::run(&env, n, Some(&["--ledger", "off"])).await;
            let on = ledger::run(&env, n, Some(&[])).await;
            floors.push(ledger::floor(&env, n).await);
            env.drop_all().await;
            runs.push([relay, off, on]);
        }
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let m = |f: &dyn Fn(&[ledger::Costs; 3]) -> f64| median(runs.iter().map(f).collect());
        let list = |f: &dyn Fn(&[ledger::Costs; 3]) -> f64| {
            runs.iter()
                .map(|r| format!("{:.2}", f(r)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let jobs = |i: usize| move |r: &[ledger::Costs; 3]| r[i].thrift.jobs_per_sec;
        println!(
            "| jobs/s | {:.0} | {:.0} | {:.0} | {:.2} ({}) | {:.2} ({}) |",
            m(&jobs(0)),
            m(&jobs(1)),
            m(&jobs(2)),
            m(&|r| jobs(2)(r) / jobs(1)(r)),
            list(&|r| jobs(2)(r) / jobs(1)(r)),
            m(&|r| jobs(2)(r) / jobs(0)(r)),
            list(&|r| jobs(2)(r) / jobs(0)(r)),
        );
        let cpu = |i: usize| move |r: &[ledger::Costs; 3]| us(r[i].thrift.cpu_per_job);
        println!(
            "| consumer CPU per job | {:.0} us | {:.0} us | {:.0} us | {:.2} | {:.2} ({}) |",
            m(&cpu(0)),
            m(&cpu(1)),
            m(&cpu(2)),
            m(&|r| cpu(2)(r) / cpu(1)(r)),
            m(&|r| cpu(2)(r) / cpu(0)(r)),
            list(&|r| cpu(2)(r) / cpu(0)(r)),
        );
        let pg = |i: usize| move |r: &[ledger::Costs; 3]| us(r[i].pg_per_job);
        println!(
            "| PostgreSQL CPU per job | {:.0} us | {:.0} us | {:.0} us | | |",
            m(&pg(0)),
            m(&pg(1)),
            m(&pg(2)),
        );
        let broker = |i: usize| move |r: &[ledger::Costs; 3]| us(r[i].thrift.broker_per_job);
        println!(
            "| broker CPU per job | {:.0} us | {:.0} us | {:.0} us | | |",
            m(&broker(0)),
            m(&broker(1)),
            m(&broker(2)),
        );
        // Every process's CPU: when each run keeps the cores busy, the
        // ratio of these is the most the ledger's throughput could be.
        let all = |i: usize| move |r: &[ledger::Costs; 3]| us(r[i].thrift.machine_per_job);
        let cores = |i: usize| move |r: &[ledger::Costs; 3]| all(i)(r) * jobs(i)(r) / 1e6;
        println!(
            "| machine CPU per job (every process) / cores busy | {:.0} us / {:.2} | {:.0} us / {:.2} | {:.0} us / {:.2} | {:.2} ({}) | {:.2} ({}) |",
            m(&all(0)),
            m(&cores(0)),
            m(&all(1)),
            m(&cores(1)),
            m(&all(2)),
            m(&cores(2)),
            m(&|r| all(1)(r) / all(2)(r)),
            list(&|r| all(1)(r) / all(2)(r)),
            m(&|r| all(0)(r) / all(2)(r)),
            list(&|r| all(0)(r) / all(2)(r)),
        );
        println!(
            "| commits / ledger rows inserted / updated per job | {:.2} / {:.2} / {:.2} | {:.2} / {:.2} / {:.2} | {:.3} / {:.2} / {:.2} | | |",
            m(&|r| r[0].commits_per_job),
            m(&|r| r[0].inserts_per_job),
            m(&|r| r[0].updates_per_job),
            m(&|r| r[1].commits_per_job),
            m(&|r| r[1].inserts_per_job),
            m(&|r| r[1].updates_per_job),
            m(&|r| r[2].commits_per_job),
            m(&|r| r[2].inserts_per_job),
            m(&|r| r[2].updates_per_job),
        );
        println!(
            "| WAL flushes / WAL bytes per job (server-wide) | {:.3} / {:.0} | {:.3} / {:.0} | {:.3} / {:.0} | | |",
            m(&|r| r[0].wal_syncs_per_job),
            m(&|r| r[0].wal_bytes_per_job),
            m(&|r| r[1].wal_syncs_per_job),
            m(&|r| r[1].wal_bytes_per_job),
            m(&|r| r[2].wal_syncs_per_job),
            m(&|r| r[2].wal_bytes_per_job),
        );
        // Each floor against this run's ledger-off worker: the most on/off
        // could be if the ledger cost nothing but that database CPU.
        let fl = |f: &dyn Fn(&ledger::Floor) -> f64| median(floors.iter().map(f).collect());
        let ceiling = |f: &dyn Fn(&ledger::Floor) -> Duration| -> (f64, String) {
            let each: Vec<f64> = runs
                .iter()
                .zip(&floors)
                .map(|(r, fl)| {
                    let off = us(r[1].thrift.machine_per_job);
                    off / (off + us(f(fl)))
                })
                .collect();
            let list = each
                .iter()
                .map(|c| format!("{c:.2}"))
                .collect::<Vec<_>>()
                .join(", ");
            (median(each), list)
        };
        println!(
            "\n| (l) PostgreSQL alone, {n} jobs, {} a statement, one connection | CPU per job | most on/off could be with only this (ledger off's machine CPU a job, against it plus this) |\n|---|---|---|",
            ledger::FLOOR_BATCH
        );
        let (table, table_each) = ceiling(&|f| f.table);
        let (bare, bare_each) = ceiling(&|f| f.bare);
        println!(
            "| the worker's claim (`deliveries_claim_near`: look-up, locks, insert) | {:.1} us | |",
            fl(&|f| us(f.claim))
        );
        println!(
            "| one insert and one outcome update a job into `deliveries`, no look-up, no lock | {:.1} us | {table:.2} ({table_each}) |",
            fl(&|f| us(f.table))
        );
        println!(
            "| the same into a table keyed by (channel, job_id) alone, no other index, no partition | {:.1} us | {bare:.2} ({bare_each}) |",
            fl(&|f| us(f.bare))
        );
    }
    if run("k") {
        let n = sizes.thrift;
        println!(
            "\n| (k) {n} traced jobs, instant provider, quorum | traces off: jobs/s, CPU per job | exported by OTLP/HTTP: jobs/s, CPU per job | CPU on/off | spans received |"
        );
        println!("|---|---|---|---|---|");
        let mut runs = Vec::new();
        for _ in 0..sizes.runs {
            let env = Env::new(QueueType::Quorum).await;
            let off = traced::run(&env, n, false).await;
            let on = traced::run(&env, n, true).await;
            env.drop_all().await;
            runs.push((off, on));
        }
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let ratios: Vec<f64> = runs
            .iter()
            .map(|(off, on)| on.cpu_per_job.as_secs_f64() / off.cpu_per_job.as_secs_f64())
            .collect();
        println!(
            "| {} runs | {:.0}/s, {:.0} us | {:.0}/s, {:.0} us | {:.2} ({}) | {} |",
            runs.len(),
            median(runs.iter().map(|r| r.0.jobs_per_sec).collect()),
            median(runs.iter().map(|r| us(r.0.cpu_per_job)).collect()),
            median(runs.iter().map(|r| r.1.jobs_per_sec).collect()),
            median(runs.iter().map(|r| us(r.1.cpu_per_job)).collect()),
            median(ratios.clone()),
            ratios
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(", "),
            runs.iter()
                .map(|r| r.1.spans.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if run("m") {
        let n = sizes.jobs;
        println!(
            "\n| (m) {n} email jobs, instant provider, quorum | jobs/s | worker CPU per job | broker CPU per job |"
        );
        println!("|---|---|---|---|");
        for shards in [1u16, 2, 4] {
            let mut runs = Vec::new();
            for _ in 0..sizes.runs {
                runs.push(scale::shards(n, shards).await);
            }
            let us = |d: Duration| d.as_secs_f64() * 1e6;
            println!(
                "| NOTIFY_SHARDS={shards} | {:.0} ({}) | {:.0} us | {:.0} us |",
                median(runs.iter().map(|r| r.jobs_per_sec).collect()),
                fmt_runs(&runs.iter().map(|r| r.jobs_per_sec).collect::<Vec<_>>()),
                median(runs.iter().map(|r| us(r.cpu_per_job)).collect()),
                median(runs.iter().map(|r| us(r.broker_per_job)).collect()),
            );
        }
    }
    if run("n") {
        // A backlog that outlasts the probes (they are published one
        // confirm at a time, a few seconds in all) at the default window's pace.
        let (n, probes) = (3 * sizes.jobs, if smoke { 10 } else { 50 });
        println!(
            "\n| (n) {probes} probes a lane while {n} bulk jobs drain | p50 | p99 | max | bulk jobs still queued at the last urgent arrival |"
        );
        println!("|---|---|---|---|---|");
        for _ in 0..sizes.runs {
            let lanes = scale::urgent(n, probes).await;
            for (name, v) in [("urgent lane", &lanes.urgent), ("bulk lane", &lanes.bulk)] {
                println!(
                    "| {name} | {:.0} ms | {:.0} ms | {:.0} ms | {} |",
                    scale::quantile(v, 0.5),
                    scale::quantile(v, 0.99),
                    scale::quantile(v, 1.0),
                    if name == "urgent lane" {
                        lanes.backlog_left.to_string()
                    } else {
                        String::new()
                    },
                );
            }
        }
    }
}
