//! What operators and backends ask of the ledger: one job's record, and
//! lists by recipient, status and time. Bounded: a list returns at most
//! [`MAX_LIMIT`] rows.

use crate::domain::Channel;
use serde::Serialize;
use sqlx::{PgPool, Postgres, QueryBuilder};
use time::OffsetDateTime;

/// Most rows one list returns.
pub(crate) const MAX_LIMIT: i64 = 1000;

/// One ledger row as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub(crate) struct Delivery {
    pub(crate) job_id: String,
    pub(crate) channel: String,
    pub(crate) provider: Option<String>,
    pub(crate) status: String,
    pub(crate) attempts: i32,
    pub(crate) http_status: Option<i32>,
    pub(crate) provider_message_id: Option<String>,
    pub(crate) recipient: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub(crate) claimed_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub(crate) settled_at: Option<OffsetDateTime>,
    pub(crate) claimed_by: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub(crate) lease_until: Option<OffsetDateTime>,
    pub(crate) error_code: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub(crate) expires_at: Option<OffsetDateTime>,
}

const COLUMNS: &str = "job_id, channel, provider, status, attempts, http_status, \
    provider_message_id, recipient, claimed_at, settled_at, claimed_by, lease_until, \
    error_code, expires_at";

/// A list's filters.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListFilter {
    pub(crate) to: Option<String>,
    pub(crate) status: Option<String>,
    pub(crate) channel: Option<String>,
    pub(crate) since: Option<OffsetDateTime>,
    pub(crate) limit: i64,
}

/// The rows of `job_id` (one per channel at most), newest first.
pub(crate) async fn show(
    pool: &PgPool,
    job_id: &str,
    channel: Option<&str>,
) -> Result<Vec<Delivery>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(show_sql()))
        .bind(channels(channel))
        .bind(job_id)
        .fetch_all(pool)
        .await
}

/// `show`'s statement: $1 the channels, $2 the job id. The channel is
/// always given, every channel when the caller named none: the key leads
/// with it, and a look-up by `job_id` alone read every row of every
/// retained day (95 ms at 600,000 rows, growing with the table; the
/// console's `GET /api/deliveries/{job_id}` is a backend's polling path).
fn show_sql() -> String {
    format!(
        "SELECT {COLUMNS} FROM deliveries WHERE channel = ANY($1) AND job_id = $2 \
         ORDER BY claimed_at DESC LIMIT 10"
    )
}

fn channels(channel: Option<&str>) -> Vec<&str> {
    match channel {
        Some(c) => vec![c],
        None => Channel::ALL.map(Channel::as_str).to_vec(),
    }
}

/// Rows matching `f`, newest first, at most `f.limit` (capped).
pub(crate) async fn list(pool: &PgPool, f: &ListFilter) -> Result<Vec<Delivery>, sqlx::Error> {
    let mut q =
        QueryBuilder::<Postgres>::new(format!("SELECT {COLUMNS} FROM deliveries WHERE true"));
    if let Some(to) = &f.to {
        q.push(" AND recipient = ").push_bind(to.clone());
    }
    if let Some(s) = &f.status {
        q.push(" AND status = ").push_bind(s.clone());
    }
    if let Some(c) = &f.channel {
        q.push(" AND channel = ").push_bind(c.clone());
    }
    if let Some(t) = f.since {
        q.push(" AND claimed_at >= ").push_bind(t);
    }
    q.push(" ORDER BY claimed_at DESC LIMIT ")
        .push_bind(f.limit.clamp(1, MAX_LIMIT));
    q.build_query_as().fetch_all(pool).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deadletter::testdb::TestDb;

    /// Pages `show_sql` reads for one job among 20,000.
    async fn pages_read(pool: &PgPool, channel: Option<&str>, job_id: &str) -> i64 {
        let plan: serde_json::Value = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {}",
            show_sql()
        )))
        .bind(channels(channel))
        .bind(job_id)
        .fetch_one(pool)
        .await
        .unwrap();
        let top = &plan[0]["Plan"];
        top["Shared Hit Blocks"].as_i64().unwrap() + top["Shared Read Blocks"].as_i64().unwrap()
    }

    #[tokio::test]
    async fn a_job_is_found_by_its_key_with_or_without_its_channel() {
        let db = TestDb::new().await;
        let pool = db.store.pool().clone();
        sqlx::query(
            "INSERT INTO deliveries (job_id, channel, provider, status, recipient, claimed_at) \
             SELECT 'job-' || g, CASE WHEN g % 2 = 0 THEN 'email' ELSE 'sms' END, 'p', 'sent', \
                    '+91' || g, now() - g * interval '1 ms' \
             FROM generate_series(1, 20000) g",
        )
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query("ANALYZE deliveries")
            .execute(&pool)
            .await
            .unwrap();

        for channel in [None, Some("sms")] {
            let rows = show(&pool, "job-4243", channel).await.unwrap();
            assert_eq!(rows.len(), 1, "{channel:?}");
            assert_eq!(rows[0].recipient.as_deref(), Some("+914243"));
            // The whole table is hundreds of pages; its key, a few per day.
            let pages = pages_read(&pool, channel, "job-4243").await;
            assert!(pages < 40, "{channel:?}: {pages} pages read for one job");
        }
        assert!(
            show(&pool, "job-4243", Some("email"))
                .await
                .unwrap()
                .is_empty()
        );
        db.drop().await;
    }
}
