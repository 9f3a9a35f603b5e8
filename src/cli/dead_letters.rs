//! `notify-worker dead-letters`: list, show, stats, replay, purge.

use super::{
    BodyLimit, BrokerArgs, DatabaseArgs, PublishArgs,
    print::{print_detail, print_rows, shorten},
};
use crate::{
    console::replay,
    deadletter::queries::{self, Filter, State, When},
    domain::{Channel, Provider},
};
use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};
use std::sync::atomic::AtomicU64;
use tokio_util::sync::CancellationToken;

/// Which dead letters a command is about.
#[derive(Debug, Clone, Args)]
pub struct FilterArgs {
    #[arg(long, value_enum)]
    pub channel: Option<Channel>,
    /// Error code, e.g. invalid_api_key, retries_exhausted.
    #[arg(long)]
    pub code: Option<String>,
    #[arg(long, value_enum)]
    pub provider: Option<Provider>,
    /// Failed at or after: a duration ago (2h, 30m, 7d) or a timestamp.
    #[arg(long)]
    pub since: Option<When>,
    /// Failed before: a duration ago or a timestamp.
    #[arg(long)]
    pub until: Option<When>,
}

impl FilterArgs {
    fn filter(&self, state: State) -> Filter {
        Filter {
            ids: Vec::new(),
            channel: self.channel,
            code: self.code.clone(),
            provider: self.provider,
            since: self.since.clone(),
            until: self.until.clone(),
            state,
            ..Filter::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    Open,
    Replayed,
    All,
}

impl From<StateArg> for State {
    fn from(s: StateArg) -> Self {
        match s {
            StateArg::Open => State::Open,
            StateArg::Replayed => State::Replayed,
            StateArg::All => State::Any,
        }
    }
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
        #[command(flatten)]
        body: BodyLimit,
        #[command(flatten)]
        publish: PublishArgs,
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
    Ok(db.store(true).await?.pool().clone())
}

/// Runs the subcommand; `Ok(false)` when some of it was not done.
pub(crate) async fn run(cmd: DeadLetters) -> anyhow::Result<bool> {
    match cmd {
        DeadLetters::List {
            db,
            filter,
            state,
            limit,
            json,
        } => {
            let rows =
                queries::list(&pool(&db).await?, &filter.filter(state.into()), limit).await?;
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
            let d = queries::show(&pool(&db).await?, id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                print_detail(&d)?;
            }
        }
        DeadLetters::Stats { db, filter, json } => {
            let stats = queries::stats(&pool(&db).await?, &filter.filter(State::Any)).await?;
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
            body,
            publish,
            ids,
            filter,
            all,
            dry_run,
            rate,
        } => {
            let mut f = filter.filter(State::Open);
            f.ids = ids;
            if f.is_empty() && !all {
                bail!(
                    "name dead-letter ids or a filter (--code, --channel, --provider, --since, --until), or pass --all"
                );
            }
            let db = pool(&db).await?;
            if dry_run {
                let (count, sample) = queries::replay_preview(&db, &f).await?;
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
                return Ok(true);
            }
            let publisher = publish.publisher(&broker, &body).await?;
            let counted = AtomicU64::new(0);
            let never = CancellationToken::new();
            let result = replay::run(&db, &publisher, &f, rate, &counted, &never).await;
            publisher.close().await;
            let done = result?;
            println!("replayed {} dead letter(s)", done.confirmed);
            if let Some((id, error)) = done.failed {
                let (left, _) = queries::replay_preview(&db, &f).await?;
                eprintln!("notify-worker: dead letter {id} was not replayed: {error}");
                println!(
                    "{left} dead letter(s) not replayed (still open, including {id}); run replay again"
                );
                return Ok(false);
            }
        }
        DeadLetters::Purge {
            db,
            before,
            filter,
            dry_run,
        } => {
            let n = queries::purge(
                &pool(&db).await?,
                &before,
                &filter.filter(State::Any),
                dry_run,
            )
            .await?;
            if dry_run {
                println!("would delete {n} dead letter(s)");
            } else {
                println!("deleted {n} dead letter(s)");
            }
        }
    }
    Ok(true)
}
