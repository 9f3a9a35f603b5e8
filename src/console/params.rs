//! Parsing what a request asks for: filters, paging, replay selections.
//! Every value is bounded here, so a query can neither grow without limit
//! nor reach SQL unchecked; a bad one is a 400 naming the parameter.

use crate::{
    deadletter::queries::{Filter, State, When},
    domain::{Channel, MAX_ID_CHARS, Provider},
};
use serde::{Deserialize, Deserializer};

/// Longest value of any filter parameter.
pub(crate) const MAX_PARAM_CHARS: usize = 100;
/// Largest page.
pub(crate) const MAX_PAGE: i64 = 200;
pub(crate) const DEFAULT_PAGE: i64 = 50;
/// Most ids one replay may name.
pub(crate) const MAX_IDS: usize = 1000;
/// Most groups shown.
pub(crate) const MAX_GROUPS: i64 = 100;

/// A parameter that cannot be used; the answer is 400 with this text.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BadParam(pub(crate) String);

/// Filters and paging, as query parameters or a JSON object. Numbers may
/// come as strings (a query string) or numbers (JSON).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct FilterParams {
    pub(crate) code: Option<String>,
    pub(crate) channel: Option<String>,
    pub(crate) provider: Option<String>,
    pub(crate) since: Option<String>,
    pub(crate) until: Option<String>,
    /// `open` (default), `replayed` or `all`.
    pub(crate) state: Option<String>,
    #[serde(deserialize_with = "text_or_number")]
    pub(crate) http_status: Option<String>,
    #[serde(deserialize_with = "text_or_number")]
    pub(crate) cursor: Option<String>,
    #[serde(deserialize_with = "text_or_number")]
    pub(crate) limit: Option<String>,
    /// Show recipients and texts unmasked (logged).
    #[serde(deserialize_with = "text_or_number")]
    pub(crate) reveal: Option<String>,
}

fn text_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Text(String),
        Number(serde_json::Number),
        Flag(bool),
    }
    Ok(Option::<Either>::deserialize(d)?.map(|v| match v {
        Either::Text(s) => s,
        Either::Number(n) => n.to_string(),
        Either::Flag(b) => b.to_string(),
    }))
}

/// A parameter's value: trimmed, `None` when empty (a form's blank
/// field), refused past [`MAX_PARAM_CHARS`].
fn value<'a>(name: &str, v: &'a Option<String>) -> Result<Option<&'a str>, BadParam> {
    match v.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) if s.chars().count() > MAX_PARAM_CHARS || s.chars().any(char::is_control) => {
            Err(BadParam(format!(
                "`{name}` is longer than {MAX_PARAM_CHARS} characters or holds control characters"
            )))
        }
        Some(s) => Ok(Some(s)),
    }
}

fn number<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
    name: &str,
    v: &Option<String>,
    range: std::ops::RangeInclusive<T>,
) -> Result<Option<T>, BadParam> {
    let Some(s) = value(name, v)? else {
        return Ok(None);
    };
    match s.parse::<T>() {
        Ok(n) if range.contains(&n) => Ok(Some(n)),
        _ => Err(BadParam(format!(
            "`{name}` must be a number from {} to {}",
            range.start(),
            range.end()
        ))),
    }
}

impl FilterParams {
    /// The filter these parameters name.
    pub(crate) fn filter(&self) -> Result<Filter, BadParam> {
        let bad = |name: &str, e: String| BadParam(format!("`{name}`: {e}"));
        let when = |name: &str, v: &Option<String>| -> Result<Option<When>, BadParam> {
            value(name, v)?
                .map(|s| s.parse::<When>().map_err(|e| bad(name, e)))
                .transpose()
        };
        let state = match value("state", &self.state)? {
            None | Some("open") => State::Open,
            Some("replayed") => State::Replayed,
            Some("all") => State::Any,
            Some(_) => return Err(bad("state", "one of open, replayed, all".into())),
        };
        Ok(Filter {
            ids: Vec::new(),
            channel: value("channel", &self.channel)?
                .map(|s| {
                    s.parse::<Channel>()
                        .map_err(|e| bad("channel", e.to_string()))
                })
                .transpose()?,
            code: value("code", &self.code)?.map(str::to_owned),
            provider: value("provider", &self.provider)?
                .map(|s| {
                    s.parse::<Provider>()
                        .map_err(|e| bad("provider", e.to_string()))
                })
                .transpose()?,
            since: when("since", &self.since)?,
            until: when("until", &self.until)?,
            http_status: number("http_status", &self.http_status, 100..=599)?,
            max_id: None,
            state,
        })
    }

    pub(crate) fn cursor(&self) -> Result<Option<i64>, BadParam> {
        number("cursor", &self.cursor, 1..=i64::MAX)
    }

    pub(crate) fn limit(&self) -> Result<i64, BadParam> {
        Ok(number("limit", &self.limit, 1..=MAX_PAGE)?.unwrap_or(DEFAULT_PAGE))
    }

    pub(crate) fn reveal(&self) -> bool {
        matches!(self.reveal.as_deref(), Some("1" | "true" | "yes"))
    }

    /// The parameters that name rows (not paging), for links and forms.
    pub(crate) fn pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("code", &self.code),
            ("channel", &self.channel),
            ("provider", &self.provider),
            ("since", &self.since),
            ("until", &self.until),
            ("state", &self.state),
            ("http_status", &self.http_status),
        ]
        .into_iter()
        .filter_map(|(k, v)| {
            v.as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|v| (k, v.to_owned()))
        })
        .collect()
    }

    /// The parameters as a query string (URL-encoded).
    pub(crate) fn query(&self, extra: &[(&str, String)]) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in self
            .pairs()
            .iter()
            .map(|(k, v)| (*k, v))
            .chain(extra.iter().map(|(k, v)| (*k, v)))
        {
            q.append_pair(k, v);
        }
        q.finish()
    }

    /// In words, for a confirmation and a replay's record.
    pub(crate) fn describe(&self) -> String {
        let pairs = self.pairs();
        if pairs.is_empty() {
            return "every open dead letter".to_owned();
        }
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Dead-letter ids given as text (a form's fields), bounded.
pub(crate) fn ids<'a>(given: impl IntoIterator<Item = &'a str>) -> Result<Vec<i64>, BadParam> {
    let mut ids = Vec::new();
    for s in given {
        if ids.len() == MAX_IDS {
            return Err(too_many_ids());
        }
        // Not a number: 0, which `checked_ids` refuses.
        ids.push(s.trim().parse::<i64>().unwrap_or(0));
    }
    checked_ids(ids)
}

fn too_many_ids() -> BadParam {
    BadParam(format!("at most {MAX_IDS} ids at once"))
}

/// Dead-letter ids: at most [`MAX_IDS`], each positive; sorted, once each.
pub(crate) fn checked_ids(mut ids: Vec<i64>) -> Result<Vec<i64>, BadParam> {
    if ids.len() > MAX_IDS {
        return Err(too_many_ids());
    }
    if ids.iter().any(|id| *id <= 0) {
        return Err(BadParam(
            "`ids` must be dead-letter ids (positive numbers)".into(),
        ));
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// A job id from a path, bounded as jobs bound theirs.
pub(crate) fn job_id(s: &str) -> Result<&str, BadParam> {
    if s.is_empty() || s.chars().count() > MAX_ID_CHARS || s.chars().any(char::is_control) {
        return Err(BadParam(format!(
            "a job id is 1 to {MAX_ID_CHARS} characters, no control characters"
        )));
    }
    Ok(s)
}

/// A replay pace in rows a second.
pub(crate) fn rate(v: Option<&str>, default: f64, max: f64) -> Result<f64, BadParam> {
    match v.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(default),
        Some(s) => match s.parse::<f64>() {
            Ok(r) if r.is_finite() && (0.1..=max).contains(&r) => Ok(r),
            _ => Err(BadParam(format!(
                "`rate` must be from 0.1 to {max} dead letters a second"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_parsed_and_bounded() {
        let p = FilterParams {
            code: Some("invalid_api_key".into()),
            channel: Some("sms".into()),
            since: Some("2h".into()),
            http_status: Some("401".into()),
            provider: Some(String::new()),
            ..Default::default()
        };
        let f = p.filter().expect("valid");
        assert_eq!(f.channel, Some(Channel::Sms));
        assert_eq!(f.http_status, Some(401));
        assert_eq!(f.provider, None, "a blank field is no filter");
        assert_eq!(f.state, State::Open);
        for bad in [
            FilterParams {
                code: Some("x".repeat(101)),
                ..Default::default()
            },
            FilterParams {
                channel: Some("fax".into()),
                ..Default::default()
            },
            FilterParams {
                http_status: Some("42".into()),
                ..Default::default()
            },
            FilterParams {
                since: Some("yesterday".into()),
                ..Default::default()
            },
            FilterParams {
                state: Some("gone".into()),
                ..Default::default()
            },
        ] {
            assert!(bad.filter().is_err(), "{bad:?}");
        }
        let paging = FilterParams {
            limit: Some("100000".into()),
            ..Default::default()
        };
        assert!(paging.limit().is_err());
        assert_eq!(FilterParams::default().limit().ok(), Some(DEFAULT_PAGE));
        assert!(ids(["1", "x"]).is_err());
        assert_eq!(ids(["3", "1", "3"]).ok(), Some(vec![1, 3]));
        assert!(ids((0..=MAX_IDS).map(|_| "1")).is_err());
    }
}
