//! `Broker`: a running broker's lifecycle (start, addresses, restart, crash, shutdown).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::server::Tracker;
use crate::shared::Shared;
use crate::{auth, server};

mod builder;
mod injection;
mod inspection;

pub use builder::BrokerBuilder;
pub use inspection::WaitTimeout;

/// A running broker. Dropping it stops it without waiting; [`Broker::shutdown`]
/// closes every connection gracefully and waits for them.
#[derive(Debug)]
pub struct Broker {
    shared: Arc<Shared>,
    addrs: Vec<SocketAddr>,
    tracker: Arc<Tracker>,
    /// Set to stop the accept loops.
    stop_tx: watch::Sender<bool>,
    accept_tasks: Vec<JoinHandle<()>>,
    /// Where the management HTTP API listens, if it does.
    management_addr: Option<SocketAddr>,
}

impl Broker {
    /// An in-memory broker on `127.0.0.1:0` with guest/guest.
    pub async fn start() -> std::io::Result<Broker> {
        Self::builder().start().await
    }

    pub fn builder() -> BrokerBuilder {
        BrokerBuilder::default()
    }

    /// The first listening address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.addrs.first().copied()
    }

    /// Every listening address, in `bind` order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// `amqp://USER:PASSWORD@HOST:PORT/%2f` for the first listener.
    pub fn url(&self) -> String {
        let addr = self
            .local_addr()
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let c = &self.shared.config;
        format!(
            "amqp://{}:{}@{}/%2f",
            percent_encode(&c.user),
            percent_encode(&c.password),
            addr
        )
    }

    /// The management HTTP API's base URL, `http://HOST:PORT`, when
    /// [`BrokerBuilder::management`] was set.
    pub fn management_url(&self) -> Option<String> {
        self.management_addr.map(|a| format!("http://{a}"))
    }

    /// A new client connection with no socket: an in-memory byte stream that any
    /// AMQP client taking an `AsyncRead + AsyncWrite` can speak over.
    pub fn connect_in_process(&self) -> tokio::io::DuplexStream {
        let (client, server) = tokio::io::duplex(256 * 1024);
        let guard = self.tracker.enter();
        tokio::spawn(server::serve(
            server,
            "in-process".to_owned(),
            None,
            self.shared.clone(),
            self.shared.close.subscribe(),
            guard,
            None,
        ));
        client
    }

    /// Bytes of message bodies the broker holds (queued, unacked or in flight):
    /// what the memory high watermark is compared with.
    pub fn message_bytes(&self) -> usize {
        self.shared.gauge.bytes()
    }

    /// The broker's users and permissions, changed at run time as RabbitMQ's
    /// management API changes them (a change applies to open connections from
    /// their next operation).
    pub fn users(&self) -> &Arc<auth::Users> {
        &self.shared.users
    }

    /// How many client connections are open.
    pub fn connection_count(&self) -> usize {
        self.tracker.live()
    }

    /// Restarts the broker as RabbitMQ restarts: every connection is closed with
    /// 320 CONNECTION_FORCED, and only durable exchanges, durable queues, their
    /// bindings and persistent messages remain. The listening addresses stay.
    ///
    /// With a data directory the state is then rebuilt from the log on disk, as
    /// after a crash, so a restart in a test exercises recovery.
    ///
    /// # Panics
    /// When the data directory cannot be read back; see [`Broker::try_restart`].
    pub async fn restart(&self) {
        if let Err(e) = self.try_restart().await {
            panic!("warren restart: cannot recover the data directory: {e}");
        }
    }

    /// [`Broker::restart`], reporting a data directory that cannot be read back.
    pub async fn try_restart(&self) -> std::io::Result<()> {
        self.shared.restart().await
    }

    /// Crashes the broker as a power cut would, and starts it again: every
    /// connection dies without `connection.close` (its socket just closes), and
    /// the state is then recovered as after `kill -9`. The listening addresses
    /// stay.
    ///
    /// With a data directory, what had not been fsynced is lost: the log is cut
    /// back to its last fsync, and the confirms that waited for what followed
    /// are never sent. Like RabbitMQ, Warren fsyncs only for what a client
    /// waits on: a publish on a channel in confirm mode, a transaction's
    /// commit, a change of topology (a declare, a delete, a binding), and a
    /// test's own seeds (`Broker::seed`). So a
    /// message whose confirm the publisher received is never lost; one whose
    /// confirm it did not receive may be lost or may survive; and an unconfirmed
    /// persistent publish, or an ack, that no later fsync covered is lost (the
    /// acked message comes back), as a real power cut can do to RabbitMQ. That
    /// is why a publisher republishes what was not confirmed. Messages in
    /// transient queues and transient messages go, as on any restart.
    ///
    /// Without a data directory there is no disk to lose: the in-memory broker
    /// keeps exactly what [`Broker::restart`] keeps (durable exchanges, queues,
    /// bindings and persistent messages), as if its disk synced every write at
    /// once. What differs from `restart` is how the clients see it: the socket
    /// dies instead of a 320 CONNECTION_FORCED close.
    ///
    /// [`Broker::stall_storage`] holds records back from the disk beforehand, to
    /// make sure that some are in flight when the power goes.
    ///
    /// # Panics
    /// When the data directory cannot be read back; see [`Broker::try_crash`].
    pub async fn crash(&self) {
        if let Err(e) = self.try_crash().await {
            panic!("warren crash: cannot recover the data directory: {e}");
        }
    }

    /// [`Broker::crash`], reporting a data directory that cannot be read back.
    pub async fn try_crash(&self) -> std::io::Result<()> {
        self.shared.crash().await
    }

    /// Stalls the disk (true) or lets it go again (false), as a disk whose
    /// fsync hangs: persistent messages to durable queues are still routed and
    /// delivered, but nothing reaches the disk and their confirms (or their
    /// transaction's `tx.commit-ok`) do not come.
    /// Released, everything held back is written and confirmed; a
    /// [`Broker::crash`] meanwhile loses it. Does nothing without a data
    /// directory, where confirms never wait for a disk.
    pub fn stall_storage(&self, on: bool) {
        if let Some(store) = &self.shared.store {
            store.stall(on);
        }
    }

    /// Graceful shutdown: stops accepting, closes every connection with 320
    /// CONNECTION_FORCED, and waits until all of them have finished.
    pub async fn shutdown(mut self) {
        let _ = self.stop_tx.send(true);
        for task in self.accept_tasks.drain(..) {
            let _ = task.await;
        }
        self.shared.close.send_modify(|n| *n += 1);
        self.tracker.wait_idle().await;
        if let Some(store) = self.shared.store.clone() {
            let _ = tokio::task::spawn_blocking(move || {
                store.flush();
                store.close();
            })
            .await;
        }
    }

    /// Rewrites the data directory's log as a snapshot of the live durable state
    /// now, and waits until it is on disk. It also happens on its own once the log
    /// has grown well past what is live.
    pub async fn compact_storage(&self) {
        let shared = self.shared.clone();
        let _ = tokio::task::spawn_blocking(move || {
            shared.compact();
            if let Some(store) = &shared.store {
                store.flush();
            }
        })
        .await;
    }

    /// Moves the virtual clock (`BrokerBuilder::virtual_clock`) forward and
    /// applies what became due: expired messages are dropped or dead-lettered,
    /// unused queues with `x-expires` deleted, channels holding a delivery
    /// longer than the consumer timeout closed. Does nothing on a real clock.
    ///
    /// Heartbeats do not follow it: the client's own heartbeat timer runs on real
    /// time, so moving only the broker's clock would make every client look
    /// silent. Heartbeats follow tokio's clock instead, as does the broker's
    /// real clock: a test under `tokio::time::pause()` moves TTLs, expiry,
    /// consumer timeouts and heartbeats together with `tokio::time::advance`.
    pub fn advance(&self, by: std::time::Duration) {
        self.shared.advance(by);
    }

    /// Where durable state is kept, if anywhere.
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.shared.config.data_dir.as_deref()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.stop_tx.send(true);
        self.shared.close.send_modify(|n| *n += 1);
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
