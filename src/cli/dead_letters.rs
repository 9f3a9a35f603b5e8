//! `notify-worker dead-letters`: list, show, stats, replay, purge.

use super::{print_rows, shorten};
use crate::{
    configuration::{BrokerArgs, DatabaseArgs},
    deadletter::DeadLetterStore,
    dlq::{self, Filter, When},
    job::Channel,
    publisher::Publisher,
    secret::redact_url,
};
use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ChannelArg {
    Email,
    Sms,
}

impl From<ChannelArg> for Channel {
    fn from(c: ChannelArg) -> Self {
        match c {
            ChannelArg::Email => Channel::Email,
            ChannelArg::Sms => Channel::Sms,
        }
    }
}

/// Which dead letters a command is about.
#[derive(Debug, Clone, Args)]
pub struct FilterArgs {
    #[arg(long, value_enum)]
    pub channel: Option<ChannelArg>,
    /// Error code, e.g. invalid_api_key, retries_exhausted.
    #[arg(long)]
    pub code: Option<String>,
    /// migosmtp or telnxo.
    #[arg(long)]
    pub provider: Option<String>,
    /// Failed at or after: a duration ago (2h, 30m, 7d) or a timestamp.
    #[arg(long)]
    pub since: Option<When>,
    /// Failed before: a duration ago or a timestamp.
    #[arg(long)]
    pub until: Option<When>,
}

impl FilterArgs {
    fn filter(&self, replayed: Option<bool>) -> Filter {
        Filter {
            ids: Vec::new(),
            channel: self.channel.map(Channel::from),
            code: self.code.clone(),
            provider: self.provider.clone(),
            since: self.since.clone(),
            until: self.until.clone(),
            replayed,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    Open,
    Replayed,
    All,
}

#[derive(Debug, Subcommand)]
pub enum DeadLetters {
    /// List dead letters, newest first.
    List {
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(flatten)]
        filter: FilterArgs,
        /// Open (not replayed) rows, replayed rows, or all.
        #[arg(long, value_enum, default_value_t = StateArg::Open)]
        state: StateArg,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Everything about one dead letter: reason and fix, response, payload.
    Show {
        #[command(flatten)]
        db: DatabaseArgs,
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Counts by error code and channel.
    Stats {
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long)]
        json: bool,
    },
    /// Republish the original payloads to the exchange; mark them replayed.
    Replay {
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(flatten)]
        broker: BrokerArgs,
        /// Dead-letter ids (or use filters).
        ids: Vec<i64>,
        #[command(flatten)]
        filter: FilterArgs,
        /// Replay every open dead letter (when no id or filter is given).
        #[arg(long)]
        all: bool,
        /// Only count, and show a sample.
        #[arg(long)]
        dry_run: bool,
        /// At most this many per second.
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Delete dead letters that failed before a time.
    Purge {
        #[command(flatten)]
        db: DatabaseArgs,
        /// A duration ago (30d) or a timestamp.
        #[arg(long)]
        before: When,
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long)]
        dry_run: bool,
    },
}

async fn pool(db: &DatabaseArgs) -> anyhow::Result<sqlx::PgPool> {
    let store = DeadLetterStore::connect(&db.database_url, &redact_url(&db.database_url)).await?;
    Ok(store.pool().clone())
}

pub async fn dead_letters(cmd: DeadLetters) -> anyhow::Result<()> {
    match cmd {
        DeadLetters::List {
            db,
            filter,
            state,
            limit,
            json,
        } => {
            let replayed = match state {
                StateArg::Open => Some(false),
                StateArg::Replayed => Some(true),
                StateArg::All => None,
            };
            let rows = dlq::list(&pool(&db).await?, &filter.filter(replayed), limit).await?;
            let headers = [
                "ID",
                "FAILED_AT",
                "CHANNEL",
                "CODE",
                "STATUS",
                "ATTEMPTS",
                "STATE",
                "JOB_ID",
                "REASON",
            ];
            print_rows(&rows, json, &headers, |r| {
                vec![
                    r.id.to_string(),
                    r.failed_at.clone(),
                    r.channel.clone(),
                    r.error_code.clone(),
                    r.http_status.map(|s| s.to_string()).unwrap_or_default(),
                    r.attempts.to_string(),
                    if r.replayed { "replayed" } else { "open" }.to_owned(),
                    r.job_id.clone(),
                    shorten(&r.reason, 70),
                ]
            })?;
        }
        DeadLetters::Show { db, id, json } => {
            let d = dlq::show(&pool(&db).await?, id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                let r = &d.row;
                println!("id:                {}", r.id);
                println!("job id:            {}", r.job_id);
                println!("failed at:         {}", r.failed_at);
                println!(
                    "channel:           {} (queue {})",
                    r.channel, d.source_queue
                );
                println!(
                    "provider:          {}",
                    r.provider.as_deref().unwrap_or("-")
                );
                println!("error code:        {}", r.error_code);
                println!(
                    "http status:       {}",
                    r.http_status
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "-".into())
                );
                println!("attempts:          {}", r.attempts);
                println!(
                    "replayed at:       {}",
                    d.replayed_at.as_deref().unwrap_or("-")
                );
                println!("reason and fix:    {}", r.reason);
                println!(
                    "provider response: {}",
                    d.provider_response.as_deref().unwrap_or("-")
                );
                match (&d.payload, &d.raw_payload) {
                    (Some(p), _) => println!("payload:\n{}", serde_json::to_string_pretty(p)?),
                    (None, Some(raw)) => println!("raw payload (not JSON):\n{raw}"),
                    _ => println!("payload: -"),
                }
            }
        }
        DeadLetters::Stats { db, filter, json } => {
            let stats = dlq::stats(&pool(&db).await?, &filter.filter(None)).await?;
            print_rows(
                &stats,
                json,
                &["CODE", "CHANNEL", "COUNT", "OPEN", "LAST"],
                |s| {
                    vec![
                        s.error_code.clone(),
                        s.channel.clone(),
                        s.count.to_string(),
                        s.open.to_string(),
                        s.last.clone(),
                    ]
                },
            )?;
        }
        DeadLetters::Replay {
            db,
            broker,
            ids,
            filter,
            all,
            dry_run,
            rate,
        } => {
            let mut f = filter.filter(Some(false));
            f.ids = ids;
            if f.is_empty() && !all {
                bail!(
                    "name dead-letter ids or a filter (--code, --channel, --provider, --since, --until), or pass --all"
                );
            }
            let db = pool(&db).await?;
            if dry_run {
                let (count, sample) = dlq::replay_preview(&db, &f).await?;
                println!("would replay {count} dead letter(s); sample:");
                for r in sample {
                    println!(
                        "  {} {} {} {} {}",
                        r.id,
                        r.channel,
                        r.error_code,
                        r.job_id,
                        shorten(&r.reason, 60)
                    );
                }
                return Ok(());
            }
            let publisher = Publisher::connect(&broker.amqp_url, &broker.topology()?).await?;
            let result = dlq::replay(&db, &publisher, &f, rate).await;
            publisher.close().await;
            let done = result?;
            println!("replayed {} dead letter(s)", done.published);
        }
        DeadLetters::Purge {
            db,
            before,
            filter,
            dry_run,
        } => {
            let n = dlq::purge(&pool(&db).await?, &before, &filter.filter(None), dry_run).await?;
            if dry_run {
                println!("would delete {n} dead letter(s)");
            } else {
                println!("deleted {n} dead letter(s)");
            }
        }
    }
    Ok(())
}
