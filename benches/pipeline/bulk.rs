//! (j) Bulk publishing: `enqueue --file` of N jobs (the release binary, as
//! an operator runs it) with confirms in flight up to the window, against
//! the same with a window of 1 (one confirm at a time, as before) and a
//! bare lapin publisher pipelining 1,000 confirms (the broker's pace), all
//! in the same run.

use super::{AMQP, BIN, Env};
use notify_worker::QueueType;
use std::{io::Write, time::Instant};

/// A file of `n` SMS jobs, one a line.
fn job_file(n: usize) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let mut out = std::io::BufWriter::new(file.as_file_mut());
    for i in 0..n {
        writeln!(
            out,
            r#"{{"channel":"sms","id":"e{i:08}","from":"BRAND","to":"+91{i:010}","message":"Your OTP is 482910"}}"#
        )
        .unwrap();
    }
    out.flush().unwrap();
    drop(out);
    file
}

/// Jobs/s of `enqueue --file` with `window` confirms in flight, the whole
/// process timed (start-up, connecting and declaring included).
pub(crate) async fn enqueue(env: &Env, n: usize, window: usize) -> f64 {
    let file = job_file(n);
    let queue_type = match env.topology.queue_type {
        QueueType::Quorum => "quorum",
        QueueType::Classic => "classic",
    };
    let started = Instant::now();
    let out = tokio::process::Command::new(BIN)
        .env_clear()
        .env("AMQP_URL", AMQP)
        .env("NOTIFY_EXCHANGE", &env.topology.exchange)
        .env("NOTIFY_EMAIL_QUEUE", &env.topology.email_queue)
        .env("NOTIFY_SMS_QUEUE", &env.topology.sms_queue)
        .env("NOTIFY_QUEUE_TYPE", queue_type)
        .env("NOTIFY_PUBLISH_WINDOW", window.to_string())
        .args(["enqueue", "--file"])
        .arg(file.path())
        .output()
        .await
        .unwrap();
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&format!("published {n} job(s), 0 failed")),
        "enqueue: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ready = env.ready(&env.topology.sms_queue).await as usize;
    assert_eq!(ready, n, "every confirmed job is in the queue");
    purge(env).await;
    n as f64 / took.as_secs_f64()
}

/// Jobs/s of a bare lapin publisher, 1,000 confirms in flight.
pub(crate) async fn lapin(env: &Env, n: usize) -> f64 {
    let started = Instant::now();
    env.publish(n, true).await;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    assert_eq!(env.ready(&env.topology.sms_queue).await as usize, n);
    purge(env).await;
    rate
}

async fn purge(env: &Env) {
    let ch = env.amqp.create_channel().await.unwrap();
    ch.queue_purge(env.topology.sms_queue.as_str().into(), Default::default())
        .await
        .unwrap();
    let _ = ch.close(200, "ok".into()).await;
}
