//! The operators' questions to the dead-letter table: list, show, stats,
//! purge, and the row-at-a-time locking replay needs. Printing is in `cli`.

use crate::domain::{Channel, Provider};
use serde::{Serialize, Serializer};
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
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

/// Open (not replayed) rows, replayed rows, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum State {
    #[default]
    Any,
    Open,
    Replayed,
}

/// Which rows.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    pub(crate) ids: Vec<i64>,
    pub(crate) channel: Option<Channel>,
    pub(crate) code: Option<String>,
    pub(crate) provider: Option<Provider>,
    pub(crate) since: Option<When>,
    pub(crate) until: Option<When>,
    /// The last provider status (the console's groups are by it).
    pub(crate) http_status: Option<i32>,
    /// Rows up to this id only: a replay confirmed for N rows stays at
    /// those N, whatever fails after the confirmation.
    pub(crate) max_id: Option<i64>,
    pub(crate) state: State,
}

impl Filter {
    /// True when it names no rows in particular (replay refuses that).
    pub(crate) fn is_empty(&self) -> bool {
        self.ids.is_empty()
            && self.channel.is_none()
            && self.code.is_none()
            && self.provider.is_none()
            && self.since.is_none()
            && self.until.is_none()
            && self.http_status.is_none()
    }

    fn open(&self) -> Self {
        Self {
            state: State::Open,
            ..self.clone()
        }
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
        if let Some(p) = self.provider {
            q.push(" AND provider = ").push_bind(p.as_str());
        }
        for (when, op) in [(&self.since, " >= "), (&self.until, " < ")] {
            if let Some(when) = when {
                q.push(" AND failed_at").push(op);
                push_when(q, when);
            }
        }
        if let Some(s) = self.http_status {
            q.push(" AND http_status = ").push_bind(s);
        }
        if let Some(id) = self.max_id {
            q.push(" AND id <= ").push_bind(id);
        }
        match self.state {
            State::Open => q.push(" AND replayed_at IS NULL"),
            State::Replayed => q.push(" AND replayed_at IS NOT NULL"),
            State::Any => q,
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
pub(crate) enum QueryError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("no dead letter with id {0}")]
    NotFound(i64),
}

/// An ISO 8601 UTC timestamp, as text.
macro_rules! utc {
    ($column:literal) => {
        concat!(
            "to_char(",
            $column,
            r#" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')"#
        )
    };
}

/// The columns of a [`Listed`], named as its fields.
const LISTED: &str = concat!(
    "id, ",
    utc!("failed_at"),
    " AS failed_at, channel, provider, error_code, http_status, attempts, job_id, reason, \
     replayed_at IS NOT NULL AS replayed"
);

/// One row as listed.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(crate) struct Listed {
    pub(crate) id: i64,
    pub(crate) failed_at: String,
    pub(crate) channel: String,
    pub(crate) provider: Option<String>,
    pub(crate) error_code: String,
    pub(crate) http_status: Option<i32>,
    pub(crate) attempts: i32,
    pub(crate) job_id: String,
    pub(crate) reason: String,
    pub(crate) replayed: bool,
}

pub(crate) async fn list(
    db: &PgPool,
    filter: &Filter,
    limit: i64,
) -> Result<Vec<Listed>, QueryError> {
    let mut q = QueryBuilder::new(format!("SELECT {LISTED} FROM dead_letters"));
    filter.push_where(&mut q);
    q.push(" ORDER BY failed_at DESC, id DESC LIMIT ")
        .push_bind(limit);
    Ok(q.build_query_as().fetch_all(db).await?)
}

/// One page of rows, newest first by id; `cursor` is the last id of the
/// page before (keyset paging: no OFFSET, stable while rows arrive).
pub(crate) async fn page(
    db: &PgPool,
    filter: &Filter,
    cursor: Option<i64>,
    limit: i64,
) -> Result<Vec<Listed>, QueryError> {
    let mut q = QueryBuilder::new(format!("SELECT {LISTED} FROM dead_letters"));
    filter.push_where(&mut q);
    if let Some(c) = cursor {
        q.push(" AND id < ").push_bind(c);
    }
    q.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
    Ok(q.build_query_as().fetch_all(db).await?)
}

/// Rows by provider, code and last status: the console's first view.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(crate) struct Group {
    pub(crate) provider: Option<String>,
    pub(crate) error_code: String,
    pub(crate) http_status: Option<i32>,
    pub(crate) count: i64,
    pub(crate) open: i64,
    pub(crate) first_seen: String,
    pub(crate) last_seen: String,
    /// The newest row's reason.
    pub(crate) reason: String,
    /// The newest row's id, the highest of the group.
    pub(crate) last_id: i64,
}

/// At most `limit` groups, most open rows first. The reason is read from
/// each group's newest row only (no aggregate over the reasons).
pub(crate) async fn groups(
    db: &PgPool,
    filter: &Filter,
    limit: i64,
) -> Result<Vec<Group>, QueryError> {
    let mut q = QueryBuilder::new(
        "WITH g AS (SELECT provider, error_code, http_status, count(*) AS count, \
         count(*) FILTER (WHERE replayed_at IS NULL) AS open, min(failed_at) AS first, \
         max(failed_at) AS last, max(id) AS last_id FROM dead_letters",
    );
    filter.push_where(&mut q);
    q.push(" GROUP BY 1, 2, 3 ORDER BY open DESC, count DESC, last_id DESC LIMIT ")
        .push_bind(limit);
    q.push(concat!(
        ") SELECT g.provider, g.error_code, g.http_status, g.count, g.open, ",
        utc!("g.first"),
        " AS first_seen, ",
        utc!("g.last"),
        " AS last_seen, d.reason, g.last_id FROM g JOIN dead_letters d ON d.id = g.last_id \
         ORDER BY g.open DESC, g.count DESC, g.last_id DESC"
    ));
    Ok(q.build_query_as().fetch_all(db).await?)
}

/// How many rows `filter` names, and the highest id among them.
pub(crate) async fn count(db: &PgPool, filter: &Filter) -> Result<(i64, Option<i64>), QueryError> {
    let mut q = QueryBuilder::new("SELECT count(*), max(id) FROM dead_letters");
    filter.push_where(&mut q);
    Ok(q.build_query_as().fetch_one(db).await?)
}

/// Everything about one row.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(crate) struct Detail {
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub(crate) row: Listed,
    pub(crate) source_queue: String,
    pub(crate) provider_response: Option<String>,
    pub(crate) payload: Option<serde_json::Value>,
    /// The raw body when it was not JSON; shown lossily as text.
    #[serde(serialize_with = "lossy_text")]
    pub(crate) raw_payload: Option<Vec<u8>>,
    pub(crate) replayed_at: Option<String>,
    /// The W3C `traceparent` of the job's trace, when it had one.
    pub(crate) trace_parent: Option<String>,
}

fn lossy_text<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    bytes.as_deref().map(String::from_utf8_lossy).serialize(s)
}

pub(crate) async fn show(db: &PgPool, id: i64) -> Result<Detail, QueryError> {
    let sql = format!(
        "SELECT {LISTED}, source_queue, provider_response, payload, raw_payload, {} AS replayed_at, \
         trace_parent FROM dead_letters WHERE id = $1",
        utc!("replayed_at")
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(db)
        .await?
        .ok_or(QueryError::NotFound(id))
}

/// Count per error code and channel.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(crate) struct Stat {
    pub(crate) error_code: String,
    pub(crate) channel: String,
    pub(crate) count: i64,
    pub(crate) open: i64,
    pub(crate) last: String,
}

pub(crate) async fn stats(db: &PgPool, filter: &Filter) -> Result<Vec<Stat>, QueryError> {
    let mut q = QueryBuilder::new(concat!(
        "SELECT error_code, channel, count(*) AS count, \
         count(*) FILTER (WHERE replayed_at IS NULL) AS open, ",
        utc!("max(failed_at)"),
        " AS last FROM dead_letters"
    ));
    filter.push_where(&mut q);
    q.push(" GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2");
    Ok(q.build_query_as().fetch_all(db).await?)
}

/// Deletes rows that failed before `before` and match `filter`, or counts
/// them when `dry_run`.
pub(crate) async fn purge(
    db: &PgPool,
    before: &When,
    filter: &Filter,
    dry_run: bool,
) -> Result<u64, QueryError> {
    let mut q = QueryBuilder::new(if dry_run {
        "SELECT count(*) FROM dead_letters"
    } else {
        "DELETE FROM dead_letters"
    });
    filter.push_where(&mut q);
    q.push(" AND failed_at < ");
    push_when(&mut q, before);
    if dry_run {
        let (n,): (i64,) = q.build_query_as().fetch_one(db).await?;
        Ok(u64::try_from(n).unwrap_or(0))
    } else {
        Ok(q.build().execute(db).await?.rows_affected())
    }
}

/// Counts the open rows `filter` names, with a few of them, for `--dry-run`.
pub(crate) async fn replay_preview(
    db: &PgPool,
    filter: &Filter,
) -> Result<(i64, Vec<Listed>), QueryError> {
    let open = filter.open();
    let mut q = QueryBuilder::new("SELECT count(*) FROM dead_letters");
    open.push_where(&mut q);
    let (count,): (i64,) = q.build_query_as().fetch_one(db).await?;
    Ok((count, list(db, &open, 5).await?))
}

/// An open row locked for replay.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ToReplay {
    pub(crate) id: i64,
    pub(crate) job_id: String,
    #[sqlx(try_from = "String")]
    pub(crate) channel: Channel,
    payload: Option<serde_json::Value>,
    raw_payload: Option<Vec<u8>>,
    /// The original job's trace, for the replay's span to link to.
    pub(crate) trace_parent: Option<String>,
}

impl ToReplay {
    /// The body to publish again: the JSON as stored, or the raw bytes.
    pub(crate) fn body(&self) -> Vec<u8> {
        match (&self.payload, &self.raw_payload) {
            (Some(p), _) => serde_json::to_vec(p).unwrap_or_default(),
            (None, Some(r)) => r.clone(),
            (None, None) => Vec::new(),
        }
    }
}

/// Locks the next open row `filter` names after id `after`, skipping rows
/// another replay holds, so no row is published twice by two replays.
pub(crate) async fn lock_next_open(
    tx: &mut PgConnection,
    filter: &Filter,
    after: i64,
) -> Result<Option<ToReplay>, QueryError> {
    let mut q = QueryBuilder::new(
        "SELECT id, job_id, channel, payload, raw_payload, trace_parent FROM dead_letters",
    );
    filter.open().push_where(&mut q);
    q.push(" AND id > ").push_bind(after);
    q.push(" ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED");
    Ok(q.build_query_as().fetch_optional(tx).await?)
}

pub(crate) async fn mark_replayed(tx: &mut PgConnection, id: i64) -> Result<(), QueryError> {
    sqlx::query("UPDATE dead_letters SET replayed_at = clock_timestamp() WHERE id = $1")
        .bind(id)
        .execute(tx)
        .await?;
    Ok(())
}
