//! RabbitMQ: the connection, and the topology declared on it (contract
//! section 1).

use crate::domain::Channel;
use lapin::{
    Connection, ConnectionProperties, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, ShortString},
    uri::AMQPUri,
};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueueType {
    Quorum,
    Classic,
}

impl QueueType {
    fn as_str(self) -> &'static str {
        match self {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "classic",
        }
    }
}

/// Exchange and queue names, and the queue type to declare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub exchange: String,
    pub email_queue: String,
    pub sms_queue: String,
    pub queue_type: QueueType,
}

impl Topology {
    pub(crate) fn queue(&self, channel: Channel) -> &str {
        match channel {
            Channel::Email => &self.email_queue,
            Channel::Sms => &self.sms_queue,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot connect to RabbitMQ at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("cannot declare {what}: {reason}")]
    Declare { what: String, reason: String },
    #[error("RabbitMQ {action} failed: {reason}")]
    Other {
        action: &'static str,
        reason: String,
    },
}

/// Connects, with a bounded wait, and names the connection after this worker.
pub(crate) async fn connect(uri: &AMQPUri, redacted_url: &str) -> Result<Connection, BrokerError> {
    let props = ConnectionProperties::default()
        .with_connection_name(format!("notify-worker {}", env!("CARGO_PKG_VERSION")).into());
    let fail = |reason: String| BrokerError::Connect {
        url: redacted_url.to_owned(),
        reason,
    };
    match tokio::time::timeout(
        Duration::from_secs(15),
        Connection::connect_uri(uri.clone(), props),
    )
    .await
    {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(fail(e.to_string())),
        Err(_) => Err(fail("no answer within 15 s".into())),
    }
}

/// Declares exchange, queues and bindings on `conn`; idempotent. A queue that exists
/// with other arguments yields an error naming the queue and the argument
/// (RabbitMQ's PRECONDITION_FAILED text names both).
pub async fn declare(conn: &Connection, topology: &Topology) -> Result<(), BrokerError> {
    let ch = conn
        .create_channel()
        .await
        .map_err(|e| BrokerError::Other {
            action: "channel open",
            reason: e.to_string(),
        })?;
    ch.exchange_declare(
        ShortString::from(topology.exchange.as_str()),
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .map_err(|e| BrokerError::Declare {
        what: format!("exchange `{}` (durable, direct)", topology.exchange),
        reason: e.to_string(),
    })?;
    for channel in Channel::ALL {
        let queue = topology.queue(channel);
        declare_queue(&ch, queue, topology.queue_type).await?;
        ch.queue_bind(
            ShortString::from(queue),
            ShortString::from(topology.exchange.as_str()),
            ShortString::from(channel.as_str()),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| BrokerError::Declare {
            what: format!(
                "binding of queue `{queue}` to `{}` with key `{}`",
                topology.exchange,
                channel.as_str()
            ),
            reason: e.to_string(),
        })?;
    }
    // Best effort: the declarations are done; a failed close changes nothing.
    let _ = ch.close(200, "declared".into()).await;
    Ok(())
}

async fn declare_queue(
    ch: &lapin::Channel,
    queue: &str,
    kind: QueueType,
) -> Result<(), BrokerError> {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(kind.as_str().into()),
    );
    ch.queue_declare(
        ShortString::from(queue),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .map(|_| ())
    .map_err(|e| BrokerError::Declare {
        what: format!("queue `{queue}` (durable, x-queue-type={})", kind.as_str()),
        reason: e.to_string(),
    })
}
