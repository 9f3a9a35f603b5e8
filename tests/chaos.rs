//! Failures made real: RabbitMQ stopped and started, PostgreSQL stopped and
//! started, the worker SIGKILLed mid-stream. These disturb shared services,
//! so they run one at a time, in their own test binary (cargo runs test
//! binaries one after another), and each puts the service back even when it fails.

#[path = "it/support.rs"]
mod support;

use notify_worker::declare;
use std::{
    collections::HashMap,
    process::Command,
    time::{Duration, Instant},
};
use support::*;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const BIN: &str = env!("CARGO_BIN_EXE_notify-worker");

fn run(cmd: &str, args: &[&str]) {
    let status = Command::new(cmd)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(status.success(), "{cmd} {args:?} failed");
}

fn pg_cluster() -> String {
    std::fs::read_dir("/etc/postgresql")
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .unwrap_or_else(|| "15".into())
}

fn pg(action: &str) {
    run(
        "pg_ctlcluster",
        &[
            "--skip-systemctl-redirect",
            &pg_cluster(),
            "main",
            action,
            "-m",
            "fast",
        ],
    );
}

/// Starts the service again if the test ends early.
struct Restore(&'static str);

impl Drop for Restore {
    fn drop(&mut self) {
        match self.0 {
            "rabbitmq" => {
                let _ = Command::new("rabbitmqctl").arg("start_app").status();
            }
            _ => {
                let _ = Command::new("pg_ctlcluster")
                    .args(["--skip-systemctl-redirect", &pg_cluster(), "main", "start"])
                    .status();
            }
        }
    }
}

fn unacked(queue: &str) -> u64 {
    let out = Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "messages_unacknowledged",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .find(|(name, _)| *name == queue)
        .and_then(|(_, n)| n.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_broker_restart_mid_stream_loses_no_job() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut env = TestEnv::new().await;
    let email = FakeProvider::start(|_| Reply::ok().after(Duration::from_millis(20))).await;
    let sms = FakeProvider::start(|_| Reply::ok().after(Duration::from_millis(20))).await;
    let worker = env.worker(&email, &sms, &["--prefetch", "10"]).await;
    for i in 0..600 {
        env.publish(
            "email",
            &email_job(&format!("b-e{i}"), &format!("e{i}@example.com")),
        )
        .await;
        env.publish(
            "sms",
            &sms_job(&format!("b-s{i}"), &format!("+91900000{i:04}")),
        )
        .await;
    }
    let before = email.calls().len() + sms.calls().len();
    assert!(
        before < 1200,
        "the restart must come mid-stream ({before} of 1200 done)"
    );
    let restore = Restore("rabbitmq");
    run("rabbitmqctl", &["stop_app"]);
    let (status, body) = eventually("readyz 503", Duration::from_secs(10), || async {
        let r = worker.get("/readyz").await;
        (r.0 == 503).then_some(r)
    })
    .await;
    assert!(body.contains("broker disconnected"), "{status} {body}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    run("rabbitmqctl", &["start_app"]);
    let started = Instant::now();
    drop(restore);
    eventually("readyz 200 again", Duration::from_secs(30), || async {
        (worker.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    let consuming_after = started.elapsed();
    eprintln!("broker restart: consuming again {consuming_after:?} after start_app returned");
    assert!(
        consuming_after <= Duration::from_secs(5),
        "took {consuming_after:?}"
    );

    env.reconnect().await;
    for i in 600..700 {
        env.publish(
            "email",
            &email_job(&format!("b-e{i}"), &format!("e{i}@example.com")),
        )
        .await;
    }
    eventually("every job delivered", Duration::from_secs(60), || async {
        let e: std::collections::HashSet<String> =
            email.calls().iter().map(|c| c.to().to_owned()).collect();
        let s: std::collections::HashSet<String> =
            sms.calls().iter().map(|c| c.to().to_owned()).collect();
        (e.len() == 700 && s.len() == 600).then_some(())
    })
    .await;
    worker.stop().await;
    let dupes = email.calls().len() + sms.calls().len() - 1300;
    eprintln!(
        "broker restart: {before} of 1200 jobs done at stop_app; {dupes} sent twice (redelivered after the lost channel)"
    );
    assert!(env.rows().await.is_empty());
    assert_eq!(env.ready(&env.email_queue).await, 0);
    assert_eq!(env.ready(&env.sms_queue).await, 0);
    env.cleanup().await;
}

#[tokio::test]
async fn a_database_outage_holds_dead_letters_unacked_and_writes_each_once_after() {
    let _one = ONE_AT_A_TIME.lock().await;
    let env = TestEnv::new().await;
    let email = FakeProvider::start(|_| Reply::status(401, r#"{"error":"invalid_api_key"}"#)).await;
    let sms = FakeProvider::accepting().await;
    // Sending unrecorded while the database is away (the ledger's `send`
    // mode), so SMS jobs keep flowing; the default holds them (tested below).
    let worker = env
        .worker(
            &email,
            &sms,
            &["--auth-pause-secs", "0", "--ledger-unavailable", "send"],
        )
        .await;
    env.publish("email", &email_job("db-0", "db0@example.com"))
        .await;
    env.wait_rows(1).await;

    let restore = Restore("postgres");
    pg("stop");
    for i in 1..=20 {
        env.publish(
            "email",
            &email_job(&format!("db-{i}"), &format!("db{i}@example.com")),
        )
        .await;
    }
    // Jobs that need no database keep flowing.
    env.publish("sms", &sms_job("db-sms", "+919876512345"))
        .await;
    sms.wait_calls_to("+919876512345", 1).await;
    eventually("21 provider calls", Duration::from_secs(20), || async {
        (email.calls().len() >= 21).then_some(())
    })
    .await;
    let (status, body) = eventually("readyz 503", Duration::from_secs(10), || async {
        let r = worker.get("/readyz").await;
        (r.0 == 503).then_some(r)
    })
    .await;
    assert!(body.contains("database unreachable"), "{status} {body}");
    // The broker's queue statistics lag by a few seconds.
    // Every dead letter held unacked while its row cannot be written.
    eventually("20 held unacked", Duration::from_secs(20), || async {
        (unacked(&env.email_queue) == 20).then_some(())
    })
    .await;

    pg("start");
    drop(restore);
    let rows = eventually("21 rows", Duration::from_secs(60), || async {
        let rows = env.rows().await;
        (rows.len() >= 21).then_some(rows)
    })
    .await;
    eventually("queue settled", Duration::from_secs(20), || async {
        (unacked(&env.email_queue) == 0).then_some(())
    })
    .await;
    worker.stop().await;
    let mut per_job: HashMap<String, usize> = HashMap::new();
    for r in &rows {
        *per_job.entry(r.job_id.clone()).or_default() += 1;
    }
    assert_eq!(per_job.len(), 21);
    assert!(per_job.values().all(|n| *n == 1), "exactly one row per job");
    assert_eq!(env.ready(&env.email_queue).await, 0);
    env.cleanup().await;
}

/// Ledger statuses at one moment: job id -> status.
async fn ledger_now(env: &TestEnv) -> HashMap<String, String> {
    sqlx::query_as::<_, (String, String)>("SELECT job_id, status FROM deliveries")
        .fetch_all(&env.db)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// Every job reached its provider; a job called twice was one whose call
/// was in flight at the kill (claimed, not yet recorded sent), and both
/// of its calls carried the job's id as `Idempotency-Key`. Returns the
/// number of jobs called twice.
async fn check_no_second_call_but_in_flight(
    env: &TestEnv,
    fakes: [&FakeProvider; 2],
    at_kill: &HashMap<String, String>,
) -> usize {
    let mut per_job: HashMap<String, Vec<Option<String>>> = HashMap::new();
    for c in fakes.iter().flat_map(|f| f.calls()) {
        let id = c.body["to"].as_str().unwrap_or("").to_owned();
        per_job
            .entry(id)
            .or_default()
            .push(c.idempotency_key.clone());
    }
    let mut twice = 0;
    for (to, keys) in &per_job {
        let key = keys[0].clone().expect("Idempotency-Key on every call");
        assert!(
            keys.iter().all(|k| k.as_deref() == Some(key.as_str())),
            "{to}: {keys:?}"
        );
        if keys.len() > 1 {
            twice += 1;
            assert_eq!(
                at_kill.get(&key).map(String::as_str),
                Some("claimed"),
                "job {key} sent {} times though the ledger said {:?} at the kill",
                keys.len(),
                at_kill.get(&key)
            );
        }
    }
    let (sent,): (i64,) = sqlx::query_as("SELECT count(*) FROM deliveries WHERE status = 'sent'")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(sent as usize, per_job.len(), "every job sent is on record");
    twice
}

fn worker_args(env: &TestEnv, email: &FakeProvider, sms: &FakeProvider) -> Vec<String> {
    let mut args = env.args(email, sms);
    for [flag, value] in [
        ["--migosmtp-api-key", EMAIL_KEY],
        ["--telnxo-api-key", SMS_KEY],
        ["--prefetch", "50"],
        ["--ledger-lease-secs", "2"],
    ] {
        set_arg(&mut args, flag, Some(value));
    }
    args
}

fn spawn_worker(args: &[String]) -> tokio::process::Child {
    tokio::process::Command::new(BIN)
        .env_clear()
        .env("NOTIFY_LOG_LEVEL", "warn")
        .arg("run")
        .args(args)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn term(mut child: tokio::process::Child) {
    let pid = child.id().unwrap().to_string();
    run("kill", &["-TERM", &pid]);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

async fn publish_both(env: &TestEnv, prefix: &str, each: usize) {
    for i in 0..each {
        env.publish(
            "email",
            &email_job(
                &format!("{prefix}-e{i}"),
                &format!("{prefix}-e{i}@example.com"),
            ),
        )
        .await;
        env.publish(
            "sms",
            &sms_job(&format!("{prefix}-s{i}"), &format!("+91910{i:07}")),
        )
        .await;
    }
}

#[tokio::test]
async fn a_sigkilled_worker_restarted_sends_a_job_twice_only_if_its_call_was_in_flight() {
    let _one = ONE_AT_A_TIME.lock().await;
    let env = TestEnv::new().await;
    let (email, sms) = (
        FakeProvider::accepting().await,
        FakeProvider::accepting().await,
    );
    declare(&env.amqp, &env.topology()).await.unwrap();
    const EACH: usize = 1500;
    publish_both(&env, "k", EACH).await;
    let args = worker_args(&env, &email, &sms);
    let mut first = spawn_worker(&args);
    eventually(
        "a third of the jobs sent",
        Duration::from_secs(60),
        || async { (email.calls().len() + sms.calls().len() >= 1000).then_some(()) },
    )
    .await;
    first.kill().await.unwrap(); // SIGKILL
    let at_kill = ledger_now(&env).await;
    let second = spawn_worker(&args);
    eventually(
        "every job reached its provider",
        Duration::from_secs(120),
        || async {
            let e: std::collections::HashSet<String> =
                email.calls().iter().map(|c| c.to().to_owned()).collect();
            let s: std::collections::HashSet<String> =
                sms.calls().iter().map(|c| c.to().to_owned()).collect();
            (e.len() == EACH && s.len() == EACH).then_some(())
        },
    )
    .await;
    eventually("every job recorded", Duration::from_secs(30), || async {
        let all = ledger_now(&env).await;
        (all.values().filter(|s| *s == "sent").count() == 2 * EACH).then_some(())
    })
    .await;
    term(second).await;
    let twice = check_no_second_call_but_in_flight(&env, [&email, &sms], &at_kill).await;
    let claimed = at_kill.values().filter(|s| *s == "claimed").count();
    eprintln!("crash: {twice} jobs sent twice, {claimed} claimed unsettled at the kill");
    assert!(env.rows().await.is_empty());
    assert_eq!(env.ready(&env.email_queue).await, 0);
    assert_eq!(env.ready(&env.sms_queue).await, 0);
    env.cleanup().await;
}

#[tokio::test]
async fn three_workers_one_sigkilled_mid_stream_send_each_job_once_but_those_in_flight() {
    let _one = ONE_AT_A_TIME.lock().await;
    let env = TestEnv::new().await;
    let (email, sms) = (
        FakeProvider::start(|_| Reply::ok().after(Duration::from_millis(5))).await,
        FakeProvider::start(|_| Reply::ok().after(Duration::from_millis(5))).await,
    );
    declare(&env.amqp, &env.topology()).await.unwrap();
    const EACH: usize = 1500;
    publish_both(&env, "t", EACH).await;
    let args = worker_args(&env, &email, &sms);
    let mut victim = spawn_worker(&args);
    let others = [spawn_worker(&args), spawn_worker(&args)];
    eventually(
        "a third of the jobs sent",
        Duration::from_secs(60),
        || async { (email.calls().len() + sms.calls().len() >= 1000).then_some(()) },
    )
    .await;
    victim.kill().await.unwrap(); // SIGKILL
    let at_kill = ledger_now(&env).await;
    eventually(
        "every job recorded sent",
        Duration::from_secs(120),
        || async {
            let all = ledger_now(&env).await;
            (all.values().filter(|s| *s == "sent").count() == 2 * EACH).then_some(())
        },
    )
    .await;
    for w in others {
        term(w).await;
    }
    let twice = check_no_second_call_but_in_flight(&env, [&email, &sms], &at_kill).await;
    let claimed = at_kill.values().filter(|s| *s == "claimed").count();
    eprintln!(
        "3 workers, one killed: {twice} jobs sent twice, {claimed} claimed unsettled at the kill"
    );
    assert!(env.rows().await.is_empty());
    assert_eq!(env.ready(&env.email_queue).await, 0);
    assert_eq!(env.ready(&env.sms_queue).await, 0);
    env.cleanup().await;
}

/// Default `hold`: with PostgreSQL stopped nothing is sent (no claim can
/// be made), `/readyz` says why, the jobs stay in the broker; once it is
/// back each is sent exactly once and on record.
#[tokio::test]
async fn with_the_database_down_the_default_holds_sending_and_loses_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let env = TestEnv::new().await;
    let (email, sms) = (
        FakeProvider::accepting().await,
        FakeProvider::accepting().await,
    );
    let worker = env.worker(&email, &sms, &[]).await;
    env.publish("sms", &sms_job("h-0", "+919800000000")).await;
    env.wait_ledger("h-0", "sent").await;
    let restore = Restore("postgres");
    pg("stop");
    for i in 1..=10 {
        env.publish(
            "sms",
            &sms_job(&format!("h-{i}"), &format!("+9198000000{i:02}")),
        )
        .await;
    }
    let (status, body) = eventually("readyz 503", Duration::from_secs(10), || async {
        let r = worker.get("/readyz").await;
        (r.0 == 503).then_some(r)
    })
    .await;
    assert!(body.contains("database unreachable"), "{status} {body}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        sms.calls().len(),
        1,
        "nothing sent while no claim can be made"
    );
    pg("start");
    drop(restore);
    let calls = sms.wait_calls(11).await;
    for i in 1..=10 {
        env.wait_ledger(&format!("h-{i}"), "sent").await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sms.calls().len(), 11, "each sent once: {calls:?}");
    assert_eq!(env.ready(&env.sms_queue).await, 0);
    worker.stop().await;
    env.cleanup().await;
}

/// PostgreSQL stops while a claimed job's call is in flight: its outcome
/// cannot be recorded, so the delivery is held unacked (and counted) until
/// the database is back, then recorded `sent` and acked, with one call.
#[tokio::test]
async fn a_sent_job_whose_record_cannot_be_written_is_held_until_it_can() {
    let _one = ONE_AT_A_TIME.lock().await;
    let env = TestEnv::new().await;
    let email = FakeProvider::accepting().await;
    // Under the tests' 2 s request timeout.
    let sms = FakeProvider::start(|_| Reply::ok().after(Duration::from_millis(1200))).await;
    let worker = env.worker(&email, &sms, &[]).await;
    env.publish("sms", &sms_job("mid", "+919600000001")).await;
    eventually("the call in flight", Duration::from_secs(10), || async {
        (sms.in_flight() == 1).then_some(())
    })
    .await;
    let restore = Restore("postgres");
    pg("stop");
    sms.wait_calls(1).await;
    worker
        .wait_metric("notify_dead_letter_writes_held", 1.0)
        .await;
    eventually("held unacked", Duration::from_secs(20), || async {
        (unacked(&env.sms_queue) == 1).then_some(())
    })
    .await;
    pg("start");
    drop(restore);
    env.wait_ledger("mid", "sent").await;
    eventually("acked", Duration::from_secs(20), || async {
        (unacked(&env.sms_queue) == 0).then_some(())
    })
    .await;
    assert_eq!(sms.calls().len(), 1, "sent once");
    assert_eq!(env.ready(&env.sms_queue).await, 0);
    assert_eq!(
        worker.metric("notify_dead_letter_writes_held").await,
        Some(0.0)
    );
    worker.stop().await;
    env.cleanup().await;
}

/// `NOTIFY_LEDGER_UNAVAILABLE=send`: with PostgreSQL stopped jobs are sent
/// unrecorded, and their rows are written once it is back.
#[tokio::test]
async fn with_the_database_down_send_mode_sends_and_records_later() {
    let _one = ONE_AT_A_TIME.lock().await;
    let env = TestEnv::new().await;
    let (email, sms) = (
        FakeProvider::accepting().await,
        FakeProvider::accepting().await,
    );
    let worker = env
        .worker(&email, &sms, &["--ledger-unavailable", "send"])
        .await;
    env.publish("sms", &sms_job("s-0", "+919700000000")).await;
    env.wait_ledger("s-0", "sent").await;
    let restore = Restore("postgres");
    pg("stop");
    for i in 1..=10 {
        env.publish(
            "sms",
            &sms_job(&format!("s-{i}"), &format!("+9197000000{i:02}")),
        )
        .await;
    }
    sms.wait_calls(11).await;
    worker
        .wait_metric(r#"notify_ledger_unrecorded_total{channel="sms"}"#, 10.0)
        .await;
    pg("start");
    drop(restore);
    for i in 1..=10 {
        env.wait_ledger(&format!("s-{i}"), "sent").await;
    }
    assert_eq!(sms.calls().len(), 11);
    worker.stop().await;
    env.cleanup().await;
}

/// A TCP proxy to RabbitMQ that can stop forwarding without closing, as a
/// silently dead broker or network would.
struct FreezingProxy {
    addr: std::net::SocketAddr,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FreezingProxy {
    async fn start() -> Self {
        use std::sync::{
            Arc,
            atomic::{AtomicBool, Ordering},
        };
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&frozen);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(upstream) = tokio::net::TcpStream::connect("127.0.0.1:5672").await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (ur, uw) = upstream.into_split();
                for (mut from, mut to, flag) in [
                    (
                        Box::new(cr) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                        Box::new(uw) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                        Arc::clone(&flag),
                    ),
                    (Box::new(ur), Box::new(cw), Arc::clone(&flag)),
                ] {
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            // Frozen: swallow the bytes, keep the socket open.
                            if flag.load(Ordering::SeqCst) {
                                continue;
                            }
                            if to.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        Self { addr, frozen }
    }

    fn freeze(&self, on: bool) {
        self.frozen.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_silently_dead_broker_is_noticed_by_heartbeat_and_left_behind() {
    let _one = ONE_AT_A_TIME.lock().await;
    let env = TestEnv::new().await;
    let (email, sms) = (
        FakeProvider::accepting().await,
        FakeProvider::accepting().await,
    );
    let proxy = FreezingProxy::start().await;
    let mut args = env.args(&email, &sms);
    let url = format!("amqp://guest:guest@{}/%2f", proxy.addr);
    for [flag, value] in [
        ["--amqp-url", url.as_str()],
        ["--heartbeat-secs", "1"],
        ["--migosmtp-api-key", EMAIL_KEY],
        ["--telnxo-api-key", SMS_KEY],
    ] {
        set_arg(&mut args, flag, Some(value));
    }
    let worker = TestWorker::start(args).await;
    env.publish("email", &email_job("hb-1", "hb1@example.com"))
        .await;
    email.wait_calls_to("hb1@example.com", 1).await;

    proxy.freeze(true);
    let frozen_at = Instant::now();
    eventually(
        "readyz 503 on missed heartbeats",
        Duration::from_secs(30),
        || async { (worker.get("/readyz").await.0 == 503).then_some(()) },
    )
    .await;
    let noticed = frozen_at.elapsed();
    proxy.freeze(false);
    eventually(
        "readyz 200 after the broker answers again",
        Duration::from_secs(30),
        || async { (worker.get("/readyz").await.0 == 200).then_some(()) },
    )
    .await;
    env.publish("email", &email_job("hb-2", "hb2@example.com"))
        .await;
    email.wait_calls_to("hb2@example.com", 1).await;
    eprintln!("heartbeat: a silent broker noticed after {noticed:?} with a 1 s heartbeat");
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_connection_closed_by_the_broker_is_reopened() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut env = TestEnv::new().await;
    let (email, sms) = (
        FakeProvider::accepting().await,
        FakeProvider::accepting().await,
    );
    let worker = env.worker(&email, &sms, &[]).await;
    env.publish("sms", &sms_job("cc-1", "+919876500101")).await;
    sms.wait_calls_to("+919876500101", 1).await;
    run("rabbitmqctl", &["close_all_connections", "forced by test"]);
    env.reconnect().await;
    eventually(
        "readyz 200 after reconnecting",
        Duration::from_secs(30),
        || async { (worker.get("/readyz").await.0 == 200).then_some(()) },
    )
    .await;
    env.publish("sms", &sms_job("cc-2", "+919876500102")).await;
    sms.wait_calls_to("+919876500102", 1).await;
    worker.stop().await;
    env.cleanup().await;
}

/// The broker's memory alarm, raised for as long as this lives and
/// restored however the test ends.
struct MemoryAlarm(String);

impl MemoryAlarm {
    async fn raise() -> Self {
        let out = Command::new("rabbitmqctl")
            .args([
                "-q",
                "eval",
                "vm_memory_monitor:get_vm_memory_high_watermark().",
            ])
            .output()
            .unwrap();
        let previous = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let alarm = Self(previous);
        run(
            "rabbitmqctl",
            &["-q", "set_vm_memory_high_watermark", "0.0001"],
        );
        eventually("the memory alarm", Duration::from_secs(20), || async {
            let out = Command::new("rabbitmqctl")
                .args(["-q", "eval", "rabbit_alarm:get_alarms()."])
                .output()
                .ok()?;
            String::from_utf8_lossy(&out.stdout)
                .contains("memory")
                .then_some(())
        })
        .await;
        alarm
    }
}

impl Drop for MemoryAlarm {
    fn drop(&mut self) {
        // A relative watermark reads as a number; anything else, the default.
        let value = if self.0.parse::<f64>().is_ok() {
            self.0.clone()
        } else {
            "0.4".to_owned()
        };
        let _ = Command::new("rabbitmqctl")
            .args(["-q", "set_vm_memory_high_watermark", &value])
            .status();
    }
}

/// Under a memory alarm the broker blocks publishers: `enqueue`, `replay`
/// and the library fail at once with the broker's reason, replay marks
/// nothing it did not get confirmed, and the worker (which only consumes)
/// still stops cleanly on SIGTERM.
#[tokio::test]
async fn a_broker_alarm_fails_publishers_fast_and_the_worker_still_stops_cleanly() {
    let _one = ONE_AT_A_TIME.lock().await;
    let env = TestEnv::new().await;
    let (email, sms) = (
        FakeProvider::accepting().await,
        FakeProvider::accepting().await,
    );
    let mut args = env.args(&email, &sms);
    set_arg(&mut args, "--migosmtp-api-key", Some(EMAIL_KEY));
    set_arg(&mut args, "--telnxo-api-key", Some(SMS_KEY));
    let worker = ChildWorker::start(args).await;
    sqlx::query(
        "INSERT INTO dead_letters (job_id, channel, error_code, reason, attempts, source_queue, payload) \
         VALUES ('to-replay', 'sms', 'rejected', 'r', 1, 'q', \
         '{\"from\":\"B\",\"to\":\"+919876505001\",\"message\":\"m\"}')",
    )
    .execute(&env.db)
    .await
    .unwrap();

    let alarm = MemoryAlarm::raise().await;
    let started = Instant::now();
    let (code, out, err) = env
        .cli(
            &[
                "enqueue",
                "sms",
                "--from",
                "B",
                "--to",
                "+919876505002",
                "--message",
                "m",
            ],
            None,
        )
        .await;
    let took = started.elapsed();
    eprintln!(
        "broker alarm: enqueue failed after {took:?}: {}",
        err.trim()
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("the broker blocked publishing (low on memory)"),
        "{err}"
    );
    assert!(out.contains("published 0 job(s), 1 failed"), "{out}");

    // A file: the first job fails with the reason, the rest are not tried
    // (rather than each waiting out the confirm timeout).
    let file: String = (0..50)
        .map(|i| {
            format!(
                "{{\"channel\":\"sms\",\"from\":\"B\",\"to\":\"+9198765{:05}\",\"message\":\"m\"}}\n",
                10_000 + i
            )
        })
        .collect();
    let started = Instant::now();
    let (code, out, err) = env.cli(&["enqueue", "--file", "-"], Some(&file)).await;
    let took = started.elapsed();
    assert_eq!(code, 1, "{out}{err}");
    // The jobs sent before the broker's `connection.blocked` arrived fail
    // with it; none is confirmed, none is silently dropped.
    let counts: Vec<usize> = out
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(
        out.contains("not tried") && counts.len() == 3 && counts[0] == 0 && counts[1] >= 1,
        "{out}"
    );
    assert_eq!(counts[1] + counts[2], 50, "{out}");
    assert!(
        err.contains("line 1") && err.contains("blocked publishing"),
        "{err}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");

    let publisher = notify_worker::Publisher::connect(AMQP, &env.topology())
        .await
        .unwrap();
    let job = notify_worker::NewJob::Sms(notify_worker::NewSms {
        priority: None,
        expires_at: None,
        id: None,
        from: "B".into(),
        to: "+919876505003".into(),
        message: "m".into(),
    });
    let published = tokio::time::timeout(Duration::from_secs(10), publisher.publish(&job))
        .await
        .expect("the library does not hang either");
    assert!(
        matches!(published, Err(notify_worker::PublishError::Blocked(_))),
        "{published:?}"
    );
    publisher.close().await;

    let (code, out, err) = env.cli(&["dead-letters", "replay", "--all"], None).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("replayed 0 dead letter(s)"), "{out}");
    assert!(out.contains("1 dead letter(s) not replayed"), "{out}");
    assert!(err.contains("blocked publishing"), "{err}");
    let open: i64 =
        sqlx::query_scalar("SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL")
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert_eq!(open, 1, "not confirmed, so not marked replayed");

    // SIGTERM while the alarm is on: exit 0 (asserted by stop).
    worker.stop().await;
    drop(alarm);
    env.cleanup().await;
}

/// A broker that stops answering mid-session: a publish waits for its
/// confirm no longer than the confirm timeout, then says so.
#[tokio::test]
async fn a_publish_waits_for_its_confirm_no_longer_than_the_timeout() {
    let _one = ONE_AT_A_TIME.lock().await;
    let env = TestEnv::new().await;
    let proxy = FreezingProxy::start().await;
    let url = format!("amqp://guest:guest@{}/%2f", proxy.addr);
    let publisher = notify_worker::Publisher::connect(&url, &env.topology())
        .await
        .unwrap()
        .with_confirm_timeout(Duration::from_secs(1));
    proxy.freeze(true);
    let job = notify_worker::NewJob::Sms(notify_worker::NewSms {
        priority: None,
        expires_at: None,
        id: Some("silent".into()),
        from: "B".into(),
        to: "+919876505004".into(),
        message: "m".into(),
    });
    let started = Instant::now();
    let published = publisher.publish(&job).await;
    let took = started.elapsed();
    assert!(
        matches!(published, Err(notify_worker::PublishError::Timeout(_))),
        "{published:?}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");

    // In bulk: the confirms in flight time out together, once; the jobs
    // after them are not tried.
    let jobs: Vec<_> = (0..40)
        .map(|i| {
            notify_worker::NewJob::Sms(notify_worker::NewSms {
                priority: None,
                expires_at: None,
                id: Some(format!("silent-{i}")),
                from: "B".into(),
                to: "+919876505004".into(),
                message: "m".into(),
            })
        })
        .collect();
    let started = Instant::now();
    let results = publisher.publish_all(&jobs, 10).await;
    let took = started.elapsed();
    assert_eq!(results.len(), 40);
    let timed_out = results
        .iter()
        .filter(|r| matches!(r, Err(notify_worker::PublishError::Timeout(_))))
        .count();
    let not_tried = results
        .iter()
        .filter(|r| matches!(r, Err(notify_worker::PublishError::NotTried(_))))
        .count();
    assert_eq!((timed_out, not_tried), (10, 30), "{results:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    publisher.close().await;
    proxy.freeze(false);
    env.cleanup().await;
}

#[tokio::test]
async fn with_the_database_down_a_fleet_ceiling_falls_back_to_each_replicas_share() {
    let _one = ONE_AT_A_TIME.lock().await;
    let env = TestEnv::new().await;
    let (email, sms) = (
        FakeProvider::accepting().await,
        FakeProvider::accepting().await,
    );
    // Ledger off: with it on, a database away holds every send (its default).
    let flags = [
        "--ledger",
        "off",
        "--telnxo-max-rps",
        "100",
        "--rate-scope",
        "fleet",
        "--fleet-replicas",
        "2",
    ];
    let workers = [
        env.worker(&email, &sms, &flags).await,
        env.worker(&email, &sms, &flags).await,
    ];
    let restore = Restore("postgres");
    pg("stop");
    for i in 0..300 {
        env.publish("sms", &sms_job(&format!("f-{i}"), &format!("+91970{i:07}")))
            .await;
    }
    sms.wait_calls(300).await;
    pg("start");
    drop(restore);
    let (busiest, _) = windows(sms.calls().iter().map(|c| c.at).collect());
    // Two replicas at half the ceiling each, the fleet at the ceiling.
    assert!(
        busiest <= 110,
        "{busiest} calls in one second with the database away"
    );
    assert!(busiest >= 60, "{busiest}: both replicas sent their share");
    for w in workers {
        w.stop().await;
    }
    env.cleanup().await;
}
