//! warren-client: a small async AMQP 0-9-1 client for tokio, built on amq-protocol.
//!
//! It works the same against RabbitMQ and against Warren, over TCP
//! ([`Connection::connect`]) or over any byte stream ([`Connection::open`], e.g. Warren's
//! in-process stream).
//!
//! ```no_run
//! # async fn demo() -> Result<(), warren_client::Error> {
//! use warren_client::*;
//! let conn = Connection::connect("amqp://guest:guest@127.0.0.1:5672/%2f").await?;
//! let ch = conn.create_channel().await?;
//! let q = ch.queue_declare("hello", QueueDeclareOptions::default(), FieldTable::default()).await?;
//! ch.confirm_select().await?;
//! let confirm = ch
//!     .basic_publish("", &q.name, BasicPublishOptions::default(), b"hi", BasicProperties::default())
//!     .await?;
//! assert!(confirm.await?.is_ack());
//! let mut consumer = ch.basic_consume(&q.name, "", BasicConsumeOptions::default(), FieldTable::default()).await?;
//! if let Some(delivery) = consumer.recv().await {
//!     delivery?.ack(BasicAckOptions::default()).await?;
//! }
//! conn.close().await?;
//! # Ok(()) }
//! ```
//!
//! # In tests, with Warren
//!
//! A fresh broker per test, no socket, no shared state (warren-broker as a
//! dev-dependency):
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let broker = warren_broker::Broker::start().await?;
//! let conn = warren_client::Connection::open(broker.connect_in_process()).await?;
//! // ... the code under test, given `conn` (or `broker.url()` for other clients) ...
//! broker.shutdown().await; // connections get 320 CONNECTION_FORCED
//! # drop(conn); Ok(()) }
//! ```
//!
//! # Errors
//!
//! A broker-side failure arrives as [`Error::ChannelClosed`] (soft: the channel is gone,
//! the connection lives) or [`Error::ConnectionClosed`] (hard), each with the
//! [`CloseReason`] the broker sent: reply code, text, class id and method id. An
//! asynchronous method (publish, ack) that the broker rejects fails the *next* call on
//! that channel, and every confirm still outstanding on it. There is no automatic
//! reconnection: after a hard error, open a new [`Connection`].
//!
//! # Layout
//! - [`url`]: `amqp://` URLs and [`ConnectionConfig`].
//! - `codec`: frames to bytes and back (no I/O).
//! - `content`: reassembly of method + header + body frames (no I/O).
//! - `connection`: handshake, tune negotiation, [`Connection`].
//! - `io`: the one task per connection that owns the socket: reader, writer, heartbeats.
//! - `state`: what the connection task shares with the handles (connection and
//!   channel state, the way to the socket), below both.
//! - `channel`: [`Channel`], the methods a client calls.
//! - `consumer`: [`Consumer`] and [`Returns`] streams.
//! - `confirm`: [`PublisherConfirm`], [`Confirmation`], [`ReturnedMessage`].
//! - `message`: [`Delivery`], [`GetMessage`]; `acker`: [`Acker`], how they settle.
//! - `options`: flags of each method; `error`: [`Error`], soft vs hard vs I/O.
//!
//! # Architecture invariants
//! - Only the connection task touches the socket; everything else talks to it through
//!   a bounded queue, so publishers feel back-pressure.
//! - No buffer grows without bound: consumer buffers are sized to the prefetch (or a
//!   fixed default), and a full one pauses reading from the socket.
//! - Locks are std mutexes, never held across an `.await`.

#![deny(missing_docs, missing_debug_implementations)]

mod acker;
mod channel;
mod codec;
mod confirm;
mod connection;
mod consumer;
mod content;
mod error;
mod io;
mod message;
mod options;
mod state;
pub mod url;

pub use acker::Acker;
pub use amq_protocol;
pub use amq_protocol::protocol::BasicProperties;
pub use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
pub use channel::{Channel, Queue};
pub use confirm::{Confirmation, PublisherConfirm, ReturnedMessage};
pub use connection::Connection;
pub use consumer::{Consumer, Returns};
pub use error::{CloseReason, Error, Result};
pub use message::{Delivery, GetMessage};
pub use options::*;
pub use url::ConnectionConfig;
