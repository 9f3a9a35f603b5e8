//! The console's settings (`notify-worker run`): off unless a token is set.

use crate::{
    ConfigError,
    broker::{DEFAULT_CONFIRM_TIMEOUT, Topology},
    console::{ConsoleConfig, PublishPlan, parse_token},
};
use clap::Args;
use std::{path::PathBuf, time::Duration};

#[derive(Debug, Clone, Args)]
pub struct ConsoleArgs {
    /// Turns the console (/console) and its API (/api/v1/) on; every request
    /// needs it. At least 16 characters.
    #[arg(
        long,
        env = "NOTIFY_CONSOLE_TOKEN",
        value_name = "NOTIFY_CONSOLE_TOKEN",
        hide_env_values = true
    )]
    pub console_token: Option<String>,
    /// The console token from a file, re-read when it changes.
    #[arg(
        long,
        env = "NOTIFY_CONSOLE_TOKEN_FILE",
        value_name = "NOTIFY_CONSOLE_TOKEN_FILE"
    )]
    pub console_token_file: Option<PathBuf>,
    /// A console or API replay's pace unless the operator picks one, per second.
    #[arg(long, env = "NOTIFY_CONSOLE_REPLAY_RATE", value_name = "NOTIFY_CONSOLE_REPLAY_RATE", default_value_t = 20.0, value_parser = super::run::parse_rate)]
    pub console_replay_rate: f64,
    /// The fastest pace a console or API replay may be given, per second.
    #[arg(long, env = "NOTIFY_CONSOLE_REPLAY_MAX_RATE", value_name = "NOTIFY_CONSOLE_REPLAY_MAX_RATE", default_value_t = 500.0, value_parser = super::run::parse_rate)]
    pub console_replay_max_rate: f64,
}

impl ConsoleArgs {
    /// The console's settings, when a token is set (given or as a file).
    pub(super) fn config(
        &self,
        amqp_url: &str,
        topology: &Topology,
        max_body_bytes: usize,
        poll: Duration,
    ) -> Result<Option<ConsoleConfig>, ConfigError> {
        let token = match (&self.console_token, &self.console_token_file) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => {
                return Err(ConfigError::BothKeys {
                    setting: "NOTIFY_CONSOLE_TOKEN",
                });
            }
            (Some(t), None) => parse_token(t, "NOTIFY_CONSOLE_TOKEN"),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| {
                    format!(
                        "NOTIFY_CONSOLE_TOKEN_FILE: cannot read {}: {e}",
                        path.display()
                    )
                })
                .and_then(|t| parse_token(&t, "NOTIFY_CONSOLE_TOKEN_FILE")),
        }
        .map_err(ConfigError::Invalid)?;
        if self.console_replay_rate > self.console_replay_max_rate {
            return Err(ConfigError::Invalid(format!(
                "NOTIFY_CONSOLE_REPLAY_RATE ({}) is above NOTIFY_CONSOLE_REPLAY_MAX_RATE ({})",
                self.console_replay_rate, self.console_replay_max_rate
            )));
        }
        Ok(Some(ConsoleConfig {
            token,
            token_file: self.console_token_file.clone(),
            poll,
            replay_rate: self.console_replay_rate,
            replay_max_rate: self.console_replay_max_rate,
            publish: PublishPlan {
                amqp_url: amqp_url.to_owned(),
                topology: topology.clone(),
                max_body_bytes,
                confirm_timeout: DEFAULT_CONFIRM_TIMEOUT,
            },
        }))
    }
}
