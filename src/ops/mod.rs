//! Running the worker in production: the admin HTTP server, metrics,
//! logging and the shutdown signal.

pub(crate) mod admin;
pub(crate) mod filewatch;
mod held;
pub(crate) mod logfields;
pub(crate) mod metrics;
pub(crate) mod shutdown;
pub(crate) mod telemetry;
pub mod traces;
