//! (m) Shards: the same jobs through 1, 2 and 4 queues per channel, the
//! worker consuming all of them: jobs/s and CPU per job of the worker and
//! of the broker. (n) The urgent lane: jobs published to `email.urgent`
//! while a backlog of bulk jobs drains, against jobs published at the same
//! moments to the bulk lane: publish-to-provider latency of each.

use super::{Env, WORKER_PREFETCH, thrift, wait_until};
use axum::{Router, extract::State, http::HeaderMap, routing::post};
use notify_worker::QueueType;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// (m): `n` email jobs through `shards` queues.
pub(crate) async fn shards(n: usize, shards: u16) -> thrift::Thrift {
    let env = Env::sharded(QueueType::Quorum, shards).await;
    let flag = shards.to_string();
    let figures = thrift::run_with(&env, n, true, &["--shards", &flag], |_| {}).await;
    env.drop_all().await;
    figures
}

/// When each job (by `Idempotency-Key`) reached the provider.
#[derive(Default)]
struct Arrivals(Mutex<HashMap<String, Instant>>);

async fn arrivals() -> (String, Arc<Arrivals>) {
    let state = Arc::new(Arrivals::default());
    let app = Router::new()
        .fallback(post(
            |State(s): State<Arc<Arrivals>>, headers: HeaderMap| async move {
                if let Some(key) = headers.get("idempotency-key").and_then(|k| k.to_str().ok()) {
                    s.0.lock().unwrap().insert(key.to_owned(), Instant::now());
                }
                r#"{"id":"m","status":"queued"}"#
            },
        ))
        .with_state(Arc::clone(&state));
    let listener = super::fake_listener();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), state)
}

/// (n)'s figures: latencies in ms.
pub(crate) struct Lanes {
    pub(crate) urgent: Vec<f64>,
    pub(crate) bulk: Vec<f64>,
    /// Bulk jobs still queued when the last urgent one arrived.
    pub(crate) backlog_left: usize,
}

/// (n): a backlog of `n` bulk email jobs; once it flows, `probes` urgent
/// jobs and as many bulk-lane ones, a pair every 10 ms.
pub(crate) async fn urgent(n: usize, probes: usize) -> Lanes {
    let env = Env::new(QueueType::Quorum).await;
    let (url, seen) = arrivals().await;
    let job = |id: String| {
        format!(
            r#"{{"id":"{id}","from":"hello@yourdomain.com","to":"{id}@example.com","subject":"Code","html":"<p>482910</p>"}}"#
        )
    };
    env.publish_each("email", n, |i| (job(format!("bulk{i}")), None))
        .await;
    let worker = env.worker(&url, WORKER_PREFETCH, 1, &[]).await;
    wait_until("the backlog flowing", Duration::from_secs(60), async || {
        seen.0.lock().unwrap().len() >= n / 10
    })
    .await;
    let mut published = HashMap::new();
    for i in 0..probes {
        for (lane, key) in [("urgent", "email.urgent"), ("lane", "email")] {
            let id = format!("{lane}{i}");
            env.publish_each(key, 1, |_| (job(id.clone()), None)).await;
            published.insert(id, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    wait_until(
        "every probe delivered",
        Duration::from_secs(600),
        async || {
            let s = seen.0.lock().unwrap();
            published.keys().all(|k| s.contains_key(k))
        },
    )
    .await;
    let s = seen.0.lock().unwrap().clone();
    let latency = |lane: &str| -> Vec<f64> {
        let mut v: Vec<f64> = published
            .iter()
            .filter(|(id, _)| id.starts_with(lane))
            .map(|(id, at)| s[id].saturating_duration_since(*at).as_secs_f64() * 1e3)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let last_urgent = published
        .keys()
        .filter(|k| k.starts_with("urgent"))
        .map(|k| s[k])
        .max()
        .unwrap_or_else(Instant::now);
    let bulk_done = s
        .iter()
        .filter(|(k, at)| k.starts_with("bulk") && **at <= last_urgent)
        .count();
    worker.stop().await;
    env.drop_all().await;
    Lanes {
        urgent: latency("urgent"),
        bulk: latency("lane"),
        backlog_left: n.saturating_sub(bulk_done),
    }
}

/// The `q` quantile of sorted `v`.
pub(crate) fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i.min(v.len() - 1)]
}
