//! What a test can see inside the broker: snapshots of queues (their messages in
//! order, unacked deliveries, consumers), exchanges, bindings and connections, and
//! assertions on them whose failures show the queue's contents.

use std::fmt;

use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::FieldTable;
use bytes::Bytes;

/// A message as a queue holds it.
#[derive(Clone, Debug)]
pub struct MessageSnapshot {
    pub body: Bytes,
    pub properties: BasicProperties,
    /// The exchange it was published to ("" for the default exchange).
    pub exchange: String,
    pub routing_key: String,
    pub redelivered: bool,
}

impl MessageSnapshot {
    /// The body as text (lossy), for assertions and messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A delivery a client has not acknowledged yet.
#[derive(Clone, Debug)]
pub struct UnackedSnapshot {
    pub message: MessageSnapshot,
    pub connection: u64,
    pub channel: u16,
    pub delivery_tag: u64,
    /// `None` for a `basic.get`.
    pub consumer_tag: Option<String>,
}

#[derive(Clone, Debug)]
pub struct ConsumerSnapshot {
    pub tag: String,
    pub connection: u64,
    pub channel: u16,
    pub no_ack: bool,
    pub exclusive: bool,
    /// Per-consumer prefetch (0: none).
    pub prefetch: u16,
    pub unacked: u32,
    pub priority: i64,
}

/// A queue at one moment.
#[derive(Clone, Debug)]
pub struct QueueSnapshot {
    pub vhost: String,
    pub name: String,
    pub durable: bool,
    /// The connection that owns it, for an exclusive queue.
    pub exclusive_owner: Option<u64>,
    pub auto_delete: bool,
    pub arguments: FieldTable,
    /// Ready messages in delivery order; for a stream, every message its log
    /// holds, oldest first (reading removes none).
    pub messages: Vec<MessageSnapshot>,
    pub unacked: Vec<UnackedSnapshot>,
    pub consumers: Vec<ConsumerSnapshot>,
}

impl QueueSnapshot {
    /// Ready messages, as `queue.declare-ok` counts them (except for a stream,
    /// whose declare-ok says 0 as RabbitMQ 3.10's does: this counts its log).
    pub fn message_count(&self) -> usize {
        self.messages.len()
    }

    /// The ready messages' bodies as text, in order.
    pub fn bodies(&self) -> Vec<String> {
        self.messages.iter().map(MessageSnapshot::text).collect()
    }

    /// Panics, showing the queue, unless it holds no ready message.
    #[track_caller]
    pub fn assert_empty(&self) -> &Self {
        assert!(
            self.messages.is_empty(),
            "queue '{}' should be empty but holds {} message(s):\n{self}",
            self.name,
            self.messages.len()
        );
        self
    }

    /// Panics, showing the queue, if any delivery from it is still unacked.
    #[track_caller]
    pub fn assert_no_unacked(&self) -> &Self {
        assert!(
            self.unacked.is_empty(),
            "queue '{}' should have no unacked deliveries but has {}:\n{self}",
            self.name,
            self.unacked.len()
        );
        self
    }

    /// Panics, showing the queue, unless its ready messages have these bodies,
    /// in this order.
    #[track_caller]
    pub fn assert_bodies(&self, expected: &[&str]) -> &Self {
        let got = self.bodies();
        assert!(
            got == expected,
            "queue '{}' should hold {expected:?}:\n{self}",
            self.name
        );
        self
    }
}

impl fmt::Display for QueueSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "queue '{}' in vhost '{}': {} ready, {} unacked, {} consumer(s)",
            self.name,
            self.vhost,
            self.messages.len(),
            self.unacked.len(),
            self.consumers.len()
        )?;
        for (i, m) in self.messages.iter().enumerate() {
            writeln!(
                f,
                "  ready[{i}]: {:?} (exchange '{}', key '{}'{})",
                m.text(),
                m.exchange,
                m.routing_key,
                if m.redelivered { ", redelivered" } else { "" }
            )?;
        }
        for u in &self.unacked {
            writeln!(
                f,
                "  unacked: {:?} on connection {} channel {} tag {}{}",
                u.message.text(),
                u.connection,
                u.channel,
                u.delivery_tag,
                u.consumer_tag
                    .as_ref()
                    .map(|t| format!(" (consumer '{t}')"))
                    .unwrap_or_default()
            )?;
        }
        for c in &self.consumers {
            writeln!(
                f,
                "  consumer '{}' on connection {} channel {}: prefetch {}, {} unacked{}",
                c.tag,
                c.connection,
                c.channel,
                c.prefetch,
                c.unacked,
                if c.no_ack { ", no-ack" } else { "" }
            )?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
pub struct ExchangeSnapshot {
    pub vhost: String,
    pub name: String,
    /// "direct", "fanout", "topic" or "headers".
    pub kind: String,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
}

#[derive(Clone, Debug)]
pub struct BindingSnapshot {
    pub vhost: String,
    pub source: String,
    pub destination: String,
    /// True when the destination is an exchange.
    pub to_exchange: bool,
    pub routing_key: String,
    pub arguments: FieldTable,
}

#[derive(Clone, Debug)]
pub struct ConnectionSnapshot {
    pub id: u64,
    /// The peer address, or "in-process".
    pub peer: String,
    /// The vhost once `connection.open` succeeded.
    pub vhost: Option<String>,
    pub channels: Vec<u16>,
}

/// Everything at one moment: what [`crate::Broker::wait_for`] hands its condition.
#[derive(Clone, Debug, Default)]
pub struct BrokerSnapshot {
    pub queues: Vec<QueueSnapshot>,
    pub exchanges: Vec<ExchangeSnapshot>,
    pub bindings: Vec<BindingSnapshot>,
    pub connections: Vec<ConnectionSnapshot>,
}

impl BrokerSnapshot {
    /// The queue of that name in any vhost ("/" first).
    pub fn queue(&self, name: &str) -> Option<&QueueSnapshot> {
        self.queues
            .iter()
            .filter(|q| q.name == name)
            .min_by_key(|q| q.vhost != "/")
    }
}
