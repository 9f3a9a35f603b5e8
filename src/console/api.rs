//! The JSON API under `/api/v1/`, for dashboards and scripts. Masked by
//! default like the console; `reveal=true` shows personal data and is
//! logged. Lists are keyset-paged and bounded.

use super::{
    Console, Failure,
    auth::Caller,
    mask,
    params::{self, BadParam, FilterParams, MAX_GROUPS},
    replay::{Progress, Start},
    views::{self, DeadLetterView, DeliveryView},
};
use crate::{
    deadletter::queries::{self, Filter, State as RowState},
    ledger::queries as ledger,
};
use axum::{
    Extension, Json,
    extract::{Path, Query, State, rejection::JsonRejection},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = json!({"error": status.canonical_reason().unwrap_or("error"), "message": self.to_string()});
        (status, Json(body)).into_response()
    }
}

type Answer = Result<Response, Failure>;

fn query(
    q: Result<Query<FilterParams>, axum::extract::rejection::QueryRejection>,
) -> Result<FilterParams, Failure> {
    q.map(|Query(p)| p)
        .map_err(|e| BadParam(format!("query string: {}", e.body_text())).into())
}

pub(super) async fn list(
    State(c): State<Arc<Console>>,
    q: Result<Query<FilterParams>, axum::extract::rejection::QueryRejection>,
) -> Answer {
    let p = query(q)?;
    let limit = p.limit()?;
    let mut rows = queries::page(&c.db, &p.filter()?, p.cursor()?, limit).await?;
    // A reason may quote the provider, which may echo a number or a code.
    for r in &mut rows {
        r.reason = mask::digit_runs(&r.reason);
    }
    let next_cursor = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id.to_string()))
        .flatten();
    Ok(Json(json!({"items": rows, "next_cursor": next_cursor})).into_response())
}

pub(super) async fn groups(
    State(c): State<Arc<Console>>,
    q: Result<Query<FilterParams>, axum::extract::rejection::QueryRejection>,
) -> Answer {
    let p = query(q)?;
    let groups = queries::groups(&c.db, &p.filter()?, MAX_GROUPS).await?;
    let items: Vec<_> = groups.iter().map(views::group_json).collect();
    Ok(Json(json!({ "items": items })).into_response())
}

pub(super) async fn show(
    State(c): State<Arc<Console>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: Result<Query<FilterParams>, axum::extract::rejection::QueryRejection>,
) -> Answer {
    let id = id
        .parse::<i64>()
        .map_err(|_| BadParam("a dead-letter id is a number".into()))?;
    let reveal = query(q)?.reveal();
    let detail = queries::show(&c.db, id).await?;
    if reveal {
        c.revealed(&caller, "dead letter", &id.to_string());
    }
    Ok(Json(DeadLetterView::new(detail, reveal)).into_response())
}

pub(super) async fn delivery(
    State(c): State<Arc<Console>>,
    Extension(caller): Extension<Caller>,
    Path(job_id): Path<String>,
    q: Result<Query<FilterParams>, axum::extract::rejection::QueryRejection>,
) -> Answer {
    let p = query(q)?;
    let job_id = params::job_id(&job_id)?;
    let channel = p.filter()?.channel.map(|c| c.as_str());
    let rows = ledger::show(&c.db, job_id, channel).await?;
    if rows.is_empty() {
        return Err(Failure::NotFound(format!(
            "the ledger has no delivery of job {job_id} (never claimed, ledger off, or past NOTIFY_LEDGER_RETENTION)"
        )));
    }
    let reveal = p.reveal();
    if reveal {
        c.revealed(&caller, "delivery", job_id);
    }
    let items: Vec<_> = rows
        .into_iter()
        .map(|d| DeliveryView::new(d, reveal))
        .collect();
    Ok(Json(json!({"job_id": job_id, "items": items})).into_response())
}

pub(super) async fn providers(State(c): State<Arc<Console>>) -> Answer {
    let items: Vec<_> = c.gates.iter().map(|g| g.state()).collect();
    Ok(Json(json!({ "items": items })).into_response())
}

pub(super) async fn replays(State(c): State<Arc<Console>>) -> Answer {
    Ok(Json(json!({"items": c.replays.list()})).into_response())
}

pub(super) async fn progress(State(c): State<Arc<Console>>, Path(id): Path<String>) -> Answer {
    let p = id
        .parse::<u64>()
        .ok()
        .and_then(|id| c.replays.get(id))
        .ok_or_else(|| Failure::NotFound(format!("no replay {id:.20} on this worker")))?;
    Ok(Json(p).into_response())
}

pub(super) async fn not_found() -> Failure {
    Failure::NotFound("no such API path; see the README's Console section".into())
}

/// `POST dead-letters/replay`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct ReplayRequest {
    ids: Vec<i64>,
    filter: Option<FilterParams>,
    /// With no ids and an empty filter, replay every open row.
    all: bool,
    dry_run: bool,
    /// Rows a second.
    rate: Option<f64>,
}

pub(super) async fn replay(
    State(c): State<Arc<Console>>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<ReplayRequest>, JsonRejection>,
) -> Answer {
    let Json(req) = body.map_err(|e| BadParam(format!("request body: {}", e.body_text())))?;
    let rate = params::rate(
        req.rate.map(|r| r.to_string()).as_deref(),
        c.replay_rate,
        c.replay_max_rate,
    )?;
    let (mut filter, selection) = if req.ids.is_empty() {
        let p = req.filter.unwrap_or_default();
        let f = p.filter()?;
        if f.is_empty() && !req.all {
            return Err(BadParam(
                "name `ids` or a `filter`, or set \"all\": true to replay every open dead letter"
                    .into(),
            )
            .into());
        }
        (f, p.describe())
    } else {
        let ids = params::checked_ids(req.ids)?;
        let selection = format!("{} selected dead letter(s)", ids.len());
        (
            Filter {
                ids,
                ..Filter::default()
            },
            selection,
        )
    };
    filter.state = RowState::Open;
    let (count, max_id) = queries::count(&c.db, &filter).await?;
    filter.max_id = max_id;
    if req.dry_run {
        let sample = queries::page(&c.db, &filter, None, 5).await?;
        return Ok(Json(json!({
            "dry_run": true, "count": count, "rate_per_second": rate,
            "selection": selection, "sample": sample,
        }))
        .into_response());
    }
    if count == 0 {
        return Ok(
            Json(json!({"count": 0, "replay": null, "message": "nothing open to replay"}))
                .into_response(),
        );
    }
    let start = Start {
        filter,
        total: count,
        rate,
        selection,
        started_by: caller.label(),
    };
    let started = c.start_replay(start, "the API")?;
    let location = format!("/api/v1/replays/{}", started.id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(json!({"count": count, "replay": started})),
    )
        .into_response())
}

impl Console {
    /// Starts a background replay and logs who started it from `from`;
    /// refused (429) while [`super::replay::MAX_RUNNING`] run.
    pub(super) fn start_replay(&self, start: Start, from: &str) -> Result<Progress, Failure> {
        let (count, rate, by) = (start.total, start.rate, start.started_by);
        let started = self.replays.start(start).ok_or_else(|| {
            Failure::Busy(format!(
                "{} replays are running; wait for one to end",
                super::replay::MAX_RUNNING
            ))
        })?;
        tracing::info!(replay = started.id, count, rate, by, selection = %started.selection, from, "replay started");
        Ok(started)
    }

    /// Logs and counts an explicit reveal of personal data.
    pub(super) fn revealed(&self, caller: &Caller, what: &str, id: &str) {
        self.metrics.console_reveal();
        // `audit` marks the line for whoever collects an audit trail.
        tracing::warn!(
            audit = "reveal",
            what,
            id,
            by = caller.label(),
            "console: recipient and message text revealed"
        );
    }
}
