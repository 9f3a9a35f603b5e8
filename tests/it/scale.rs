//! Scaling out against the real broker: shards through the consistent-hash
//! exchange (`NOTIFY_SHARDS`) and the urgent lane. Needs the broker plugin
//! rabbitmq_consistent_hash_exchange (`.ci/run` enables it).

use crate::support::*;
use notify_worker::{Channel, NewJob, NewSms, Publisher, Topology};
use std::time::Duration;

fn sms(id: String, i: usize, urgent: bool) -> NewJob {
    NewJob::Sms(NewSms {
        id: Some(id),
        from: "ACME".into(),
        // A recipient each: the fake counts calls per recipient.
        to: format!("+91987{i:07}"),
        message: "Your OTP is 482910".into(),
        expires_at: None,
        priority: urgent.then(|| "urgent".to_owned()),
    })
}

fn sharded(env: &TestEnv, shards: u16) -> Topology {
    Topology {
        shards,
        ..env.topology()
    }
}

/// Publishes `n` SMS jobs `{prefix}-{i}` with `topology` declared.
async fn publish(topology: &Topology, prefix: &str, n: usize, urgent: bool) {
    let publisher = Publisher::connect(AMQP, topology).await.expect("publisher");
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| sms(format!("{prefix}-{i}"), i, urgent))
        .collect();
    let results = publisher.publish_all(&jobs, 1000).await;
    assert!(results.iter().all(Result::is_ok), "every job confirmed");
    publisher.close().await;
}

async fn sent(env: &TestEnv, prefix: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE status = 'sent' AND job_id LIKE $1")
        .bind(format!("{prefix}-%"))
        .fetch_one(&env.db)
        .await
        .unwrap()
}

async fn wait_sent(env: &TestEnv, prefix: &str, n: i64) {
    let mut last = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while std::time::Instant::now() < deadline {
        last = sent(env, prefix).await;
        if last == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let statuses: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM deliveries GROUP BY 1")
            .fetch_all(&env.db)
            .await
            .unwrap();
    panic!("{last} of {n} {prefix} jobs sent; ledger: {statuses:?}");
}

#[tokio::test]
async fn four_shards_take_a_quarter_each_and_every_job_is_delivered_once() {
    let env = TestEnv::new().await;
    let topology = sharded(&env, 4);
    publish(&topology, "spread", 20_000, false).await;
    let mut depths = Vec::new();
    for i in 0..4 {
        depths.push(env.ready(&topology.shard_queue(Channel::Sms, i)).await);
    }
    assert_eq!(depths.iter().sum::<u32>(), 20_000, "{depths:?}");
    assert!(
        depths.iter().all(|d| (4_000..=6_000).contains(d)),
        "each shard 25% +- 5%: {depths:?}"
    );
    assert_eq!(
        env.ready(&env.sms_queue).await,
        0,
        "the plain queue is bypassed"
    );

    let (email, sms) = (
        FakeProvider::accepting().await,
        FakeProvider::accepting().await,
    );
    let worker = env.worker(&email, &sms, &["--shards", "4"]).await;
    wait_sent(&env, "spread", 20_000).await;
    assert_eq!(sms.calls().len(), 20_000, "one call each");
    // A job counts as sent once its ack is out, which may follow its
    // ledger row by the ack linger.
    assert_eq!(
        worker
            .wait_metric(
                "notify_jobs_total{channel=\"sms\",outcome=\"sent\"}",
                20_000.0
            )
            .await,
        20_000.0
    );
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn growing_the_shards_keeps_every_job_already_queued() {
    let env = TestEnv::new().await;
    // Queued under one queue, then under two shards, then four.
    publish(&env.topology(), "one", 300, false).await;
    publish(&sharded(&env, 2), "two", 300, false).await;
    assert_eq!(
        env.ready(&env.sms_queue).await,
        300,
        "the old queue keeps its jobs"
    );
    let (email, sms) = (
        FakeProvider::accepting().await,
        FakeProvider::accepting().await,
    );
    let worker = env.worker(&email, &sms, &["--shards", "4"]).await;
    publish(&sharded(&env, 4), "four", 300, false).await;
    for prefix in ["one", "two", "four"] {
        wait_sent(&env, prefix, 300).await;
    }
    assert_eq!(sms.calls().len(), 900, "none lost, none twice");
    for i in 0..4 {
        assert_eq!(
            env.ready(&sharded(&env, 4).shard_queue(Channel::Sms, i))
                .await,
            0
        );
    }
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn urgent_jobs_overtake_a_queued_campaign() {
    let env = TestEnv::new().await;
    publish(&env.topology(), "bulk", 20_000, false).await;
    // A slow provider: the campaign takes minutes at 50 calls in flight.
    let slow = |_: &Call| Reply::ok().after(Duration::from_millis(50));
    let (email, sms) = (
        FakeProvider::accepting().await,
        FakeProvider::start(slow).await,
    );
    let worker = env.worker(&email, &sms, &["--prefetch", "50"]).await;
    eventually("the campaign flowing", Duration::from_secs(20), || async {
        (sms.calls().len() >= 100).then_some(())
    })
    .await;
    publish(&env.topology(), "otp", 50, true).await;
    wait_sent(&env, "otp", 50).await;
    // Every urgent job went out while the campaign still had most of its
    // jobs waiting, and the campaign kept flowing meanwhile.
    let bulk_sent = sent(&env, "bulk").await;
    assert!(
        bulk_sent < 10_000,
        "urgent jobs waited for {bulk_sent} bulk ones"
    );
    let calls = sms.calls();
    let is = |c: &Call, prefix: &str| {
        c.idempotency_key
            .as_deref()
            .is_some_and(|id| id.starts_with(prefix))
    };
    let first_otp = calls.iter().position(|c| is(c, "otp-"));
    let last_otp = calls.iter().rposition(|c| is(c, "otp-"));
    let (first, last) = (first_otp.unwrap(), last_otp.unwrap());
    let bulk_between = calls[first..=last]
        .iter()
        .filter(|c| is(c, "bulk-"))
        .count();
    assert!(
        bulk_between > 0,
        "the bulk kept flowing beside the urgent jobs"
    );
    assert_eq!(
        env.ready(&env.topology().urgent_queue(Channel::Sms)).await,
        0
    );
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn three_workers_hold_a_fleet_wide_ceiling_together() {
    let env = TestEnv::new().await;
    publish(&env.topology(), "fleet", 800, false).await;
    let (email, sms) = (
        FakeProvider::accepting().await,
        FakeProvider::accepting().await,
    );
    let flags = [
        "--telnxo-max-rps",
        "100",
        "--rate-scope",
        "fleet",
        "--fleet-replicas",
        "3",
    ];
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(env.worker(&email, &sms, &flags).await);
    }
    wait_sent(&env, "fleet", 800).await;
    let (busiest, rate) = windows(sms.calls().iter().map(|c| c.at).collect());
    eprintln!("fleet ceiling 100/s, 3 workers: busiest second {busiest}, {rate:.1} calls/s");
    assert!(busiest <= 110, "{busiest} calls in one second, ceiling 100");
    assert!(rate >= 90.0, "{rate:.1} calls a second");
    for w in workers {
        w.stop().await;
    }
    env.cleanup().await;
}
