//! (k) What traces cost: the worker's CPU per job with every job's spans
//! exported by OTLP/HTTP to a sink in this process, against traces off, in
//! the same run. Every job carries a producer's `traceparent`, so "off"
//! still reads and forwards it.

use super::{Env, fake, thrift::cpu, wait_until};
use axum::{Router, body::Bytes, extract::State, http::StatusCode, routing::post};
use lapin::types::{AMQPValue, FieldTable, LongString};
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

pub(crate) struct Traced {
    pub(crate) jobs_per_sec: f64,
    pub(crate) cpu_per_job: Duration,
    /// Spans the sink received.
    pub(crate) spans: usize,
}

/// An OTLP/HTTP sink counting the spans it receives.
async fn sink() -> (String, Arc<AtomicUsize>) {
    use prost::Message;
    let exports = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route(
            "/v1/traces",
            post(|State(n): State<Arc<AtomicUsize>>, body: Bytes| async move {
                let request = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(body.as_ref());
                let spans = request.map_or(0, |r| {
                    r.resource_spans
                        .iter()
                        .flat_map(|r| &r.scope_spans)
                        .map(|s| s.spans.len())
                        .sum()
                });
                n.fetch_add(spans, Ordering::Relaxed);
                StatusCode::OK
            }),
        )
        .with_state(exports.clone());
    let listener = super::fake_listener();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, exports)
}

/// `n` email jobs, each with a `traceparent` of its own, their ids tagged
/// `run`: both runs share a database, whose ledger would take a second job
/// of the same id for one already sent.
async fn publish(env: &Env, n: usize, run: &str) {
    env.publish_each("email", n, |i| {
        let body = format!(
            r#"{{"id":"k{run}{i:08}","from":"hello@yourdomain.com","to":"r{i}@example.com","subject":"Hello","html":"<p>Your message here</p>"}}"#
        );
        let mut headers = FieldTable::default();
        headers.insert(
            "traceparent".into(),
            AMQPValue::LongString(LongString::from(format!(
                "00-{:032x}-{:016x}-01",
                i + 1,
                i + 1
            ))),
        );
        (body, Some(headers))
    })
    .await;
}

pub(crate) async fn run(env: &Env, n: usize, exported: bool) -> Traced {
    let (url, fake) = fake(StatusCode::OK, Duration::ZERO).await;
    let (otlp, exports) = sink().await;
    publish(env, n, if exported { "on" } else { "off" }).await;
    let envs: Vec<(&str, &str)> = if exported {
        vec![("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str())]
    } else {
        Vec::new()
    };
    let worker = env
        .worker_with_env(&url, 100, 1, &["--log-level", "info"], &envs)
        .await;
    wait_until("all sent", Duration::from_secs(300), async || {
        fake.count() >= n
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let own = cpu(worker.pid());
    let took = fake.first_to_last();
    worker.stop().await;
    let per = u32::try_from(n).unwrap_or(u32::MAX);
    Traced {
        jobs_per_sec: n as f64 / took.as_secs_f64(),
        cpu_per_job: own / per,
        spans: exports.load(Ordering::Relaxed),
    }
}
