//! (l) The delivery ledger's cost: the same 30,000 jobs through the no-op
//! relay, the worker with `--ledger off`, and the worker with the ledger
//! (its default), in one run: jobs/s, CPU per job of the consumer and of
//! PostgreSQL, and what the database did per job (transactions committed,
//! ledger rows inserted and updated, WAL flushed to disk and written,
//! from PostgreSQL's own statistics).

use super::{Env, thrift};
use std::time::Duration;

/// One consumer's figures with the database's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Costs {
    pub(crate) thrift: thrift::Thrift,
    /// PostgreSQL's CPU (every postgres process) per job.
    pub(crate) pg_per_job: Duration,
    pub(crate) commits_per_job: f64,
    pub(crate) inserts_per_job: f64,
    pub(crate) updates_per_job: f64,
    /// WAL flushes to disk (`fdatasync` on Linux) per job: server-wide
    /// (`pg_stat_wal`), so only meaningful with nothing else writing.
    pub(crate) wal_syncs_per_job: f64,
    pub(crate) wal_bytes_per_job: f64,
}

fn postgres_cpu() -> Duration {
    let out = std::process::Command::new("pgrep")
        .args(["-x", "postgres"])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|p| p.trim().parse().ok())
        .map(thrift::cpu)
        .sum()
}

/// Transactions committed in the bench database, ledger rows inserted and
/// updated, WAL flushes and bytes. PostgreSQL flushes these counters
/// within a second.
async fn pg_counts(env: &Env) -> [f64; 5] {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (commits,): (i64,) = sqlx::query_as(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&env.db)
    .await
    .expect("pg_stat_database");
    let (ins, upd): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT sum(n_tup_ins)::int8, sum(n_tup_upd)::int8 FROM pg_stat_user_tables WHERE relname LIKE 'deliveries%'",
    )
    .fetch_one(&env.db)
    .await
    .expect("pg_stat_user_tables");
    let (syncs, bytes): (i64, f64) =
        sqlx::query_as("SELECT wal_sync, wal_bytes::float8 FROM pg_stat_wal")
            .fetch_one(&env.db)
            .await
            .expect("pg_stat_wal");
    [
        commits as f64,
        ins.unwrap_or(0) as f64,
        upd.unwrap_or(0) as f64,
        syncs as f64,
        bytes,
    ]
}

/// `n` jobs through the relay (`flags` None) or the worker with `flags`.
pub(crate) async fn run(env: &Env, n: usize, flags: Option<&[&str]>) -> Costs {
    let before = pg_counts(env).await;
    let pg_before = postgres_cpu();
    let pg_cpu = std::sync::Mutex::new(Duration::ZERO);
    let thrift = thrift::run_with(env, n, flags.is_some(), flags.unwrap_or(&[]), |_| {
        *pg_cpu.lock().unwrap() = postgres_cpu().saturating_sub(pg_before);
    })
    .await;
    let after = pg_counts(env).await;
    let per = |a: f64, b: f64| (a - b) / n as f64;
    let pg = *pg_cpu.lock().unwrap();
    Costs {
        thrift,
        pg_per_job: pg / u32::try_from(n).unwrap_or(u32::MAX),
        commits_per_job: per(after[0], before[0]),
        inserts_per_job: per(after[1], before[1]),
        updates_per_job: per(after[2], before[2]),
        wal_syncs_per_job: per(after[3], before[3]),
        wal_bytes_per_job: per(after[4], before[4]),
    }
}
