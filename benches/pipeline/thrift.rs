//! (i) CPU thrift: the worker against a no-op relay, the least any worker
//! could do (consume, forward the body as one HTTP/1.1 POST on a kept-alive
//! connection, ack on 2xx), in
//! the same run: jobs/s, CPU per job of each, and of the broker under each.
//! The relay is this benchmark binary run again as a child process, so its
//! CPU is its own.

use super::{AMQP, Env, WORKER_PREFETCH, fake, wait_until};
use axum::http::StatusCode;
use futures_util::StreamExt;
use lapin::{
    Connection, ConnectionProperties,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions},
    types::FieldTable,
};
use std::{
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// The relay child: `--relay-child QUEUE URL`. Its HTTP is hyper's bare
/// HTTP/1.1 connection API with a pool of kept-alive connections, the
/// cheapest a Rust client gets (cheaper than reqwest), so the baseline is
/// not handicapped.
pub(crate) async fn relay_child(queue: &str, url: &str) {
    let conn = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .expect("rabbitmq");
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(500, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "relay".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let authority = url.trim_start_matches("http://").to_owned();
    let pool: Arc<Mutex<Vec<Sender>>> = Arc::default();
    while let Some(Ok(mut delivery)) = consumer.next().await {
        let (pool, authority) = (pool.clone(), authority.clone());
        tokio::spawn(async move {
            let idle = pool.lock().unwrap().pop();
            let mut sender = match idle {
                Some(s) if !s.is_closed() => s,
                _ => {
                    let tcp = tokio::net::TcpStream::connect(&authority).await.unwrap();
                    let _ = tcp.set_nodelay(true);
                    let (sender, conn) =
                        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                            .await
                            .unwrap();
                    tokio::spawn(conn);
                    sender
                }
            };
            if sender.ready().await.is_err() {
                return;
            }
            let request = hyper::Request::post("/v1/email/send")
                .header("host", authority.as_str())
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(bytes::Bytes::from(
                    std::mem::take(&mut delivery.data),
                )))
                .unwrap();
            let Ok(response) = sender.send_request(request).await else {
                return;
            };
            let ok = response.status().is_success();
            // Read the body to the end so the connection can be reused.
            let _ = http_body_util::BodyExt::collect(response.into_body()).await;
            pool.lock().unwrap().push(sender);
            if ok {
                let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            }
        });
    }
}

type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>;

/// User plus system CPU of `pid` so far.
pub(crate) fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces), in clock ticks.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    Duration::from_secs_f64(ticks as f64 / 100.0)
}

/// Busy CPU of the whole machine so far (every process, every core):
/// with the per-process figures it shows whether a run was bound by CPU.
pub(crate) fn machine_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    // `cpu user nice system idle iowait irq softirq steal ...`, in ticks.
    let ticks: u64 = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, f)| f.parse::<u64>().unwrap_or(0))
        .sum();
    Duration::from_secs_f64(ticks as f64 / 100.0)
}

pub(crate) fn broker_pid() -> u32 {
    let out = std::process::Command::new("pgrep")
        .args(["-o", "beam.smp"])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the broker's pid")
}

/// Publishes `n` email jobs of about 300 bytes.
async fn publish(env: &Env, n: usize) {
    let html = "x".repeat(150);
    env.publish_each("email", n, |i| {
        let body = format!(
            r#"{{"id":"t{i:08}","from":"hello@yourdomain.com","to":"r{i}@example.com","subject":"Hello from MigoSMTP","html":"<p>{html}</p>"}}"#
        );
        (body, None)
    })
    .await;
}

/// One consumer's figures.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Thrift {
    pub(crate) jobs_per_sec: f64,
    /// Its own CPU per job.
    pub(crate) cpu_per_job: Duration,
    /// The broker's CPU per job while it ran.
    pub(crate) broker_per_job: Duration,
    /// Every process's CPU per job while it ran (the fake provider, the
    /// database and this benchmark included, the consumer's start-up too).
    pub(crate) machine_per_job: Duration,
}

/// `n` pre-published jobs through the relay (`worker` false) or the worker
/// with its defaults.
pub(crate) async fn run(env: &Env, n: usize, worker: bool) -> Thrift {
    run_with(env, n, worker, &[], |_| {}).await
}

/// [`run`], with `extra` worker flags, calling `before_stop` with the
/// worker's pid while it still runs (to read figures of its own).
pub(crate) async fn run_with(
    env: &Env,
    n: usize,
    worker: bool,
    extra: &[&str],
    before_stop: impl FnOnce(u32),
) -> Thrift {
    let (url, fake) = fake(StatusCode::OK, Duration::ZERO).await;
    publish(env, n).await;
    let broker = broker_pid();
    let broker_before = cpu(broker);
    let machine_before = machine_cpu();
    let started = Instant::now();
    let (pid, stop): (
        u32,
        Box<dyn FnOnce() -> futures_util::future::BoxFuture<'static, ()>>,
    ) = if worker {
        // Defaults, the per-job log line at info included.
        let prefetch = std::env::var("BENCH_PREFETCH")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(WORKER_PREFETCH);
        let mut flags = vec!["--log-level", "info"];
        flags.extend_from_slice(extra);
        let w = env.worker(&url, prefetch, 1, &flags).await;
        let pid = w.pid();
        (pid, Box::new(move || Box::pin(w.stop())))
    } else {
        let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args(["--relay-child", &env.topology.email_queue, &url])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap_or(0);
        (
            pid,
            Box::new(move || {
                Box::pin(async move {
                    let _ = child.kill().await;
                })
            }),
        )
    };
    wait_until("all sent", Duration::from_secs(300), async || {
        fake.count() >= n
    })
    .await;
    let machine = machine_cpu().saturating_sub(machine_before);
    // The last acks follow the last calls within milliseconds.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let own = cpu(pid);
    let broker_cpu = cpu(broker) - broker_before;
    let took = fake.first_to_last();
    before_stop(pid);
    stop().await;
    // A consumer stopped or killed gives back what it had not acked.
    let left = env.ready(&env.topology.email_queue).await;
    assert_eq!(
        left,
        0,
        "{} left {left} jobs unacked",
        if worker { "worker" } else { "relay" }
    );
    let _ = started;
    Thrift {
        jobs_per_sec: n as f64 / took.as_secs_f64(),
        cpu_per_job: own / u32::try_from(n).unwrap_or(u32::MAX),
        broker_per_job: broker_cpu / u32::try_from(n).unwrap_or(u32::MAX),
        machine_per_job: machine / u32::try_from(n).unwrap_or(u32::MAX),
    }
}
