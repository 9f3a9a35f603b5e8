//! The auth pause, key rotation, the outage breaker and the redelivery limit.

use crate::support::*;
use lapin::options::{BasicGetOptions, BasicNackOptions};
use notify_worker::declare;
use std::{
    io::Write,
    path::Path,
    time::{Duration, Instant},
};

const NEW_KEY: &str = "mk_test_ROTATED_77c1aa";

fn write_key(path: &Path, text: &str) {
    // Written aside and renamed in, as a secret volume update is atomic.
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.sync_all().unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn a_revoked_key_gives_one_dead_letter_pauses_its_channel_and_a_new_key_file_resumes_it() {
    let env = TestEnv::new().await;
    let email = FakeProvider::start(|c| {
        if c.authorization.as_deref() == Some(&format!("Bearer {NEW_KEY}")[..]) {
            Reply::ok()
        } else {
            Reply::status(
                401,
                r#"{"error":{"code":"invalid_api_key","message":"API key revoked"}}"#,
            )
        }
    })
    .await;
    let sms = FakeProvider::accepting().await;
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("migosmtp-key");
    write_key(&key_path, &format!("{EMAIL_KEY}\n"));
    let mut args = env.args(&email, &sms);
    for [flag, value] in [
        ["--migosmtp-api-key-file", key_path.to_str().unwrap()],
        ["--telnxo-api-key", SMS_KEY],
        ["--auth-pause-secs", "30"],
        ["--key-poll-ms", "100"],
    ] {
        set_arg(&mut args, flag, Some(value));
    }
    let worker = TestWorker::start(args).await;
    const PAUSED: &str = r#"notify_provider_paused{provider="migosmtp",reason="invalid_api_key"}"#;
    assert_eq!(worker.metric(PAUSED).await, Some(0.0));

    for i in 0..5 {
        env.publish(
            "email",
            &email_job(&format!("p-{i}"), &format!("p{i}@example.com")),
        )
        .await;
    }
    env.wait_rows(1).await;
    // The other channel goes on.
    for i in 0..3 {
        env.publish(
            "sms",
            &sms_job(&format!("ps-{i}"), &format!("+9198765000{i:02}")),
        )
        .await;
    }
    eventually(
        "sms delivered during the pause",
        Duration::from_secs(10),
        || async { (sms.calls().len() == 3).then_some(()) },
    )
    .await;
    worker.wait_metric(PAUSED, 1.0).await;
    let calls_during_pause = email.calls().len();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        email.calls().len(),
        calls_during_pause,
        "nothing sent while paused"
    );
    assert_eq!(
        env.rows().await.len(),
        1,
        "nothing more dead-lettered while paused"
    );
    assert_eq!(
        env.ready(&env.email_queue).await,
        0,
        "held jobs are unacked, not lost"
    );

    let rotated = Instant::now();
    write_key(&key_path, &format!("{NEW_KEY}\n"));
    for i in 1..5 {
        email.wait_calls_to(&format!("p{i}@example.com"), 1).await;
    }
    eventually(
        "all four held jobs sent with the new key",
        Duration::from_secs(10),
        || async {
            let ok = email
                .calls()
                .iter()
                .filter(|c| c.authorization.as_deref() == Some(&format!("Bearer {NEW_KEY}")[..]))
                .count();
            (ok == 4).then_some(())
        },
    )
    .await;
    let resumed_in = rotated.elapsed();
    eprintln!("auth pause: key file rewritten -> held jobs sent in {resumed_in:?}");
    assert!(
        resumed_in < Duration::from_secs(3),
        "resumed after {resumed_in:?}"
    );
    assert_eq!(worker.metric(PAUSED).await, Some(0.0), "resumed");
    worker.stop().await;
    let rows = env.rows().await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].error_code, "invalid_api_key");
    assert_eq!(env.ready(&env.email_queue).await, 0);
    env.cleanup().await;
}

#[tokio::test]
async fn the_pause_doubles_while_probes_keep_failing() {
    let env = TestEnv::new().await;
    let email =
        FakeProvider::start(|_| Reply::status(402, r#"{"error_code":"account_suspended"}"#)).await;
    let sms = FakeProvider::accepting().await;
    let worker = env.worker(&email, &sms, &["--auth-pause-secs", "1"]).await;
    for i in 0..4 {
        env.publish(
            "email",
            &email_job(&format!("d-{i}"), &format!("d{i}@example.com")),
        )
        .await;
    }
    // Four at once, then one probe after 1 s, 2 s and 4 s: each probe's failure is dead-lettered.
    let rows = env.wait_rows(4).await;
    worker.stop().await;
    let mut times: Vec<Instant> = email.calls().iter().map(|c| c.at).collect();
    times.sort();
    assert_eq!(rows.len(), 4);
    let first_burst = times[0];
    let probes: Vec<Instant> = times
        .into_iter()
        .filter(|t| *t - first_burst > Duration::from_millis(500))
        .collect();
    assert_eq!(probes.len(), 3, "one call per probe");
    let gaps = [
        probes[0] - first_burst,
        probes[1] - probes[0],
        probes[2] - probes[1],
    ];
    eprintln!("auth pause gaps: {gaps:?}");
    for (gap, secs) in gaps.iter().zip([1u64, 2, 4]) {
        assert!(
            *gap >= Duration::from_millis(secs * 1000 - 100),
            "gap {gap:?} for a {secs} s pause"
        );
        assert!(
            *gap < Duration::from_millis(secs * 1000 + 1500),
            "gap {gap:?} for a {secs} s pause"
        );
    }
    assert!(
        rows.iter()
            .all(|r| r.error_code == "account_suspended" && r.reason.contains("Rackwave portal"))
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_rotated_key_is_used_without_restart_and_a_malformed_one_is_refused() {
    let env = TestEnv::new().await;
    let (email, sms) = (
        FakeProvider::accepting().await,
        FakeProvider::accepting().await,
    );
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("telnxo-key");
    write_key(&key_path, SMS_KEY);
    let mut args = env.args(&email, &sms);
    for [flag, value] in [
        ["--migosmtp-api-key", EMAIL_KEY],
        ["--telnxo-api-key-file", key_path.to_str().unwrap()],
        ["--key-poll-ms", "50"],
    ] {
        set_arg(&mut args, flag, Some(value));
    }
    let worker = TestWorker::start(args).await;
    env.publish("sms", &sms_job("k-1", "+919876500001")).await;
    sms.wait_calls_to("+919876500001", 1).await;

    write_key(&key_path, "two words\n");
    const REFUSED: &str = r#"notify_key_reloads_total{provider="telnxo",result="refused"}"#;
    worker.wait_metric(REFUSED, 1.0).await;
    env.publish("sms", &sms_job("k-2", "+919876500002")).await;
    let c = sms.wait_calls_to("+919876500002", 1).await;
    assert_eq!(
        c[0].authorization.as_deref(),
        Some(&format!("Bearer {SMS_KEY}")[..]),
        "malformed key refused, old kept"
    );

    write_key(&key_path, "tk_test_NEXT_0042\n");
    const ROTATED: &str = r#"notify_key_reloads_total{provider="telnxo",result="rotated"}"#;
    worker.wait_metric(ROTATED, 1.0).await;
    env.publish("sms", &sms_job("k-3", "+919876500003")).await;
    let c = sms.wait_calls_to("+919876500003", 1).await;
    assert_eq!(
        c[0].authorization.as_deref(),
        Some("Bearer tk_test_NEXT_0042"),
        "the rotated key is used from the next call"
    );
    assert_eq!(worker.metric(REFUSED).await, Some(1.0));
    worker.stop().await;
    assert!(
        env.rows().await.is_empty(),
        "no job lost or failed across rotations"
    );
    assert_eq!(env.ready(&env.sms_queue).await, 0);
    env.cleanup().await;
}

#[tokio::test]
async fn the_outage_breaker_keeps_jobs_out_of_retries_exhausted_until_the_provider_recovers() {
    let env = TestEnv::new().await;
    let down_until = Instant::now() + Duration::from_millis(2500);
    let email = FakeProvider::start(move |_| {
        if Instant::now() < down_until {
            Reply::status(503, "maintenance")
        } else {
            Reply::ok()
        }
    })
    .await;
    let sms = FakeProvider::accepting().await;
    let mut args = env.args(&email, &sms);
    for [flag, value] in [
        ["--migosmtp-api-key", EMAIL_KEY],
        ["--telnxo-api-key", SMS_KEY],
        ["--max-attempts", "3"],
        // Below the attempt budget: the breaker opens before any one job
        // can spend its 3 attempts, however the jobs' starts are spread
        // (with 5, a job claimed alone ahead of the rest could exhaust).
        ["--breaker-failures", "2"],
        ["--breaker-cooldown-secs", "1"],
    ] {
        set_arg(&mut args, flag, Some(value));
    }
    let worker = TestWorker::start(args).await;
    for i in 0..20 {
        env.publish(
            "email",
            &email_job(&format!("o-{i}"), &format!("o{i}@example.com")),
        )
        .await;
    }
    const OUTAGE: &str = r#"notify_provider_paused{provider="migosmtp",reason="outage"}"#;
    worker.wait_metric(OUTAGE, 1.0).await;
    for i in 0..20 {
        email.wait_calls_to(&format!("o{i}@example.com"), 1).await;
    }
    eventually("all 20 sent", Duration::from_secs(20), || async {
        let sent = email.calls().iter().filter(|c| c.at >= down_until).count();
        (sent >= 20).then_some(())
    })
    .await;
    assert_eq!(worker.metric(OUTAGE).await, Some(0.0), "resumed");
    worker.stop().await;
    let failed = email.calls().iter().filter(|c| c.at < down_until).count();
    eprintln!(
        "outage breaker: {failed} failed calls during a 2.5 s outage for 20 jobs with 3 attempts each"
    );
    assert!(env.rows().await.is_empty(), "no job dead-lettered");
    assert!(failed < 40, "the breaker stopped the calls: {failed}");
    assert_eq!(env.ready(&env.email_queue).await, 0);
    env.cleanup().await;
}

#[tokio::test]
async fn a_message_redelivered_too_often_is_dead_lettered_unsent() {
    let env = TestEnv::new().await;
    let (email, sms) = (
        FakeProvider::accepting().await,
        FakeProvider::accepting().await,
    );
    declare(&env.amqp, &env.topology()).await.unwrap();
    env.publish("sms", &sms_job("poison", "+919876500099"))
        .await;
    // Eleven deliveries that never settle, as eleven crashed workers would leave.
    let ch = env.amqp.create_channel().await.unwrap();
    for _ in 0..11 {
        let got = eventually("a delivery", Duration::from_secs(5), || async {
            ch.basic_get(env.sms_queue.as_str().into(), BasicGetOptions::default())
                .await
                .unwrap()
        })
        .await;
        got.delivery
            .acker
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let worker = env
        .worker(&email, &sms, &["--max-redeliveries", "10"])
        .await;
    env.wait_rows(1).await;
    worker.stop().await;
    let row = env.row("poison").await;
    assert_eq!(row.error_code, "redelivery_limit");
    assert!(
        row.reason.contains("NOTIFY_MAX_REDELIVERIES"),
        "{}",
        row.reason
    );
    assert!(sms.calls().is_empty(), "not sent again");
    assert_eq!(env.ready(&env.sms_queue).await, 0);
    env.cleanup().await;
}
