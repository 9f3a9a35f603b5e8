//! The ledger against the real table: claims, leases, records, replay,
//! retention, and a property test over interleavings of two workers.

use super::*;
use crate::{deadletter::testdb::TestDb, domain::Channel};
use proptest::prelude::*;

fn policy(lease_ms: u64) -> LedgerPolicy {
    LedgerPolicy {
        lease: Duration::from_millis(lease_ms),
        unavailable: Unavailable::Hold,
        linger: Duration::from_millis(1),
        retention_days: 7,
    }
}

/// An SMS job's claim (shared with `claims.rs`'s tests).
pub(super) fn request(job: &str) -> ClaimRequest {
    ClaimRequest {
        channel: Channel::Sms,
        job_id: job.to_owned(),
        recipient: "+919876543210".into(),
        minted_after: None,
        replay: false,
        expires_at: None,
    }
}

fn record(job: &str, at: OffsetDateTime, status: Status) -> Record {
    Record {
        channel: Channel::Sms,
        job_id: job.to_owned(),
        claimed_at: at,
        status,
        attempts: 1,
        http_status: Some(200),
        provider_message_id: Some("msg_1".into()),
        error_code: None,
    }
}

fn granted(c: &Claim) -> OffsetDateTime {
    match c {
        Claim::Granted { claimed_at, .. } => *claimed_at,
        other => panic!("expected a grant, got {other:?}"),
    }
}

/// Ends every lease of `job` now, as a dead worker's would.
async fn lapse(pool: &PgPool, job: &str) {
    sqlx::query("UPDATE deliveries SET lease_until = now() - interval '1 second' WHERE job_id = $1 AND status = 'claimed' AND lease_until IS NOT NULL")
        .bind(job)
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_claim_is_held_taken_over_after_its_lease_and_never_granted_once_sent() {
    let db = TestDb::new().await;
    let pool = db.store.pool().clone();
    let stop = CancellationToken::new();
    let a = Ledger::spawn(pool.clone(), policy(60_000), "a".into(), stop.clone());
    let b = Ledger::spawn(pool.clone(), policy(60_000), "b".into(), stop.clone());

    let at = granted(&a.claim(request("j1")).await.unwrap());
    match b.claim(request("j1")).await.unwrap() {
        Claim::Held { by, retry_in } => {
            assert_eq!(by, "a");
            assert!(retry_in <= Duration::from_secs(1), "{retry_in:?}");
        }
        other => panic!("{other:?}"),
    }
    lapse(&pool, "j1").await;
    let Claim::Granted {
        claimed_at,
        taken_over,
    } = b.claim(request("j1")).await.unwrap()
    else {
        panic!("not taken over")
    };
    assert_eq!((claimed_at, taken_over.as_deref()), (at, Some("a")));
    assert!(b.record(record("j1", at, Status::Sent)).await.unwrap());
    for l in [&a, &b] {
        assert_eq!(
            l.claim(request("j1")).await.unwrap(),
            Claim::Settled(Status::Sent)
        );
    }
    let row = &queries::show(&pool, "j1", None).await.unwrap()[0];
    assert_eq!(
        (row.status.as_str(), row.attempts, row.http_status),
        ("sent", 1, Some(200))
    );
    assert_eq!(row.provider_message_id.as_deref(), Some("msg_1"));
    assert_eq!(row.recipient.as_deref(), Some("+919876543210"));
    assert!(row.settled_at.is_some());

    // Given up (the job went back to the queue): claimable at once.
    let at2 = granted(&a.claim(request("j2")).await.unwrap());
    assert!(a.record(record("j2", at2, Status::Claimed)).await.unwrap());
    let again = b.claim(request("j2")).await.unwrap();
    assert_eq!(
        again,
        Claim::Granted {
            claimed_at: at2,
            taken_over: None
        }
    );
    // A stale give-up from a no longer holding worker changes nothing.
    assert!(!a.record(record("j2", at2, Status::Claimed)).await.unwrap());
    stop.cancel();
    db.drop().await;
}

#[tokio::test]
async fn only_a_replay_claims_a_dead_lettered_job_again() {
    let db = TestDb::new().await;
    let pool = db.store.pool().clone();
    let stop = CancellationToken::new();
    let l = Ledger::spawn(pool.clone(), policy(60_000), "w".into(), stop.clone());
    let at = granted(&l.claim(request("d1")).await.unwrap());
    let mut dead = record("d1", at, Status::DeadLettered);
    dead.error_code = Some("invalid_api_key".into());
    assert!(l.record(dead).await.unwrap());
    assert_eq!(
        l.claim(request("d1")).await.unwrap(),
        Claim::Settled(Status::DeadLettered)
    );
    let replay = ClaimRequest {
        replay: true,
        ..request("d1")
    };
    assert_eq!(granted(&l.claim(replay.clone()).await.unwrap()), at);
    assert!(l.record(record("d1", at, Status::Sent)).await.unwrap());
    // Sent is final, replay or not.
    assert_eq!(l.claim(replay).await.unwrap(), Claim::Settled(Status::Sent));
    let row = &queries::show(&pool, "d1", Some("sms")).await.unwrap()[0];
    assert_eq!((row.status.as_str(), row.attempts), ("sent", 2));
    assert_eq!(row.error_code, None);
    stop.cancel();
    db.drop().await;
}

#[tokio::test]
async fn one_job_twice_in_one_batch_is_claimed_once() {
    let db = TestDb::new().await;
    let stop = CancellationToken::new();
    let l = Ledger::spawn(
        db.store.pool().clone(),
        policy(60_000),
        "w".into(),
        stop.clone(),
    );
    let claims = futures_util::future::join_all((0..20).map(|i| {
        let l = l.clone();
        async move { l.claim(request(&format!("dup{}", i % 4))).await.unwrap() }
    }))
    .await;
    let grants = claims
        .iter()
        .filter(|c| matches!(c, Claim::Granted { .. }))
        .count();
    assert_eq!(grants, 4, "{claims:?}");
    stop.cancel();
    db.drop().await;
}

#[tokio::test]
async fn leases_of_jobs_in_progress_are_renewed() {
    let db = TestDb::new().await;
    let pool = db.store.pool().clone();
    let stop = CancellationToken::new();
    let a = Ledger::spawn(pool.clone(), policy(600), "a".into(), stop.clone());
    let b = Ledger::spawn(pool.clone(), policy(600), "b".into(), stop.clone());
    granted(&a.claim(request("long")).await.unwrap());
    // Three leases long: renewed by `a` all along, so never `b`'s.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            matches!(b.claim(request("long")).await.unwrap(), Claim::Held { .. }),
            "taken over while its worker lives"
        );
    }
    // `a` dies: its lease lapses, and `b` takes over.
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let b2 = Ledger::spawn(
        pool.clone(),
        policy(600),
        "b".into(),
        CancellationToken::new(),
    );
    assert!(matches!(
        b2.claim(request("long")).await.unwrap(),
        Claim::Granted {
            taken_over: Some(_),
            ..
        }
    ));
    db.drop().await;
}

#[tokio::test]
async fn retention_drops_old_partitions_and_makes_new_ones() {
    let db = TestDb::new().await;
    let pool = db.store.pool();
    let old = "deliveries_20200101";
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {old} PARTITION OF deliveries FOR VALUES FROM ('2020-01-01Z') TO ('2020-01-02Z')"
    )))
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO deliveries (job_id, channel, status, claimed_at) VALUES ('old', 'sms', 'sent', '2020-01-01T12:00:00Z')")
        .execute(pool)
        .await
        .unwrap();
    let (created, dropped) = maintain(pool, 7).await.unwrap().unwrap();
    assert_eq!(dropped, vec![old.to_owned()]);
    assert!(
        created.is_empty(),
        "the migration made today's: {created:?}"
    );
    let (n,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM pg_inherits WHERE inhparent = 'deliveries'::regclass")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(n, 5, "yesterday, today and three days ahead");
    // A claim dated yesterday by a clock behind the database's has a place.
    sqlx::query("INSERT INTO deliveries (job_id, channel, status, claimed_at) VALUES ('late', 'sms', 'claimed', now() - interval '1 day')")
        .execute(pool)
        .await
        .unwrap();
    // Another replica holding the lock: this one does nothing.
    let mut other = pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('notify-worker:deliveries_maintain'))")
        .execute(&mut *other)
        .await
        .unwrap();
    assert_eq!(maintain(pool, 7).await.unwrap(), None);
    other.rollback().await.unwrap();
    db.drop().await;
}

/// One step of two workers on a few jobs.
#[derive(Debug, Clone)]
enum Op {
    Claim(usize, usize),
    /// Both workers claim the same job at once.
    Race(usize),
    Settle(usize, usize, Status),
    Lapse(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let status = prop_oneof![
        Just(Status::Sent),
        Just(Status::DeadLettered),
        Just(Status::Claimed)
    ];
    prop_oneof![
        (0..2usize, 0..3usize).prop_map(|(w, j)| Op::Claim(w, j)),
        (0..3usize).prop_map(Op::Race),
        (0..2usize, 0..3usize, status).prop_map(|(w, j, s)| Op::Settle(w, j, s)),
        (0..3usize).prop_map(Op::Lapse),
    ]
}

/// Whatever the order of claims, settlements and lapsed leases across two
/// workers, a sent job is never granted again, and no job is granted to
/// one worker while the other's claim on it is live.
#[test]
fn no_interleaving_sends_a_sent_job_again() {
    use proptest::test_runner::{Config, TestRunner};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::new());
    let pool = db.store.pool().clone();
    let stop = CancellationToken::new();
    let workers = rt.block_on(async {
        [0, 1].map(|w| Ledger::spawn(pool.clone(), policy(60_000), format!("w{w}"), stop.clone()))
    });
    let case = std::sync::atomic::AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config::with_cases(64));
    let result = runner.run(&proptest::collection::vec(op(), 1..25), |ops| {
        let case = case.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let job = |j: usize| format!("c{case}-j{j}");
        // Per job: sent?, and the live holder with its claim time.
        let mut sent = [false; 3];
        let mut holder: [Option<(usize, OffsetDateTime)>; 3] = [None; 3];
        let grant = |w: usize,
                     j: usize,
                     c: Claim,
                     sent: &[bool; 3],
                     holder: &mut [Option<(usize, OffsetDateTime)>; 3]| {
            if let Claim::Granted { claimed_at, .. } = c {
                prop_assert!(!sent[j], "sent job {j} granted to w{w}");
                prop_assert!(
                    holder[j].is_none_or(|(h, _)| h == w),
                    "job {j} granted to w{w} while w{:?} holds it",
                    holder[j]
                );
                holder[j] = Some((w, claimed_at));
            }
            Ok(())
        };
        for op in ops {
            match op {
                Op::Claim(w, j) => {
                    let c = rt.block_on(workers[w].claim(request(&job(j)))).unwrap();
                    if matches!(c, Claim::Settled(Status::Sent)) {
                        prop_assert!(sent[j]);
                    }
                    grant(w, j, c, &sent, &mut holder)?;
                }
                Op::Race(j) => {
                    let (c0, c1) = rt.block_on(async {
                        tokio::join!(
                            workers[0].claim(request(&job(j))),
                            workers[1].claim(request(&job(j)))
                        )
                    });
                    let (c0, c1) = (c0.unwrap(), c1.unwrap());
                    let both =
                        matches!(c0, Claim::Granted { .. }) && matches!(c1, Claim::Granted { .. });
                    prop_assert!(!both, "both workers granted job {j}");
                    grant(0, j, c0, &sent, &mut holder)?;
                    grant(1, j, c1, &sent, &mut holder)?;
                }
                Op::Settle(w, j, status) => {
                    let Some((h, at)) = holder[j].filter(|(h, _)| *h == w) else {
                        continue;
                    };
                    let _ = h;
                    rt.block_on(workers[w].record(record(&job(j), at, status)))
                        .unwrap();
                    holder[j] = None;
                    if status == Status::Sent {
                        sent[j] = true;
                    }
                }
                Op::Lapse(j) => {
                    rt.block_on(lapse(&pool, &job(j)));
                    holder[j] = None;
                }
            }
        }
        Ok(())
    });
    stop.cancel();
    rt.block_on(db.drop());
    if let Err(e) = result {
        panic!("{e}");
    }
}
