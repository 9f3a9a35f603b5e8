//! Retention without a bulk DELETE: the ledger's daily partitions are
//! created a few days ahead and dropped once older than the retention, by
//! `deliveries_maintain()` (see the migration), one replica at a time.

use super::LedgerError;
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Days of partitions made ahead of today: a worker may be down this long
/// before claims find no partition to go to.
const AHEAD_DAYS: i32 = 3;

/// How often each worker tries (the first to take the lock does it).
const EVERY: Duration = Duration::from_secs(3600);

/// What one run did: `Some((created, dropped))`, or `None` when another
/// replica held the lock.
pub(crate) async fn maintain(
    pool: &PgPool,
    retention_days: u32,
) -> Result<Option<(Vec<String>, Vec<String>)>, LedgerError> {
    let fail = |e: sqlx::Error| LedgerError::sql("partition upkeep", &e);
    let mut tx = pool.begin().await.map_err(fail)?;
    // Creating and dropping partitions locks the parent table: give up
    // rather than queue behind a long query and stall every claim.
    sqlx::query("SET LOCAL lock_timeout = '2s'")
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
    let (mine,): (bool,) = sqlx::query_as(
        "SELECT pg_try_advisory_xact_lock(hashtext('notify-worker:deliveries_maintain'))",
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(fail)?;
    if !mine {
        return Ok(None);
    }
    let done: Vec<(String, String)> =
        sqlx::query_as("SELECT action, partition_name FROM deliveries_maintain($1, $2)")
            .bind(i32::try_from(retention_days).unwrap_or(i32::MAX))
            .bind(AHEAD_DAYS)
            .fetch_all(&mut *tx)
            .await
            .map_err(fail)?;
    tx.commit().await.map_err(fail)?;
    let (mut created, mut dropped) = (Vec::new(), Vec::new());
    for (action, name) in done {
        if action == "created" {
            created.push(name);
        } else {
            dropped.push(name);
        }
    }
    Ok(Some((created, dropped)))
}

/// Runs [`maintain`] now and hourly until shutdown.
pub(crate) fn spawn_maintenance(pool: PgPool, retention_days: u32, shutdown: CancellationToken) {
    tokio::spawn(async move {
        loop {
            match maintain(&pool, retention_days).await {
                Ok(Some((created, dropped))) if !(created.is_empty() && dropped.is_empty()) => {
                    tracing::info!(?created, ?dropped, "ledger partitions maintained");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "ledger partition upkeep failed; retrying within the hour")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(EVERY) => {}
                () = shutdown.cancelled() => return,
            }
        }
    });
}
