//! notify-worker: delivers email and SMS jobs from RabbitMQ through the
//! MigoSMTP and Telnxo HTTP APIs, retries what is transient, and writes what
//! cannot succeed to a PostgreSQL dead-letter table.
//!
//! A job's path: [`consume`] → [`job`] (decode) → [`deliver`] with
//! [`provider`] (send) and [`classify`] → [`settle`], composed in [`process`].

pub mod admin;
pub mod app;
pub mod broker;
pub mod circuit;
pub mod classify;
pub mod cli;
pub mod configuration;
pub mod consume;
pub mod deadletter;
pub mod deliver;
pub mod dlq;
pub mod gate;
pub mod http2;
pub mod job;
pub mod keywatch;
pub mod lanes;
pub mod metrics;
pub mod nodelay;
pub mod process;
pub mod provider;
pub mod publisher;
pub mod retry;
pub mod sandbox;
pub mod secret;
pub mod session;
pub mod settle;
pub mod shutdown;
pub mod telemetry;
pub mod writer;
