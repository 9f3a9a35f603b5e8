//! Flow control against simulated providers, in virtual time: the gate's
//! loop (admit, wait for the reserved send time, call, record) and a
//! provider that answers after a fixed latency. Shows what share of a
//! provider's allowance the worker uses, and how many 429s it draws.

use super::*;

/// A simulated provider: accepts a call made `at` into the run, or not
/// (429 with `Retry-After: 1`).
trait Limit {
    fn answer(&mut self, at: Duration) -> bool;
}

/// A token bucket holding one second's worth, refilled at `rate`.
struct Bucket {
    rate: f64,
    tokens: f64,
    last: Duration,
}

impl Limit for Bucket {
    fn answer(&mut self, at: Duration) -> bool {
        self.tokens = (self.tokens + (at - self.last).as_secs_f64() * self.rate).min(self.rate);
        self.last = at;
        let ok = self.tokens >= 1.0;
        if ok {
            self.tokens -= 1.0;
        }
        ok
    }
}

/// A provider counting calls in fixed one-second windows (starting at
/// `phase` into the run), 429 with `Retry-After: 1` past `allow`.
struct FixedWindow {
    allow: u32,
    phase: Duration,
    window: u64,
    used: u32,
}

impl Limit for FixedWindow {
    fn answer(&mut self, at: Duration) -> bool {
        let window = (at + self.phase).as_secs();
        if window != self.window {
            self.window = window;
            self.used = 0;
        }
        self.used += 1;
        self.used <= self.allow
    }
}

/// Share of the allowance used after the first `WARM` seconds, and the
/// share of calls answered 429 then, by `workers` workers (each its own
/// flow) sharing the provider. Jobs arrive at `supply` a second (a queue
/// being filled while the workers drain it), `None`: all at once.
pub(super) fn fixed_window(
    allow: u32,
    phase: Duration,
    supply: Option<f64>,
    workers: usize,
    secs: u64,
) -> (f64, f64) {
    let provider = FixedWindow {
        allow,
        phase,
        window: u64::MAX,
        used: 0,
    };
    run(provider, f64::from(allow), supply, workers, secs)
}

/// The same against a token bucket allowing `rate` a second.
pub(super) fn bucket(rate: f64, secs: u64) -> (f64, f64) {
    let provider = Bucket {
        rate,
        tokens: rate,
        last: Duration::ZERO,
    };
    run(provider, rate, None, 1, secs)
}

/// Seconds not counted: the first 429 and the estimate after it.
const WARM: u64 = 5;

/// One worker: its flow, the calls it has reserved, its calls in flight
/// (when answered, and whether accepted).
struct Worker {
    flow: Flow,
    reserved: Vec<Slot>,
    answers: Vec<(Instant, bool)>,
}

fn run(
    mut provider: impl Limit,
    allow: f64,
    supply: Option<f64>,
    workers: usize,
    secs: u64,
) -> (f64, f64) {
    let t0 = Instant::now();
    let latency = Duration::from_millis(20);
    let policy = FlowPolicy {
        max_in_flight: 100,
        max_rate: None,
        retry_after_cap: Duration::from_secs(60),
    };
    let mut fleet: Vec<Worker> = (0..workers)
        .map(|_| Worker {
            flow: Flow::new(policy, t0),
            reserved: Vec::new(),
            answers: Vec::new(),
        })
        .collect();
    let (mut ok, mut refused) = (0u64, 0u64);
    // Jobs taken up so far (a 429's job is tried again).
    let mut taken = 0u64;
    let tick = Duration::from_millis(1);
    let mut now = t0;
    let mut turn = 0;
    while now < t0 + Duration::from_secs(secs) {
        now += tick;
        let counting = now >= t0 + Duration::from_secs(WARM);
        let arrived = supply.map_or(u64::MAX, |rate| ((now - t0).as_secs_f64() * rate) as u64);
        // Each tick another worker looks first.
        turn = (turn + 1) % workers;
        for w in (0..workers).map(|k| (turn + k) % workers) {
            let Worker {
                flow,
                reserved,
                answers,
            } = &mut fleet[w];
            answers.retain(|(at, accepted)| {
                if *at > now {
                    return true;
                }
                let outcome = if *accepted {
                    Outcome::Answered { rtt: latency }
                } else {
                    Outcome::Throttled {
                        retry_after: Some(Duration::from_secs(1)),
                    }
                };
                let before = flow.pace();
                flow.done(outcome, now);
                if !*accepted {
                    taken -= 1;
                    // `SIM_TRACE=1 cargo test --lib sim -- --nocapture`
                    // shows each 429.
                    if std::env::var_os("SIM_TRACE").is_some() {
                        println!(
                            "{:.3}s worker {w} 429: pace {before:?} -> {:?}, limit {}",
                            (now - t0).as_secs_f64(),
                            flow.pace(),
                            flow.limit()
                        );
                    }
                }
                false
            });
            while taken < arrived
                && let Admit::Go(slot) = flow.admit(now, false)
            {
                taken += 1;
                reserved.push(slot);
            }
            let mut i = 0;
            while i < reserved.len() {
                if flow.ready(&mut reserved[i], now).is_none() {
                    reserved.swap_remove(i);
                    let accepted = provider.answer(now - t0);
                    if counting {
                        if accepted {
                            ok += 1;
                        } else {
                            refused += 1;
                        }
                    }
                    answers.push((now + latency, accepted));
                } else {
                    i += 1;
                }
            }
        }
    }
    let span = (secs - WARM) as f64;
    (
        ok as f64 / span / allow,
        refused as f64 / (ok + refused).max(1) as f64,
    )
}

/// Against fixed windows, in virtual time, deterministically, at three
/// window phases. Measured when written: 0.922, 0.924 and 0.923 of the
/// allowance, 0.0 % to 0.1 % 429s (0.857, 0.872, 0.919 before the first
/// 429 set a cruising pace instead of a slow start). The simulation is
/// kinder than a real run: benchmark (o) end to end reaches about 80 %.
#[test]
fn a_fixed_window_provider_is_used_at_90_percent_or_more_with_few_429s() {
    for phase_ms in [0, 370, 800] {
        let (share, throttled) = fixed_window(100, Duration::from_millis(phase_ms), None, 1, 60);
        println!("phase {phase_ms} ms: share {share:.3}, 429s {throttled:.3}");
        assert!(
            share >= 0.9,
            "phase {phase_ms} ms: {share:.3} of the allowance"
        );
        assert!(
            throttled <= 0.05,
            "phase {phase_ms} ms: {throttled:.3} 429s"
        );
    }
}

/// Against a token bucket of one second's depth (benchmark (g)'s fake).
/// Measured when written: 1.000, 1.002, 1.012 (the bucket's first second
/// counts), 0.0 % to 0.1 % 429s.
#[test]
fn a_token_bucket_provider_is_used_at_95_percent_or_more_with_few_429s() {
    for rate in [50.0, 100.0, 500.0] {
        let (share, throttled) = bucket(rate, 60);
        println!("bucket {rate}/s: share {share:.3}, 429s {throttled:.3}");
        assert!(share >= 0.95, "{rate}/s: {share:.3} of the allowance");
        assert!(throttled <= 0.05, "{rate}/s: {throttled:.3} 429s");
    }
}

/// As above, with jobs arriving at 150 to 400 a second: the first 429
/// comes after a second or more of calls, not at once (benchmark (o) and a
/// real queue being filled).
#[test]
fn a_fixed_window_provider_fed_gradually_is_used_at_90_percent_or_more() {
    let mut runs = Vec::new();
    for workers in [1, 3] {
        for supply in [150.0, 220.0, 400.0] {
            for phase_ms in [0, 370, 800] {
                let phase = Duration::from_millis(phase_ms);
                let (share, throttled) = fixed_window(100, phase, Some(supply), workers, 60);
                let case = format!("{workers} worker(s), supply {supply}/s, phase {phase_ms} ms");
                println!("{case}: share {share:.3}, 429s {throttled:.3}");
                runs.push((case, share, throttled));
            }
        }
    }
    for (case, share, throttled) in runs {
        // Three workers each learn on their own (no fleet-wide ceiling):
        // each sees only its own calls, so the bar is lower.
        let bar = if case.starts_with('1') { 0.9 } else { 0.85 };
        assert!(share >= bar, "{case}: {share:.3}");
        assert!(throttled <= 0.05, "{case}: {throttled:.3} 429s");
    }
}
