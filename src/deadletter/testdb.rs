//! For unit tests: a fresh database on the local PostgreSQL, migrated, and
//! dropped again, so tests run in parallel against the real table.

use super::DeadLetterStore;
use sqlx::postgres::PgPoolOptions;

const ADMIN_DB: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub(crate) struct TestDb {
    name: String,
    pub(crate) url: String,
    pub(crate) store: DeadLetterStore,
}

impl TestDb {
    pub(crate) async fn new() -> Self {
        let name = format!("nw_unit_{}", uuid::Uuid::new_v4().simple());
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(ADMIN_DB)
            .await
            .expect("postgres on 127.0.0.1:5432");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("create the test database");
        admin.close().await;
        let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
        let store = DeadLetterStore::connect(&url, &url, Some(std::time::Duration::from_secs(30)))
            .await
            .expect("connect");
        store.migrate().await.expect("migrate");
        Self { name, url, store }
    }

    pub(crate) async fn drop(self) {
        self.store.pool().close().await;
        if let Ok(admin) = PgPoolOptions::new()
            .max_connections(1)
            .connect(ADMIN_DB)
            .await
        {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&admin)
            .await;
        }
    }
}
