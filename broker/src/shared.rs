//! What every connection of a broker shares (`Shared`: config, vhosts, store, clock,
//! users, faults, tracer) and the background loops that keep it (expiry, compaction).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

use crate::clock::Clock;
use crate::config::Config;
use crate::store::Store;
use crate::vhost::Vhost;
use crate::{alarms, auth, faults, memory, store, trace};

/// The broker's virtual hosts by name. The management API adds and removes
/// them while the broker runs. The map's lock is a leaf held only to clone
/// an `Arc` out: never while a vhost's lock is taken.
#[derive(Debug, Default)]
pub(crate) struct Vhosts(std::sync::RwLock<HashMap<String, Arc<Vhost>>>);

impl Vhosts {
    pub(crate) fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Vhost>>> {
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
    pub(crate) connections: std::sync::Mutex<HashMap<u64, Arc<crate::commands::ConnInfo>>>,
    /// Scripted faults in force.
    pub(crate) rules: faults::Rules,
    /// Every connection's frames, while tracing is on.
    pub(crate) tracer: Arc<trace::Tracer>,
    /// Read-held by every connection task for its life; a restart or crash
    /// holds it for writing, so that no connection is served while the state is
    /// rebuilt. The one lock held across awaits, and never with another lock.
    pub(crate) gate: tokio::sync::RwLock<()>,
    /// Held while compaction or a restart reads or rewrites the log, so that the
    /// two never overlap.
    pub(crate) maintenance: std::sync::Mutex<()>,
    pub(crate) next_connection: AtomicU64,
    /// Held by the one connection whose task polls its socket instead of parking
    /// (`busy_wait`): the busy wait costs at most one CPU.
    pub(crate) spinner: Arc<std::sync::atomic::AtomicBool>,
    /// Bumped to make every connection close with 320 CONNECTION_FORCED
    /// (shutdown and restart); each connection holds a receiver.
    pub(crate) close: watch::Sender<u64>,
}

impl Shared {
    /// The broker's state: empty, or recovered from the data directory.
    pub(crate) fn new(config: Config) -> std::io::Result<Self> {
        crate::busy_wait::cpus();
        config
            .profile
            .validate()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let profile = Arc::new(config.profile.clone());
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
                state.set_profile(profile.clone());
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
            spinner: Default::default(),
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
                v.consumer_timeouts(self.config.consumer_timeout)
            };
            for (conn, channel, ms) in overdue {
                self.consumer_timed_out(conn, channel, ms);
            }
        }
    }

    /// RabbitMQ's channel exception for an overdue ack, naming the timeout
    /// used (4.3's fallback names -1); the close requeues the channel's unacked
    /// deliveries, as any channel close does.
    pub(crate) fn consumer_timed_out(&self, conn: u64, channel: u16, ms: i64) {
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
            info.command(crate::commands::Command::ConsumerTimeout {
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
    pub(crate) fn restart_state(&self) -> std::io::Result<()> {
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
    pub(crate) fn keep_durable_in_memory(&self) {
        for (_, vhost) in self.vhosts.all() {
            vhost.lock().restart();
        }
    }

    /// Every vhost as the files hold it (one the files never saw ends up empty).
    pub(crate) fn restore(&self, recovered: &store::Recovered) {
        let empty = store::RecoveredVhost::default();
        for (name, vhost) in self.vhosts.all() {
            vhost
                .lock()
                .restore(recovered.vhosts.get(&name).unwrap_or(&empty));
        }
    }

    /// The power goes out: nothing more reaches the disk. A snapshot being
    /// written may be cut off, as by `kill -9`; recovery ignores it.
    pub(crate) fn power_cut(&self) {
        let Some(store) = &self.store else { return };
        let _maintenance = self.maintenance.lock().unwrap_or_else(|e| e.into_inner());
        store.freeze();
    }

    /// After every connection died with the power: the state is what the files
    /// hold, as after `kill -9`. Without a data directory the in-memory state is
    /// taken as a disk that synced everything, which is what `restart` keeps.
    pub(crate) fn crash_state(&self) -> std::io::Result<()> {
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

    pub(crate) fn register(&self, info: Arc<crate::commands::ConnInfo>) {
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

    pub(crate) fn connection_infos(&self) -> Vec<Arc<crate::commands::ConnInfo>> {
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

/// Expires messages and queues as real time passes.
pub(crate) async fn timer_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
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
pub(crate) async fn compaction_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
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
