//! Integration tests against the real RabbitMQ and PostgreSQL on loopback,
//! with fake providers served over HTTP.

mod admin;
mod binary;
mod console;
mod console_browser;
mod decoding;
mod flow;
mod hardening;
mod ledger;
mod operations;
mod outcomes;
mod resilience;
mod retries;
mod sandbox;
mod scale;
mod support;
mod traces;
