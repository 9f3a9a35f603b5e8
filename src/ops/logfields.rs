//! Text log fields written as tracing-subscriber's `DefaultFields` writes
//! them without colour, byte for byte, at a fraction of the cost.
//!
//! Every job logs one line of about ten fields. `DefaultFields` paints each
//! name and `=` through nu-ansi-term even when colour is off, and formats
//! every value through `core::fmt`: about 7,900 instructions a line, some
//! 9 % of a job's work in the worker (callgrind, 5,000 jobs). Here names
//! are written plain, and strings of printable ASCII, integers and
//! booleans directly; the message and errors go to `DefaultVisitor` itself.

use std::fmt;
use tracing::field::{Field, Visit};
use tracing_subscriber::{
    field::{MakeVisitor, VisitFmt, VisitOutput},
    fmt::format::{DefaultVisitor, Writer},
};

/// The fields of a text line without colour (see the module's doc).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PlainFields;

impl<'w> MakeVisitor<Writer<'w>> for PlainFields {
    type Visitor = PlainVisitor<'w>;

    fn make_visitor(&self, writer: Writer<'w>) -> Self::Visitor {
        PlainVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        }
    }
}

/// Writes one event's or span's fields.
#[derive(Debug)]
pub(crate) struct PlainVisitor<'w> {
    writer: Writer<'w>,
    is_empty: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    /// Writes ` name=` (no space before the first field), as the default
    /// does; false for a field the default skips (the `log.` metadata of
    /// records from the `log` crate).
    fn name(&mut self, field: &Field) -> bool {
        let name = field.name();
        if name.starts_with("log.") || self.result.is_err() {
            return false;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        let pad = if self.is_empty { "" } else { " " };
        self.is_empty = false;
        self.result = self
            .writer
            .write_str(pad)
            .and_then(|()| self.writer.write_str(name))
            .and_then(|()| self.writer.write_char('='));
        self.result.is_ok()
    }

    /// Hands one field to the default visitor.
    fn default(&mut self, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.result.is_err() {
            return;
        }
        let mut visitor = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut visitor);
        self.result = visitor.finish();
        self.is_empty = false;
    }

    fn write(&mut self, s: &str) {
        self.result = self.writer.write_str(s);
    }
}

/// What `{:?}` writes for `s` without escapes: printable ASCII other than
/// `"` and `\` is written as it is.
fn plain(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" || !plain(value) {
            return self.default(|v| v.record_str(field, value));
        }
        if self.name(field) {
            self.write("\"");
            if self.result.is_ok() {
                self.write(value);
            }
            if self.result.is_ok() {
                self.write("\"");
            }
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "message" {
            return self.default(|v| v.record_bool(field, value));
        }
        if self.name(field) {
            self.write(if value { "true" } else { "false" });
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "message" {
            return self.default(|v| v.record_u64(field, value));
        }
        if self.name(field) {
            let mut digits = [0u8; 20];
            let text = decimal(value, &mut digits);
            self.write(text);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "message" || value < 0 {
            return self.default(|v| v.record_i64(field, value));
        }
        self.record_u64(field, value.unsigned_abs());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.default(|v| v.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            return self.default(|v| v.record_debug(field, value));
        }
        if self.name(field) {
            self.result = write!(self.writer, "{value:?}");
        }
    }
}

/// `value` in decimal, written into the end of `buf`.
fn decimal(mut value: u64, buf: &mut [u8; 20]) -> &str {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + u8::try_from(value % 10).unwrap_or(0);
        value /= 10;
        if value == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[at..]).unwrap_or("0")
}

impl VisitOutput<fmt::Result> for PlainVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for PlainVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

#[cfg(test)]
mod tests;
