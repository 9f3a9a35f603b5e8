//! What a job is and what can become of it, with no I/O: channels and
//! providers, the job and its parsing, outcome classes and error codes,
//! and API keys. Every other module builds on these types.

mod channel;
mod codes;
mod decode;
mod job;
mod message_id;
mod outcome;
mod secret;

pub use channel::{Channel, Provider, UnknownName};
pub(crate) use codes::{ErrorCode, PauseReason, ProviderCode, fix_for};
pub use decode::{DecodeInput, decode};
pub use job::{
    DEFAULT_MAX_BODY_BYTES, EmailAddress, EmailJob, InvalidJob, Job, JobId, MAX_ID_CHARS, Message,
    PhoneNumber, SmsJob, Text,
};
pub(crate) use message_id::provider_message_id;
pub(crate) use outcome::{Class, classify, error_code, error_message};
pub use secret::{ApiKey, KeyError, redact_url};
