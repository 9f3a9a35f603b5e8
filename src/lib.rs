//! notify-worker: delivers email and SMS jobs from RabbitMQ through the
//! MigoSMTP and Telnxo HTTP APIs, retries what is transient, and writes what
//! cannot succeed to a PostgreSQL dead-letter table.
//!
//! A job's path: [`broker`] consumes it, [`pipeline`] decodes it
//! ([`domain`]), sends it through [`provider`], classifies the answer and
//! settles it: an ack, or a [`deadletter`] row and then an ack. [`app`]
//! assembles the worker, [`ops`] runs it, [`cli`] is the command line.
//!
//! The public surface is what a Rust producer needs ([`Publisher`] and the
//! job types, [`decode`] to check a job as the worker will) and what starts
//! a worker in process ([`cli::Cli`], [`WorkerConfig`], [`Worker`]).

mod app;
mod broker;
pub mod cli;
mod config;
mod console;
mod deadletter;
mod domain;
mod ledger;
mod ops;
mod pipeline;
mod provider;

pub use app::{Worker, WorkerError};
pub use broker::{
    BrokerError, NewEmail, NewJob, NewSms, PublishError, Publisher, QueueType, Topology, declare,
};
pub use config::{ConfigError, WorkerConfig};
pub use domain::{
    ApiKey, Channel, DEFAULT_MAX_BODY_BYTES, DecodeInput, EmailAddress, EmailJob, InvalidJob, Job,
    JobId, KeyError, MAX_ID_CHARS, Message, PhoneNumber, Provider, SmsJob, Text, UnknownName,
    decode,
};
pub use ledger::{Switch as LedgerSwitch, Unavailable as LedgerUnavailable};
/// OpenTelemetry trace context for producers: parse a `traceparent`.
pub use ops::traces;
