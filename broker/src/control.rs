//! The test double's operations on a broker's shared state — restart, crash,
//! the clock, snapshots, commands to connections, the trace — so that the
//! library API (`Broker`) and the HTTP control plane (`management`) share one
//! implementation.

use std::collections::HashMap;
use std::sync::Arc;

use crate::inspect::{BrokerSnapshot, ConnectionSnapshot};
use crate::shared::Shared;
use crate::trace::TraceEntry;

impl Shared {
    pub(crate) async fn restart(self: &Arc<Self>) -> std::io::Result<()> {
        let down = self.gate.write();
        tokio::pin!(down);
        // Queued at the gate before the signal goes out, so that a connection
        // accepted after the signal waits there until the restart is over
        // (and is then served) instead of being served unwarned meanwhile and
        // holding the restart up. Every connection accepted before the signal
        // sees it whenever its task runs (`server::serve`), so the gate opens.
        let early = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::future::Future::poll(down.as_mut(), cx) {
                std::task::Poll::Ready(guard) => Some(guard),
                std::task::Poll::Pending => None,
            })
        })
        .await;
        self.close.send_modify(|n| *n += 1);
        let _down = match early {
            Some(guard) => guard,
            None => down.await,
        };
        let shared = self.clone();
        tokio::task::spawn_blocking(move || shared.restart_state())
            .await
            .map_err(std::io::Error::other)?
    }

    /// Ends every connection task with `end` (once each, including those that
    /// open meanwhile) and returns once all are gone; connections arriving
    /// after that wait until the returned guard is dropped. For `crash`, which
    /// sends no signal: a connection registered after a look is found by the
    /// next, since it holds the gate the loop waits for.
    async fn take_down(
        &self,
        end: impl Fn(&crate::commands::ConnInfo),
    ) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        let mut ended = std::collections::HashSet::new();
        let down = self.gate.write();
        tokio::pin!(down);
        loop {
            for info in self.connection_infos() {
                if ended.insert(info.id) {
                    end(&info);
                }
            }
            let round = tokio::time::sleep(std::time::Duration::from_millis(10));
            tokio::select! {
                guard = &mut down => return guard,
                _ = round => {}
            }
        }
    }

    pub(crate) async fn crash(self: &Arc<Self>) -> std::io::Result<()> {
        let shared = self.clone();
        tokio::task::spawn_blocking(move || shared.power_cut())
            .await
            .map_err(std::io::Error::other)?;
        // Every connection dies, with no close: the socket just goes.
        let _down = self
            .take_down(|info| info.command(crate::commands::Command::Drop))
            .await;
        let shared = self.clone();
        tokio::task::spawn_blocking(move || shared.crash_state())
            .await
            .map_err(std::io::Error::other)?
    }

    pub(crate) fn advance(&self, by: std::time::Duration) {
        if self.clock.is_virtual() {
            self.clock.advance(by);
            self.tick();
        }
    }

    pub(crate) fn snapshot(&self) -> BrokerSnapshot {
        let mut snap = BrokerSnapshot::default();
        for (_, vhost) in self.vhosts.all() {
            let v = vhost.lock();
            snap.queues.extend(v.queue_snapshots());
            snap.exchanges.extend(v.exchange_snapshots());
            snap.bindings.extend(v.binding_snapshots());
        }
        for info in self.connection_infos() {
            let vhost = info.vhost.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let channels = vhost
                .as_ref()
                .and_then(|v| self.vhosts.get(v))
                .map(|v| v.lock().channels_of(info.id))
                .unwrap_or_default();
            snap.connections.push(ConnectionSnapshot {
                id: info.id,
                peer: info.peer.clone(),
                vhost,
                channels,
            });
        }
        snap
    }

    pub(crate) async fn wait_until_idle(&self) {
        let mut quiet = 0;
        while quiet < 2 {
            let busy = self
                .connection_infos()
                .iter()
                .any(|c| c.outbox.pending() > 0);
            quiet = if busy { 0 } else { quiet + 1 };
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    pub(crate) fn command(&self, connection: u64, command: crate::commands::Command) -> bool {
        let info = self
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&connection)
            .cloned();
        match info {
            Some(info) => {
                info.command(command);
                true
            }
            None => false,
        }
    }

    /// Every connection's traced frames, grouped by connection, oldest first.
    pub(crate) fn trace_dump(&self) -> String {
        let peers: HashMap<u64, String> = self
            .connection_infos()
            .into_iter()
            .map(|c| (c.id, c.peer.clone()))
            .collect();
        let mut by_connection: std::collections::BTreeMap<u64, Vec<TraceEntry>> =
            Default::default();
        for entry in self.tracer.entries(None) {
            by_connection
                .entry(entry.connection)
                .or_default()
                .push(entry);
        }
        let mut out = String::new();
        for (id, entries) in by_connection {
            let peer = peers.get(&id).map_or("closed", String::as_str);
            out.push_str(&format!("connection {id} ({peer}):\n"));
            for entry in entries {
                out.push_str(&format!("  {entry}\n"));
            }
        }
        out
    }

    /// Adds an empty vhost while the broker runs; false when it exists.
    pub(crate) fn add_vhost(&self, name: &str) -> bool {
        if self.vhosts.contains_key(name) {
            return false;
        }
        let vhost = crate::vhost::Vhost::new(name);
        {
            let mut state = vhost.lock();
            state.set_clock(self.clock.clone());
            state.set_gauge(self.gauge.clone());
            state.set_profile(Arc::new(self.config.profile.clone()));
            if let Some(store) = &self.store {
                state.set_store(store.clone());
            }
        }
        self.vhosts.insert(name, Arc::new(vhost))
    }

    /// Deletes a vhost as RabbitMQ does: its connections are closed with 320
    /// CONNECTION_FORCED, and its queues and exchanges go (the durable ones
    /// from the store too). False when there is none; `/` can be deleted too.
    pub(crate) fn delete_vhost(&self, name: &str) -> bool {
        let Some(vhost) = self.vhosts.remove(name) else {
            return false;
        };
        for info in self.connection_infos() {
            let on = info.vhost.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if on.as_deref() == Some(name) {
                info.command(crate::commands::Command::CloseConnection {
                    code: 320,
                    text: format!("vhost '{name}' is deleted"),
                });
            }
        }
        let mut state = vhost.lock();
        for q in state.queue_snapshots() {
            let _ = state.delete_queue(0, &q.name, false, false);
        }
        for e in state.exchange_snapshots() {
            let _ = state.delete_exchange(&e.name, false);
        }
        true
    }
}
