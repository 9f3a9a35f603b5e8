//! Outcome classes of one provider attempt (contract section 3), and the
//! tolerant reading of provider error bodies. Pure functions: no I/O here.

use super::codes::{AuthCode, ProviderCode};
use serde_json::Value;

/// What one provider call came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Class {
    /// 2xx.
    Sent,
    /// 401, 402, 403: the key or the account is at fault, not the job.
    AuthFailure { code: ProviderCode, reason: String },
    /// 408, 425, 5xx, or no response at all: worth trying again.
    Transient,
    /// 429, or 503 with `Retry-After`: transient too, but the provider is
    /// asking to slow down. Flow control, not a failure of the job.
    Throttled,
    /// Any other status: the provider refused this job.
    Rejected { code: Option<ProviderCode> },
}

/// Classifies a provider response by status, body, and whether it said
/// when to come back (`Retry-After`).
pub(crate) fn classify(status: u16, body: &str, retry_after: bool) -> Class {
    match status {
        429 => Class::Throttled,
        503 if retry_after => Class::Throttled,
        200..=299 => Class::Sent,
        401..=403 => {
            let code = error_code(body).unwrap_or_else(|| AuthCode::default_for(status).into());
            let reason = auth_reason(status, &code, error_message(body).as_deref());
            Class::AuthFailure { code, reason }
        }
        408 | 425 | 500..=599 => Class::Transient,
        _ => Class::Rejected {
            code: error_code(body),
        },
    }
}

/// Reads the provider's error code from any of the four body shapes:
/// `{"error":{"code":C}}`, `{"error":C}`, `{"code":C}`, `{"error_code":C}`.
pub(crate) fn error_code(body: &str) -> Option<ProviderCode> {
    let value: Value = serde_json::from_str(body).ok()?;
    let code = match value.get("error") {
        Some(Value::Object(inner)) => inner.get("code"),
        Some(s @ Value::String(_)) => Some(s),
        _ => None,
    }
    .or_else(|| value.get("code"))
    .or_else(|| value.get("error_code"))?;
    ProviderCode::parse(code.as_str()?)
}

/// The provider's human message, where the body has one.
pub(crate) fn error_message(body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    let message = match value.get("error") {
        Some(Value::Object(inner)) => inner.get("message"),
        _ => None,
    }
    .or_else(|| value.get("message"))?;
    message.as_str().map(|m| m.chars().take(300).collect())
}

/// The cause and the fix of the known auth codes; a generic text for others.
fn auth_reason(status: u16, code: &ProviderCode, message: Option<&str>) -> String {
    let documented = code.known().and_then(AuthCode::cause_and_fix);
    let (cause, fix) = documented.unwrap_or(match status {
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
    });
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

    fn code(body: &str) -> Option<String> {
        error_code(body).map(|c| c.as_str().to_owned())
    }

    #[test]
    fn reads_all_four_body_shapes() {
        for body in [
            r#"{"error":{"code":"C","message":"M"}}"#,
            r#"{"error":"C","message":"M"}"#,
            r#"{"code":"C","message":"M"}"#,
            r#"{"error_code":"C"}"#,
        ] {
            assert_eq!(code(body).as_deref(), Some("C"), "{body}");
        }
        assert_eq!(code("<html>bad gateway</html>"), None);
        assert_eq!(code(r#"{"error":{"message":"no code"}}"#), None);
        assert_eq!(code(&format!(r#"{{"code":"{}"}}"#, "x".repeat(65))), None);
    }

    #[test]
    fn classes_follow_the_contract_table() {
        assert_eq!(classify(200, "", false), Class::Sent);
        assert_eq!(classify(202, "", false), Class::Sent);
        for s in [408, 425, 500, 502, 503, 599] {
            assert_eq!(classify(s, "", false), Class::Transient, "{s}");
        }
        assert_eq!(classify(429, "", false), Class::Throttled);
        assert_eq!(classify(429, "", true), Class::Throttled);
        assert_eq!(classify(503, "", true), Class::Throttled);
        assert_eq!(classify(500, "", true), Class::Transient);
        for s in [301, 400, 404, 409, 413, 422] {
            assert!(
                matches!(classify(s, "", false), Class::Rejected { .. }),
                "{s}"
            );
        }
        for (s, expected) in [
            (401, AuthCode::Unauthorized),
            (402, AuthCode::PaymentRequired),
            (403, AuthCode::Forbidden),
        ] {
            match classify(s, "not json", false) {
                Class::AuthFailure { code, .. } => assert_eq!(code.known(), Some(expected)),
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
        for (status, expected, cause, fix) in cases {
            let body = format!(r#"{{"error":{{"code":"{expected}","message":"m"}}}}"#);
            let Class::AuthFailure { code, reason } = classify(status, &body, false) else {
                panic!("{expected} not an auth failure");
            };
            assert_eq!(code.as_str(), expected);
            assert!(reason.contains(cause) && reason.contains(fix), "{reason}");
        }
    }
}
