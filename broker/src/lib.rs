//! Warren: an AMQP 0-9-1 broker that stands in for RabbitMQ in tests.
//!
//! Start one inside a test in well under a millisecond, point any AMQP client at
//! [`Broker::url`] (or, with no socket at all, at [`Broker::connect_in_process`]), and
//! it behaves as RabbitMQ does wherever a test can see.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let broker = warren_broker::Broker::start().await?; // in memory, 127.0.0.1:0
//! let url = broker.url(); // amqp://guest:guest@127.0.0.1:PORT/%2f
//! # let _ = url;
//! broker.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`codec`]: bytes to frames and back.
//! - `connection`: one connection's protocol state machine, free of I/O.
//! - `broker`: [`Broker`]'s lifecycle; `broker/builder` ([`BrokerBuilder`]),
//!   `broker/inspection` (snapshots, waits, seeding), `broker/injection` (faults,
//!   the frame trace).
//! - `shared`: what every connection shares, and the background loops.
//! - `vhost`: queues and delivery state; route, enqueue, dispatch, settle.
//! - `routing`: exchanges and bindings; direct, fanout, topic and headers matching.
//! - `table`: field-table values compared and named as RabbitMQ does.
//! - `outbox`: the ordered bytes waiting for a connection's socket.
//! - `server`: accept loops and the tasks that drive a connection's I/O; `pacing`
//!   (when a TCP connection's task reads) and `busy_wait` (when it polls rather
//!   than park).
//! - [`config`]: settings and limits.
//! - [`profile`]: which RabbitMQ release is imitated, and what differs between them.
//! - [`testing`]: the protocol core driven byte by byte, with no sockets or tasks.

mod alarms;
pub mod auth;
mod busy_wait;
mod clock;
pub mod codec;
mod commands;
pub mod config;
mod connection;
mod control;
mod erlang_hash;
pub mod error;
mod faults;
pub mod inspect;
mod management;
mod memory;
mod names;
mod outbox;
mod pacing;
mod page;
pub mod profile;
mod routing;
mod server;
mod store;
mod table;
pub mod testing;
mod trace;
mod vhost;

mod broker;
mod shared;

pub use broker::{Broker, BrokerBuilder, WaitTimeout};
pub use config::Config;
pub use error::AmqpError;
pub use faults::Fault;
pub use inspect::{
    BindingSnapshot, BrokerSnapshot, ConnectionSnapshot, ConsumerSnapshot, ExchangeSnapshot,
    MessageSnapshot, QueueSnapshot, UnackedSnapshot,
};
pub use profile::{DeprecatedFeature, Profile, RabbitVersion};
pub use trace::{Direction, FaultMark, TraceEntry, TraceValue};
