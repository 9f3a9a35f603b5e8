//! `notify-worker enqueue`: publish jobs with publisher confirms.

use super::{BodyLimit, BrokerArgs, PublishArgs};
use crate::{
    broker::{NewEmail, NewJob, NewSms, PublishError},
    ops::traces,
};
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
    /// Give each job an `expires_at` this far from now (e.g. 10m), unless
    /// it has one: the worker never sends it later.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub expires_in: Option<std::time::Duration>,
    /// Publish to the urgent lane (`"priority": "urgent"`), served before
    /// the bulk queue: for OTPs and the like.
    #[arg(long)]
    pub urgent: bool,
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

/// Jobs of a file read and published at a time.
const CHUNK: usize = 10_000;

/// Publishes the jobs; `Ok(false)` when any was not confirmed.
pub(crate) async fn run(args: EnqueueArgs) -> anyhow::Result<bool> {
    let mut lines: Box<dyn Iterator<Item = anyhow::Result<(String, anyhow::Result<NewJob>)>>> =
        match (args.job, &args.file) {
            (Some(job), None) => Box::new(std::iter::once(Ok(("job".into(), Ok(job.into()))))),
            (Some(_), Some(_)) => bail!("give either a job or --file, not both"),
            (None, Some(path)) => Box::new(read_jobs(path, args.body.bytes())?),
            (None, None) => bail!("give a job (enqueue email ..., enqueue sms ...) or --file"),
        };
    let publisher = args.publish.publisher(&args.broker, &args.body).await?;
    let window = args.publish.window();
    // A caller's trace, by the environment-variable carrier convention.
    let trace = std::env::var("TRACEPARENT")
        .map(|t| traces::parse_traceparent(&t))
        .unwrap_or_default();
    let (mut ok, mut failed, mut not_tried) = (0usize, 0usize, 0usize);
    let mut stopped: Option<String> = None;
    loop {
        let chunk: Vec<_> = lines.by_ref().take(CHUNK).collect::<anyhow::Result<_>>()?;
        if chunk.is_empty() {
            break;
        }
        if stopped.is_some() {
            not_tried += chunk.iter().filter(|(_, job)| job.is_ok()).count();
            failed += chunk.iter().filter(|(_, job)| job.is_err()).count();
            continue;
        }
        let (jobs, places): (Vec<NewJob>, Vec<String>) = chunk
            .into_iter()
            .filter_map(|(place, job)| match job {
                Ok(job) => Some((job, place)),
                Err(e) => {
                    failed += 1;
                    eprintln!("notify-worker: {place}: {e:#}");
                    None
                }
            })
            .unzip();
        let mut jobs = jobs;
        if let Some(ttl) = args.expires_in {
            let at = time::OffsetDateTime::now_utc()
                + time::Duration::try_from(ttl).unwrap_or(time::Duration::MAX);
            let at = at
                .format(&time::format_description::well_known::Rfc3339)
                .context("--expires-in is too far ahead")?;
            jobs.iter_mut().for_each(|j| j.expire_at(&at));
        }
        if args.urgent {
            jobs.iter_mut().for_each(NewJob::make_urgent);
        }
        let results = publisher.publish_all_in(&jobs, window, &trace).await;
        for (result, place) in results.into_iter().zip(places) {
            match result {
                Ok(()) => ok += 1,
                Err(PublishError::NotTried(why)) => {
                    not_tried += 1;
                    stopped.get_or_insert(why);
                }
                Err(e) => {
                    failed += 1;
                    eprintln!("notify-worker: {place}: {e}");
                }
            }
        }
    }
    publisher.close().await;
    if not_tried > 0 {
        println!("published {ok} job(s), {failed} failed, {not_tried} not tried");
    } else {
        println!("published {ok} job(s), {failed} failed");
    }
    Ok(failed == 0 && not_tried == 0)
}

impl From<EnqueueJob> for NewJob {
    fn from(job: EnqueueJob) -> Self {
        match job {
            EnqueueJob::Email {
                id,
                from,
                to,
                subject,
                html,
            } => NewJob::Email(NewEmail {
                expires_at: None,
                priority: None,
                id,
                from,
                to,
                subject,
                html,
            }),
            EnqueueJob::Sms {
                id,
                from,
                to,
                message,
            } => NewJob::Sms(NewSms {
                expires_at: None,
                priority: None,
                id,
                from,
                to,
                message,
            }),
        }
    }
}

/// The jobs of a file (`-`: stdin), one a line, each with where it stood.
/// A line is read up to the body limit (plus room for `channel`): a longer
/// one cannot be a job the worker takes, and is refused without being held.
fn read_jobs(
    path: &PathBuf,
    max_body_bytes: usize,
) -> anyhow::Result<impl Iterator<Item = anyhow::Result<(String, anyhow::Result<NewJob>)>>> {
    let mut reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Box::new(std::io::BufReader::new(file))
    };
    let name = path.display().to_string();
    let max = max_body_bytes.saturating_add(1024);
    let mut n = 0usize;
    Ok(std::iter::from_fn(move || {
        loop {
            n += 1;
            let line = match read_line(&mut reader, max) {
                Ok(None) => return None,
                Ok(Some(line)) => line,
                Err(e) => {
                    return Some(Err(
                        anyhow::Error::new(e).context(format!("cannot read {name}"))
                    ));
                }
            };
            let place = format!("{name} line {n}");
            let job = match line {
                Line::Text(text) if text.trim().is_empty() => continue,
                Line::Text(text) => serde_json::from_str::<NewJob>(&text).with_context(|| {
                    "not a job (needs \"channel\": \"email\" or \"sms\" and the job's fields)"
                        .to_string()
                }),
                Line::NotUtf8 => Err(anyhow::anyhow!("not UTF-8: a job is UTF-8 JSON")),
                Line::TooLong => Err(anyhow::anyhow!(
                    "longer than {max} bytes: over NOTIFY_MAX_BODY_BYTES, the worker would refuse it"
                )),
            };
            return Some(Ok((place, job)));
        }
    }))
}

enum Line {
    Text(String),
    TooLong,
    NotUtf8,
}

/// One line of at most `max` bytes; a longer one is skipped to its end.
fn read_line(reader: &mut dyn BufRead, max: usize) -> std::io::Result<Option<Line>> {
    let mut buf = Vec::new();
    let read = std::io::Read::take(&mut *reader, max as u64 + 1).read_until(b'\n', &mut buf)?;
    if read == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') && buf.len() > max {
        // Skip the rest of the line without keeping it.
        loop {
            let chunk = reader.fill_buf()?;
            if chunk.is_empty() {
                break;
            }
            match chunk.iter().position(|b| *b == b'\n') {
                Some(at) => {
                    reader.consume(at + 1);
                    break;
                }
                None => {
                    let len = chunk.len();
                    reader.consume(len);
                }
            }
        }
        return Ok(Some(Line::TooLong));
    }
    Ok(Some(match String::from_utf8(buf) {
        Ok(text) => Line::Text(text),
        Err(_) => Line::NotUtf8,
    }))
}
