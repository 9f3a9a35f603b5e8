//! Retention without a bulk DELETE: the ledger's daily partitions are
//! created from yesterday to a few days ahead and dropped once older than the retention, by
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

#[cfg(test)]
mod tests {
    use crate::deadletter::testdb::TestDb;
    use time::OffsetDateTime;

    /// An outcome changes no indexed column and finds room on its row's page,
    /// so it is a HOT update (no index written): the ledger's partitions keep
    /// half of each page free. Counted in one transaction, whose own counters
    /// PostgreSQL reports at once.
    #[tokio::test]
    async fn an_outcome_is_written_beside_its_claim_without_touching_an_index() {
        let db = TestDb::new().await;
        let mut tx = db.store.pool().begin().await.unwrap();
        let n = 300;
        let jobs: Vec<String> = (0..n).map(|i| format!("hot-{i}")).collect();
        let at: Vec<OffsetDateTime> = sqlx::query_scalar(
            "INSERT INTO deliveries (job_id, channel, provider, status, recipient, claimed_by, lease_until, claimed_at) \
             SELECT j, 'sms', 'telnxo', 'claimed', '+9198765' || k, 'w1', now() + interval '30 s', \
                    now() + k * interval '1 microsecond' \
             FROM unnest($1::text[]) WITH ORDINALITY AS u(j, k) RETURNING claimed_at",
        )
        .bind(&jobs)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        let written: Vec<i64> = sqlx::query_scalar(super::super::records::RECORD)
            .bind(vec!["sms"; n])
            .bind(&jobs)
            .bind(&at)
            .bind(vec!["sent"; n])
            .bind(vec![1i32; n])
            .bind(vec![Some(200i32); n])
            .bind(
                jobs.iter()
                    .map(|j| Some(format!("msg-{j}")))
                    .collect::<Vec<_>>(),
            )
            .bind(vec![None::<String>; n])
            .bind("w1")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(written.len(), n);
        let (updated, hot): (i64, i64) = sqlx::query_as(
            "SELECT sum(pg_stat_get_xact_tuples_updated(i.inhrelid))::int8, \
                    sum(pg_stat_get_xact_tuples_hot_updated(i.inhrelid))::int8 \
             FROM pg_inherits i WHERE i.inhparent = 'deliveries'::regclass",
        )
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(updated, n as i64);
        // At the former fillfactor 80, 23 % were.
        assert!(
            hot * 10 >= updated * 9,
            "{hot} of {updated} updates were HOT"
        );
        db.drop().await;
    }
}
