use super::*;

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);

fn flow(max_in_flight: usize, max_rate: Option<f64>) -> (Flow, Instant) {
    let t0 = Instant::now();
    let policy = FlowPolicy {
        max_in_flight,
        max_rate,
        retry_after_cap: 60 * S,
    };
    (Flow::new(policy, t0), t0)
}

fn go(f: &mut Flow, now: Instant) -> Slot {
    match f.admit(now, false) {
        Admit::Go(slot) => slot,
        other => panic!("expected Go, got {other:?}"),
    }
}

/// `n` calls answered evenly over `over`, starting at `from`.
fn answer(f: &mut Flow, n: u32, from: Instant, over: Duration) -> Instant {
    let mut now = from;
    for i in 0..n {
        now = from + over * i / n;
        let _ = go(f, now);
        f.done(Outcome::Answered { rtt: 10 * MS }, now);
    }
    now
}

#[test]
fn unpaced_until_a_429_then_the_whole_provider_waits_out_retry_after() {
    let (mut f, t0) = flow(100, None);
    let a = go(&mut f, t0);
    let b = go(&mut f, t0);
    assert_eq!((a.send_at, b.send_at), (t0, t0), "no pace before a 429");
    assert_eq!(f.pace(), None);
    let mut late = go(&mut f, t0);
    f.done(
        Outcome::Throttled {
            retry_after: Some(2 * S),
        },
        t0 + 10 * MS,
    );
    // Everyone waits: new calls, and calls reserved before the 429.
    assert_eq!(f.admit(t0 + S, false), Admit::Wait(t0 + 10 * MS + 2 * S));
    assert_eq!(f.ready(&mut late, t0 + S), Some(t0 + 10 * MS + 2 * S));
    // Answers of calls already under way stretch the wait, not the pace.
    let pace = f.pace();
    f.done(
        Outcome::Throttled {
            retry_after: Some(3 * S),
        },
        t0 + 20 * MS,
    );
    assert_eq!(f.pace(), pace);
    assert_eq!(
        f.admit(t0 + 2500 * MS, false),
        Admit::Wait(t0 + 20 * MS + 3 * S)
    );
    assert!(f.ready(&mut late, t0 + 4 * S).is_none());
    assert!(matches!(f.admit(t0 + 4 * S, false), Admit::Go(_)));
}

#[test]
fn the_pace_after_a_429_is_95_percent_of_what_the_provider_took_and_sends_are_spaced() {
    let (mut f, t0) = flow(1000, None);
    // 100 calls a second taken for a second, then a 429.
    let now = answer(&mut f, 100, t0, S);
    f.done(
        Outcome::Throttled {
            retry_after: Some(S),
        },
        now,
    );
    let pace = f.pace().unwrap();
    assert!((90.0..=100.0).contains(&pace), "{pace}");
    let resume = now + S;
    let slots: Vec<Slot> = (0..3).map(|_| go(&mut f, resume)).collect();
    let gap = slots[1].send_at - slots[0].send_at;
    assert_eq!(slots[0].send_at, resume);
    assert!(
        (Duration::from_secs_f64(1.0 / pace) - gap) < MS,
        "{gap:?} at {pace}/s"
    );
    // A 429 cruising at that pace: never back above 90 % of it.
    let later = answer(&mut f, 400, resume, S);
    let refused = f.pace().unwrap();
    assert!(
        refused >= pace,
        "cruising probes upward: {refused} from {pace}"
    );
    f.done(Outcome::Throttled { retry_after: None }, later);
    assert!(f.pace().unwrap() <= 0.9 * refused + 1e-9);
}

#[test]
fn without_history_the_first_pace_is_what_was_taken_and_a_later_one_grows_threefold() {
    let (mut f, t0) = flow(1000, None);
    // The first burst: five taken at once, then a 429: 95 % of what was
    // taken, cruising.
    answer(&mut f, 5, t0, MS);
    let retry = Outcome::Throttled {
        retry_after: Some(S),
    };
    f.done(retry, t0 + 5 * MS);
    assert_eq!(f.pace(), Some(4.75));
    let resume = t0 + 5 * MS + S;
    answer(&mut f, 5, resume, S);
    let pace = f.pace().unwrap();
    assert!(
        (4.75..4.9).contains(&pace),
        "{pace} a second later: cruising"
    );
    // Another flow: a 429 again right after the resume, too soon to
    // estimate from: the pace is cut, then grows threefold a second.
    let (mut f, t0) = flow(1000, None);
    answer(&mut f, 5, t0, MS);
    f.done(retry, t0 + 5 * MS);
    let resume = t0 + 5 * MS + S;
    answer(&mut f, 1, resume + 10 * MS, MS);
    f.done(retry, resume + 20 * MS);
    assert!(
        (f.pace().unwrap() - 0.8 * 4.75).abs() < 1e-9,
        "{:?}",
        f.pace()
    );
    let resume = resume + 20 * MS + S;
    answer(&mut f, 30, resume, S);
    let grown = f.pace().unwrap() / (0.8 * 4.75);
    assert!((2.5..=3.5).contains(&grown), "x{grown} after a second");
    // A minute without a 429 lifts pacing.
    answer(&mut f, 2, resume + 61 * S, S);
    assert_eq!(f.pace(), None);
}

#[test]
fn the_fixed_ceiling_holds_from_the_start() {
    let (mut f, t0) = flow(100, Some(10.0));
    let a = go(&mut f, t0);
    let b = go(&mut f, t0);
    assert_eq!(b.send_at - a.send_at, 100 * MS);
    // A learnt pace above the ceiling is still held to it.
    answer(&mut f, 200, t0, S);
    assert_eq!(f.pace(), Some(10.0));
}

#[test]
fn calls_in_flight_grow_by_one_a_round_trip_and_shrink_on_429_timeout_and_latency() {
    let (mut f, t0) = flow(8, None);
    assert_eq!(f.limit(), 8, "starts at the prefetch window");
    for _ in 0..8 {
        let _ = go(&mut f, t0);
    }
    assert_eq!(f.admit(t0, false), Admit::Full);
    // An urgent call takes a place over the limit; a Retry-After still holds it.
    assert!(matches!(f.admit(t0, true), Admit::Go(_)));
    f.release();
    f.done(Outcome::NoAnswer { timeout: true }, t0);
    assert_eq!(f.limit(), 7, "x0.9 on a timeout");
    f.done(Outcome::NoAnswer { timeout: true }, t0 + 10 * MS);
    assert_eq!(f.limit(), 7, "at most one cut a second");
    f.done(Outcome::NoAnswer { timeout: false }, t0 + 2 * S);
    assert_eq!(f.limit(), 7, "a refused connection is no congestion");
    f.done(Outcome::Throttled { retry_after: None }, t0 + 2 * S);
    assert_eq!(f.limit(), 5, "x0.75 on a 429");
    // Steady answers: +1/limit each, +1 per round trip.
    let mut now = t0 + 10 * S;
    for _ in 0..6 {
        let _ = go(&mut f, now);
        f.done(Outcome::Answered { rtt: 20 * MS }, now);
        now += 10 * MS;
    }
    assert_eq!(f.limit(), 6);
    // A burst of slow calls is not congestion...
    for _ in 0..10 {
        let _ = go(&mut f, now);
        f.done(Outcome::Answered { rtt: 900 * MS }, now);
        now += 10 * MS;
    }
    assert_eq!(f.limit(), 6, "a 100 ms burst");
    for _ in 0..10 {
        let _ = go(&mut f, now);
        f.done(Outcome::Answered { rtt: 20 * MS }, now);
        now += 10 * MS;
    }
    // ...latency far over its baseline for a second and more is.
    for _ in 0..110 {
        let _ = go(&mut f, now);
        f.done(Outcome::Answered { rtt: 900 * MS }, now);
        now += 10 * MS;
    }
    assert!(f.limit() < 6, "{}", f.limit());
    for _ in 0..1000 {
        let _ = go(&mut f, now);
        f.done(Outcome::Answered { rtt: 20 * MS }, now + 2 * S);
    }
    assert_eq!(f.limit(), 8, "never above the prefetch window");
}

#[test]
fn throttling_for_long_is_told_once_and_its_end_too() {
    let (mut f, t0) = flow(100, None);
    let mut changes = Vec::new();
    let mut now = t0;
    for _ in 0..40 {
        let _ = go(&mut f, now + 2 * S);
        changes.extend(f.done(
            Outcome::Throttled {
                retry_after: Some(S),
            },
            now + 2 * S,
        ));
        now += 2 * S;
    }
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(matches!(changes[0], Change::ThrottledLong { .. }));
    let _ = go(&mut f, now + 20 * S);
    assert_eq!(
        f.done(Outcome::Answered { rtt: MS }, now + 20 * S),
        Some(Change::ThrottlingEnded)
    );
}
