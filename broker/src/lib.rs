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
//! - `vhost`: exchanges, queues, bindings and delivery state; routing, dispatch, acks.
//! - `routing`: direct, fanout, topic and headers matching.
//! - `outbox`: the ordered bytes waiting for a connection's socket.
//! - `server`: accept loops and the tasks that drive a connection's I/O.
//! - [`config`]: settings and limits.
//! - [`testing`]: the protocol core driven byte by byte, with no sockets or tasks.

mod alarms;
pub mod auth;
mod clock;
pub mod codec;
pub mod config;
mod connection;
mod control;
pub mod error;
mod faults;
pub mod inspect;
mod management;
mod memory;
mod outbox;
mod pacing;
mod page;
mod routing;
mod server;
mod store;
pub mod testing;
mod trace;
mod vhost;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::Config;
pub use error::AmqpError;
pub use faults::Fault;
pub use inspect::{
    BindingSnapshot, BrokerSnapshot, ConnectionSnapshot, ConsumerSnapshot, ExchangeSnapshot,
    MessageSnapshot, QueueSnapshot, UnackedSnapshot,
};
pub use trace::{Direction, FaultMark, TraceEntry, TraceValue};

use clock::Clock;
use server::Tracker;
use store::Store;
use vhost::Vhost;

/// The broker's virtual hosts by name. The management API adds and removes
/// them while the broker runs. The map's lock is a leaf held only to clone
/// an `Arc` out: never while a vhost's lock is taken.
#[derive(Debug, Default)]
pub(crate) struct Vhosts(std::sync::RwLock<HashMap<String, Arc<Vhost>>>);

impl Vhosts {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Vhost>>> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, name: &str) -> Option<Arc<Vhost>> {
        self.read().get(name).cloned()
    }

    pub(crate) fn contains_key(&self, name: &str) -> bool {
        self.read().contains_key(name)
    }

    /// Every vhost, by name.
    pub(crate) fn all(&self) -> Vec<(String, Arc<Vhost>)> {
        let mut v: Vec<(String, Arc<Vhost>)> = self
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.all().into_iter().map(|(k, _)| k).collect()
    }

    /// Adds `vhost` unless one of that name exists; true when it was added.
    pub(crate) fn insert(&self, name: &str, vhost: Arc<Vhost>) -> bool {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        if map.contains_key(name) {
            return false;
        }
        map.insert(name.to_owned(), vhost);
        true
    }

    pub(crate) fn remove(&self, name: &str) -> Option<Arc<Vhost>> {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
    }
}

/// What every connection of a broker shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) vhosts: Vhosts,
    /// The durable log, when there is a data directory.
    pub(crate) store: Option<Arc<Store>>,
    /// Time for TTLs and expiry: real, or virtual and moved by the test.
    pub(crate) clock: Arc<Clock>,
    /// Message bytes held, against the memory high watermark.
    pub(crate) gauge: Arc<memory::Gauge>,
    /// Users, their permissions and who may log in only over loopback.
    pub(crate) users: Arc<auth::Users>,
    /// Live connections, for inspection and fault injection.
    connections: std::sync::Mutex<HashMap<u64, Arc<faults::ConnInfo>>>,
    /// Scripted faults in force.
    pub(crate) rules: faults::Rules,
    /// Every connection's frames, while tracing is on.
    pub(crate) tracer: Arc<trace::Tracer>,
    /// Read-held by every connection task for its life; a restart or crash
    /// holds it for writing, so that no connection is served while the state is
    /// rebuilt. The one lock held across awaits, and never with another lock.
    gate: tokio::sync::RwLock<()>,
    /// Held while compaction or a restart reads or rewrites the log, so that the
    /// two never overlap.
    maintenance: std::sync::Mutex<()>,
    next_connection: AtomicU64,
    /// Bumped to make every connection close with 320 CONNECTION_FORCED
    /// (shutdown and restart); each connection holds a receiver.
    close: watch::Sender<u64>,
}

impl Shared {
    /// The broker's state: empty, or recovered from the data directory.
    pub(crate) fn new(config: Config) -> std::io::Result<Self> {
        let (store, recovered) = match &config.data_dir {
            Some(dir) => {
                let (store, recovered) = Store::open(dir)?;
                (Some(store), recovered)
            }
            None => (None, Default::default()),
        };
        let names: std::collections::BTreeSet<&str> = std::iter::once("/")
            .chain(config.vhosts.iter().map(String::as_str))
            .chain(recovered.vhosts.keys().map(String::as_str))
            .collect();
        let clock = Arc::new(if config.virtual_clock {
            Clock::virtual_clock()
        } else {
            Clock::real()
        });
        let gauge =
            memory::Gauge::new(alarms::watermark_bytes(config.memory_high_watermark) as usize);
        let users = Arc::new(config.initial_users(names.iter().copied())?);
        let vhosts = Vhosts::default();
        for name in names {
            let vhost = Vhost::new(name);
            {
                let mut state = vhost.lock();
                state.set_clock(clock.clone());
                state.set_gauge(gauge.clone());
                if let Some(store) = &store {
                    state.set_store(store.clone());
                }
                if let Some(rec) = recovered.vhosts.get(name) {
                    state.restore(rec);
                }
            }
            vhosts.insert(name, Arc::new(vhost));
        }
        Ok(Self {
            config,
            vhosts,
            store,
            clock,
            gauge,
            users,
            connections: Default::default(),
            rules: Default::default(),
            tracer: Default::default(),
            maintenance: std::sync::Mutex::new(()),
            gate: tokio::sync::RwLock::new(()),
            next_connection: AtomicU64::new(1),
            close: watch::channel(0).0,
        })
    }

    /// Rewrites the log as a snapshot of the live durable state, so that acked
    /// messages stop taking disk space.
    pub(crate) fn compact(&self) {
        let Some(store) = &self.store else { return };
        let _maintenance = self.maintenance.lock().unwrap_or_else(|e| e.into_inner());
        if store.is_frozen() {
            // A crash is under way: the files are what recovery will read.
            return;
        }
        store.begin_snapshot();
        for (_, vhost) in self.vhosts.all() {
            let state = vhost.lock();
            for rec in state.snapshot() {
                store.append(&rec);
            }
        }
        store.end_snapshot();
    }

    /// Lets every vhost expire what is due, and closes the channels whose
    /// oldest delivery outlived the consumer timeout.
    pub(crate) fn tick(&self) {
        for (_, vhost) in self.vhosts.all() {
            let overdue = {
                let mut v = vhost.lock();
                v.tick();
                match self.config.consumer_timeout {
                    Some(timeout) => v.timed_out_channels(timeout),
                    None => Vec::new(),
                }
            };
            for (conn, channel) in overdue {
                self.consumer_timed_out(conn, channel);
            }
        }
    }

    /// RabbitMQ 3.10's channel exception for an overdue ack; the close requeues
    /// the channel's unacked deliveries, as any channel close does.
    fn consumer_timed_out(&self, conn: u64, channel: u16) {
        let ms = self
            .config
            .consumer_timeout
            .map_or(0, |t| t.as_millis() as u64);
        tracing::warn!(
            conn,
            channel,
            "consumer timed out waiting for delivery acknowledgement; timeout {ms} ms"
        );
        let info = self
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&conn)
            .cloned();
        if let Some(info) = info {
            info.command(faults::Command::ConsumerTimeout {
                channel,
                text: format!(
                    "delivery acknowledgement on channel {channel} timed out. \
                     Timeout value used: {ms} ms. This timeout value can be \
                     configured, see consumers doc guide to learn more"
                ),
            });
        }
    }

    /// After every connection closed: keep only what survives a broker restart.
    /// With a data directory the state is rebuilt from the log, exactly as after a
    /// crash; without one, the durable part of memory stays.
    fn restart_state(&self) -> std::io::Result<()> {
        let Some(store) = &self.store else {
            self.keep_durable_in_memory();
            return Ok(());
        };
        let _maintenance = self.maintenance.lock().unwrap_or_else(|e| e.into_inner());
        store.flush();
        let recovered = store::recover(store.dir())?;
        // Only a failed disk leaves a snapshot cut off here, but its vhosts'
        // next records must not be read as the rest of it.
        store.abandon_snapshots(&recovered.abandoned);
        self.restore(&recovered);
        Ok(())
    }

    /// Without a data directory: what a restart keeps, from memory.
    fn keep_durable_in_memory(&self) {
        for (_, vhost) in self.vhosts.all() {
            vhost.lock().restart();
        }
    }

    /// Every vhost as the files hold it (one the files never saw ends up empty).
    fn restore(&self, recovered: &store::Recovered) {
        let empty = store::RecoveredVhost::default();
        for (name, vhost) in self.vhosts.all() {
            vhost
                .lock()
                .restore(recovered.vhosts.get(&name).unwrap_or(&empty));
        }
    }

    /// The power goes out: nothing more reaches the disk. A snapshot being
    /// written may be cut off, as by `kill -9`; recovery ignores it.
    fn power_cut(&self) {
        let Some(store) = &self.store else { return };
        let _maintenance = self.maintenance.lock().unwrap_or_else(|e| e.into_inner());
        store.freeze();
    }

    /// After every connection died with the power: the state is what the files
    /// hold, as after `kill -9`. Without a data directory the in-memory state is
    /// taken as a disk that synced everything, which is what `restart` keeps.
    fn crash_state(&self) -> std::io::Result<()> {
        let Some(store) = &self.store else {
            self.keep_durable_in_memory();
            return Ok(());
        };
        let _maintenance = self.maintenance.lock().unwrap_or_else(|e| e.into_inner());
        let recovered = store::recover(store.dir());
        // Power is back even when the files cannot be read, so that the store
        // does not stay frozen; the error is still the caller's.
        if let Ok(recovered) = &recovered {
            self.restore(recovered);
        }
        store.thaw(recovered.as_ref().map_or(&[][..], |r| &r.abandoned));
        recovered.map(drop)
    }

    pub(crate) fn register(&self, info: Arc<faults::ConnInfo>) {
        self.connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(info.id, info);
    }

    pub(crate) fn unregister(&self, id: u64) {
        self.connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    fn connection_infos(&self) -> Vec<Arc<faults::ConnInfo>> {
        let mut v: Vec<_> = self
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by_key(|c| c.id);
        v
    }

    pub(crate) fn next_connection_id(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }
}

/// Sets what the `warren` command line sets; see [`Config`] for the defaults.
#[derive(Debug, Clone, Default)]
pub struct BrokerBuilder {
    config: Config,
    bind_set: bool,
}

impl BrokerBuilder {
    /// Listens on `addr` (repeatable; port 0 picks a free port). The default is
    /// `127.0.0.1:0`.
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        if !self.bind_set {
            self.config.bind.clear();
            self.bind_set = true;
        }
        self.config.bind.push(addr);
        self
    }

    /// No listening socket: clients connect through [`Broker::connect_in_process`].
    pub fn no_listener(mut self) -> Self {
        self.config.bind.clear();
        self.bind_set = true;
        self
    }

    pub fn credentials(mut self, user: &str, password: &str) -> Self {
        self.config.user = user.to_owned();
        self.config.password = password.to_owned();
        self
    }

    /// Adds a user besides the default one, with RabbitMQ's user tags
    /// (`administrator`, `management`, `impersonator`, ...). A new user has no
    /// permissions until [`BrokerBuilder::permissions`] gives some.
    pub fn user(mut self, name: &str, password: &str, tags: &[&str]) -> Self {
        self.config
            .users
            .push(auth::User::new(name, password, tags));
        self
    }

    /// What `user` may do in `vhost`: regular expressions over the names of
    /// the exchanges and queues it may configure, write to and read from, as
    /// `rabbitmqctl set_permissions`. An expression that does not compile makes
    /// [`BrokerBuilder::start`] fail.
    pub fn permissions(
        mut self,
        user: &str,
        vhost: &str,
        configure: &str,
        write: &str,
        read: &str,
    ) -> Self {
        self.config.permissions.push((
            user.to_owned(),
            vhost.to_owned(),
            auth::Permissions::new(configure, write, read),
        ));
        self
    }

    /// Users who may log in only from a loopback address (RabbitMQ's
    /// `loopback_users`); `["guest"]` by default, `&[]` for none.
    pub fn loopback_users(mut self, users: &[&str]) -> Self {
        self.config.loopback_users = users.iter().map(|u| (*u).to_owned()).collect();
        self
    }

    /// Adds a virtual host; `/` always exists.
    pub fn vhost(mut self, name: &str) -> Self {
        self.config.vhosts.push(name.to_owned());
        self
    }

    /// Keeps durable state in `dir`.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.data_dir = Some(dir.into());
        self
    }

    pub fn channel_max(mut self, n: u16) -> Self {
        self.config.channel_max = n;
        self
    }

    pub fn frame_max(mut self, n: u32) -> Self {
        self.config.frame_max = n.max(4096);
        self
    }

    /// The heartbeat interval proposed to clients, in seconds (0 disables).
    pub fn heartbeat(mut self, seconds: u16) -> Self {
        self.config.heartbeat = seconds;
        self
    }

    pub fn max_message_size(mut self, bytes: u64) -> Self {
        self.config.max_message_size = bytes;
        self
    }

    /// Above this many bytes of process memory (its resident set), publishing
    /// connections are blocked (and told so with `connection.blocked` when they
    /// asked) until consumers bring it back down, as RabbitMQ's
    /// `vm_memory_high_watermark.absolute`; 0 never blocks. The default is
    /// relative: see [`BrokerBuilder::memory_high_watermark_relative`].
    pub fn memory_high_watermark(mut self, bytes: usize) -> Self {
        self.config.memory_high_watermark = config::MemoryHighWatermark::Absolute(bytes as u64);
        self
    }

    /// The memory high watermark as a fraction of the memory the process may
    /// use (its cgroup's limit where there is one, else physical memory);
    /// RabbitMQ's `vm_memory_high_watermark`, 0.4 by default. 0 never blocks.
    pub fn memory_high_watermark_relative(mut self, fraction: f64) -> Self {
        self.config.memory_high_watermark = config::MemoryHighWatermark::Relative(fraction);
        self
    }

    /// With a data directory: below this many free bytes on its file system,
    /// publishers are blocked as by the memory alarm (RabbitMQ's
    /// `disk_free_limit`, 50 MB by default); 0 never blocks.
    pub fn disk_free_limit(mut self, bytes: u64) -> Self {
        self.config.disk_free_limit = bytes;
        self
    }

    /// TTLs, queue expiry and consumer timeouts follow a virtual clock moved
    /// only by [`Broker::advance`], so a test of a 30-minute TTL takes
    /// microseconds. Heartbeats stay on tokio's clock (see [`Broker::advance`]).
    pub fn virtual_clock(mut self) -> Self {
        self.config.virtual_clock = true;
        self
    }

    /// How long a delivery may stay unacknowledged before its channel is closed
    /// with 406 PRECONDITION_FAILED and its unacked messages requeued, as
    /// RabbitMQ's `consumer_timeout` does (30 minutes by default, as in 3.10).
    /// Measured on the broker's clock, so on a virtual clock
    /// [`Broker::advance`] past it closes the channel at once; RabbitMQ checks
    /// once a minute, so there it can take up to a minute longer.
    pub fn consumer_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.config.consumer_timeout = Some(timeout);
        self
    }

    /// Deliveries may stay unacknowledged forever.
    pub fn no_consumer_timeout(mut self) -> Self {
        self.config.consumer_timeout = None;
        self
    }

    /// How long the broker waits for `close-ok` after it sent `connection.close`
    /// (on shutdown, restart or a connection error) before it drops the socket,
    /// with whatever the client has not read; 3 seconds by default.
    pub fn close_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.config.close_timeout = timeout;
        self
    }

    /// Serves the management HTTP API (RabbitMQ's subset and `/api/warren/`,
    /// see docs/control-plane.md) on `addr`; port 0 picks a free port.
    pub fn management(mut self, addr: SocketAddr) -> Self {
        self.config.management = Some(addr);
        self
    }

    pub fn max_connections(mut self, n: usize) -> Self {
        self.config.max_connections = n;
        self
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Binds the listeners and starts serving.
    pub async fn start(self) -> std::io::Result<Broker> {
        let config = self.config;
        let mut listeners = Vec::new();
        for addr in &config.bind {
            listeners.push(TcpListener::bind(addr).await?);
        }
        let addrs = listeners
            .iter()
            .map(|l| l.local_addr())
            .collect::<std::io::Result<Vec<_>>>()?;
        let management = match config.management {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let management_addr = management.as_ref().map(|l| l.local_addr()).transpose()?;
        let shared = Arc::new(Shared::new(config)?);
        let tracker = Arc::new(Tracker::default());
        let close_rx = shared.close.subscribe();
        let (stop_tx, stop_rx) = watch::channel(false);
        // Only a broker with sockets needs descriptors (and raises its limit).
        let capacity = if listeners.is_empty() {
            usize::MAX
        } else {
            usize::try_from(alarms::connection_capacity()).unwrap_or(usize::MAX)
        };
        let mut accept_tasks: Vec<JoinHandle<()>> = listeners
            .into_iter()
            .map(|l| {
                tokio::spawn(server::accept_loop(
                    l,
                    shared.clone(),
                    tracker.clone(),
                    close_rx.clone(),
                    stop_rx.clone(),
                    capacity,
                ))
            })
            .collect();
        let limits = alarms::Limits {
            data_dir: shared.config.data_dir.clone(),
            disk_free_limit: shared.config.disk_free_limit,
        };
        if shared.gauge.high_watermark() > 0 || limits.data_dir.is_some() {
            accept_tasks.push(tokio::spawn(alarms::monitor(
                shared.gauge.clone(),
                limits,
                stop_rx.clone(),
            )));
        }
        if shared.store.is_some() {
            accept_tasks.push(tokio::spawn(compaction_loop(
                shared.clone(),
                stop_rx.clone(),
            )));
        }
        if !shared.clock.is_virtual() {
            accept_tasks.push(tokio::spawn(timer_loop(shared.clone(), stop_rx.clone())));
        }
        if let Some(listener) = management {
            accept_tasks.push(tokio::spawn(management::serve(
                listener,
                shared.clone(),
                addrs.clone(),
                stop_rx.clone(),
            )));
        }
        Ok(Broker {
            shared,
            addrs,
            tracker,
            stop_tx,
            accept_tasks,
            management_addr,
        })
    }
}

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
    /// With a data directory, what had not been fsynced is lost: records still
    /// waiting for the writer thread never reach the disk, and the confirms that
    /// waited for them are never sent. A message whose confirm the publisher
    /// received is never lost; one whose confirm it did not receive may be lost
    /// or may survive (it was written but not yet reported when the power went),
    /// which is why a publisher republishes what was not confirmed. Messages in
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

/// Expires messages and queues as real time passes.
async fn timer_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        shared.tick();
    }
}

/// Rewrites the log when it has grown well past its live content.
async fn compaction_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if shared.store.as_ref().is_some_and(|s| s.wants_compaction()) {
            let shared = shared.clone();
            let _ = tokio::task::spawn_blocking(move || shared.compact()).await;
        }
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

/// A condition [`Broker::wait_for`] waited for that did not come true in time.
#[derive(Debug)]
pub struct WaitTimeout {
    /// The state when the wait gave up, to show what was there instead.
    pub last: BrokerSnapshot,
}

impl std::fmt::Display for WaitTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "condition not met in time; the queues were:")?;
        for q in &self.last.queues {
            write!(f, "{q}")?;
        }
        Ok(())
    }
}

impl std::error::Error for WaitTimeout {}

/// Inspection: what a test can look at inside the broker.
impl Broker {
    /// Everything at this moment: queues, exchanges, bindings, connections.
    pub fn snapshot(&self) -> BrokerSnapshot {
        self.shared.snapshot()
    }

    /// The queue of that name in vhost `/`, if it exists.
    pub fn try_queue(&self, name: &str) -> Option<QueueSnapshot> {
        self.queue_in("/", name)
    }

    pub fn queue_in(&self, vhost: &str, name: &str) -> Option<QueueSnapshot> {
        self.shared.vhosts.get(vhost)?.lock().queue_snapshot(name)
    }

    /// The queue of that name in vhost `/`; panics, naming the queues there are,
    /// when it does not exist — meant for assertions such as
    /// `broker.queue("orders").assert_empty()`.
    #[track_caller]
    pub fn queue(&self, name: &str) -> QueueSnapshot {
        match self.try_queue(name) {
            Some(q) => q,
            None => {
                let names: Vec<String> = self.queues().into_iter().map(|q| q.name).collect();
                panic!("no queue '{name}' in vhost '/'; the queues are {names:?}")
            }
        }
    }

    pub fn queues(&self) -> Vec<QueueSnapshot> {
        self.snapshot().queues
    }

    pub fn exchanges(&self) -> Vec<ExchangeSnapshot> {
        self.snapshot().exchanges
    }

    pub fn bindings(&self) -> Vec<BindingSnapshot> {
        self.snapshot().bindings
    }

    pub fn connections(&self) -> Vec<ConnectionSnapshot> {
        self.snapshot().connections
    }

    /// Waits until `condition` holds for the broker's state, or `timeout`
    /// passes: a test awaits what it expects instead of sleeping.
    pub async fn wait_for(
        &self,
        timeout: std::time::Duration,
        condition: impl Fn(&BrokerSnapshot) -> bool,
    ) -> Result<BrokerSnapshot, WaitTimeout> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let snap = self.snapshot();
            if condition(&snap) {
                return Ok(snap);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(WaitTimeout { last: snap });
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Waits until the broker has nothing in flight: every byte it owes a client
    /// has been written to that client's socket. (Input is handled as it is
    /// read, so what was received is routed and delivered by then.)
    pub async fn wait_until_idle(&self) {
        self.shared.wait_until_idle().await
    }

    /// Puts a message straight into a queue of vhost `/`, as if published to the
    /// default exchange: to seed a queue before the code under test starts.
    pub fn seed(
        &self,
        queue: &str,
        body: impl Into<bytes::Bytes>,
        properties: amq_protocol::protocol::BasicProperties,
    ) -> Result<(), AmqpError> {
        self.shared
            .vhosts
            .get("/")
            .expect("vhost / always exists")
            .lock()
            .seed(queue, body.into(), properties)
    }
}

/// Fault injection: what a test does to the broker to see how its code copes.
impl Broker {
    fn command(&self, connection: u64, command: faults::Command) -> bool {
        self.shared.command(connection, command)
    }

    /// Closes a connection with `connection.close` (e.g. 320 and "broker
    /// forced connection closure"); `text` comes after RabbitMQ's `CODE_NAME - `.
    /// False when there is no such connection.
    pub fn close_connection(&self, connection: u64, code: u16, text: &str) -> bool {
        self.command(
            connection,
            faults::Command::CloseConnection {
                code,
                text: text.to_owned(),
            },
        )
    }

    /// Closes one channel with `channel.close`.
    pub fn close_channel(&self, connection: u64, channel: u16, code: u16, text: &str) -> bool {
        self.command(
            connection,
            faults::Command::CloseChannel {
                channel,
                code,
                text: text.to_owned(),
            },
        )
    }

    /// The connection's socket just dies: no `connection.close`.
    pub fn drop_connection(&self, connection: u64) -> bool {
        self.command(connection, faults::Command::Drop)
    }

    /// Half a frame goes out, then the socket dies.
    pub fn cut_connection(&self, connection: u64) -> bool {
        self.command(connection, faults::Command::CutMidFrame)
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
        let trace = self.shared.tracer.entries(None);
        let mut names = std::collections::BTreeMap::new();
        for e in trace.iter().filter(|e| e.method == "connection.start-ok") {
            let name = ["connection_name", "product"]
                .into_iter()
                .find_map(|k| match e.field(k) {
                    Some(TraceValue::Text(s)) => Some(s.clone()),
                    _ => None,
                });
            names.insert(e.connection, name.unwrap_or_default());
        }
        page::mermaid(&trace, &names)
    }

    /// Writes one self-contained HTML file to `path`: the frame trace as a
    /// sequence diagram and the broker's state now (queues with their messages,
    /// exchanges, bindings, connections), the page of the management listener
    /// with its data inside. It opens in any browser with no network: a CI job
    /// can keep it as the artifact of a failed test.
    pub fn trace_html(&self, path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
        let vhosts = self.shared.vhosts.names();
        let clock = (self.shared.clock.is_virtual(), self.shared.clock.now_ms());
        let snapshot = page::snapshot_json(&self.snapshot(), &vhosts, clock);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let html = page::trace_file(snapshot, &self.shared.tracer.entries(None), now);
        std::fs::write(path, html)
    }

    /// Every connection's traced frames, printable on a test failure: grouped by
    /// connection, oldest first.
    pub fn trace_dump(&self) -> String {
        self.shared.trace_dump()
    }
}
