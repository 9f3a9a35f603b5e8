//! Masking what a dead letter carries about a person: recipients keep a
//! few characters to be recognisable (`+9198******10`, `j*******@example.com`),
//! message text is hidden with only its length shown. An operator sees
//! the real values only on an explicit reveal, which is logged.

use serde_json::{Map, Value};

/// Fields of a job that are safe to show as they are.
const SHOWN: [&str; 5] = ["id", "from", "channel", "expires_at", "priority"];

/// A recipient with its middle masked: a phone number keeps its first five
/// and last two characters, an address its first character and its domain.
pub(crate) fn recipient(to: &str) -> String {
    let chars: Vec<char> = to.chars().collect();
    if let Some(at) = to.rfind('@') {
        let (local, domain) = to.split_at(at);
        let first: String = local.chars().take(1).collect();
        let hidden = local.chars().count().saturating_sub(1).max(3);
        return format!("{first}{}{domain}", "*".repeat(hidden));
    }
    let n = chars.len();
    if n < 9 {
        // Too short to show anything of the middle.
        let tail: String = chars[n.saturating_sub(2)..].iter().collect();
        return format!("{}{tail}", "*".repeat(n.saturating_sub(2).max(3)));
    }
    let head: String = chars[..5].iter().collect();
    let tail: String = chars[n - 2..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(n - 7))
}

/// What stands in for hidden text.
pub(crate) fn hidden(text: &str) -> String {
    format!("[hidden: {} characters]", text.chars().count())
}

/// The job with its recipient masked and every other value hidden but
/// the [`SHOWN`] fields; its shape (keys, types) stays visible.
pub(crate) fn payload(job: &Value) -> Value {
    match job {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("to", Value::String(to)) => Value::String(recipient(to)),
                        (k, Value::String(_)) if SHOWN.contains(&k) => v.clone(),
                        _ => value(v),
                    };
                    (k.clone(), v)
                })
                .collect::<Map<_, _>>(),
        ),
        other => value(other),
    }
}

/// Any value hidden, nested values included; numbers, booleans and null
/// are kept (an OTP sent as a number is text to hide, so numbers in
/// strings are; bare numbers are counts and flags).
fn value(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(hidden(s)),
        Value::Array(items) => Value::Array(items.iter().map(value).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), value(v)))
                .collect::<Map<_, _>>(),
        ),
        Value::Number(_) => Value::String("[hidden number]".to_owned()),
        other => other.clone(),
    }
}

/// The personal values of a job that may be echoed elsewhere (in the
/// provider's answer, in a reason): its recipient and its texts.
pub(crate) fn secrets_of(job: Option<&Value>) -> Vec<(String, String)> {
    let Some(Value::Object(fields)) = job else {
        return Vec::new();
    };
    let mut found: Vec<(String, String)> = fields
        .iter()
        .filter(|(k, _)| !SHOWN.contains(&k.as_str()))
        .filter_map(|(k, v)| v.as_str().map(|s| (k.as_str(), s)))
        // Short values would mask common words; 4 characters is an OTP.
        .filter(|(_, s)| s.chars().count() >= 4)
        .map(|(k, s)| {
            let stand_in = if k == "to" { recipient(s) } else { hidden(s) };
            (s.to_owned(), stand_in)
        })
        .collect();
    // Longest first, so a text holding the recipient is replaced whole.
    found.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
    found
}

/// `text` with every value of `secrets` replaced by its stand-in.
pub(crate) fn scrub(text: &str, secrets: &[(String, String)]) -> String {
    secrets
        .iter()
        .fold(text.to_owned(), |t, (s, stand_in)| t.replace(s, stand_in))
}

/// `text` with every run of 6 or more digits masked but its first two and
/// last two: a provider's answer may echo a number or a code in a form the
/// job did not use (without the `+`, split by a space), and OTPs are digits.
pub(crate) fn digit_runs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 6 {
            out.push_str(&run[..2]);
            out.push_str(&"*".repeat(run.len() - 4));
            out.push_str(&run[run.len() - 2..]);
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn recipients_keep_only_their_ends() {
        assert_eq!(recipient("+919876543210"), "+9198******10");
        assert_eq!(recipient("john.doe@example.com"), "j*******@example.com");
        assert_eq!(recipient("a@b.io"), "a***@b.io");
        assert_eq!(recipient("+1234"), "***34");
        assert_eq!(recipient(""), "***");
    }

    #[test]
    fn a_payload_shows_its_shape_and_no_personal_text() {
        let job = json!({"id": "j1", "from": "ACME", "to": "+919876543210",
            "message": "Your OTP is 482910", "meta": {"otp": 482910, "tags": ["x"]}, "flag": true});
        let masked = payload(&job);
        let text = masked.to_string();
        assert!(!text.contains("482910"), "{text}");
        assert!(!text.contains("9876543210"), "{text}");
        assert_eq!(masked["id"], "j1");
        assert_eq!(masked["from"], "ACME");
        assert_eq!(masked["to"], "+9198******10");
        assert_eq!(masked["message"], "[hidden: 18 characters]");
        assert_eq!(masked["flag"], true);
    }

    #[test]
    fn echoes_of_the_job_in_other_text_are_scrubbed() {
        let job = json!({"to": "+919876543210", "message": "Your OTP is 482910", "id": "j1"});
        let secrets = secrets_of(Some(&job));
        let answer = r#"{"error":"number +919876543210 blocked for 'Your OTP is 482910'"}"#;
        let scrubbed = scrub(answer, &secrets);
        assert!(
            !scrubbed.contains("9876543210") && !scrubbed.contains("482910"),
            "{scrubbed}"
        );
        assert!(scrubbed.contains("+9198******10"), "{scrubbed}");
        assert_eq!(
            digit_runs("code 482910 to 91 98765 43210, id 12345"),
            "code 48**10 to 91 98765 43210, id 12345"
        );
        assert_eq!(digit_runs("919876543210."), "91********10.");
    }
}
