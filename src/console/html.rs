//! The console's markup (maud: every interpolated value is HTML-escaped;
//! nothing here opts out but the fixed style sheet). No script, no
//! external resource: the pages work on an air-gapped cluster.

use super::{
    params::FilterParams,
    replay::Progress,
    views::{DeadLetterView, DeliveryView, summary},
};
use crate::{
    deadletter::queries::{Group, Listed},
    provider::ProviderState,
};
use maud::{DOCTYPE, Markup, PreEscaped, html};

/// The one style sheet, inline; the CSP allows it by its hash.
pub(crate) const CSS: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1b1b1b;background:#fafafa}\
header{background:#20324a;color:#fff;padding:.6em 1.2em;display:flex;justify-content:space-between;align-items:center}\
header a{color:#fff;text-decoration:none;font-weight:600}main{padding:1em 1.2em;max-width:1400px}\
table{border-collapse:collapse;width:100%;margin:.5em 0 1.2em;background:#fff}th,td{border:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top}\
th{background:#eef1f5}pre{background:#fff;border:1px solid #ddd;padding:.6em;white-space:pre-wrap;word-break:break-all;max-height:30em;overflow:auto}\
.bad{color:#a40000}.ok{color:#1d6b1d}.note{background:#fff6d6;border:1px solid #e6d28a;padding:.5em .8em}\
form.inline{display:inline}label{margin-right:.8em}input,select,button{font:inherit}button{cursor:pointer}\
.muted{color:#666}";

/// A page: header, optional logout form, content.
pub(crate) fn page(title: &str, csrf: Option<&str>, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · notify-worker" }
                style { (PreEscaped(CSS)) }
            }
            body {
                header {
                    a href="/console" { "notify-worker console" }
                    @if let Some(csrf) = csrf {
                        form.inline method="post" action="/console/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { h1 { (title) } (content) }
            }
        }
    }
}

pub(crate) fn login(message: Option<&str>) -> Markup {
    page(
        "Log in",
        None,
        html! {
            @if let Some(m) = message { p.bad { (m) } }
            p { "The console and its API need the token set in NOTIFY_CONSOLE_TOKEN (or NOTIFY_CONSOLE_TOKEN_FILE)." }
            form method="post" action="/console/login" {
                label { "Token " input type="password" name="token" autocomplete="current-password" required; }
                button type="submit" { "Log in" }
            }
        },
    )
}

pub(crate) fn message(title: &str, text: &str) -> Markup {
    page(
        title,
        None,
        html! { p { (text) } p { a href="/console" { "Back to the console" } } },
    )
}

pub(crate) fn providers(states: &[ProviderState]) -> Markup {
    html! {
        h2 { "Providers" }
        table {
            tr { th { "provider" } th { "state" } th { "breaker" } th { "in flight" } th { "pace" } th { "fix" } }
            @for s in states {
                tr {
                    td { (s.provider) " (" (s.channel) ")" }
                    @match &s.pause {
                        Some(p) => td.bad { "paused: " (p.kind) " " (p.reason)
                            @if let Some(u) = &p.until { " until " (u) } @if p.probing { " (probe out)" } },
                        None => td.ok { "sending" },
                    }
                    td { (s.breaker.state) " (" (s.breaker.failures_in_a_row) "/" (s.breaker.threshold) " failures)" }
                    td { (s.flow.in_flight) " / " (s.flow.in_flight_limit) }
                    td {
                        @match s.flow.pace_per_second { Some(p) => { (format!("{p:.1}")) "/s" }, None => "unpaced" }
                        @if let Some(c) = s.flow.ceiling_per_second { " (ceiling " (c) "/s)" }
                        @if let Some(h) = &s.flow.held_until { " held until " (h) }
                    }
                    td { @if let Some(p) = &s.pause { (p.fix) } }
                }
            }
        }
    }
}

pub(crate) fn groups(groups: &[Group]) -> Markup {
    html! {
        h2 { "Failures by cause" }
        @if groups.is_empty() { p.muted { "No dead letters match." } }
        @else {
            table {
                tr { th { "open" } th { "total" } th { "provider" } th { "code" } th { "status" } th { "first seen" } th { "last seen" } th { "reason and fix" } }
                @for g in groups {
                    @let link = FilterParams {
                        provider: g.provider.clone(), code: Some(g.error_code.clone()),
                        http_status: g.http_status.map(|s| s.to_string()), ..Default::default()
                    };
                    tr.group {
                        td { a href={ "/console?" (link.query(&[])) } { (g.open) } }
                        td { (g.count) }
                        td { (g.provider.as_deref().unwrap_or("-")) }
                        td.code { (g.error_code) }
                        td { @if let Some(s) = g.http_status { (s) } }
                        td { (g.first_seen) }
                        td { (g.last_seen) }
                        td { (summary(g)) br; span.muted { (super::mask::digit_runs(&g.reason)) } }
                    }
                }
            }
        }
    }
}

pub(crate) fn filter_form(p: &FilterParams) -> Markup {
    let v = |o: &Option<String>| o.clone().unwrap_or_default();
    let option = |name: &str, current: &Option<String>| {
        let selected = current.as_deref() == Some(name);
        html! { option value=(name) selected[selected] { (name) } }
    };
    html! {
        h2 { "Dead letters" }
        form id="filter" method="get" action="/console" {
            label { "code " input name="code" value=(v(&p.code)) maxlength="100" size="18"; }
            label { "channel " select name="channel" { option value="" { "any" } (option("email", &p.channel)) (option("sms", &p.channel)) } }
            label { "provider " select name="provider" { option value="" { "any" } (option("migosmtp", &p.provider)) (option("telnxo", &p.provider)) } }
            label { "HTTP status " input name="http_status" value=(v(&p.http_status)) maxlength="3" size="4"; }
            label { "since " input name="since" value=(v(&p.since)) maxlength="40" size="10" placeholder="2h"; }
            label { "state " select name="state" { (option("open", &p.state)) (option("replayed", &p.state)) (option("all", &p.state)) } }
            button type="submit" { "Filter" }
        }
    }
}

/// The list, with checkboxes for a replay of a selection, the button for
/// the filtered set, and the next page.
pub(crate) fn list(
    rows: &[Listed],
    p: &FilterParams,
    open: i64,
    csrf: &str,
    next: Option<i64>,
) -> Markup {
    html! {
        @if rows.is_empty() { p.muted { "No dead letters match this filter." } }
        @else {
            form id="selection" method="post" action="/console/replay/confirm" {
                input type="hidden" name="csrf" value=(csrf);
                table id="dead-letters" {
                    tr { th { "" } th { "id" } th { "failed at" } th { "channel" } th { "provider" } th { "code" } th { "status" } th { "attempts" } th { "state" } th { "job" } th { "reason" } }
                    @for r in rows {
                        tr.row data-id=(r.id) {
                            td { @if !r.replayed { input type="checkbox" name="ids" value=(r.id) aria-label={ "select " (r.id) }; } }
                            td { a href={ "/console/dead-letters/" (r.id) } { (r.id) } }
                            td { (r.failed_at) } td { (r.channel) } td { (r.provider.as_deref().unwrap_or("-")) }
                            td { (r.error_code) } td { @if let Some(s) = r.http_status { (s) } } td { (r.attempts) }
                            td.state { @if r.replayed { "replayed" } @else { "open" } }
                            td { (r.job_id) }
                            td { (super::mask::digit_runs(&shorten(&r.reason, 120))) }
                        }
                    }
                }
                button id="replay-selected" type="submit" { "Replay selected…" }
            }
        }
        @if let Some(cursor) = next {
            p { a id="older" href={ "/console?" (p.query(&[("cursor", cursor.to_string())])) } { "Older →" } }
        }
        form id="replay-filtered" method="post" action="/console/replay/confirm" {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="scope" value="filter";
            @for (k, v) in p.pairs() { input type="hidden" name=(k) value=(v); }
            button type="submit" disabled[open == 0] { "Replay all " (open) " open dead letters matching this filter…" }
        }
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max).collect();
    out.push('…');
    out
}

pub(crate) fn detail(d: &DeadLetterView, deliveries: &[DeliveryView], csrf: &str) -> Markup {
    let r = &d.row;
    html! {
        @if d.revealed { p.note id="revealed" { "Recipient and message text shown unmasked. This view was logged." } }
        @else { p.muted { "Recipients and message text are masked. " a id="reveal" href={ "/console/dead-letters/" (r.id) "?reveal=1" } { "Reveal (logged)" } } }
        table {
            tr { th { "job id" } td { (r.job_id) } }
            tr { th { "channel / queue" } td { (r.channel) " / " (d.source_queue) } }
            tr { th { "provider" } td { (r.provider.as_deref().unwrap_or("-")) } }
            tr { th { "code" } td id="code" { (r.error_code) } }
            tr { th { "last HTTP status" } td { @if let Some(s) = r.http_status { (s) } @else { "-" } } }
            tr { th { "attempts" } td { (r.attempts) } }
            tr { th { "failed at" } td { (r.failed_at) } }
            tr { th { "state" } td id="state" { @match &d.replayed_at { Some(at) => { "replayed at " (at) }, None => "open" } } }
            tr { th { "trace id" } td { (d.trace_id.as_deref().unwrap_or("-")) } }
        }
        h2 { "Reason" } p id="reason" { (r.reason) }
        h2 { "Fix" } p id="fix" { (d.fix) }
        h2 { "Provider answer" }
        pre id="provider-response" { (d.provider_response.as_deref().unwrap_or("(none)")) }
        h2 { "Payload" }
        @if let Some(p) = &d.payload { pre id="payload" { (serde_json::to_string_pretty(p).unwrap_or_default()) } }
        @else if let Some(raw) = &d.raw_payload { pre id="payload" { (raw) } }
        @else if let Some(n) = d.raw_payload_bytes { p { "Not JSON: " (n) " bytes, hidden." } }
        h2 { "Delivery record" }
        @if deliveries.is_empty() { p.muted { "No ledger row for this job (never claimed, ledger off, or past its retention)." } }
        @else {
            table {
                tr { th { "status" } th { "attempts" } th { "HTTP" } th { "provider message id" } th { "recipient" } th { "claimed" } th { "settled" } th { "by" } }
                @for v in deliveries {
                    @let x = &v.delivery;
                    tr {
                        td { (x.status) } td { (x.attempts) } td { @if let Some(s) = x.http_status { (s) } }
                        td { (x.provider_message_id.as_deref().unwrap_or("-")) } td { (x.recipient.as_deref().unwrap_or("-")) }
                        td { (x.claimed_at) } td { @if let Some(s) = x.settled_at { (s) } } td { (x.claimed_by.as_deref().unwrap_or("-")) }
                    }
                }
            }
        }
        @if d.replayed_at.is_none() {
            form id="replay-one" method="post" action="/console/replay/confirm" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="ids" value=(r.id);
                button type="submit" { "Replay this dead letter…" }
            }
        }
    }
}

/// The confirmation: the count and the pace, stated before anything runs.
pub(crate) fn confirm(
    count: i64,
    selection: &str,
    rate: f64,
    hidden: &[(String, String)],
    csrf: &str,
) -> Markup {
    let secs = if rate > 0.0 { count as f64 / rate } else { 0.0 };
    html! {
        @if count == 0 { p id="nothing" { "Nothing to replay: " (selection) " holds no open dead letter." } }
        @else {
            p id="confirm-text" { "Replay " strong id="count" { (count) } " open dead letter(s) (" (selection) ") at " strong { (rate) } " a second, about " (format!("{secs:.0}")) " s." }
            form id="replay-confirm" method="post" action="/console/replay" {
                input type="hidden" name="csrf" value=(csrf);
                @for (k, v) in hidden { input type="hidden" name=(k) value=(v); }
                label { "rate per second " input name="rate" value=(rate) size="6"; }
                button id="confirm" type="submit" { "Replay " (count) }
            }
        }
        p { a href="/console" { "Cancel" } }
    }
}

pub(crate) fn progress(p: &Progress) -> Markup {
    html! {
        p id="progress" { "Replay " (p.id) ": " span id="replay-state" { (p.state) } ", " span id="replayed" { (p.replayed) } " of " (p.total) " at " (p.rate_per_second) "/s (" (p.selection) "), started " (p.started_at) " by " (p.started_by) "." }
        @if let Some(e) = &p.error { p.bad { (e) } }
        @if p.state == "running" { p.muted { "This page refreshes itself." } }
        p { a href="/console?state=all" { "Back to the dead letters" } }
    }
}
