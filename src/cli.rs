//! The operator and producer subcommands: `dead-letters`, `enqueue`,
//! `sandbox`, and `run --sandbox`. Parsing here, work in `dlq`,
//! `publisher` and `sandbox`; this module prints.

use crate::{
    configuration::{BrokerArgs, DatabaseArgs, RunArgs},
    deadletter::DeadLetterStore,
    dlq::{self, Filter, When},
    job::Channel,
    publisher::{NewEmail, NewJob, NewSms, Publisher},
    sandbox::{self, FailRule, SandboxConfig},
    secret::{ApiKey, redact_url},
};
use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use std::{io::BufRead, net::SocketAddr, path::PathBuf, time::Duration};
use tokio_util::sync::CancellationToken;

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

#[derive(Debug, Clone, Args)]
pub struct EnqueueArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(subcommand)]
    pub job: Option<EnqueueJob>,
    /// Publish every job in this file: one JSON object per line, each with
    /// `"channel": "email"` or `"sms"` and the job's fields. `-` reads stdin.
    #[arg(long)]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum EnqueueJob {
    /// One email job.
    Email {
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[arg(long)]
        subject: String,
        #[arg(long)]
        html: String,
    },
    /// One SMS job.
    Sms {
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[arg(long)]
        message: String,
    },
}

/// Publishes the jobs; `Ok(false)` when any was not confirmed.
pub async fn enqueue(args: EnqueueArgs) -> anyhow::Result<bool> {
    let jobs: Vec<(String, anyhow::Result<NewJob>)> = match (args.job, &args.file) {
        (
            Some(EnqueueJob::Email {
                id,
                from,
                to,
                subject,
                html,
            }),
            None,
        ) => {
            vec![(
                "job".into(),
                Ok(NewJob::Email(NewEmail {
                    id,
                    from,
                    to,
                    subject,
                    html,
                })),
            )]
        }
        (
            Some(EnqueueJob::Sms {
                id,
                from,
                to,
                message,
            }),
            None,
        ) => {
            vec![(
                "job".into(),
                Ok(NewJob::Sms(NewSms {
                    id,
                    from,
                    to,
                    message,
                })),
            )]
        }
        (Some(_), Some(_)) => bail!("give either a job or --file, not both"),
        (None, Some(path)) => read_jobs(path)?,
        (None, None) => bail!("give a job (enqueue email ..., enqueue sms ...) or --file"),
    };
    let publisher = Publisher::connect(&args.broker.amqp_url, &args.broker.topology()?).await?;
    let (mut ok, mut failed) = (0u64, 0u64);
    for (where_, job) in jobs {
        let result = match job {
            Ok(job) => publisher.publish(&job).await.map_err(anyhow::Error::from),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => ok += 1,
            Err(e) => {
                failed += 1;
                eprintln!("notify-worker: {where_}: {e:#}");
            }
        }
    }
    publisher.close().await;
    println!("published {ok} job(s), {failed} failed");
    Ok(failed == 0)
}

fn read_jobs(path: &PathBuf) -> anyhow::Result<Vec<(String, anyhow::Result<NewJob>)>> {
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Box::new(std::io::BufReader::new(file))
    };
    let mut jobs = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let job = serde_json::from_str::<NewJob>(&line).with_context(|| {
            "not a job (needs \"channel\": \"email\" or \"sms\" and the job's fields)".to_string()
        });
        jobs.push((format!("{} line {}", path.display(), n + 1), job));
    }
    Ok(jobs)
}

#[derive(Debug, Clone, Args)]
pub struct SandboxArgs {
    /// Address to serve both APIs on.
    #[arg(
        long,
        env = "SANDBOX_ADDR",
        value_name = "SANDBOX_ADDR",
        default_value = "127.0.0.1:8025"
    )]
    pub addr: SocketAddr,
    /// The key MigoSMTP accepts.
    #[arg(
        long,
        env = "SANDBOX_MIGOSMTP_KEY",
        value_name = "SANDBOX_MIGOSMTP_KEY",
        hide_env_values = true,
        default_value = "mk_sandbox_email"
    )]
    pub migosmtp_key: String,
    /// The key Telnxo accepts.
    #[arg(
        long,
        env = "SANDBOX_TELNXO_KEY",
        value_name = "SANDBOX_TELNXO_KEY",
        hide_env_values = true,
        default_value = "tk_sandbox_sms"
    )]
    pub telnxo_key: String,
    /// Delay of every answer, in milliseconds.
    #[arg(
        long,
        env = "SANDBOX_LATENCY_MS",
        value_name = "SANDBOX_LATENCY_MS",
        default_value_t = 0
    )]
    pub latency_ms: u64,
    /// Share of calls (0 to 1) answered 503.
    #[arg(
        long,
        env = "SANDBOX_FAIL_RATE",
        value_name = "SANDBOX_FAIL_RATE",
        default_value_t = 0.0
    )]
    pub fail_rate: f64,
    /// Recipients matching PATTERN (`*` is a wildcard) get STATUS, e.g. `*@bounce.test=422`. Repeatable.
    #[arg(long = "fail-to", value_name = "PATTERN=STATUS")]
    pub fail_to: Vec<FailRule>,
}

impl SandboxArgs {
    fn config(&self) -> anyhow::Result<SandboxConfig> {
        if !(0.0..=1.0).contains(&self.fail_rate) {
            bail!("SANDBOX_FAIL_RATE must be between 0 and 1");
        }
        Ok(SandboxConfig {
            migosmtp_key: ApiKey::parse(&self.migosmtp_key, "SANDBOX_MIGOSMTP_KEY")?,
            telnxo_key: ApiKey::parse(&self.telnxo_key, "SANDBOX_TELNXO_KEY")?,
            latency: Duration::from_millis(self.latency_ms),
            fail_rate: self.fail_rate,
            fail_rules: self.fail_to.clone(),
        })
    }
}

/// Serves the sandbox until `shutdown`.
pub async fn sandbox(args: SandboxArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (addr, task) = sandbox::serve(args.addr, args.config()?, shutdown)
        .await
        .with_context(|| format!("cannot listen on SANDBOX_ADDR {}", args.addr))?;
    tracing::info!(%addr, "sandbox providers: POST /v1/email/send, POST /v1/sms/send; request log at GET /_sandbox/requests");
    let _ = task.await;
    Ok(())
}

/// For `run --sandbox`: starts sandbox providers with fresh keys on a free
/// loopback port and points `args` at them.
pub async fn attach_sandbox(
    args: &mut RunArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let email_key = format!("mk_sandbox_{}", uuid::Uuid::new_v4().simple());
    let sms_key = format!("tk_sandbox_{}", uuid::Uuid::new_v4().simple());
    let config = SandboxConfig {
        migosmtp_key: ApiKey::parse(&email_key, "sandbox")?,
        telnxo_key: ApiKey::parse(&sms_key, "sandbox")?,
        latency: Duration::from_millis(50),
        fail_rate: 0.0,
        fail_rules: vec![
            FailRule {
                pattern: "*@bounce.test".into(),
                status: 422,
            },
            FailRule {
                pattern: "*@revoked.test".into(),
                status: 401,
            },
        ],
    };
    let (addr, _task) =
        sandbox::serve(SocketAddr::from(([127, 0, 0, 1], 0)), config, shutdown).await?;
    let url = format!("http://{addr}");
    args.migosmtp_base_url = url.clone();
    args.telnxo_base_url = url;
    args.migosmtp_api_key = Some(email_key);
    args.telnxo_api_key = Some(sms_key);
    args.migosmtp_api_key_file = None;
    args.telnxo_api_key_file = None;
    Ok(addr)
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(max - 1).collect();
        format!("{cut}…")
    }
}

/// One JSON object per line for scripts, or a table for people.
fn print_rows<T: serde::Serialize>(
    rows: &[T],
    json: bool,
    headers: &[&str],
    cells: impl Fn(&T) -> Vec<String>,
) -> anyhow::Result<()> {
    if json {
        for row in rows {
            println!("{}", serde_json::to_string(row)?);
        }
    } else {
        let table: Vec<Vec<String>> = rows.iter().map(cells).collect();
        print_table(headers, &table);
    }
    Ok(())
}

/// Prints left-aligned columns, two spaces apart.
fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

#[cfg(test)]
mod tests {
    use crate::configuration::Cli;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
