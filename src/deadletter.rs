//! The dead-letter table: rows for jobs that cannot succeed (contract section 4).

use crate::{job::Channel, provider::Provider};
use serde_json::Value;
use sqlx::{PgPool, postgres::PgPoolOptions};
use std::time::Duration;

/// `error_code` values of the worker's own (providers' codes are stored as given).
pub mod codes {
    pub const INVALID_JOB: &str = "invalid_job";
    pub const REJECTED: &str = "rejected";
    pub const RETRIES_EXHAUSTED: &str = "retries_exhausted";
    pub const REDELIVERY_LIMIT: &str = "redelivery_limit";
}

/// One row to write.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub job_id: String,
    pub channel: Channel,
    pub provider: Option<Provider>,
    pub error_code: String,
    pub reason: String,
    pub http_status: Option<u16>,
    pub provider_response: Option<String>,
    pub body: Body,
    pub attempts: u32,
    pub source_queue: String,
}

/// The job as received: JSON when it parsed, bytes when it did not.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Json(Value),
    Raw(Vec<u8>),
}

impl Body {
    /// Chooses the column for a body. JSON holding `\u0000` cannot be stored
    /// as jsonb, so it is kept as bytes instead of failing the insert forever.
    pub fn new(payload: Option<Value>, raw: &[u8]) -> Self {
        match payload {
            Some(v) if !has_nul(&v) => Body::Json(v),
            _ => Body::Raw(raw.to_vec()),
        }
    }
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot connect to the database at {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("dead-letter insert failed: {0}")]
    Insert(sqlx::Error),
}

/// Where dead letters go.
#[derive(Debug, Clone)]
pub struct DeadLetterStore {
    pool: PgPool,
}

impl DeadLetterStore {
    /// Connects, failing fast (a few seconds) if the database does not answer.
    pub async fn connect(url: &str, redacted_url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|source| StoreError::Connect {
                url: redacted_url.to_owned(),
                source,
            })?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the embedded `migrations/`.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations").run(&self.pool).await?;
        Ok(())
    }

    /// True when the database answers a trivial query within a second.
    pub async fn ping(&self) -> bool {
        let query = sqlx::query("SELECT 1").execute(&self.pool);
        matches!(
            tokio::time::timeout(Duration::from_secs(1), query).await,
            Ok(Ok(_))
        )
    }

    /// Writes `row` unless an open row for the same (channel, job_id) exists,
    /// so a redelivered job never makes a second row. Returns whether a row
    /// was written. When this returns `Ok`, the row is committed.
    pub async fn insert(&self, row: &DeadLetter) -> Result<bool, StoreError> {
        let (payload, raw) = match &row.body {
            Body::Json(v) => (Some(v), None),
            Body::Raw(b) => (None, Some(b.as_slice())),
        };
        let result = sqlx::query(
            "INSERT INTO dead_letters (job_id, channel, provider, error_code, reason, \
             http_status, provider_response, payload, raw_payload, attempts, source_queue) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (channel, job_id) WHERE replayed_at IS NULL DO NOTHING",
        )
        .bind(&row.job_id)
        .bind(row.channel.as_str())
        .bind(row.provider.map(Provider::as_str))
        .bind(&row.error_code)
        .bind(&row.reason)
        .bind(row.http_status.map(i32::from))
        .bind(row.provider_response.as_deref())
        .bind(payload.map(sqlx::types::Json))
        .bind(raw)
        .bind(i32::try_from(row.attempts).unwrap_or(i32::MAX))
        .bind(&row.source_queue)
        .execute(&self.pool)
        .await
        .map_err(StoreError::Insert)?;
        Ok(result.rows_affected() == 1)
    }
}
