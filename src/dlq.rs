//! Dead letters for operators: list, show, stats, replay, purge.
//! Queries here; printing in `cli`.

use crate::{
    job::Channel,
    publisher::{PublishError, Publisher},
};
use serde::Serialize;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use std::time::Duration;

/// A point in time for `--since`/`--until`/`--before`: a duration ago
/// (`2h`, `7d`) or a timestamp Postgres understands (`2026-11-27T10:00:00Z`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum When {
    Ago(Duration),
    At(String),
}

impl std::str::FromStr for When {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(d) = humantime::parse_duration(s) {
            return Ok(When::Ago(d));
        }
        // A timestamp is checked by Postgres; refuse obvious junk here.
        if s.len() >= 10 && s.as_bytes()[..4].iter().all(u8::is_ascii_digit) {
            return Ok(When::At(s.to_owned()));
        }
        Err(format!(
            "`{s}` is neither a duration (like 2h, 30m, 7d) nor a timestamp (like 2026-11-27T10:00:00Z)"
        ))
    }
}

/// Which rows.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub ids: Vec<i64>,
    pub channel: Option<Channel>,
    pub code: Option<String>,
    pub provider: Option<String>,
    pub since: Option<When>,
    pub until: Option<When>,
    /// `Some(false)`: open rows only; `Some(true)`: replayed only; `None`: all.
    pub replayed: Option<bool>,
}

impl Filter {
    /// True when it names no rows in particular (replay refuses that).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
            && self.channel.is_none()
            && self.code.is_none()
            && self.provider.is_none()
            && self.since.is_none()
            && self.until.is_none()
    }

    fn push_where(&self, q: &mut QueryBuilder<Postgres>) {
        q.push(" WHERE TRUE");
        if !self.ids.is_empty() {
            q.push(" AND id = ANY(")
                .push_bind(self.ids.clone())
                .push(")");
        }
        if let Some(c) = self.channel {
            q.push(" AND channel = ").push_bind(c.as_str());
        }
        if let Some(c) = &self.code {
            q.push(" AND error_code = ").push_bind(c.clone());
        }
        if let Some(p) = &self.provider {
            q.push(" AND provider = ").push_bind(p.clone());
        }
        for (when, op) in [(&self.since, " >= "), (&self.until, " < ")] {
            if let Some(when) = when {
                q.push(" AND failed_at").push(op);
                push_when(q, when);
            }
        }
        match self.replayed {
            Some(false) => q.push(" AND replayed_at IS NULL"),
            Some(true) => q.push(" AND replayed_at IS NOT NULL"),
            None => q,
        };
    }
}

fn push_when(q: &mut QueryBuilder<Postgres>, when: &When) {
    match when {
        When::Ago(d) => q
            .push("now() - make_interval(secs => ")
            .push_bind(d.as_secs_f64())
            .push(")"),
        When::At(t) => q
            .push("CAST(")
            .push_bind(t.clone())
            .push(" AS timestamptz)"),
    };
}

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("no dead letter with id {0}")]
    NotFound(i64),
    #[error("replay of dead letter {id}: {source}")]
    Publish { id: i64, source: PublishError },
    #[error("{0}")]
    Usage(String),
}

/// The columns of a [`Listed`], in its order.
const LISTED: &str = r#"id, to_char(failed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), channel, provider, error_code, http_status, attempts, job_id, reason, replayed_at IS NOT NULL"#;

/// One row as listed.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub id: i64,
    pub failed_at: String,
    pub channel: String,
    pub provider: Option<String>,
    pub error_code: String,
    pub http_status: Option<i32>,
    pub attempts: i32,
    pub job_id: String,
    pub reason: String,
    pub replayed: bool,
}

pub async fn list(db: &PgPool, filter: &Filter, limit: i64) -> Result<Vec<Listed>, DlqError> {
    let mut q = QueryBuilder::new(format!("SELECT {LISTED} FROM dead_letters"));
    filter.push_where(&mut q);
    q.push(" ORDER BY failed_at DESC, id DESC LIMIT ")
        .push_bind(limit);
    let rows = q.build().fetch_all(db).await?;
    Ok(rows.iter().map(listed).collect())
}

/// A `Listed` from the first ten columns of a row selected with `LISTED`.
fn listed(r: &sqlx::postgres::PgRow) -> Listed {
    Listed {
        id: r.get(0),
        failed_at: r.get(1),
        channel: r.get(2),
        provider: r.get(3),
        error_code: r.get(4),
        http_status: r.get(5),
        attempts: r.get(6),
        job_id: r.get(7),
        reason: r.get(8),
        replayed: r.get(9),
    }
}

/// Everything about one row.
#[derive(Debug, Clone, Serialize)]
pub struct Detail {
    #[serde(flatten)]
    pub row: Listed,
    pub source_queue: String,
    pub provider_response: Option<String>,
    pub payload: Option<serde_json::Value>,
    /// The raw body, lossily as text, when it was not JSON.
    pub raw_payload: Option<String>,
    pub replayed_at: Option<String>,
}

pub async fn show(db: &PgPool, id: i64) -> Result<Detail, DlqError> {
    let r = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {LISTED}, source_queue, provider_response, payload, raw_payload, \
         to_char(replayed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
         FROM dead_letters WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(db)
    .await?
    .ok_or(DlqError::NotFound(id))?;
    let raw: Option<Vec<u8>> = r.get(13);
    Ok(Detail {
        row: listed(&r),
        source_queue: r.get(10),
        provider_response: r.get(11),
        payload: r.get(12),
        raw_payload: raw.map(|b| String::from_utf8_lossy(&b).into_owned()),
        replayed_at: r.get(14),
    })
}

/// Count per error code and channel.
#[derive(Debug, Clone, Serialize)]
pub struct Stat {
    pub error_code: String,
    pub channel: String,
    pub count: i64,
    pub open: i64,
    pub last: String,
}

pub async fn stats(db: &PgPool, filter: &Filter) -> Result<Vec<Stat>, DlqError> {
    let mut q = QueryBuilder::new(
        "SELECT error_code, channel, count(*), count(*) FILTER (WHERE replayed_at IS NULL), \
         to_char(max(failed_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM dead_letters",
    );
    filter.push_where(&mut q);
    q.push(" GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2");
    let rows = q.build().fetch_all(db).await?;
    Ok(rows
        .into_iter()
        .map(|r| Stat {
            error_code: r.get(0),
            channel: r.get(1),
            count: r.get(2),
            open: r.get(3),
            last: r.get(4),
        })
        .collect())
}

/// Deletes rows that failed before `before` and match `filter`, or counts
/// them when `dry_run`.
pub async fn purge(
    db: &PgPool,
    before: &When,
    filter: &Filter,
    dry_run: bool,
) -> Result<u64, DlqError> {
    let mut q = QueryBuilder::new(if dry_run {
        "SELECT count(*) FROM dead_letters"
    } else {
        "DELETE FROM dead_letters"
    });
    filter.push_where(&mut q);
    q.push(" AND failed_at < ");
    push_when(&mut q, before);
    if dry_run {
        let n: i64 = q.build().fetch_one(db).await?.get(0);
        Ok(u64::try_from(n).unwrap_or(0))
    } else {
        Ok(q.build().execute(db).await?.rows_affected())
    }
}

/// How a replay went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Replayed {
    pub published: u64,
    pub ids: Vec<i64>,
}

/// Counts the open rows `filter` names, with a few of them, for `--dry-run`.
pub async fn replay_preview(db: &PgPool, filter: &Filter) -> Result<(i64, Vec<Listed>), DlqError> {
    let open = Filter {
        replayed: Some(false),
        ..filter.clone()
    };
    let mut q = QueryBuilder::new("SELECT count(*) FROM dead_letters");
    open.push_where(&mut q);
    let count: i64 = q.build().fetch_one(db).await?.get(0);
    Ok((count, list(db, &open, 5).await?))
}

/// Republishes the original payload of each open row `filter` names, one
/// at a time: the row is locked, published with a confirm, marked
/// `replayed_at`, and committed. A row is never published twice, even by
/// two replays at once (the lock is taken with SKIP LOCKED); a crash between
/// the confirm and the commit can publish it again on the next replay.
pub async fn replay(
    db: &PgPool,
    publisher: &Publisher,
    filter: &Filter,
    per_second: Option<f64>,
) -> Result<Replayed, DlqError> {
    let open = Filter {
        replayed: Some(false),
        ..filter.clone()
    };
    let mut done = Replayed::default();
    let mut after = 0i64;
    let pace = per_second
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(1.0 / r));
    let mut tick = pace.map(tokio::time::interval);
    loop {
        let mut tx = db.begin().await?;
        let mut q =
            QueryBuilder::new("SELECT id, job_id, channel, payload, raw_payload FROM dead_letters");
        open.push_where(&mut q);
        q.push(" AND id > ").push_bind(after);
        q.push(" ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED");
        let Some(row) = q.build().fetch_optional(&mut *tx).await? else {
            break;
        };
        let id: i64 = row.get(0);
        after = id;
        let job_id: String = row.get(1);
        let channel = match row.get::<String, _>(2).as_str() {
            "email" => Channel::Email,
            _ => Channel::Sms,
        };
        let payload: Option<serde_json::Value> = row.get(3);
        let raw: Option<Vec<u8>> = row.get(4);
        let body = match (payload, raw) {
            (Some(p), _) => serde_json::to_vec(&p).unwrap_or_default(),
            (None, Some(r)) => r,
            (None, None) => Vec::new(),
        };
        if let Some(t) = tick.as_mut() {
            t.tick().await;
        }
        publisher
            .publish_raw(channel, &body, Some(&job_id))
            .await
            .map_err(|source| DlqError::Publish { id, source })?;
        sqlx::query("UPDATE dead_letters SET replayed_at = now() WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        done.published += 1;
        done.ids.push(id);
    }
    Ok(done)
}
