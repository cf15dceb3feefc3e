//! The protocol core without sockets or tasks: connections fed bytes by hand and
//! their output read back, deterministically. For fuzzers, property tests and
//! anyone who wants to step a broker one frame at a time.
//!
//! ```
//! use warren_broker::testing::Core;
//!
//! let core = Core::new(Default::default());
//! let mut conn = core.connect();
//! conn.feed(b"AMQP\x00\x00\x09\x01");
//! let start = conn.take_output(); // connection.start
//! assert_eq!(start[0], 1);
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::commands::ConnInfo;
use crate::config::Config;
use crate::connection::{Connection, Outcome};
use crate::outbox::Outbox;
use crate::shared::Shared;

/// A broker's shared state (vhosts, exchanges, queues) with no listener.
#[derive(Debug, Clone)]
pub struct Core {
    shared: Arc<Shared>,
}

impl Core {
    /// A broker core; with a `data_dir` in `config` its state is recovered from
    /// there (and this panics if that directory cannot be read).
    pub fn new(config: Config) -> Self {
        Self {
            shared: Arc::new(Shared::new(config).expect("open the data directory")),
        }
    }

    /// A new client connection to this broker, before its protocol header.
    pub fn connect(&self) -> CoreConnection {
        // Each connection keeps its own clock, which moves only by `advance`.
        let now = Instant::now();
        let outbox = Arc::new(Outbox::default());
        let id = self.shared.next_connection_id();
        let info = Arc::new(ConnInfo::new(
            id,
            "core".into(),
            outbox.clone(),
            self.shared.tracer.clone(),
        ));
        CoreConnection {
            conn: Connection::new(self.shared.clone(), info, now),
            outbox,
            input: BytesMut::new(),
            closed: false,
            now,
        }
    }
}

/// One connection driven by hand. Dropping it is the socket going away.
#[derive(Debug)]
pub struct CoreConnection {
    conn: Connection,
    outbox: Arc<Outbox>,
    input: BytesMut,
    closed: bool,
    /// This connection's clock.
    now: Instant,
}

impl CoreConnection {
    /// Hands the broker bytes as if they came from the socket; returns false once
    /// the broker has decided to close the socket (later input is ignored).
    pub fn feed(&mut self, bytes: &[u8]) -> bool {
        if self.closed {
            return false;
        }
        self.input.extend_from_slice(bytes);
        let outcome = self.conn.handle_input(&mut self.input, self.now);
        self.end_if(outcome)
    }

    /// How long until the connection's next timer falls due on its clock: the
    /// heartbeat the broker owes, the client's it waits for, the end of the
    /// handshake or close timeout. `None` once closed.
    pub fn next_timer(&mut self) -> Option<Duration> {
        if self.closed {
            return None;
        }
        let due = self.conn.poll_timeout(self.now)?;
        Some(due.saturating_duration_since(self.now))
    }

    /// Moves the connection's clock on by `by`, running each timer that falls
    /// due meanwhile at its own instant, as a sleeping driver would; returns
    /// false once the broker has decided to close the socket.
    pub fn advance(&mut self, by: Duration) -> bool {
        let until = self.now + by;
        let mut fired = None;
        while !self.closed {
            match self.conn.poll_timeout(self.now) {
                Some(due) if due <= until => {
                    // A timer that fires and stays due would spin a driver too.
                    assert!(
                        fired != Some(due),
                        "the timer due at {due:?} fired and stayed due"
                    );
                    fired = Some(due);
                    self.now = self.now.max(due);
                    let outcome = self.conn.handle_timeout(self.now);
                    self.end_if(outcome);
                }
                _ => break,
            }
        }
        self.now = until;
        !self.closed
    }

    fn end_if(&mut self, outcome: Outcome) -> bool {
        if outcome != Outcome::Continue && !self.closed {
            self.closed = true;
            self.conn.release();
        }
        !self.closed
    }

    /// Everything the broker has sent this connection since the last call:
    /// replies, deliveries caused by other connections, closes.
    pub fn take_output(&mut self) -> BytesMut {
        self.outbox.take()
    }

    /// Bytes the broker holds for this connection's input, waiting for the rest of
    /// a frame: bounded by the negotiated frame_max.
    pub fn buffered_input(&self) -> usize {
        self.input.len()
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// A `connection.close` went one way or the other: the broker answers
    /// nothing but closes now, and its socket would stay until the client hangs up.
    pub fn is_closing(&self) -> bool {
        self.conn.is_closing()
    }
}

impl Drop for CoreConnection {
    fn drop(&mut self) {
        self.conn.release();
    }
}
