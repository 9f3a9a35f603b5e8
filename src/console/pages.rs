//! The console's handlers: read the request, ask the database, render.
//! Every POST form carries the session's CSRF token ([`Posted`]).

use super::{
    Console, Failure, auth,
    auth::Caller,
    html,
    params::{self, BadParam, FilterParams, MAX_GROUPS},
    replay::Start,
    views::{DeadLetterView, DeliveryView},
};
use crate::{
    deadletter::queries::{self, Filter, State as RowState},
    ledger::queries as ledger,
};
use axum::{
    Extension,
    body::Bytes,
    extract::{FromRequest, Path, Query, Request, State, rejection::QueryRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use maud::Markup;
use std::{sync::Arc, time::Duration};

/// A [`Failure`] shown as a page.
pub(super) struct OnPage(Failure);

impl<E: Into<Failure>> From<E> for OnPage {
    fn from(e: E) -> Self {
        Self(e.into())
    }
}

impl IntoResponse for OnPage {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let title = status.canonical_reason().unwrap_or("Error");
        (status, html::message(title, &self.0.to_string())).into_response()
    }
}

type Page = Result<Response, OnPage>;

/// What a replay form selects: the rows, in words, and the fields that
/// carry the selection on to the next form.
struct Selection {
    filter: Filter,
    words: String,
    hidden: Vec<(String, String)>,
}

fn csrf_of(c: &Console, caller: &Caller) -> String {
    match caller {
        Caller::Session(s) => c.token.csrf(s),
        // A bearer caller (a script) needs none; forms still render.
        Caller::Bearer => String::new(),
    }
}

fn query(q: Result<Query<FilterParams>, QueryRejection>) -> Result<FilterParams, BadParam> {
    q.map(|Query(p)| p)
        .map_err(|e| BadParam(format!("query string: {}", e.body_text())))
}

/// `GET /console`: providers, groups, the filter, the list.
pub(super) async fn home(
    State(c): State<Arc<Console>>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<FilterParams>, QueryRejection>,
) -> Page {
    let p = query(q)?;
    let filter = p.filter()?;
    let limit = p.limit()?;
    let rows = queries::page(&c.db, &filter, p.cursor()?, limit).await?;
    let groups = queries::groups(&c.db, &filter, MAX_GROUPS).await?;
    let open_rows = Filter {
        state: RowState::Open,
        ..filter
    };
    let (open, _) = queries::count(&c.db, &open_rows).await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    let csrf = csrf_of(&c, &caller);
    let states: Vec<_> = c.gates.iter().map(|g| g.state()).collect();
    let body = maud::html! {
        (html::providers(&states))
        (html::groups(&groups))
        (html::filter_form(&p))
        (html::list(&rows, &p, open, &csrf, next))
    };
    Ok(html::page("Dead letters", Some(&csrf), body).into_response())
}

/// `GET /console/login` with a session: nothing to do there.
pub(super) async fn logged_in() -> Redirect {
    Redirect::to("/console")
}

/// `GET /console/dead-letters/{id}`: everything about one, masked unless
/// `reveal=1` (logged).
pub(super) async fn detail(
    State(c): State<Arc<Console>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: Result<Query<FilterParams>, QueryRejection>,
) -> Page {
    let reveal = query(q)?.reveal();
    let id = id
        .parse::<i64>()
        .map_err(|_| BadParam("a dead-letter id is a number".into()))?;
    let d = queries::show(&c.db, id).await?;
    let deliveries = ledger::show(&c.db, &d.row.job_id, Some(&d.row.channel)).await?;
    if reveal {
        c.revealed(&caller, "dead letter", &id.to_string());
    }
    let view = DeadLetterView::new(d, reveal);
    let deliveries: Vec<_> = deliveries
        .into_iter()
        .map(|x| DeliveryView::new(x, reveal))
        .collect();
    let csrf = csrf_of(&c, &caller);
    let title = format!("Dead letter {id}");
    Ok(html::page(&title, Some(&csrf), html::detail(&view, &deliveries, &csrf)).into_response())
}

/// A form's fields, read only once its CSRF token matched the session.
pub(super) struct Posted(Vec<(String, String)>);

impl Posted {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The filter fields, as [`FilterParams`].
    fn filter(&self) -> FilterParams {
        let f = |k: &str| self.get(k).map(str::to_owned);
        FilterParams {
            code: f("code"),
            channel: f("channel"),
            provider: f("provider"),
            since: f("since"),
            until: f("until"),
            state: None,
            http_status: f("http_status"),
            ..FilterParams::default()
        }
    }
}

impl FromRequest<Arc<Console>> for Posted {
    type Rejection = Response;

    async fn from_request(req: Request, state: &Arc<Console>) -> Result<Self, Response> {
        let caller = req.extensions().get::<Caller>().cloned();
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| (StatusCode::BAD_REQUEST, e.body_text()).into_response())?;
        let fields: Vec<(String, String)> = form_urlencoded::parse(&bytes).into_owned().collect();
        let given = fields
            .iter()
            .find(|(k, _)| k == "csrf")
            .map_or("", |(_, v)| v.as_str());
        let ok = match caller {
            Some(Caller::Bearer) => true,
            Some(Caller::Session(s)) => state.token.csrf_matches(&s, given),
            None => false,
        };
        if !ok {
            tracing::warn!("console: form refused, CSRF token missing or wrong");
            return Err((StatusCode::FORBIDDEN, html::message("Refused", "This form has expired or did not come from this console; reload the page and try again.")).into_response());
        }
        Ok(Self(fields))
    }
}

/// The selection a replay form names: ids, or the filter on screen.
fn selection(form: &Posted) -> Result<Selection, Failure> {
    let mut hidden = Vec::new();
    let (mut filter, words) = if form.get("scope") == Some("filter") {
        let p = form.filter();
        let f = p.filter()?;
        hidden.push(("scope".to_owned(), "filter".to_owned()));
        hidden.extend(p.pairs().into_iter().map(|(k, v)| (k.to_owned(), v)));
        (f, format!("the filter {}", p.describe()))
    } else {
        let ids = params::ids(form.all("ids"))?;
        if ids.is_empty() {
            return Err(BadParam("select at least one dead letter".into()).into());
        }
        hidden.extend(ids.iter().map(|id| ("ids".to_owned(), id.to_string())));
        let words = format!("{} selected", ids.len());
        (
            Filter {
                ids,
                ..Filter::default()
            },
            words,
        )
    };
    filter.state = RowState::Open;
    Ok(Selection {
        filter,
        words,
        hidden,
    })
}

/// `POST /console/replay/confirm`: the count and the pace, nothing run yet.
pub(super) async fn confirm(
    State(c): State<Arc<Console>>,
    Extension(caller): Extension<Caller>,
    form: Posted,
) -> Page {
    let Selection {
        filter,
        words,
        mut hidden,
    } = selection(&form)?;
    let rate = params::rate(form.get("rate"), c.replay_rate, c.replay_max_rate)?;
    let (count, max_id) = queries::count(&c.db, &filter).await?;
    // The replay stays within the rows counted here.
    if let Some(max) = max_id {
        hidden.push(("upto".to_owned(), max.to_string()));
    }
    let csrf = csrf_of(&c, &caller);
    Ok(html::page(
        "Confirm replay",
        Some(&csrf),
        html::confirm(count, &words, rate, &hidden, &csrf),
    )
    .into_response())
}

/// `POST /console/replay`: starts the confirmed replay, shows its progress.
pub(super) async fn replay(
    State(c): State<Arc<Console>>,
    Extension(caller): Extension<Caller>,
    form: Posted,
) -> Page {
    let Selection {
        mut filter, words, ..
    } = selection(&form)?;
    let rate = params::rate(form.get("rate"), c.replay_rate, c.replay_max_rate)?;
    let upto = form
        .get("upto")
        .map(|u| {
            u.parse::<i64>()
                .map_err(|_| BadParam("`upto` is a dead-letter id".into()))
        })
        .transpose()?;
    filter.max_id = upto;
    let (count, _) = queries::count(&c.db, &filter).await?;
    if count == 0 || upto.is_none() {
        let text = "The selected dead letters are no longer open.";
        return Ok(html::message("Nothing to replay", text).into_response());
    }
    let start = Start {
        filter,
        total: count,
        rate,
        selection: words,
        started_by: caller.label(),
    };
    let started = c.start_replay(start, "the console")?;
    Ok(Redirect::to(&format!("/console/replays/{}", started.id)).into_response())
}

/// `GET /console/replays/{id}`: progress; refreshes itself while running.
pub(super) async fn progress(
    State(c): State<Arc<Console>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Page {
    let p = id
        .parse::<u64>()
        .ok()
        .and_then(|id| c.replays.get(id))
        .ok_or_else(|| Failure::NotFound(format!("no replay {id:.20} on this worker")))?;
    let csrf = csrf_of(&c, &caller);
    let markup: Markup = html::page(&format!("Replay {}", p.id), Some(&csrf), html::progress(&p));
    if p.state == "running" {
        return Ok(([(header::REFRESH, "1")], markup).into_response());
    }
    Ok(markup.into_response())
}

/// `POST /console/login`: the token for a session cookie. Same-origin
/// only; a wrong token waits a little, is logged and counted.
pub(super) async fn login(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(why) = auth::same_origin(&headers) {
        tracing::warn!(%why, "console: cross-site login refused");
        return (StatusCode::FORBIDDEN, html::message("Refused", &why)).into_response();
    }
    let token = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if !c.token.matches(&token) {
        c.metrics.console_login(false);
        tracing::warn!("console: login refused (wrong token)");
        // Slows guessing; the token's length does the rest.
        tokio::time::sleep(Duration::from_millis(300)).await;
        return super::unauthorized("/console/login", Some("That is not the console token."));
    }
    c.metrics.console_login(true);
    tracing::info!("console: logged in");
    let cookie = auth::set_cookie(&c.token.new_session(), &headers);
    ([(header::SET_COOKIE, cookie)], Redirect::to("/console")).into_response()
}

/// `POST /console/logout`.
pub(super) async fn logout(_form: Posted) -> Response {
    (
        [(header::SET_COOKIE, auth::clear_cookie())],
        Redirect::to("/console"),
    )
        .into_response()
}

pub(super) async fn not_found() -> OnPage {
    OnPage(Failure::NotFound("no such console page".into()))
}
