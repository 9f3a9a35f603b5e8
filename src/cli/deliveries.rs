//! `notify-worker deliveries`: what the ledger says of jobs (contract
//! section 7). Read-only.

use super::DatabaseArgs;
use crate::ledger::queries::{self, Delivery, ListFilter, MAX_LIMIT};
use clap::{Args, Subcommand};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

#[derive(Debug, Clone, Subcommand)]
pub enum Deliveries {
    /// One job's record: status, attempts, provider message id, times.
    Show {
        #[command(flatten)]
        database: DatabaseArgs,
        job_id: String,
        /// Only this channel's row (email or sms).
        #[arg(long)]
        channel: Option<String>,
        /// One JSON object a line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Records newest first.
    List(ListArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Only jobs to this recipient (an email address or an E.164 number).
    #[arg(long)]
    pub to: Option<String>,
    /// Only this status: claimed, sent, dead_lettered, expired.
    #[arg(long, value_parser = ["claimed", "sent", "dead_lettered", "expired"])]
    pub status: Option<String>,
    /// Only this channel.
    #[arg(long, value_parser = ["email", "sms"])]
    pub channel: Option<String>,
    /// Only jobs claimed this recently (e.g. 1h, 2d) or since this RFC 3339 time.
    #[arg(long, value_parser = parse_since)]
    pub since: Option<OffsetDateTime>,
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=MAX_LIMIT))]
    pub limit: i64,
    #[arg(long)]
    pub json: bool,
}

/// `1h` back from now, or an RFC 3339 time.
fn parse_since(value: &str) -> Result<OffsetDateTime, String> {
    if let Ok(at) = OffsetDateTime::parse(value, &Rfc3339) {
        return Ok(at);
    }
    let ago = humantime::parse_duration(value)
        .map_err(|_| format!("`{value}` is neither a duration (1h, 2d) nor an RFC 3339 time"))?;
    let ago = time::Duration::try_from(ago).map_err(|e| e.to_string())?;
    Ok(OffsetDateTime::now_utc() - ago)
}

/// Runs the command; `Ok(false)` when `show` found nothing.
pub(crate) async fn run(cmd: Deliveries) -> anyhow::Result<bool> {
    match cmd {
        Deliveries::Show {
            database,
            job_id,
            channel,
            json,
        } => {
            let store = database.store(true).await?;
            let rows = queries::show(store.pool(), &job_id, channel.as_deref()).await?;
            if rows.is_empty() {
                eprintln!(
                    "notify-worker: no ledger record of job {job_id} (never taken, or older than NOTIFY_LEDGER_RETENTION)"
                );
                return Ok(false);
            }
            for row in &rows {
                if json {
                    println!("{}", serde_json::to_string(row)?);
                } else {
                    print_row(row);
                }
            }
            Ok(true)
        }
        Deliveries::List(a) => {
            let store = a.database.store(true).await?;
            let filter = ListFilter {
                to: a.to,
                status: a.status,
                channel: a.channel,
                since: a.since,
                limit: a.limit,
            };
            let rows = queries::list(store.pool(), &filter).await?;
            if a.json {
                for row in &rows {
                    println!("{}", serde_json::to_string(row)?);
                }
            } else {
                println!(
                    "claimed at                chan  status        try recipient            job id                               provider id"
                );
                for r in &rows {
                    println!(
                        "{:<25} {:<5} {:<13} {:>3} {:<20} {:<36} {}",
                        time_text(Some(r.claimed_at)),
                        r.channel,
                        r.status,
                        r.attempts,
                        super::print::shorten(r.recipient.as_deref().unwrap_or("-"), 20),
                        super::print::shorten(&r.job_id, 36),
                        r.provider_message_id.as_deref().unwrap_or("-")
                    );
                }
            }
            Ok(true)
        }
    }
}

fn time_text(t: Option<OffsetDateTime>) -> String {
    t.and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "-".into())
}

fn print_row(r: &Delivery) {
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    println!("job id:              {}", r.job_id);
    println!("channel:             {}", r.channel);
    println!("status:              {}", r.status);
    println!("provider:            {}", or_dash(r.provider.clone()));
    println!("recipient:           {}", or_dash(r.recipient.clone()));
    println!("attempts:            {}", r.attempts);
    println!(
        "http status:         {}",
        or_dash(r.http_status.map(|s| s.to_string()))
    );
    println!(
        "provider message id: {}",
        or_dash(r.provider_message_id.clone())
    );
    println!("error code:          {}", or_dash(r.error_code.clone()));
    println!("claimed at:          {}", time_text(Some(r.claimed_at)));
    println!("settled at:          {}", time_text(r.settled_at));
    println!("claimed by:          {}", or_dash(r.claimed_by.clone()));
    println!("lease until:         {}", time_text(r.lease_until));
    println!("expires at:          {}", time_text(r.expires_at));
}
