//! The sandbox providers: their key rules, failure knobs and request log,
//! and the worker running against them (`run --sandbox` included).

use crate::support::*;
use notify_worker::{
    ApiKey, DEFAULT_MAX_BODY_BYTES,
    cli::sandbox::{FailRule, SandboxConfig, serve},
};
use std::{net::SocketAddr, time::Duration};
use tokio_util::sync::CancellationToken;

const SB_EMAIL: &str = "mk_sandbox_rules_1";
const SB_SMS: &str = "tk_sandbox_rules_2";

async fn sandbox(fail_rules: Vec<FailRule>, fail_rate: f64) -> (SocketAddr, CancellationToken) {
    let stop = CancellationToken::new();
    let config = SandboxConfig {
        migosmtp_key: ApiKey::parse(SB_EMAIL, "t").unwrap(),
        telnxo_key: ApiKey::parse(SB_SMS, "t").unwrap(),
        latency: Duration::ZERO,
        fail_rate,
        fail_rules,
        max_body_bytes: DEFAULT_MAX_BODY_BYTES,
    };
    let (addr, _) = serve("127.0.0.1:0".parse().unwrap(), config, stop.clone())
        .await
        .unwrap();
    (addr, stop)
}

async fn call(
    addr: SocketAddr,
    path: &str,
    auth: Option<&str>,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .json(&body);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or_default())
}

#[tokio::test]
async fn the_sandbox_enforces_the_key_rules_and_logs_requests_without_keys() {
    let (addr, stop) = sandbox(
        vec![
            "*@bounce.test=422".parse().unwrap(),
            "+1555*=429".parse().unwrap(),
        ],
        0.0,
    )
    .await;
    let mail = serde_json::json!({"from": "a@b.c", "to": "r@x.io", "subject": "s", "html": "h"});
    let text = serde_json::json!({"from": "B", "to": "+919876543210", "message": "m"});
    let bearer = |k: &str| format!("Bearer {k}");
    let code = |v: &serde_json::Value| v["error"]["code"].as_str().unwrap_or("").to_owned();

    let (s, v) = call(addr, "/v1/email/send", None, mail.clone()).await;
    assert_eq!((s, code(&v).as_str()), (401, "authentication_failed"));
    let (s, v) = call(
        addr,
        "/v1/email/send",
        Some("bearer mk_sandbox_rules_1"),
        mail.clone(),
    )
    .await;
    assert_eq!(
        (s, code(&v).as_str()),
        (401, "authentication_failed"),
        "Bearer with a capital B only"
    );
    let (s, v) = call(
        addr,
        "/v1/email/send",
        Some(&bearer("mk_wrong")),
        mail.clone(),
    )
    .await;
    assert_eq!((s, code(&v).as_str()), (401, "invalid_api_key"));
    let (s, v) = call(addr, "/v1/email/send", Some(&bearer(SB_SMS)), mail.clone()).await;
    assert_eq!(
        (s, code(&v).as_str()),
        (401, "invalid_api_key"),
        "the other platform's key"
    );
    let (s, v) = call(
        addr,
        &format!("/v1/sms/send?api_key={SB_SMS}"),
        Some(&bearer(SB_SMS)),
        text.clone(),
    )
    .await;
    assert_eq!(
        (s, code(&v).as_str()),
        (401, "authentication_failed"),
        "a key in the URL is refused"
    );
    let (s, _) = call(
        addr,
        "/v1/email/send",
        Some(&bearer(SB_EMAIL)),
        mail.clone(),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = call(addr, "/v1/sms/send", Some(&bearer(SB_SMS)), text.clone()).await;
    assert_eq!(s, 200);
    let (s, v) = call(
        addr,
        "/v1/sms/send",
        Some(&bearer(SB_SMS)),
        serde_json::json!({"from": "B", "to": "+1", "message": "m"}),
    )
    .await;
    assert_eq!((s, code(&v).as_str()), (422, "invalid_request"));
    let mut bounce = mail.clone();
    bounce["to"] = "x@bounce.test".into();
    assert_eq!(
        call(addr, "/v1/email/send", Some(&bearer(SB_EMAIL)), bounce)
            .await
            .0,
        422
    );
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/v1/sms/send"))
        .header("authorization", bearer(SB_SMS))
        .json(&serde_json::json!({"from": "B", "to": "+15550001234", "message": "m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "1");

    let log = reqwest::get(format!("http://{addr}/_sandbox/requests"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let entries: Vec<serde_json::Value> = serde_json::from_str(&log).unwrap();
    assert_eq!(entries.len(), 10);
    let auths: Vec<&str> = entries
        .iter()
        .map(|e| e["authorization"].as_str().unwrap())
        .collect();
    assert_eq!(
        &auths[..6],
        [
            "missing",
            "malformed",
            "wrong",
            "other_platform",
            "in_url",
            "valid"
        ]
    );
    assert!(
        !log.contains(SB_EMAIL) && !log.contains(SB_SMS),
        "no key in the request log"
    );
    stop.cancel();
}

#[tokio::test]
async fn the_sandbox_can_be_slow_and_fail_by_rate() {
    let stop = CancellationToken::new();
    let config = SandboxConfig {
        migosmtp_key: ApiKey::parse(SB_EMAIL, "t").unwrap(),
        telnxo_key: ApiKey::parse(SB_SMS, "t").unwrap(),
        latency: Duration::from_millis(300),
        fail_rate: 1.0,
        fail_rules: Vec::new(),
        max_body_bytes: DEFAULT_MAX_BODY_BYTES,
    };
    let (addr, _) = serve("127.0.0.1:0".parse().unwrap(), config, stop.clone())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let text = serde_json::json!({"from": "B", "to": "+919876543210", "message": "m"});
    let (status, body) = call(
        addr,
        "/v1/sms/send",
        Some(&format!("Bearer {SB_SMS}")),
        text,
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(started.elapsed() >= Duration::from_millis(300));
    stop.cancel();
}

#[tokio::test]
async fn the_worker_delivers_through_the_sandbox_and_a_mixed_up_key_is_dead_lettered() {
    let env = TestEnv::new().await;
    let (addr, stop) = sandbox(Vec::new(), 0.0).await;
    let url = format!("http://{addr}");
    let mut args = env.args(
        &FakeProvider::accepting().await,
        &FakeProvider::accepting().await,
    );
    // The email key is given the Telnxo key by mistake.
    for [flag, value] in [
        ["--migosmtp-base-url", url.as_str()],
        ["--telnxo-base-url", url.as_str()],
        ["--migosmtp-api-key", SB_SMS],
        ["--telnxo-api-key", SB_SMS],
    ] {
        set_arg(&mut args, flag, Some(value));
    }
    let worker = TestWorker::start(args).await;
    env.publish("sms", &sms_job("sb-1", "+919876502001")).await;
    env.publish("email", &email_job("sb-2", "sb2@example.com"))
        .await;
    env.wait_rows(1).await;
    let log: Vec<serde_json::Value> =
        eventually("two requests logged", Duration::from_secs(10), || async {
            let log: Vec<serde_json::Value> =
                reqwest::get(format!("http://{addr}/_sandbox/requests"))
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
            (log.len() >= 2).then_some(log)
        })
        .await;
    worker.stop().await;
    let row = env.row("sb-2").await;
    assert_eq!(row.error_code, "invalid_api_key");
    assert!(
        row.reason.contains("another platform's key"),
        "{}",
        row.reason
    );
    let sms_entry = log.iter().find(|e| e["provider"] == "telnxo").unwrap();
    assert_eq!(
        (
            sms_entry["status"].as_u64(),
            sms_entry["authorization"].as_str()
        ),
        (Some(200), Some("valid"))
    );
    stop.cancel();
    env.cleanup().await;
}

#[tokio::test]
async fn run_sandbox_delivers_with_only_rabbitmq_and_postgres() {
    let env = TestEnv::new().await;
    let admin = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_notify-worker"))
        .env_clear()
        .env("DATABASE_URL", &env.database_url)
        .env("NOTIFY_EXCHANGE", &env.exchange)
        .env("NOTIFY_EMAIL_QUEUE", &env.email_queue)
        .env("NOTIFY_SMS_QUEUE", &env.sms_queue)
        .env("NOTIFY_ADMIN_ADDR", &admin)
        .env("NOTIFY_LOG_FORMAT", "json")
        .args(["run", "--sandbox"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap().to_string();
    let exited = tokio::spawn(child.wait_with_output());
    eventually("ready", Duration::from_secs(30), || async {
        let r = reqwest::get(format!("http://{admin}/readyz")).await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    env.publish("sms", &sms_job("sandbox-1", "+919876502002"))
        .await;
    env.publish("email", &email_job("sandbox-2", "someone@bounce.test"))
        .await;
    env.wait_rows(1).await;
    // Taken from the queue: from here the drain on SIGTERM settles it.
    eventually("sms taken", Duration::from_secs(10), || async {
        (env.ready(&env.sms_queue).await == 0).then_some(())
    })
    .await;
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), exited)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("sandbox mode"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("\"job_id\":\"sandbox-1\"") && l.contains("\"outcome\":\"sent\"")),
        "{stdout}"
    );
    assert_eq!(env.row("sandbox-2").await.error_code, "rejected");
    assert_eq!(env.rows().await.len(), 1, "the sms was sent");
    env.cleanup().await;
}
