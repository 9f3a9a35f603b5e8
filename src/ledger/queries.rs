//! What operators and backends ask of the ledger: one job's record, and
//! lists by recipient, status and time. Bounded: a list returns at most
//! [`MAX_LIMIT`] rows.

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
    let mut q =
        QueryBuilder::<Postgres>::new(format!("SELECT {COLUMNS} FROM deliveries WHERE job_id = "));
    q.push_bind(job_id.to_owned());
    if let Some(c) = channel {
        q.push(" AND channel = ").push_bind(c.to_owned());
    }
    q.push(" ORDER BY claimed_at DESC LIMIT 10");
    q.build_query_as().fetch_all(pool).await
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
