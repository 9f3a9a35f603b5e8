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

/// A provider counting calls in fixed one-second windows: after a wait of
/// a second, the calls it takes before refusing again are its allowance.
#[test]
fn refused_soon_after_a_resume_the_pace_is_what_was_taken_since() {
    let retry = Outcome::Throttled {
        retry_after: Some(S),
    };
    // An unpaced burst over two windows: 180 taken in the last second.
    let (mut f, t0) = flow(1000, None);
    let last = answer(&mut f, 180, t0, 900 * MS);
    f.done(retry, last);
    assert_eq!(f.pace(), Some(0.95 * 180.0));
    // At that pace, 100 taken in the 0.6 s after the resume, then a 429:
    // 95 % of 100 a second, not of the 171 a second they went at.
    let resume = last + S;
    let last = answer(&mut f, 100, resume, 600 * MS);
    f.done(retry, last + MS);
    let pace = f.pace().unwrap();
    assert!((pace - 95.0).abs() < 1e-9, "{pace}");
    // Refused 1.5 s after the resume (calls over two windows): 0.75 of
    // what was taken; never under half the pace refused.
    let resume = last + MS + S;
    let last = answer(&mut f, 110, resume, 1500 * MS);
    f.done(retry, last + MS);
    let pace = f.pace().unwrap();
    assert!((pace - 0.95 * 0.75 * 110.0).abs() < 1e-9, "{pace}");
    let resume = last + MS + S;
    let last = answer(&mut f, 3, resume, 600 * MS);
    let refused = f.pace().unwrap();
    f.done(retry, last + MS);
    let floor = 0.95 * 0.5 * refused;
    assert!((f.pace().unwrap() - floor).abs() < 1e-9, "{:?}", f.pace());
    // Refused within 0.3 s of the resume (another client filled the
    // window): too few calls to count; cut by a fifth, then a slow start.
    let resume = last + MS + S;
    let last = answer(&mut f, 2, resume, 50 * MS);
    let refused = f.pace().unwrap();
    f.done(retry, last + MS);
    assert!(
        (f.pace().unwrap() - 0.8 * refused).abs() < 1e-9,
        "{:?}",
        f.pace()
    );
}

/// Answers to calls made before a 429, handled after it, count too.
#[test]
fn calls_taken_but_answered_after_the_429_count_in_the_estimate() {
    let (mut f, t0) = flow(1000, None);
    let last = answer(&mut f, 75, t0, 100 * MS);
    let retry = Outcome::Throttled {
        retry_after: Some(S),
    };
    f.done(retry, last + MS);
    assert_eq!(f.pace(), Some(0.95 * 75.0));
    // 25 more answered during the wait; after it, nothing changes the count.
    for i in 0..25 {
        f.done(Outcome::Answered { rtt: 10 * MS }, last + 2 * MS + i * MS);
    }
    assert!((f.pace().unwrap() - 95.0).abs() < 1e-9, "{:?}", f.pace());
}

/// A 429 after a steady run: the pace refused was just over the
/// allowance. Cut, then back to 97 % of it within seconds, held there for
/// half a minute, and only then probed above.
#[test]
fn after_a_steady_run_the_pace_regrows_to_just_under_the_one_refused_and_holds() {
    let retry = Outcome::Throttled {
        retry_after: Some(S),
    };
    let (mut f, t0) = flow(1000, None);
    let last = answer(&mut f, 100, t0, S);
    f.done(retry, last);
    let mut now = last + S;
    // Ten seconds at the pace set, growing slowly, then refused.
    now = answer(&mut f, 1000, now, 10 * S);
    let refused = f.pace().unwrap();
    f.done(retry, now);
    assert!(f.pace().unwrap() <= 0.9 * refused + 1e-9);
    now += S;
    now = answer(&mut f, 300, now, 3 * S);
    let regrown = f.pace().unwrap();
    assert!(
        (regrown - 0.97 * refused).abs() < 1e-6,
        "{regrown} against {refused}"
    );
    now = answer(&mut f, 2000, now, 20 * S);
    assert!((f.pace().unwrap() - regrown).abs() < 1e-6, "held");
    answer(&mut f, 1000, now, 10 * S);
    assert!(
        f.pace().unwrap() > regrown * 1.01,
        "probed above after 30 s"
    );
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
    // Another flow, told to wait less than a second: a 429 again right
    // after the resume, too soon to estimate from: the pace is cut, then
    // grows threefold a second.
    let short = Outcome::Throttled {
        retry_after: Some(200 * MS),
    };
    let (mut f, t0) = flow(1000, None);
    answer(&mut f, 5, t0, MS);
    f.done(short, t0 + 5 * MS);
    let resume = t0 + 5 * MS + 200 * MS;
    answer(&mut f, 1, resume + 10 * MS, MS);
    f.done(short, resume + 20 * MS);
    assert!(
        (f.pace().unwrap() - 0.8 * 4.75).abs() < 1e-9,
        "{:?}",
        f.pace()
    );
    let resume = resume + 20 * MS + 200 * MS;
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
