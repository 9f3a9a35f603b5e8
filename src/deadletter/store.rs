//! The dead-letter table: connecting, migrating, and inserting rows so
//! that a redelivered job never makes a second open row.

use super::row::{Body, DeadLetter};
use crate::domain::Provider;
use sqlx::{
    PgPool, Postgres, QueryBuilder,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot connect to the database at {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("dead-letter insert failed: {0}")]
    Insert(sqlx::Error),
    #[error("dead-letter insert failed: {0}")]
    Writer(String),
}

/// Where dead letters go.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetterStore {
    pool: PgPool,
}

impl DeadLetterStore {
    /// Connects, failing fast (a few seconds) if the database does not answer.
    pub(crate) async fn connect(url: &str, redacted_url: &str) -> Result<Self, StoreError> {
        // A URL sqlx cannot parse fails in `connect` below, with its reason.
        let port = url
            .parse::<PgConnectOptions>()
            .ok()
            .filter(|o| o.get_socket().is_none())
            .map(|o| o.get_port());
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |_, _| {
                Box::pin(async move {
                    if let Some(port) = port {
                        super::nodelay::set_on_sockets_to(port);
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await
            .map_err(|source| StoreError::Connect {
                url: redacted_url.to_owned(),
                source,
            })?;
        Ok(Self { pool })
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the embedded `migrations/`.
    pub(crate) async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations").run(&self.pool).await?;
        Ok(())
    }

    /// True when the database answers a trivial query within a second.
    pub(crate) async fn ping(&self) -> bool {
        let query = sqlx::query("SELECT 1").execute(&self.pool);
        matches!(
            tokio::time::timeout(Duration::from_secs(1), query).await,
            Ok(Ok(_))
        )
    }

    /// Writes `row` unless an open row for the same (channel, job_id) exists,
    /// so a redelivered job never makes a second row. Returns whether a row
    /// was written. When this returns `Ok`, the row is committed.
    pub(crate) async fn insert(&self, row: &DeadLetter) -> Result<bool, StoreError> {
        Ok(self
            .insert_many(&[row])
            .await?
            .first()
            .copied()
            .unwrap_or(false))
    }

    /// Writes `rows` in one statement (one commit), each unless an open row
    /// for its (channel, job_id) exists. Returns, per row, whether it was
    /// written; a row whose job repeats an earlier one in `rows` is not.
    pub(crate) async fn insert_many(&self, rows: &[&DeadLetter]) -> Result<Vec<bool>, StoreError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
            "INSERT INTO dead_letters (job_id, channel, provider, error_code, reason, \
             http_status, provider_response, payload, raw_payload, attempts, source_queue) ",
        );
        q.push_values(rows, |mut b, row| {
            let (payload, raw) = match &row.body {
                Body::Json(v) => (Some(sqlx::types::Json(v.clone())), None),
                Body::Raw(bytes) => (None, Some(bytes.clone())),
            };
            b.push_bind(row.job_id.clone())
                .push_bind(row.channel.as_str())
                .push_bind(row.provider.map(Provider::as_str))
                .push_bind(row.error_code.as_str().to_owned())
                .push_bind(row.reason.clone())
                .push_bind(row.http_status.map(i32::from))
                .push_bind(row.provider_response.clone())
                .push_bind(payload)
                .push_bind(raw)
                .push_bind(i32::try_from(row.attempts).unwrap_or(i32::MAX))
                .push_bind(row.source_queue.clone());
        });
        q.push(" ON CONFLICT (channel, job_id) WHERE replayed_at IS NULL DO NOTHING RETURNING channel, job_id");
        let mut written: Vec<(String, String)> = q
            .build_query_as()
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::Insert)?;
        Ok(rows
            .iter()
            .map(|row| {
                let key = (row.channel.as_str().to_owned(), row.job_id.clone());
                match written.iter().position(|w| *w == key) {
                    Some(at) => {
                        written.swap_remove(at);
                        true
                    }
                    None => false,
                }
            })
            .collect())
    }
}
