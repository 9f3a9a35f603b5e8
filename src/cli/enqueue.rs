//! `notify-worker enqueue`: publish jobs with publisher confirms.

use super::{BodyLimit, BrokerArgs, PublishArgs};
use crate::broker::{NewEmail, NewJob, NewSms, PublishError};
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use std::{io::BufRead, path::PathBuf};

#[derive(Debug, Clone, Args)]
pub struct EnqueueArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub body: BodyLimit,
    #[command(flatten)]
    pub publish: PublishArgs,
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
pub(crate) async fn run(args: EnqueueArgs) -> anyhow::Result<bool> {
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
    let publisher = args.publish.publisher(&args.broker, &args.body).await?;
    let (mut ok, mut failed) = (0usize, 0usize);
    let total = jobs.len();
    for (where_, job) in jobs {
        let result = match job {
            Ok(job) => publisher.publish(&job).await,
            Err(e) => {
                failed += 1;
                eprintln!("notify-worker: {where_}: {e:#}");
                continue;
            }
        };
        match result {
            Ok(()) => ok += 1,
            // The broker takes nothing now: the rest would fail the same way.
            Err(e @ (PublishError::Blocked(_) | PublishError::Timeout(_))) => {
                failed += 1;
                eprintln!("notify-worker: {where_}: {e}");
                break;
            }
            Err(e) => {
                failed += 1;
                eprintln!("notify-worker: {where_}: {e}");
            }
        }
    }
    publisher.close().await;
    let not_tried = total - ok - failed;
    if not_tried > 0 {
        println!("published {ok} job(s), {failed} failed, {not_tried} not tried");
    } else {
        println!("published {ok} job(s), {failed} failed");
    }
    Ok(ok == total)
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
