//! Sandbox providers: `notify-worker sandbox` and `run --sandbox`. The
//! fake APIs themselves are in [`server`].

mod server;

pub use server::{FailRule, SandboxConfig, serve};

use super::{BodyLimit, RunArgs};
use crate::domain::ApiKey;
use anyhow::{Context, bail};
use clap::Args;
use std::{net::SocketAddr, time::Duration};
use tokio_util::sync::CancellationToken;

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
    #[command(flatten)]
    pub body: BodyLimit,
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
            max_body_bytes: self.body.bytes(),
        })
    }
}

/// Serves the sandbox until `shutdown`.
pub(crate) async fn run(args: SandboxArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (addr, task) = serve(args.addr, args.config()?, shutdown)
        .await
        .with_context(|| format!("cannot listen on SANDBOX_ADDR {}", args.addr))?;
    tracing::info!(%addr, "sandbox providers: POST /v1/email/send, POST /v1/sms/send; request log at GET /_sandbox/requests");
    let _ = task.await;
    Ok(())
}

/// For `run --sandbox`: starts sandbox providers with fresh keys on a free
/// loopback port and points `args` at them.
pub(crate) async fn attach(
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
        max_body_bytes: args.body.bytes(),
    };
    let (addr, _task) = serve(SocketAddr::from(([127, 0, 0, 1], 0)), config, shutdown).await?;
    let url = format!("http://{addr}");
    args.migosmtp_base_url = url.clone();
    args.telnxo_base_url = url;
    args.migosmtp_api_key = Some(email_key);
    args.telnxo_api_key = Some(sms_key);
    args.migosmtp_api_key_file = None;
    args.telnxo_api_key_file = None;
    Ok(addr)
}
