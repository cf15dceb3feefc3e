//! `BrokerBuilder`: what the `warren` command line sets, and `start`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::broker::Broker;
use crate::config::Config;
use crate::profile::{DeprecatedFeature, RabbitVersion};
use crate::server::Tracker;
use crate::shared::{compaction_loop, timer_loop, Shared};
use crate::{alarms, auth, config, management, server};

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
        self.config.max_message_size = Some(bytes);
        self
    }

    /// Which RabbitMQ to behave like (3.10 by default): `"4.3".parse()?`, or
    /// [`RabbitVersion::V4_3`]. See `docs/rabbitmq-versions.md` for what differs.
    pub fn rabbitmq_version(mut self, version: RabbitVersion) -> Self {
        self.config.profile.set_version(version);
        self
    }

    /// Permits a deprecated feature the version denies by default, as
    /// rabbitmq.conf's `deprecated_features.permit.NAME = true`.
    pub fn permit_deprecated(mut self, feature: DeprecatedFeature) -> Self {
        self.config.profile.set_permitted(feature, true);
        self
    }

    /// Denies a deprecated feature the version still permits, as rabbitmq.conf's
    /// `deprecated_features.permit.NAME = false`.
    pub fn deny_deprecated(mut self, feature: DeprecatedFeature) -> Self {
        self.config.profile.set_permitted(feature, false);
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

    /// How long a TCP connection's task goes on polling its socket after traffic
    /// (and all the while its client streams) before it parks; 1 ms by default,
    /// zero never polls. One connection of the broker polls at a time, yielding
    /// its CPU to any other thread that wants it, so this costs at most one
    /// otherwise idle CPU, and only while clients are busy; it is off where the
    /// process may use one CPU only, and on a single-threaded runtime. An idle CPU
    /// between a client's messages costs multi-threaded clients far more on a
    /// small machine: lapin published about 7 times faster into a Warren that
    /// polls than into one that parks (see the `busy_wait` module).
    pub fn busy_wait(mut self, wait: std::time::Duration) -> Self {
        self.config.busy_wait = wait;
        self
    }

    /// Serves the management HTTP API (RabbitMQ's subset and `/api/warren/`,
    /// see docs/control-plane.md) and the page to watch a run at `/` on `addr`;
    /// port 0 picks a free port. Frames are traced from the start
    /// ([`Broker::set_tracing`] turns it off).
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
            // Whoever serves the page wants to watch the run from its start:
            // the frames are traced from the first connection on (the last
            // 100 000 are kept; `POST /api/warren/trace {"on": false}` stops it).
            shared.tracer.set(true);
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
