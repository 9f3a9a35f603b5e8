//! RabbitMQ: the connection and its topology, a session that consumes both
//! queues (and is replaced when it fails), the consumer of one queue, and
//! the confirming publisher producers and operators use.

mod consumer;
mod new_job;
mod publisher;
mod session;
mod topology;

pub(crate) use publisher::DEFAULT_CONFIRM_TIMEOUT;
pub use publisher::{NewEmail, NewJob, NewSms, PublishError, Publisher};
pub(crate) use session::{BrokerHealth, Session, SessionError, SessionPlan};
pub use topology::{BrokerError, QueueType, Topology, declare};
