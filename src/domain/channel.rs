//! The two delivery channels and the provider behind each.

use std::{fmt, str::FromStr};

/// A delivery channel. A job's channel is the queue it came from.
///
/// Not to be confused with an AMQP channel: broker code always spells
/// those `lapin::Channel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Channel {
    Email,
    Sms,
}

impl Channel {
    pub const ALL: [Channel; 2] = [Channel::Email, Channel::Sms];

    /// The value stored in `dead_letters.channel`, used as a metric label, and
    /// the routing key producers publish with.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
        }
    }

    /// The routing key of the channel's urgent lane.
    pub fn urgent_key(self) -> &'static str {
        match self {
            Channel::Email => "email.urgent",
            Channel::Sms => "sms.urgent",
        }
    }

    /// Position in [`Channel::ALL`], for per-channel arrays.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value that names no channel or provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a known {what} (expected {expected})")]
pub struct UnknownName {
    what: &'static str,
    value: String,
    expected: &'static str,
}

impl FromStr for Channel {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        match s {
            "email" => Ok(Channel::Email),
            "sms" => Ok(Channel::Sms),
            _ => Err(UnknownName {
                what: "channel",
                value: s.to_owned(),
                expected: "email or sms",
            }),
        }
    }
}

/// For reading a `channel` column.
impl TryFrom<String> for Channel {
    type Error = UnknownName;
    fn try_from(s: String) -> Result<Self, UnknownName> {
        s.parse()
    }
}

/// The provider that delivers a channel: MigoSMTP for email, Telnxo for SMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Provider {
    #[value(name = "migosmtp")]
    MigoSmtp,
    Telnxo,
}

impl Provider {
    pub const ALL: [Provider; 2] = [Provider::MigoSmtp, Provider::Telnxo];

    pub fn for_channel(channel: Channel) -> Self {
        match channel {
            Channel::Email => Provider::MigoSmtp,
            Channel::Sms => Provider::Telnxo,
        }
    }

    /// The value stored in `dead_letters.provider` and used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::MigoSmtp => "migosmtp",
            Provider::Telnxo => "telnxo",
        }
    }

    /// The send endpoint, below the base URL (contract section 3).
    pub(crate) fn path(self) -> &'static str {
        match self {
            Provider::MigoSmtp => "/v1/email/send",
            Provider::Telnxo => "/v1/sms/send",
        }
    }

    /// Position in [`Provider::ALL`], for per-provider arrays.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Provider {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        match s {
            "migosmtp" => Ok(Provider::MigoSmtp),
            "telnxo" => Ok(Provider::Telnxo),
            _ => Err(UnknownName {
                what: "provider",
                value: s.to_owned(),
                expected: "migosmtp or telnxo",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for c in Channel::ALL {
            assert_eq!(c.as_str().parse::<Channel>(), Ok(c));
            assert_eq!(Channel::ALL[c.index()], c);
        }
        for p in Provider::ALL {
            assert_eq!(p.as_str().parse::<Provider>(), Ok(p));
            assert_eq!(Provider::ALL[p.index()], p);
        }
        let err = "push".parse::<Channel>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "`push` is not a known channel (expected email or sms)"
        );
        assert!("Telnxo".parse::<Provider>().is_err());
    }
}
