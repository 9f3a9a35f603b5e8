//! Outcome classes of one provider attempt (contract section 3), and the
//! tolerant reading of provider error bodies. Pure functions: no I/O here.

use serde_json::Value;

/// What one provider call came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// 2xx.
    Sent,
    /// 401, 402, 403: the key or the account is at fault, not the job.
    AuthFailure { code: String, reason: String },
    /// 408, 425, 429, 5xx, or no response at all: worth trying again.
    Transient,
    /// Any other status: the provider refused this job.
    Rejected { code: Option<String> },
}

/// Classifies a provider response by status and body.
pub fn classify(status: u16, body: &str) -> Class {
    match status {
        200..=299 => Class::Sent,
        401..=403 => {
            let code = error_code(body).unwrap_or_else(|| default_auth_code(status).to_owned());
            let reason = auth_reason(status, &code, error_message(body).as_deref());
            Class::AuthFailure { code, reason }
        }
        408 | 425 | 429 | 500..=599 => Class::Transient,
        _ => Class::Rejected {
            code: error_code(body),
        },
    }
}

/// Every auth code the worker knows: the five with a documented cause and
/// fix, then the defaults for a 401/402/403 without a readable code.
pub const AUTH_CODES: [&str; 8] = [
    "authentication_failed",
    "invalid_api_key",
    "insufficient_scope",
    "account_suspended",
    "ip_not_whitelisted",
    "unauthorized",
    "payment_required",
    "forbidden",
];

fn default_auth_code(status: u16) -> &'static str {
    match status {
        401 => "unauthorized",
        402 => "payment_required",
        _ => "forbidden",
    }
}

/// Reads the provider's error code from any of the four body shapes:
/// `{"error":{"code":C}}`, `{"error":C}`, `{"code":C}`, `{"error_code":C}`.
pub fn error_code(body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    let code = match value.get("error") {
        Some(Value::Object(inner)) => inner.get("code"),
        Some(s @ Value::String(_)) => Some(s),
        _ => None,
    }
    .or_else(|| value.get("code"))
    .or_else(|| value.get("error_code"))?;
    let code = code.as_str()?.trim();
    // A code becomes a row value and may become a log field: keep it short and plain.
    (!code.is_empty() && code.len() <= 64 && !code.chars().any(char::is_control))
        .then(|| code.to_owned())
}

/// The provider's human message, where the body has one.
pub fn error_message(body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    let message = match value.get("error") {
        Some(Value::Object(inner)) => inner.get("message"),
        _ => None,
    }
    .or_else(|| value.get("message"))?;
    message.as_str().map(|m| m.chars().take(300).collect())
}

/// The cause and the fix of the known auth codes; a generic text for others.
fn auth_reason(status: u16, code: &str, message: Option<&str>) -> String {
    let (cause, fix) = match code {
        "authentication_failed" => (
            "Authorization header missing",
            "send `Authorization: Bearer KEY`",
        ),
        "invalid_api_key" => (
            "key malformed, incorrect or revoked (or another platform's key)",
            "verify the key; generate a new one if revoked",
        ),
        "insufficient_scope" => (
            "key lacks the scope for this operation",
            "generate a key with the right scope",
        ),
        "account_suspended" => (
            "subscription suspended for non-payment",
            "pay the outstanding invoice in the Rackwave portal",
        ),
        "ip_not_whitelisted" => (
            "request from an IP not on the key's whitelist",
            "add the server's IP to the key's allowed list",
        ),
        _ => match status {
            401 => (
                "the provider did not accept the API key",
                "verify the key; generate a new one if revoked",
            ),
            402 => (
                "the provider requires payment on the account",
                "settle the account's billing in the provider's portal",
            ),
            _ => (
                "the key or account may not perform this operation",
                "check the key's scope and the account's restrictions",
            ),
        },
    };
    match message {
        Some(m) if !m.is_empty() => {
            format!("HTTP {status} {code}: {cause}. Fix: {fix}. Provider said: {m}")
        }
        _ => format!("HTTP {status} {code}: {cause}. Fix: {fix}."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_all_four_body_shapes() {
        for body in [
            r#"{"error":{"code":"C","message":"M"}}"#,
            r#"{"error":"C","message":"M"}"#,
            r#"{"code":"C","message":"M"}"#,
            r#"{"error_code":"C"}"#,
        ] {
            assert_eq!(error_code(body).as_deref(), Some("C"), "{body}");
        }
        assert_eq!(error_code("<html>bad gateway</html>"), None);
        assert_eq!(error_code(r#"{"error":{"message":"no code"}}"#), None);
    }

    #[test]
    fn classes_follow_the_contract_table() {
        assert_eq!(classify(200, ""), Class::Sent);
        assert_eq!(classify(202, ""), Class::Sent);
        for s in [408, 425, 429, 500, 502, 503, 599] {
            assert_eq!(classify(s, ""), Class::Transient, "{s}");
        }
        for s in [400, 404, 409, 413, 422] {
            assert!(matches!(classify(s, ""), Class::Rejected { .. }), "{s}");
        }
        for (s, code) in [
            (401, "unauthorized"),
            (402, "payment_required"),
            (403, "forbidden"),
        ] {
            match classify(s, "not json") {
                Class::AuthFailure { code: c, .. } => assert_eq!(c, code),
                other => panic!("{s}: {other:?}"),
            }
        }
    }

    #[test]
    fn known_auth_codes_carry_cause_and_fix() {
        let cases = [
            (
                401,
                "authentication_failed",
                "Authorization header missing",
                "send `Authorization: Bearer KEY`",
            ),
            (
                401,
                "invalid_api_key",
                "revoked",
                "generate a new one if revoked",
            ),
            (
                403,
                "insufficient_scope",
                "lacks the scope",
                "generate a key with the right scope",
            ),
            (
                402,
                "account_suspended",
                "suspended for non-payment",
                "Rackwave portal",
            ),
            (
                403,
                "ip_not_whitelisted",
                "not on the key's whitelist",
                "allowed list",
            ),
        ];
        for (status, code, cause, fix) in cases {
            let body = format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#);
            let Class::AuthFailure { code: c, reason } = classify(status, &body) else {
                panic!("{code} not an auth failure");
            };
            assert_eq!(c, code);
            assert!(reason.contains(cause) && reason.contains(fix), "{reason}");
        }
    }
}
