use super::*;

const S: Duration = Duration::from_secs(1);

fn circuit(auth_secs: u64, threshold: u32) -> Pause {
    Pause::new(PausePolicy {
        auth_pause: S * auth_secs as u32,
        outage_threshold: threshold,
        outage_cooldown: S * 5,
    })
}

fn code() -> ProviderCode {
    ProviderCode::parse("invalid_api_key").unwrap()
}

fn auth() -> Attempt {
    Attempt::Auth(code())
}

#[test]
fn auth_failure_pauses_holds_others_then_probes_and_doubles_to_the_cap() {
    let t0 = Instant::now();
    let mut c = circuit(30, 0);
    assert_eq!(c.admit(t0), Admit::Go { probe: false });
    let (v, e) = c.record(false, auth(), t0);
    assert_eq!(v, Verdict::DeadLetter);
    assert!(matches!(e, Some(Event::Paused { length, .. }) if length == S * 30));
    // A concurrent job's auth failure is held, not dead-lettered.
    assert_eq!(c.record(false, auth(), t0).0, Verdict::Hold);
    assert_eq!(c.admit(t0 + S), Admit::Wait(Some(t0 + S * 30)));
    let mut now = t0 + S * 30;
    let mut expected = S * 60;
    for _ in 0..6 {
        assert_eq!(c.admit(now), Admit::Go { probe: true });
        assert_eq!(c.admit(now), Admit::Wait(None), "one probe at a time");
        let (v, e) = c.record(true, auth(), now);
        assert_eq!(v, Verdict::DeadLetter);
        assert_eq!(
            e,
            Some(Event::Paused {
                why: PauseReason::Auth(code()),
                length: expected
            })
        );
        now += expected;
        expected = (expected * 2).min(MAX_AUTH_PAUSE);
    }
    assert_eq!(c.admit(now), Admit::Go { probe: true });
    let (v, e) = c.record(true, Attempt::Answered, now);
    assert_eq!(v, Verdict::Done);
    assert!(matches!(e, Some(Event::Resumed { .. })));
    assert_eq!(c.admit(now), Admit::Go { probe: false });
}

#[test]
fn zero_pause_turns_the_pause_off() {
    let mut c = circuit(0, 0);
    for _ in 0..3 {
        assert_eq!(
            c.record(false, auth(), Instant::now()),
            (Verdict::DeadLetter, None)
        );
    }
    assert_eq!(c.admit(Instant::now()), Admit::Go { probe: false });
}

#[test]
fn key_change_ends_an_auth_pause_early() {
    let t0 = Instant::now();
    let mut c = circuit(30, 0);
    c.record(false, auth(), t0);
    assert!(c.key_changed(t0 + S));
    assert_eq!(c.admit(t0 + S), Admit::Go { probe: true });
}

#[test]
fn outage_breaker_opens_after_the_threshold_and_failed_probes_cost_nothing() {
    let t0 = Instant::now();
    let mut c = circuit(30, 3);
    for _ in 0..2 {
        assert_eq!(
            c.record(false, Attempt::Transient, t0).0,
            Verdict::Retry { counts: true }
        );
    }
    let (v, e) = c.record(false, Attempt::Transient, t0);
    assert_eq!(v, Verdict::Retry { counts: true });
    assert_eq!(
        e,
        Some(Event::Paused {
            why: PauseReason::Outage,
            length: S
        })
    );
    assert_eq!(c.admit(t0), Admit::Wait(Some(t0 + S)));
    assert_eq!(c.admit(t0 + S), Admit::Go { probe: true });
    assert_eq!(
        c.record(true, Attempt::Transient, t0 + S).0,
        Verdict::Retry { counts: false }
    );
    assert_eq!(c.admit(t0 + S * 2), Admit::Go { probe: true });
    assert!(matches!(
        c.record(true, Attempt::Answered, t0 + S * 2),
        (
            Verdict::Done,
            Some(Event::Resumed {
                after: PauseReason::Outage
            })
        )
    ));
    // An answer resets the count; so does a 429, which counts for nothing.
    for _ in 0..2 {
        c.record(false, Attempt::Transient, t0);
    }
    c.record(false, Attempt::Answered, t0);
    assert_eq!(c.record(false, Attempt::Transient, t0).1, None);
    assert_eq!(c.record(false, Attempt::Transient, t0).1, None);
    assert_eq!(
        c.record(false, Attempt::Throttled, t0),
        (Verdict::Throttled, None)
    );
    assert_eq!(c.record(false, Attempt::Transient, t0).1, None);
}

/// Probe times of an outage that never ends: 1 s after it opens, then
/// waits doubling but never past half the outage so far, up to the cap.
#[test]
fn the_breaker_cooldown_grows_with_the_outage_and_resets_after_it() {
    let t0 = Instant::now();
    let mut c = circuit(30, 1);
    let (_, e) = c.record(false, Attempt::Transient, t0);
    assert!(matches!(e, Some(Event::Paused { length, .. }) if length == S));
    let mut now = t0 + S;
    let mut waits = Vec::new();
    for _ in 0..9 {
        assert_eq!(c.admit(now), Admit::Go { probe: true });
        let (_, e) = c.record(true, Attempt::Transient, now);
        let Some(Event::Paused { length, .. }) = e else {
            panic!("{e:?}");
        };
        waits.push(length.as_secs_f64());
        now += length;
    }
    // Half the outage so far bounds the doubling; the cap here is 5 s.
    assert_eq!(waits, [1.0, 1.0, 1.5, 2.25, 3.375, 5.0, 5.0, 5.0, 5.0]);
    // The provider answers a probe: closed, and the next outage starts at 1 s.
    assert_eq!(c.admit(now), Admit::Go { probe: true });
    assert!(matches!(
        c.record(true, Attempt::Throttled, now),
        (Verdict::Throttled, Some(Event::Resumed { .. }))
    ));
    let (_, e) = c.record(false, Attempt::Transient, now);
    assert!(matches!(e, Some(Event::Paused { length, .. }) if length == S));
}

/// A probe admitted but never made (its job expired at the gate) must not
/// leave everyone waiting on a result that never comes.
#[test]
fn a_dropped_probe_lets_the_next_call_probe() {
    let t0 = Instant::now();
    let mut c = circuit(30, 0);
    c.record(false, auth(), t0);
    let later = t0 + S * 30;
    assert_eq!(c.admit(later), Admit::Go { probe: true });
    assert_eq!(c.admit(later), Admit::Wait(None));
    c.probe_dropped(later);
    assert_eq!(c.admit(later), Admit::Go { probe: true }, "probe again");
    // Dropping outside a probe changes nothing.
    let (v, _) = c.record(true, Attempt::Answered, later);
    assert_eq!(v, Verdict::Done);
    c.probe_dropped(later);
    assert_eq!(c.admit(later), Admit::Go { probe: false });
}
