//! RabbitMQ: the connection, and the topology declared on it (contract
//! section 1).

use crate::{domain::Channel, pipeline::Source};
use lapin::{
    Connection, ConnectionProperties, ExchangeKind,
    options::{ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
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
    /// Queues per channel (`NOTIFY_SHARDS`): 1 is one queue per channel;
    /// more spread each channel over that many through a consistent-hash
    /// exchange on `message_id`.
    pub shards: u16,
}

/// The plugin shards need, and the command that enables it.
pub const HASH_PLUGIN: &str = "rabbitmq_consistent_hash_exchange";

impl Topology {
    /// One queue per channel, as the contract's section 1 names them.
    pub fn new(exchange: &str, email_queue: &str, sms_queue: &str, queue_type: QueueType) -> Self {
        Self {
            exchange: exchange.to_owned(),
            email_queue: email_queue.to_owned(),
            sms_queue: sms_queue.to_owned(),
            queue_type,
            shards: 1,
        }
    }

    /// The channel's queue (with shards: the one jobs queued before the
    /// shards still drain from).
    pub(crate) fn queue(&self, channel: Channel) -> &str {
        match channel {
            Channel::Email => &self.email_queue,
            Channel::Sms => &self.sms_queue,
        }
    }

    /// The channel's urgent queue, bound with routing key `{channel}.urgent`.
    pub fn urgent_queue(&self, channel: Channel) -> String {
        format!("{}.urgent", self.queue(channel))
    }

    /// Shard `i` of the channel's queue.
    pub fn shard_queue(&self, channel: Channel, i: u16) -> String {
        format!("{}.{i}", self.queue(channel))
    }

    /// The consistent-hash exchange of a channel's shards.
    pub fn shard_exchange(&self, channel: Channel) -> String {
        format!("{}.{}.shards", self.exchange, channel.as_str())
    }

    /// Every queue the worker consumes: per channel its urgent queue first,
    /// then its queue, then its shards.
    pub(crate) fn sources(&self) -> Vec<Source> {
        let mut sources = Vec::new();
        for channel in Channel::ALL {
            let source = |queue: String, urgent| Source {
                channel,
                queue,
                urgent,
            };
            sources.push(source(self.urgent_queue(channel), true));
            sources.push(source(self.queue(channel).to_owned(), false));
            if self.shards > 1 {
                sources
                    .extend((0..self.shards).map(|i| source(self.shard_queue(channel, i), false)));
            }
        }
        sources
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
        let urgent = topology.urgent_queue(channel);
        declare_queue(&ch, &urgent, topology.queue_type).await?;
        bind(
            &ch,
            &urgent,
            &topology.exchange,
            &format!("{channel}.urgent"),
        )
        .await?;
        declare_queue(&ch, queue, topology.queue_type).await?;
        if topology.shards <= 1 {
            bind(&ch, queue, &topology.exchange, channel.as_str()).await?;
        } else {
            declare_shards(&ch, topology, channel).await?;
            // New jobs go to the shards only; what the queue holds drains.
            ch.queue_unbind(
                ShortString::from(queue),
                ShortString::from(topology.exchange.as_str()),
                ShortString::from(channel.as_str()),
                FieldTable::default(),
            )
            .await
            .map_err(|e| BrokerError::Declare {
                what: format!("removal of the binding of `{queue}` (the shards replace it)"),
                reason: e.to_string(),
            })?;
        }
    }
    // Best effort: the declarations are done; a failed close changes nothing.
    let _ = ch.close(200, "declared".into()).await;
    Ok(())
}

async fn bind(
    ch: &lapin::Channel,
    queue: &str,
    exchange: &str,
    key: &str,
) -> Result<(), BrokerError> {
    ch.queue_bind(
        ShortString::from(queue),
        ShortString::from(exchange),
        ShortString::from(key),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(|e| BrokerError::Declare {
        what: format!("binding of queue `{queue}` to `{exchange}` with key `{key}`"),
        reason: e.to_string(),
    })
}

/// The channel's consistent-hash exchange, bound to the main exchange with
/// the channel's routing key (producers change nothing), and its shard
/// queues bound to it with equal weights. Growing the count adds queues and
/// keeps what the others hold.
async fn declare_shards(
    ch: &lapin::Channel,
    topology: &Topology,
    channel: Channel,
) -> Result<(), BrokerError> {
    let hash = topology.shard_exchange(channel);
    let mut args = FieldTable::default();
    args.insert(
        "hash-property".into(),
        AMQPValue::LongString("message_id".into()),
    );
    ch.exchange_declare(
        ShortString::from(hash.as_str()),
        ExchangeKind::Custom("x-consistent-hash".into()),
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .map_err(|e| {
        let reason = e.to_string();
        BrokerError::Declare {
            what: format!("exchange `{hash}` (x-consistent-hash, for NOTIFY_SHARDS={})", topology.shards),
            reason: if reason.contains("x-consistent-hash") || reason.contains("exchange type") {
                format!(
                    "{reason}; the plugin is off: enable it with `rabbitmq-plugins enable {HASH_PLUGIN}` on every node, or set NOTIFY_SHARDS=1"
                )
            } else {
                reason
            },
        }
    })?;
    ch.exchange_bind(
        ShortString::from(hash.as_str()),
        ShortString::from(topology.exchange.as_str()),
        ShortString::from(channel.as_str()),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(|e| BrokerError::Declare {
        what: format!(
            "binding of exchange `{hash}` to `{}` with key `{channel}`",
            topology.exchange
        ),
        reason: e.to_string(),
    })?;
    for i in 0..topology.shards {
        let shard = topology.shard_queue(channel, i);
        declare_queue(ch, &shard, topology.queue_type).await?;
        // The binding key of a consistent-hash exchange is the weight.
        bind(ch, &shard, &hash, "1").await?;
    }
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
