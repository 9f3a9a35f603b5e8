//! API keys: parsed once, printed never.
//!
//! `ApiKey` is the only place a provider key lives. Its `Debug` and `Display`
//! print a redaction, so a key cannot reach a log line, an error or a panic
//! message by accident; the raw value is reachable only through
//! [`ApiKey::expose`], which the provider client calls to build its header.

use std::{fmt, path::Path};

/// A provider API key, trimmed and checked.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

/// Why a key was refused. Never carries the key itself.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("{setting} is empty")]
    Empty { setting: &'static str },
    #[error("{setting} contains whitespace or a control character inside the key")]
    InnerWhitespace { setting: &'static str },
    #[error("{setting}: cannot read key file {path}: {reason}")]
    Unreadable {
        setting: &'static str,
        path: String,
        reason: String,
    },
    #[error("{setting} is not valid UTF-8")]
    NotUtf8 { setting: &'static str },
}

impl ApiKey {
    /// Parses a key as given by a setting named `setting`: trims surrounding
    /// whitespace (a trailing newline from a file or a paste is common) and
    /// refuses empty keys and keys with whitespace or control characters inside,
    /// which would make an invalid or ambiguous `Authorization` header.
    pub fn parse(raw: &str, setting: &'static str) -> Result<Self, KeyError> {
        let key = raw.trim();
        if key.is_empty() {
            return Err(KeyError::Empty { setting });
        }
        if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(KeyError::InnerWhitespace { setting });
        }
        Ok(Self(key.to_owned()))
    }

    /// Reads and parses a key file (a Kubernetes secret mount, say).
    pub fn from_file(path: &Path, setting: &'static str) -> Result<Self, KeyError> {
        let bytes = std::fs::read(path).map_err(|e| KeyError::Unreadable {
            setting,
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let text = String::from_utf8(bytes).map_err(|_| KeyError::NotUtf8 { setting })?;
        Self::parse(&text, setting)
    }

    /// The raw key, for the `Authorization` header and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Replaces the password of a `scheme://user:password@host/...` URL with
/// `***`, so broker and database URLs can be named in errors and logs.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_owned()
            };
            format!("{}://{}@{}", &url[..scheme_end], masked, &rest[at + 1..])
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_refuses_bad_keys() {
        let key = ApiKey::parse("  mk_live_abc\n", "MIGOSMTP_API_KEY").unwrap();
        assert_eq!(key.expose(), "mk_live_abc");
        assert_eq!(
            ApiKey::parse(" \n", "MIGOSMTP_API_KEY"),
            Err(KeyError::Empty {
                setting: "MIGOSMTP_API_KEY"
            })
        );
        assert_eq!(
            ApiKey::parse("ab cd", "TELNXO_API_KEY"),
            Err(KeyError::InnerWhitespace {
                setting: "TELNXO_API_KEY"
            })
        );
        assert!(ApiKey::parse("ab\u{7}cd", "TELNXO_API_KEY").is_err());
    }

    #[test]
    fn never_prints_the_key() {
        let key = ApiKey::parse("sk_secret_123", "X").unwrap();
        assert!(!format!("{key:?} {key}").contains("sk_secret_123"));
    }

    #[test]
    fn redacts_url_passwords() {
        assert_eq!(
            redact_url("amqp://guest:s3cret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1/db"),
            "postgres://postgres@127.0.0.1/db"
        );
        assert_eq!(redact_url("no-scheme"), "no-scheme");
    }
}
