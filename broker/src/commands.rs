//! The broker's handle on each live connection (`ConnInfo`) and the commands its task
//! takes from outside the protocol: the consumer timeout, and a test's closes, drops
//! and mid-frame cuts.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::outbox::Outbox;
use crate::trace::{Trace, Tracer};

/// Something a test asks one connection to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `connection.close` with this code and text (after the `CODE_NAME - `
    /// prefix, which the broker adds).
    CloseConnection { code: u16, text: String },
    /// `channel.close` on one channel.
    CloseChannel {
        channel: u16,
        code: u16,
        text: String,
    },
    /// The consumer timeout fired for `channel`: closed with this 406 text,
    /// unless the channel it fired for is gone (see
    /// `Connection::consumer_timed_out`).
    ConsumerTimeout { channel: u16, text: String },
    /// The socket just dies: no close, as when a network cable is pulled.
    Drop,
    /// Half a frame is written, then the socket dies.
    CutMidFrame,
}

/// The broker's handle on one live connection.
#[derive(Debug)]
pub struct ConnInfo {
    pub id: u64,
    pub peer: String,
    pub vhost: Mutex<Option<String>>,
    pub outbox: Arc<Outbox>,
    commands: Mutex<VecDeque<Command>>,
    /// Wakes the connection's task when a command arrives.
    pub wake: Notify,
    pub trace: Trace,
    /// The listener's address the client connected to (for the name RabbitMQ's
    /// management API gives a connection, `peer -> local`); `None` in process.
    pub local: std::sync::OnceLock<String>,
    /// What the client said in `connection.start-ok`, once it logged in.
    pub client: std::sync::OnceLock<ClientInfo>,
}

/// A logged-in client, as the management API shows it.
#[derive(Clone, Debug)]
pub struct ClientInfo {
    pub user: String,
    pub properties: amq_protocol::types::FieldTable,
    /// Milliseconds since the Unix epoch (RabbitMQ's `connected_at`).
    pub connected_at: u64,
}

impl ConnInfo {
    pub fn new(id: u64, peer: String, outbox: Arc<Outbox>, tracer: Arc<Tracer>) -> Self {
        ConnInfo {
            id,
            peer,
            vhost: Mutex::new(None),
            outbox,
            commands: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            trace: Trace::new(tracer, id),
            local: Default::default(),
            client: Default::default(),
        }
    }

    pub fn command(&self, c: Command) {
        self.commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(c);
        crate::busy_wait::woke_a_task();
        self.wake.notify_one();
    }

    pub fn take_commands(&self) -> Vec<Command> {
        self.commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect()
    }
}

// ---- rules ----------------------------------------------------------------------
