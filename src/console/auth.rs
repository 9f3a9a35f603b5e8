//! Who may use the console and the API: the bearer of
//! `NOTIFY_CONSOLE_TOKEN`, or a browser holding a session cookie the login
//! form set for it. Cookies are stateless (an expiry and a MAC keyed by the
//! token), so every replica accepts them and rotating the token ends every
//! session. Comparisons are constant-time; the token is never logged.

use crate::{
    domain::ApiKey,
    ops::filewatch::{self, Seen},
};
use axum::http::{HeaderMap, header};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::{
    path::PathBuf,
    sync::{Arc, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "nw_console";
/// How long a login lasts.
pub(crate) const SESSION: Duration = Duration::from_secs(8 * 3600);
/// The header an API call authenticated by cookie carries its CSRF token in.
pub(crate) const CSRF_HEADER: &str = "x-notify-csrf";
/// Shortest token accepted: a guessable one would open the dead letters.
pub(crate) const MIN_TOKEN_CHARS: usize = 16;

type HmacSha256 = Hmac<Sha256>;

/// The current token; replaced when its file changes.
pub(crate) struct Token(RwLock<ApiKey>);

impl Token {
    pub(crate) fn new(key: ApiKey) -> Arc<Self> {
        Arc::new(Self(RwLock::new(key)))
    }

    fn current(&self) -> ApiKey {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, key: ApiKey) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = key;
    }

    /// Is `given` the token? Both sides are hashed first, so the compare
    /// takes the same time whatever their lengths.
    pub(crate) fn matches(&self, given: &str) -> bool {
        let want = Sha256::digest(self.current().expose().as_bytes());
        let got = Sha256::digest(given.trim().as_bytes());
        want.ct_eq(&got).into()
    }

    fn mac(&self, parts: &[&str]) -> HmacSha256 {
        let key = self.current();
        // HMAC takes a key of any length.
        let mut mac = HmacSha256::new_from_slice(key.expose().as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
        for p in parts {
            mac.update(p.as_bytes());
            mac.update(b"\n");
        }
        mac
    }

    /// A new session cookie value, good for [`SESSION`].
    pub(crate) fn new_session(&self) -> String {
        let expires = now_secs() + SESSION.as_secs();
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let expires = expires.to_string();
        let tag = self
            .mac(&["session", &expires, &nonce])
            .finalize()
            .into_bytes();
        format!("{expires}.{nonce}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// Is `cookie` a session this token made, not yet expired?
    pub(crate) fn valid_session(&self, cookie: &str) -> bool {
        let mut parts = cookie.splitn(3, '.');
        let (Some(expires), Some(nonce), Some(tag)) = (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let Ok(tag) = URL_SAFE_NO_PAD.decode(tag) else {
            return false;
        };
        let fresh = expires.parse::<u64>().is_ok_and(|e| e > now_secs());
        // `verify_slice` compares in constant time.
        let genuine = self
            .mac(&["session", expires, nonce])
            .verify_slice(&tag)
            .is_ok();
        fresh && genuine
    }

    /// The CSRF token of a session: forms and cookie-authenticated API
    /// calls must send it back. A cross-site page cannot read it.
    pub(crate) fn csrf(&self, session: &str) -> String {
        let tag = self.mac(&["csrf", session]).finalize().into_bytes();
        URL_SAFE_NO_PAD.encode(tag)
    }

    pub(crate) fn csrf_matches(&self, session: &str, given: &str) -> bool {
        let want = self.csrf(session);
        want.as_bytes().ct_eq(given.as_bytes()).into()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How a request proved itself.
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    Bearer,
    /// A browser session: its cookie value, from which its CSRF token comes.
    Session(String),
}

impl Caller {
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Caller::Bearer => "bearer token",
            Caller::Session(_) => "console session",
        }
    }
}

/// The caller, when the request carries the token or a live session.
pub(crate) fn authenticate(token: &Token, headers: &HeaderMap) -> Option<Caller> {
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let bearer = auth
            .to_str()
            .ok()
            .and_then(|a| a.strip_prefix("Bearer "))
            .is_some_and(|t| token.matches(t));
        // A wrong bearer is not rescued by a cookie.
        return bearer.then_some(Caller::Bearer);
    }
    session_cookie(headers)
        .filter(|c| token.valid_session(c))
        .map(Caller::Session)
}

/// The value of our cookie, if the request has one.
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// Refuses a request a browser sent from another site: `Sec-Fetch-Site`
/// when the browser sends it, else `Origin` against `Host`. A request with
/// neither is not from a modern browser (a script with a bearer token); a
/// cookie still needs its CSRF token.
pub(crate) fn same_origin(headers: &HeaderMap) -> Result<(), String> {
    if let Some(site) = headers.get("sec-fetch-site") {
        return match site.to_str().unwrap_or("") {
            "same-origin" | "none" => Ok(()),
            other => Err(format!(
                "cross-site request refused (Sec-Fetch-Site: {other:.20})"
            )),
        };
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        if host.is_empty() || authority != Some(host) {
            return Err("cross-site request refused (Origin is not this console)".to_owned());
        }
    }
    Ok(())
}

/// The `Set-Cookie` value for a session; `Secure` when the console is
/// reached over TLS (an ingress says so in `X-Forwarded-Proto`).
pub(crate) fn set_cookie(value: &str, headers: &HeaderMap) -> String {
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"));
    format!(
        "{COOKIE}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}",
        SESSION.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

pub(crate) fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict")
}

/// Polls the token file every `every`; a changed, valid token replaces
/// the current one (and so ends every session). A bad one is refused.
pub(crate) fn watch_file(
    token: Arc<Token>,
    path: PathBuf,
    every: Duration,
    shutdown: CancellationToken,
) {
    let shown = path.display().to_string();
    filewatch::spawn(path, every, shutdown, move |seen| match seen {
        Seen::Unreadable(e) => {
            tracing::warn!(path = %shown, error = %e, "console token file unreadable; keeping the current token");
        }
        Seen::Changed(content) => {
            match parse_token(
                &String::from_utf8_lossy(&content),
                "NOTIFY_CONSOLE_TOKEN_FILE",
            ) {
                Ok(key) => {
                    token.set(key);
                    tracing::info!(path = %shown, "console token replaced from its file; earlier sessions ended");
                }
                Err(reason) => {
                    tracing::error!(path = %shown, %reason, "new console token refused; keeping the current one");
                }
            }
        }
    });
}

/// A console token: a key's rules (no inner whitespace) and long enough.
pub(crate) fn parse_token(raw: &str, setting: &'static str) -> Result<ApiKey, String> {
    let key = ApiKey::parse(raw, setting).map_err(|e| e.to_string())?;
    if key.expose().chars().count() < MIN_TOKEN_CHARS {
        return Err(format!(
            "{setting} is shorter than {MIN_TOKEN_CHARS} characters; use a long random one (openssl rand -hex 32)"
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn token(t: &str) -> Arc<Token> {
        Token::new(parse_token(t, "T").expect("valid token"))
    }

    #[test]
    fn sessions_are_made_by_the_token_and_die_with_it() {
        let t = token("0123456789abcdef-one");
        let s = t.new_session();
        assert!(t.valid_session(&s));
        assert!(!t.valid_session(&s.replace('.', ",")));
        let mut forged = s.clone();
        forged.replace_range(0..1, "9");
        assert!(!t.valid_session(&forged), "a changed expiry breaks the MAC");
        assert!(t.csrf_matches(&s, &t.csrf(&s)));
        assert!(!t.csrf_matches(&s, &t.csrf(&t.new_session())));
        t.set(parse_token("0123456789abcdef-two", "T").expect("valid"));
        assert!(!t.valid_session(&s), "a new token ends old sessions");
    }

    #[test]
    fn expired_sessions_are_refused() {
        let t = token("0123456789abcdef-one");
        let expires = (now_secs() - 1).to_string();
        let tag = t.mac(&["session", &expires, "n"]).finalize().into_bytes();
        let old = format!("{expires}.n.{}", URL_SAFE_NO_PAD.encode(tag));
        assert!(!t.valid_session(&old));
    }

    #[test]
    fn short_tokens_are_refused_by_name() {
        let e = parse_token("short", "NOTIFY_CONSOLE_TOKEN").expect_err("too short");
        assert!(e.contains("NOTIFY_CONSOLE_TOKEN is shorter than 16"), "{e}");
    }

    #[test]
    fn cross_site_requests_are_told_apart() {
        let mut h = HeaderMap::new();
        assert!(same_origin(&h).is_ok(), "no browser headers: a script");
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(same_origin(&h).is_err());
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(same_origin(&h).is_ok());
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("console:9090"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(same_origin(&h).is_err());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://console:9090"),
        );
        assert!(same_origin(&h).is_ok());
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(same_origin(&h).is_err());
    }
}
