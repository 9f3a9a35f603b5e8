//! (l) The delivery ledger's cost: the same 30,000 jobs through the no-op
//! relay, the worker with `--ledger off`, and the worker with the ledger
//! (its default), in one run: jobs/s, CPU per job of the consumer and of
//! PostgreSQL, and what the database did per job (transactions committed,
//! ledger rows inserted and updated, WAL flushed to disk and written,
//! from PostgreSQL's own statistics).

use super::{Env, thrift};
use sqlx::{Connection, PgConnection};
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

/// PostgreSQL alone, one connection, nothing else running, jobs in
/// statements of [`FLOOR_BATCH`]: its CPU per job for
/// - `claim`: the worker's claim (`deliveries_claim_near`: look-up, lock,
///   insert);
/// - `table`: one insert and one outcome update a job into `deliveries`
///   itself (its partitions and indexes), without the claim's look-up or
///   lock: what this table costs whoever writes it;
/// - `bare`: the same into a table keyed by (channel, job_id) alone, no
///   other index, no partition: the least any ledger keeping a row per
///   job could ask of the database.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Floor {
    pub(crate) claim: Duration,
    pub(crate) table: Duration,
    pub(crate) bare: Duration,
}

pub(crate) const FLOOR_BATCH: usize = 128;

/// One insert and one outcome update a job into `table`, `FLOOR_BATCH`
/// jobs a statement: PostgreSQL's CPU a job.
async fn insert_update(conn: &mut PgConnection, batches: &[Vec<usize>], table: &str) -> Duration {
    let insert = format!(
        "INSERT INTO {table} (job_id, channel, provider, status, recipient, claimed_by, \
         lease_until, claimed_at) \
         SELECT id, 'email', 'migosmtp', 'claimed', r, 'floor', now() + interval '30 s', \
                clock_timestamp() FROM unnest($1::text[], $2::text[]) i(id, r) \
         RETURNING channel, job_id, claimed_at"
    );
    // The columns of the worker's outcome update (src/ledger/records.rs).
    let update = format!(
        "UPDATE {table} d SET status = 'sent', attempts = d.attempts + 1, http_status = 200, \
         provider_message_id = 'm', error_code = NULL, settled_at = now(), lease_until = NULL \
         FROM unnest($1::text[], $2::text[], $3::timestamptz[]) i(channel, id, at) \
         WHERE d.channel = i.channel AND d.job_id = i.id AND d.claimed_at = i.at"
    );
    let before = postgres_cpu();
    for batch in batches {
        let ids: Vec<String> = batch.iter().map(|i| format!("f{i}")).collect();
        let to: Vec<String> = batch.iter().map(|i| format!("r{i}@example.com")).collect();
        let keys: Vec<(String, String, time::OffsetDateTime)> =
            sqlx::query_as(sqlx::AssertSqlSafe(insert.clone()))
                .bind(&ids)
                .bind(&to)
                .fetch_all(&mut *conn)
                .await
                .expect("floor insert");
        let (channels, (ids, at)): (Vec<String>, (Vec<String>, Vec<time::OffsetDateTime>)) =
            keys.into_iter().map(|(c, i, a)| (c, (i, a))).unzip();
        sqlx::query(sqlx::AssertSqlSafe(update.clone()))
            .bind(&channels)
            .bind(&ids)
            .bind(&at)
            .execute(&mut *conn)
            .await
            .expect("floor update");
    }
    let jobs: usize = batches.iter().map(Vec::len).sum();
    postgres_cpu().saturating_sub(before) / u32::try_from(jobs).unwrap_or(u32::MAX)
}

pub(crate) async fn floor(env: &Env, n: usize) -> Floor {
    let mut conn = PgConnection::connect(&env.db_url).await.expect("database");
    // As the worker's ledger connections (src/ledger/mod.rs, SESSION).
    for set in [
        "SET enable_seqscan = off",
        "SET enable_hashjoin = off",
        "SET enable_mergejoin = off",
    ] {
        sqlx::query(set).execute(&mut conn).await.expect(set);
    }
    let batches: Vec<Vec<usize>> = (0..n)
        .collect::<Vec<_>>()
        .chunks(FLOOR_BATCH)
        .map(<[usize]>::to_vec)
        .collect();
    let per_job = |d: Duration| d / u32::try_from(n).unwrap_or(u32::MAX);
    let before = postgres_cpu();
    let keys: Vec<i64> = (0..i64::try_from(n).unwrap_or(i64::MAX)).collect();
    for (batch, keys) in batches.iter().zip(keys.chunks(FLOOR_BATCH)) {
        let ids: Vec<String> = batch.iter().map(|i| format!("c{i}")).collect();
        let to: Vec<String> = batch.iter().map(|i| format!("r{i}@example.com")).collect();
        sqlx::query(
            "SELECT count(*) FROM deliveries_claim_near(\
             array_fill('email'::text, ARRAY[cardinality($1::text[])]), $1, \
             array_fill('migosmtp'::text, ARRAY[cardinality($1)]), $2, \
             array_fill('epoch'::timestamptz, ARRAY[cardinality($1)]), \
             array_fill(false, ARRAY[cardinality($1)]), \
             array_fill(NULL::timestamptz, ARRAY[cardinality($1)]), \
             'floor', 30000, now(), $3)",
        )
        .bind(&ids)
        .bind(&to)
        // Sorted and distinct, as the worker's lock keys.
        .bind(keys)
        .execute(&mut conn)
        .await
        .expect("floor claim");
    }
    let claim = per_job(postgres_cpu().saturating_sub(before));

    let table = insert_update(&mut conn, &batches, "deliveries").await;
    sqlx::query(
        "CREATE TABLE floor_bare (channel text, job_id text, provider text, status text, \
         attempts int4 NOT NULL DEFAULT 0, http_status int4, provider_message_id text, \
         error_code text, recipient text, claimed_by text, lease_until timestamptz, \
         claimed_at timestamptz, settled_at timestamptz, PRIMARY KEY (channel, job_id)) \
         WITH (fillfactor = 45)",
    )
    .execute(&mut conn)
    .await
    .expect("floor table");
    let bare = insert_update(&mut conn, &batches, "floor_bare").await;
    Floor { claim, table, bare }
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
