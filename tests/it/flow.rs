//! Provider flow control: a 429 means "slow down", not "failed".

use crate::support::*;
use std::time::{Duration, Instant};

/// A provider that allows 20 calls a second, 120 jobs at once: every job is
/// sent, with one attempt allowed (a 429 spends none and trips no breaker),
/// none is dead-lettered, and /metrics shows the throttling and the pace.
#[tokio::test]
async fn a_429_storm_leaves_no_dead_letter_and_spends_no_attempt() {
    let env = TestEnv::new().await;
    let email = FakeProvider::rate_limited(20.0).await;
    let sms = FakeProvider::accepting().await;
    let args = [
        "--max-attempts",
        "1",
        "--breaker-failures",
        "3",
        "--prefetch",
        "50",
    ];
    let worker = env.worker(&email, &sms, &args).await;
    let limit_metric = r#"notify_provider_concurrency_limit{provider="migosmtp"}"#;
    // The prefetch (urgent calls go past it), before any call.
    let (_, text) = worker.get("/metrics").await;
    let first_limit = metric(&text, limit_metric).expect("limit exported");
    let started = Instant::now();
    env.publish_emails("storm", 120).await;
    worker
        .wait_metric_for(
            r#"notify_jobs_total{channel="email",outcome="sent"}"#,
            120.0,
            Duration::from_secs(60),
        )
        .await;
    let took = started.elapsed();
    let (_, text) = worker.get("/metrics").await;
    worker.stop().await;
    assert!(env.rows().await.is_empty(), "{:?}", env.rows().await);
    let calls = email.calls();
    let throttled = calls.len() - 120;
    eprintln!("429 storm: 120 jobs at 20/s sent in {took:?}, {throttled} calls answered 429");
    assert!(throttled > 0, "the fake throttled");
    assert_eq!(
        metric(
            &text,
            r#"notify_provider_throttled_total{provider="migosmtp"}"#
        ),
        Some(throttled as f64)
    );
    assert_eq!(
        metric(
            &text,
            r#"notify_provider_paused{provider="migosmtp",reason="outage"}"#
        ),
        Some(0.0),
        "429s are not an outage"
    );
    assert_eq!(
        metric(&text, r#"notify_retries_total{channel="email"}"#),
        Some(0.0),
        "nothing retried as a failure"
    );
    let pace = metric(
        &text,
        r#"notify_provider_pace_per_second{provider="migosmtp"}"#,
    );
    assert!(pace.is_some_and(|p| p > 0.0), "paced after a 429: {pace:?}");
    let limit = metric(&text, limit_metric);
    assert!(
        limit.is_some_and(|l| l < first_limit),
        "fewer in flight: {limit:?}, from {first_limit}"
    );
    assert_eq!(env.ready(&env.email_queue).await, 0);
    env.cleanup().await;
}

/// `Retry-After` holds back the whole provider: after one job's 429, the
/// other jobs' calls wait it out too, instead of each on its own clock.
#[tokio::test]
async fn retry_after_holds_back_every_call_to_the_provider() {
    let env = TestEnv::new().await;
    let email = FakeProvider::start(|c| {
        if c.to() == "first@example.com" && c.nth == 1 {
            Reply::status(429, "").header("retry-after", "2")
        } else {
            Reply::ok()
        }
    })
    .await;
    let sms = FakeProvider::accepting().await;
    let worker = env.worker(&email, &sms, &[]).await;
    env.publish("email", &email_job("first", "first@example.com"))
        .await;
    let refused = email.wait_calls_to("first@example.com", 1).await[0].at;
    env.publish_emails("after", 5).await;
    email.wait_calls(7).await;
    worker.stop().await;
    for call in email.calls().iter().filter(|c| c.at > refused) {
        let gap = call.at - refused;
        assert!(gap >= Duration::from_millis(1900), "{} {gap:?}", call.to());
    }
    assert!(env.rows().await.is_empty());
    env.cleanup().await;
}

/// A fixed ceiling of 20 calls a second is never exceeded, counted at the
/// provider over every second of the run.
#[tokio::test]
async fn the_fixed_ceiling_is_never_exceeded() {
    let env = TestEnv::new().await;
    let email = FakeProvider::accepting().await;
    let sms = FakeProvider::accepting().await;
    let worker = env
        .worker(
            &email,
            &sms,
            &["--migosmtp-max-rps", "20", "--prefetch", "50"],
        )
        .await;
    env.publish_emails("ceil", 70).await;
    let calls = email.wait_calls(70).await;
    worker.stop().await;
    let mut at: Vec<Instant> = calls.iter().map(|c| c.at).collect();
    at.sort();
    // Each second from the first call on, and every sliding second.
    let first = at[0];
    for second in 0..4 {
        let from = first + Duration::from_secs(second);
        let n = at
            .iter()
            .filter(|t| **t >= from && **t < from + Duration::from_secs(1))
            .count();
        assert!(n <= 20, "{n} calls in second {second}");
    }
    let busiest = (0..at.len())
        .map(|i| {
            at[i..]
                .iter()
                .take_while(|t| **t - at[i] < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(busiest <= 20, "{busiest} calls within one second");
    // And it is a ceiling, not a stop: 70 calls took about 3.5 s.
    let span = at[at.len() - 1] - first;
    assert!(span >= Duration::from_millis(3400), "{span:?}");
    env.cleanup().await;
}
