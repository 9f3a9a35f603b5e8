//! The codes a failure is known by: what a provider said, the auth codes
//! the worker knows, the `error_code` of a dead-letter row, and why a
//! provider is paused. Each has a fixed set of metric label values.

use std::fmt;

/// A code a provider put in an error body. It becomes a row value and may
/// become a log field, so it is kept short and plain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ProviderCode(String);

impl ProviderCode {
    const MAX_LEN: usize = 64;

    pub(crate) fn parse(code: &str) -> Option<Self> {
        let code = code.trim();
        (!code.is_empty() && code.len() <= Self::MAX_LEN && !code.chars().any(char::is_control))
            .then(|| Self(code.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The auth code this is, if the worker knows it.
    pub(crate) fn known(&self) -> Option<AuthCode> {
        AuthCode::ALL.into_iter().find(|k| k.as_str() == self.0)
    }
}

impl From<AuthCode> for ProviderCode {
    fn from(code: AuthCode) -> Self {
        Self(code.as_str().to_owned())
    }
}

impl fmt::Display for ProviderCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The auth codes the worker knows: the five with a documented cause and
/// fix, then the defaults for a 401/402/403 without a readable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthCode {
    AuthenticationFailed,
    InvalidApiKey,
    InsufficientScope,
    AccountSuspended,
    IpNotWhitelisted,
    Unauthorized,
    PaymentRequired,
    Forbidden,
}

impl AuthCode {
    pub(crate) const ALL: [AuthCode; 8] = [
        AuthCode::AuthenticationFailed,
        AuthCode::InvalidApiKey,
        AuthCode::InsufficientScope,
        AuthCode::AccountSuspended,
        AuthCode::IpNotWhitelisted,
        AuthCode::Unauthorized,
        AuthCode::PaymentRequired,
        AuthCode::Forbidden,
    ];

    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            AuthCode::AuthenticationFailed => "authentication_failed",
            AuthCode::InvalidApiKey => "invalid_api_key",
            AuthCode::InsufficientScope => "insufficient_scope",
            AuthCode::AccountSuspended => "account_suspended",
            AuthCode::IpNotWhitelisted => "ip_not_whitelisted",
            AuthCode::Unauthorized => "unauthorized",
            AuthCode::PaymentRequired => "payment_required",
            AuthCode::Forbidden => "forbidden",
        }
    }

    pub(super) fn default_for(status: u16) -> Self {
        match status {
            401 => AuthCode::Unauthorized,
            402 => AuthCode::PaymentRequired,
            _ => AuthCode::Forbidden,
        }
    }

    /// The cause and the fix of the five documented codes.
    pub(super) fn cause_and_fix(self) -> Option<(&'static str, &'static str)> {
        Some(match self {
            AuthCode::AuthenticationFailed => (
                "Authorization header missing",
                "send `Authorization: Bearer KEY`",
            ),
            AuthCode::InvalidApiKey => (
                "key malformed, incorrect or revoked (or another platform's key)",
                "verify the key; generate a new one if revoked",
            ),
            AuthCode::InsufficientScope => (
                "key lacks the scope for this operation",
                "generate a key with the right scope",
            ),
            AuthCode::AccountSuspended => (
                "subscription suspended for non-payment",
                "pay the outstanding invoice in the Rackwave portal",
            ),
            AuthCode::IpNotWhitelisted => (
                "request from an IP not on the key's whitelist",
                "add the server's IP to the key's allowed list",
            ),
            AuthCode::Unauthorized | AuthCode::PaymentRequired | AuthCode::Forbidden => {
                return None;
            }
        })
    }
}

/// The `error_code` a dead-letter row is filed under: one of the worker's
/// own, or the code the provider gave for an auth failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ErrorCode {
    InvalidJob,
    Rejected,
    RetriesExhausted,
    RedeliveryLimit,
    /// Past the job's `expires_at` (contract section 8): never sent.
    Expired,
    Provider(ProviderCode),
}

/// Metric label values: `own`, then every known auth code, then `other`
/// for provider codes the worker does not know (free text never becomes a
/// label). `N` must be `own.len() + AuthCode::ALL.len() + 1`.
const fn labels<const N: usize>(own: &[&'static str]) -> [&'static str; N] {
    assert!(N == own.len() + AuthCode::ALL.len() + 1);
    let mut labels = ["other"; N];
    let mut i = 0;
    while i < own.len() {
        labels[i] = own[i];
        i += 1;
    }
    let mut k = 0;
    while k < AuthCode::ALL.len() {
        labels[own.len() + k] = AuthCode::ALL[k].as_str();
        k += 1;
    }
    labels
}

/// Where a provider code's label sits in a [`labels`] array.
fn provider_label_index(code: &ProviderCode, own: usize, labels: usize) -> usize {
    code.known().map_or(labels - 1, |k| own + k as usize)
}

impl ErrorCode {
    const OWN: [&'static str; 5] = [
        "invalid_job",
        "rejected",
        "retries_exhausted",
        "redelivery_limit",
        "expired",
    ];

    /// Every metric label an error code can have.
    pub(crate) const LABELS: [&'static str; 14] = labels(&Self::OWN);

    pub(crate) fn as_str(&self) -> &str {
        match self {
            ErrorCode::Provider(code) => code.as_str(),
            own => Self::OWN[own.label_index()],
        }
    }

    /// Position of this code's label in [`ErrorCode::LABELS`].
    pub(crate) fn label_index(&self) -> usize {
        match self {
            ErrorCode::InvalidJob => 0,
            ErrorCode::Rejected => 1,
            ErrorCode::RetriesExhausted => 2,
            ErrorCode::RedeliveryLimit => 3,
            ErrorCode::Expired => 4,
            ErrorCode::Provider(code) => {
                provider_label_index(code, Self::OWN.len(), Self::LABELS.len())
            }
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an operator does about dead letters filed under `code`: the
/// documented fix of a known auth code, else the worker's own advice.
pub(crate) fn fix_for(code: &str) -> &'static str {
    if let Some((_, fix)) = AuthCode::ALL
        .into_iter()
        .find(|k| k.as_str() == code)
        .and_then(AuthCode::cause_and_fix)
    {
        return fix;
    }
    match code {
        "invalid_job" => {
            "fix the publisher: the reason names the field; replaying sends the same payload and fails again"
        }
        "rejected" => {
            "the provider refused this message (recipient or content): correct it at the source; a replay fails the same way"
        }
        "retries_exhausted" => {
            "the provider failed or timed out on every attempt: replay once it answers again"
        }
        "redelivery_limit" => {
            "the job kept coming back without settling (a crash or stall mid-job): read the logs for its id before replaying"
        }
        "expired" => {
            "the job passed its expires_at before it could be sent: replaying sends it late; the user should ask again"
        }
        "unauthorized" | "payment_required" | "forbidden" => {
            "the provider refused the key or account without a known code: check the key, its scope and the account; replay after"
        }
        _ => {
            "an auth failure with a code the worker does not know: read the provider's answer, fix the key or account, then replay"
        }
    }
}

/// Why a provider's calls are held back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PauseReason {
    /// A 401/402/403: the key or the account.
    Auth(ProviderCode),
    /// Many transient failures in a row: the provider.
    Outage,
}

impl PauseReason {
    const OWN: [&'static str; 1] = ["outage"];

    /// Every metric label a pause reason can have.
    pub(crate) const LABELS: [&'static str; 10] = labels(&Self::OWN);

    /// Position of this reason's label in [`PauseReason::LABELS`].
    pub(crate) fn label_index(&self) -> usize {
        match self {
            PauseReason::Outage => 0,
            PauseReason::Auth(code) => {
                provider_label_index(code, Self::OWN.len(), Self::LABELS.len())
            }
        }
    }
}

impl fmt::Display for PauseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PauseReason::Auth(code) => code.fmt(f),
            PauseReason::Outage => f.write_str(Self::OWN[0]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl ErrorCode {
        fn label(&self) -> &'static str {
            Self::LABELS[self.label_index()]
        }
    }

    impl PauseReason {
        fn label(&self) -> &'static str {
            Self::LABELS[self.label_index()]
        }
    }

    #[test]
    fn labels_are_the_known_codes_or_other() {
        for (i, auth) in AuthCode::ALL.into_iter().enumerate() {
            let code = ErrorCode::Provider(auth.into());
            assert_eq!(code.label(), auth.as_str());
            assert_eq!(ErrorCode::LABELS[5 + i], auth.as_str());
            assert_eq!(PauseReason::Auth(auth.into()).label(), auth.as_str());
        }
        let free = ProviderCode::parse("user 42 key sk_live_x").unwrap();
        assert_eq!(ErrorCode::Provider(free.clone()).label(), "other");
        assert_eq!(PauseReason::Auth(free).label(), "other");
        assert_eq!(ErrorCode::RetriesExhausted.label(), "retries_exhausted");
        assert_eq!(ErrorCode::Expired.label(), "expired");
        assert_eq!(PauseReason::Outage.label(), "outage");
    }
}
