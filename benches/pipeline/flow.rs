//! (g) a rate-limited provider, (h) an outage that ends: the targets of
//! provider flow control, measured against the worker binary.

use super::{Env, wait_until};
use axum::{Router, extract::State, http::StatusCode, routing::post};
use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// What the fake does with a call.
#[derive(Clone, Copy)]
pub(crate) enum Behaviour {
    /// Allows `rate` calls a second per API (a token bucket holding a
    /// second's worth), 429 with `Retry-After: 1` beyond.
    RateLimited { rate: f64 },
    /// Allows `rate` calls per API in each fixed one-second window of the
    /// fake's clock, 429 with `Retry-After: 1` beyond.
    FixedWindow { rate: f64 },
    /// 503 without `Retry-After` until `until`, then 200.
    DownUntil { until: Instant },
}

/// Per API (email, SMS): a bucket and every answer given.
struct Api {
    tokens: f64,
    last: Instant,
    /// The fixed window now, and calls taken in it.
    window: u64,
    used: f64,
    born: Instant,
    answers: Vec<(Instant, u16)>,
}

pub(crate) struct FlowFake {
    behaviour: Mutex<Behaviour>,
    apis: [Mutex<Api>; 2],
    latency: Duration,
}

impl FlowFake {
    pub(crate) async fn start(behaviour: Behaviour, latency: Duration) -> (String, Arc<Self>) {
        let now = Instant::now();
        let api = |tokens| {
            Mutex::new(Api {
                tokens,
                last: now,
                window: 0,
                used: 0.0,
                born: now,
                answers: Vec::with_capacity(100_000),
            })
        };
        let full = match behaviour {
            Behaviour::RateLimited { rate } | Behaviour::FixedWindow { rate } => rate,
            Behaviour::DownUntil { .. } => 0.0,
        };
        let state = Arc::new(Self {
            behaviour: Mutex::new(behaviour),
            apis: [api(full), api(full)],
            latency,
        });
        let app = Router::new()
            .fallback(post(
                |State(s): State<Arc<FlowFake>>, uri: axum::http::Uri| async move {
                    tokio::time::sleep(s.latency).await;
                    let api = usize::from(uri.path().contains("sms"));
                    s.answer(api)
                },
            ))
            .with_state(Arc::clone(&state));
        let listener = super::fake_listener();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), state)
    }

    /// Makes the outage start now, for `length`.
    pub(crate) fn down_for(&self, length: Duration) -> Instant {
        let until = Instant::now() + length;
        *self.behaviour.lock().unwrap() = Behaviour::DownUntil { until };
        until
    }

    fn answer(&self, api: usize) -> (StatusCode, [(&'static str, &'static str); 1], &'static str) {
        let now = Instant::now();
        let behaviour = *self.behaviour.lock().unwrap();
        let mut a = self.apis[api].lock().unwrap();
        let status = match behaviour {
            Behaviour::RateLimited { rate } => {
                a.tokens = (a.tokens + (now - a.last).as_secs_f64() * rate).min(rate);
                a.last = now;
                if a.tokens >= 1.0 {
                    a.tokens -= 1.0;
                    200
                } else {
                    429
                }
            }
            Behaviour::FixedWindow { rate } => {
                let window = (now - a.born).as_secs();
                if window != a.window {
                    a.window = window;
                    a.used = 0.0;
                }
                if a.used + 1.0 <= rate {
                    a.used += 1.0;
                    200
                } else {
                    429
                }
            }
            Behaviour::DownUntil { until } if now < until => 503,
            Behaviour::DownUntil { .. } => 200,
        };
        a.answers.push((now, status));
        let retry_after = if status == 429 { "1" } else { "0" };
        let header = [(
            if status == 429 { "retry-after" } else { "x-no" },
            retry_after,
        )];
        (StatusCode::from_u16(status).unwrap(), header, "{}")
    }

    fn answers(&self, api: usize) -> Vec<(Instant, u16)> {
        self.apis[api].lock().unwrap().answers.clone()
    }

    fn sent(&self) -> usize {
        self.apis
            .iter()
            .map(|a| {
                a.lock()
                    .unwrap()
                    .answers
                    .iter()
                    .filter(|(_, s)| *s == 200)
                    .count()
            })
            .sum()
    }
}

/// (g) figures for one API.
pub(crate) struct Limited {
    /// Deliveries per second over the middle 80% of them, as a share of L.
    pub(crate) share: f64,
    /// 429s among calls after the first two seconds.
    pub(crate) throttled: f64,
    pub(crate) dead_letters: i64,
}

/// (g) `per_api` jobs per API against a provider allowing `rate` calls a
/// second per API, consumed by `workers` worker processes.
pub(crate) async fn rate_limited(
    env: &Env,
    rate: f64,
    per_api: usize,
    workers: usize,
) -> [Limited; 2] {
    limited(env, Behaviour::RateLimited { rate }, rate, per_api, workers).await
}

/// (o) the same against fixed one-second windows.
pub(crate) async fn fixed_window(
    env: &Env,
    rate: f64,
    per_api: usize,
    workers: usize,
) -> [Limited; 2] {
    limited(env, Behaviour::FixedWindow { rate }, rate, per_api, workers).await
}

async fn limited(
    env: &Env,
    behaviour: Behaviour,
    rate: f64,
    per_api: usize,
    workers: usize,
) -> [Limited; 2] {
    let (url, fake) = FlowFake::start(behaviour, Duration::from_millis(20)).await;
    let mut running = Vec::new();
    for _ in 0..workers {
        running.push(env.worker(&url, 100, 1, &[]).await);
    }
    let e = env.publish(per_api, false);
    let s = env.publish(per_api, true);
    tokio::join!(e, s);
    let limit = Duration::from_secs_f64(per_api as f64 / rate * 3.0 + 60.0);
    wait_until("every job sent", limit, async || fake.sent() >= 2 * per_api).await;
    for w in running {
        w.stop().await;
    }
    let rows = env.rows().await;
    // `BENCH_TIMELINE=1`: calls taken and refused per second, per API.
    for api in [0, 1]
        .into_iter()
        .filter(|_| std::env::var_os("BENCH_TIMELINE").is_some())
    {
        let answers = fake.answers(api);
        // Seconds of the fake's clock: a fixed-window fake's windows.
        let born = fake.apis[api].lock().unwrap().born;
        let mut seconds = std::collections::BTreeMap::<u64, (u32, u32)>::new();
        for (t, status) in &answers {
            let s = t.duration_since(born).as_secs();
            let e = seconds.entry(s).or_default();
            if *status == 200 { e.0 += 1 } else { e.1 += 1 }
        }
        let name = ["email", "sms"][api];
        eprintln!("{name} second: taken/refused {seconds:?}");
    }
    [0, 1].map(|api| {
        let answers = fake.answers(api);
        let mut sent: Vec<Instant> = answers
            .iter()
            .filter(|(_, s)| *s == 200)
            .map(|(t, _)| *t)
            .collect();
        sent.sort();
        let (lo, hi) = (sent[sent.len() / 10], sent[sent.len() * 9 / 10]);
        let middle = (sent.len() * 9 / 10 - sent.len() / 10) as f64;
        let first = answers.iter().map(|(t, _)| *t).min().unwrap_or(lo);
        let late: Vec<u16> = answers
            .iter()
            .filter(|(t, _)| *t >= first + Duration::from_secs(2))
            .map(|(_, s)| *s)
            .collect();
        Limited {
            share: middle / (hi - lo).as_secs_f64() / rate,
            throttled: late.iter().filter(|s| **s == 429).count() as f64 / late.len().max(1) as f64,
            dead_letters: rows,
        }
    })
}

/// (h) An outage of `length` while `jobs` email jobs flow: how long after
/// the provider recovers the first job is delivered, and dead letters.
pub(crate) async fn outage(env: &Env, length: Duration, jobs: usize) -> (Duration, i64) {
    let (url, fake) = FlowFake::start(
        Behaviour::RateLimited { rate: 1e9 },
        Duration::from_millis(5),
    )
    .await;
    let worker = env.worker(&url, 100, 1, &[]).await;
    let recovered = fake.down_for(length);
    env.publish(jobs, false).await;
    wait_until("every job sent", Duration::from_secs(300), async || {
        fake.sent() >= jobs
    })
    .await;
    worker.stop().await;
    let first = fake
        .answers(0)
        .iter()
        .filter(|(t, s)| *s == 200 && *t >= recovered)
        .map(|(t, _)| *t)
        .min()
        .unwrap_or(recovered);
    (first - recovered, env.rows().await)
}
