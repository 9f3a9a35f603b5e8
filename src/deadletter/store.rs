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
}

/// A failed insert, and whether trying the same row again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dead-letter insert failed: {message}")]
pub(crate) struct InsertError {
    /// The table refused the row's content (SQLSTATE class 22 or 23):
    /// the same row will be refused again.
    pub(crate) about_the_row: bool,
    pub(crate) message: String,
}

impl InsertError {
    pub(crate) fn new(e: &sqlx::Error) -> Self {
        Self {
            about_the_row: about_the_row(e),
            message: e.to_string(),
        }
    }

    /// The writer stopped (the worker is shutting down).
    pub(crate) fn writer_gone() -> Self {
        Self {
            about_the_row: false,
            message: "dead-letter writer stopped".into(),
        }
    }
}

/// Whether the table refused a row for its content (SQLSTATE class 22 or
/// 23), so the same row will be refused again; shared by the dead-letter
/// and ledger writers.
pub(crate) fn about_the_row(e: &sqlx::Error) -> bool {
    match e {
        // 22: data exception; 23: integrity constraint violation. The
        // one-open-row index is the exception: ON CONFLICT handles it,
        // and should it still clash, the next try finds the row.
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            (code.starts_with("22") || code.starts_with("23"))
                && db.constraint() != Some("dead_letters_open_job")
        }
        sqlx::Error::Encode(_) => true,
        // Lost connections, timeouts, lock waits, serialization
        // failures, admin shutdown, a table renamed away for a
        // migration: the database, not the row.
        _ => false,
    }
}

/// A pool's settings: a bounded wait for a connection, and TCP_NODELAY on
/// every connection (sqlx 0.9 leaves it off: see `nodelay.rs`).
fn pool_options(options: &PgConnectOptions, max: u32) -> PgPoolOptions {
    let port = options.get_socket().is_none().then(|| options.get_port());
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(5))
        .after_connect(move |_, _| {
            Box::pin(async move {
                if let Some(port) = port {
                    super::nodelay::set_on_sockets_to(port);
                }
                Ok(())
            })
        })
}

/// Where dead letters go.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetterStore {
    pool: PgPool,
}

impl DeadLetterStore {
    /// Connects, failing fast (a few seconds) if the database does not
    /// answer. With `statement_timeout`, no statement runs longer (a lock
    /// held by someone else ends as an error, not a wait without end).
    pub(crate) async fn connect(
        url: &str,
        redacted_url: &str,
        statement_timeout: Option<Duration>,
    ) -> Result<Self, StoreError> {
        let fail = |source| StoreError::Connect {
            url: redacted_url.to_owned(),
            source,
        };
        let mut options = url.parse::<PgConnectOptions>().map_err(fail)?;
        if let Some(limit) = statement_timeout {
            let ms = limit.as_millis().to_string();
            options = options.options([("statement_timeout", ms.as_str())]);
        }
        let pool = pool_options(&options, 8)
            .connect_with(options)
            .await
            .map_err(fail)?;
        Ok(Self { pool })
    }

    /// A second pool of at most `max` connections to the same database,
    /// with the same statement timeout and these session `settings`. It
    /// connects on first use.
    pub(crate) fn sibling(&self, max: u32, settings: &[(&str, &str)]) -> PgPool {
        let options = (*self.pool.connect_options())
            .clone()
            .options(settings.iter().copied());
        pool_options(&options, max).connect_lazy_with(options)
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
    pub(crate) async fn insert(&self, row: &DeadLetter) -> Result<bool, InsertError> {
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
    pub(crate) async fn insert_many(&self, rows: &[&DeadLetter]) -> Result<Vec<bool>, InsertError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
            "INSERT INTO dead_letters (job_id, channel, provider, error_code, reason, \
             http_status, provider_response, payload, raw_payload, attempts, source_queue, trace_parent) ",
        );
        q.push_values(rows, |mut b, row| {
            let (payload, raw) = match &row.body {
                Body::Json(v) => (Some(sqlx::types::Json(v.clone())), None),
                Body::Raw(bytes) => (None, Some(bytes.clone())),
                Body::Dropped => (None, None),
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
                .push_bind(row.source_queue.clone())
                .push_bind(row.trace_parent.clone());
        });
        q.push(" ON CONFLICT (channel, job_id) WHERE replayed_at IS NULL DO NOTHING RETURNING channel, job_id");
        let mut written: Vec<(String, String)> = q
            .build_query_as()
            .fetch_all(&self.pool)
            .await
            .map_err(|e| InsertError::new(&e))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        deadletter::{Parts, testdb::TestDb},
        domain::{Channel, ErrorCode},
    };
    use proptest::prelude::*;

    fn row(reason: &str) -> DeadLetter {
        DeadLetter::new(Parts {
            job_id: "j",
            channel: Channel::Email,
            provider: None,
            error_code: ErrorCode::InvalidJob,
            reason,
            http_status: None,
            provider_response: None,
            payload: None,
            raw: b"",
            attempts: 0,
            source_queue: "q",
            trace_parent: None,
        })
    }

    #[tokio::test]
    async fn errors_about_the_row_are_told_from_errors_of_the_database() {
        let db = TestDb::new().await;
        let pool = db.store.pool();
        sqlx::query("ALTER TABLE dead_letters ADD CONSTRAINT short CHECK (length(reason) < 10)")
            .execute(pool)
            .await
            .unwrap();
        let refused = db
            .store
            .insert(&row("far too long a reason"))
            .await
            .unwrap_err();
        assert!(refused.about_the_row, "{refused:?}");
        assert!(refused.message.contains("short"), "{refused:?}");

        // Locked by another transaction: the statement times out.
        let quick = DeadLetterStore::connect(&db.url, "test", Some(Duration::from_millis(200)))
            .await
            .unwrap();
        let mut lock = pool.begin().await.unwrap();
        sqlx::query("LOCK TABLE dead_letters IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *lock)
            .await
            .unwrap();
        let waited = quick.insert(&row("ok")).await.unwrap_err();
        assert!(!waited.about_the_row, "{waited:?}");
        assert!(waited.message.contains("statement timeout"), "{waited:?}");
        lock.rollback().await.unwrap();

        // Renamed away, as during an operator's migration.
        sqlx::query("ALTER TABLE dead_letters RENAME TO away")
            .execute(pool)
            .await
            .unwrap();
        let missing = db.store.insert(&row("ok")).await.unwrap_err();
        assert!(!missing.about_the_row, "{missing:?}");
        quick.pool().close().await;
        db.drop().await;
    }

    /// Text as a provider or producer may send it: anything, NUL-heavy,
    /// wide characters, long.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[a\\x00é\\u{10FFFF}\\\\]{0,6000}",
            Just("\0".repeat(5000)),
        ]
    }

    /// A body: arbitrary bytes, or JSON text with NUL, lone surrogates,
    /// huge numbers.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..2048),
            text().prop_map(|t| serde_json::json!({ "to": t, "n": 1 })
                .to_string()
                .into_bytes()),
            Just(br#"{"to":"\u0000","id":"a\u0000"}"#.to_vec()),
            Just(br#"{"to":"\ud800"}"#.to_vec()),
            Just(br#"{"n":1e400}"#.to_vec()),
        ]
    }

    /// Whatever comes in, the row built from it is one the table takes.
    #[test]
    fn every_row_built_is_stored() {
        use proptest::test_runner::{Config, TestRunner};
        let rt = tokio::runtime::Runtime::new().unwrap();
        let db = rt.block_on(TestDb::new());
        let parts = (
            (text(), text(), proptest::option::of(text())),
            (
                body(),
                proptest::option::of(any::<u16>()),
                any::<u32>(),
                text(),
            ),
        );
        let mut runner = TestRunner::new(Config::with_cases(256));
        let result = runner.run(
            &parts,
            |((job_id, reason, response), (raw, status, attempts, queue))| {
                let row = DeadLetter::new(Parts {
                    job_id: &job_id,
                    channel: Channel::Sms,
                    provider: None,
                    error_code: ErrorCode::Rejected,
                    reason: &reason,
                    http_status: status,
                    provider_response: response.as_deref(),
                    payload: serde_json::from_slice(&raw).ok(),
                    raw: &raw,
                    attempts,
                    source_queue: &queue,
                    trace_parent: None,
                });
                let stored = rt.block_on(db.store.insert(&row));
                prop_assert!(stored.is_ok(), "{stored:?}");
                Ok(())
            },
        );
        rt.block_on(db.drop());
        if let Err(e) = result {
            panic!("{e}");
        }
    }
}
