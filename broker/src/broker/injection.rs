//! The fault API and the frame trace: what a test does to the broker to see how its
//! code copes, and the record of what went over the wire.

use crate::broker::Broker;
use crate::faults::Fault;
use crate::trace::TraceEntry;
use crate::{management, page};

/// Fault injection: what a test does to the broker to see how its code copes.
impl Broker {
    fn command(&self, connection: u64, command: crate::commands::Command) -> bool {
        self.shared.command(connection, command)
    }

    /// Closes a connection with `connection.close` (e.g. 320 and "broker
    /// forced connection closure"); `text` comes after RabbitMQ's `CODE_NAME - `.
    /// False when there is no such connection.
    pub fn close_connection(&self, connection: u64, code: u16, text: &str) -> bool {
        self.command(
            connection,
            crate::commands::Command::CloseConnection {
                code,
                text: text.to_owned(),
            },
        )
    }

    /// Closes one channel with `channel.close`.
    pub fn close_channel(&self, connection: u64, channel: u16, code: u16, text: &str) -> bool {
        self.command(
            connection,
            crate::commands::Command::CloseChannel {
                channel,
                code,
                text: text.to_owned(),
            },
        )
    }

    /// The connection's socket just dies: no `connection.close`.
    pub fn drop_connection(&self, connection: u64) -> bool {
        self.command(connection, crate::commands::Command::Drop)
    }

    /// Half a frame goes out, then the socket dies.
    pub fn cut_connection(&self, connection: u64) -> bool {
        self.command(connection, crate::commands::Command::CutMidFrame)
    }

    /// Cancels a consumer from the broker's side (`basic.cancel` to a client that
    /// asked for cancel notifications), as when RabbitMQ deletes its queue.
    pub fn cancel_consumer(&self, queue: &str, consumer_tag: &str) -> bool {
        self.shared
            .vhosts
            .get("/")
            .expect("vhost / always exists")
            .lock()
            .cancel_consumer(queue, consumer_tag)
    }

    /// Arms a scripted fault; it stays until [`Broker::clear_faults`].
    pub fn inject(&self, fault: Fault) {
        self.shared.rules.add(fault);
    }

    pub fn clear_faults(&self) {
        self.shared.rules.clear();
    }

    /// Raises (true) or clears (false) the memory alarm by hand: publishers get
    /// `connection.blocked` and are not read until it clears.
    pub fn set_memory_alarm(&self, on: bool) {
        self.shared.gauge.force(on);
    }

    /// Traces the frames of every connection from now on (and of those already
    /// open), or stops. The trace keeps the last 100 000 frames of all
    /// connections, closed ones included.
    pub fn set_tracing(&self, on: bool) {
        self.shared.tracer.set(on);
    }

    /// The frames traced on one connection, oldest first (also after it closed).
    pub fn trace(&self, connection: u64) -> Vec<TraceEntry> {
        self.shared.tracer.entries(Some(connection))
    }

    /// Every traced frame of every connection, in the order the broker saw
    /// them (each entry's `seq`).
    pub fn trace_all(&self) -> Vec<TraceEntry> {
        self.shared.tracer.entries(None)
    }

    /// The trace as a Mermaid sequence diagram (`sequenceDiagram`): the broker and
    /// one participant per connection, an arrow per frame (heartbeats left out),
    /// a note where a scripted fault fired. For a test's failure message or a
    /// README; paste it into any Mermaid renderer.
    pub fn trace_mermaid(&self) -> String {
        page::mermaid_named(&self.shared.tracer.entries(None))
    }

    /// Writes one self-contained HTML file to `path`: the frame trace as a
    /// sequence diagram and the broker's state now (queues with their messages,
    /// exchanges, bindings, connections), the page of the management listener
    /// with its data inside. It opens in any browser with no network: a CI job
    /// can keep it as the artifact of a failed test.
    pub fn trace_html(&self, path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
        std::fs::write(path, management::trace_file(&self.shared))
    }

    /// Every connection's traced frames, printable on a test failure: grouped by
    /// connection, oldest first.
    pub fn trace_dump(&self) -> String {
        self.shared.trace_dump()
    }
}
