use super::*;
use proptest::prelude::*;
use std::sync::{Arc, Mutex};
use tracing_subscriber::fmt::MakeWriter;

/// A writer into a shared buffer.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Oops(String);

#[derive(Debug, Clone)]
struct Case {
    s: String,
    t: String,
    u: u64,
    i: i64,
    b: bool,
    o: Option<String>,
}

/// Lines of the kinds the worker writes, and odd ones: a span with
/// fields, raw names, errors, Debug and Display values, a formatted
/// message.
fn emit(c: &Case) {
    let span = tracing::info_span!("job", job_id = c.s.as_str(), n = c.u, r#type = c.b);
    let _in = span.enter();
    tracing::info!(
        job_id = %c.s,
        trace_id = c.o.as_deref(),
        channel = "sms",
        outcome = c.t.as_str(),
        attempts = c.u,
        status = c.o.as_ref().map(|o| o.len() as u64),
        delta = c.i,
        new_row = c.b,
        r#type = c.s.as_str(),
        "job settled"
    );
    tracing::warn!(error = &Oops(c.s.clone()) as &(dyn std::error::Error + 'static), debug = ?c.t, "failed: {}", c.t);
    tracing::info!(c.t);
    tracing::info!(empty = "", neg = -5i64, max = u64::MAX, min = i64::MIN);
}

fn text(plain: bool, c: &Case) -> String {
    let out = Buffer::default();
    let builder = tracing_subscriber::fmt()
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .with_writer(out.clone());
    if plain {
        tracing::subscriber::with_default(builder.fmt_fields(PlainFields).finish(), || emit(c));
    } else {
        tracing::subscriber::with_default(builder.finish(), || emit(c));
    }
    let bytes = out.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

fn case() -> impl Strategy<Value = Case> {
    // Job-like values (mostly plain) and any text at all.
    let s = prop_oneof![
        "[ -~]{0,24}",
        any::<String>(),
        "[a-z0-9+@.\"\\\\\n\t\u{1b}é-]{0,12}"
    ];
    (
        s.clone(),
        s.clone(),
        any::<u64>(),
        any::<i64>(),
        any::<bool>(),
        proptest::option::of(s),
    )
        .prop_map(|(s, t, u, i, b, o)| Case { s, t, u, i, b, o })
}

proptest! {
    #[test]
    fn lines_read_as_the_default_fields_write_them(c in case()) {
        let (ours, theirs) = (text(true, &c), text(false, &c));
        prop_assert_eq!(ours, theirs);
    }
}

#[test]
fn a_job_line_is_written_whole() {
    let c = Case {
        s: "otp-1".into(),
        t: "sent".into(),
        u: 1,
        i: 0,
        b: false,
        o: None,
    };
    let line = text(true, &c);
    assert!(
        line.contains(
            "job_id=otp-1 channel=\"sms\" outcome=\"sent\" attempts=1 delta=0 new_row=false type=\"otp-1\""
        ),
        "{line}"
    );
    assert_eq!(line, text(false, &c));
}

#[test]
fn decimals_are_written_in_full() {
    for v in [0, 7, 10, 99, 1_000_001, u64::MAX] {
        let mut buf = [0u8; 20];
        assert_eq!(decimal(v, &mut buf), v.to_string());
    }
}
