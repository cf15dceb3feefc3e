//! The vhost's side of durability: which changes go to the store, and how state is
//! rebuilt from what the store recovered or written out whole for compaction.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::message::Deadline;
use super::{
    Binding, Destination, Exchange, ExchangeKind, Message, Queue, QueueDeclare, Queued, RouteCache,
    Targets, VhostState,
};
use crate::store::{PublishRef, Record, RecoveredVhost, Store};

impl VhostState {
    pub fn set_store(&mut self, store: Arc<Store>) {
        self.store = Some(store);
    }

    pub fn set_clock(&mut self, clock: Arc<crate::clock::Clock>) {
        self.clock = clock;
    }

    pub fn set_gauge(&mut self, gauge: Arc<crate::memory::Gauge>) {
        self.gauge = gauge;
    }

    /// Which RabbitMQ this vhost imitates (the broker's profile).
    pub fn set_profile(&mut self, profile: Arc<crate::profile::Profile>) {
        self.profile = profile;
    }

    /// Appends a record when the broker has a store; returns its LSN.
    pub(super) fn log(&self, rec: Record) -> Option<u64> {
        self.store.as_ref().map(|s| s.append(&rec))
    }

    /// A binding survives a restart when both of its ends do.
    pub(super) fn binding_is_durable(&self, source: &str, dest: &Destination) -> bool {
        self.store.is_some()
            && self.exchanges.get(source).is_some_and(|e| e.durable)
            && match dest {
                Destination::Queue(q) => self.queues.get(q.as_str()).is_some_and(Queue::is_durable),
                Destination::Exchange(e) => self.exchanges.get(e).is_some_and(|e| e.durable),
            }
    }

    pub(super) fn log_binding(&self, source: &str, b: &Binding, bind: bool) {
        let (to_exchange, destination) = match &b.destination {
            Destination::Queue(q) => (false, q.clone()),
            Destination::Exchange(e) => (true, e.clone()),
        };
        let (vhost, source, routing_key, arguments) = (
            self.name.clone(),
            source.to_owned(),
            b.routing_key.clone(),
            b.arguments.clone(),
        );
        self.log(if bind {
            Record::Bind {
                vhost,
                source,
                to_exchange,
                destination,
                routing_key,
                arguments,
            }
        } else {
            Record::Unbind {
                vhost,
                source,
                to_exchange,
                destination,
                routing_key,
                arguments,
            }
        });
    }

    /// A persisted message left `queue` for good.
    pub(super) fn log_removed(&self, queue: &str, msg: &Message) {
        if let (Some(store), Some(id)) = (&self.store, msg.persist_id()) {
            store.append(&Record::Remove {
                id,
                vhost: self.name.clone(),
                queue: queue.to_owned(),
            });
            store.released(msg.size());
        }
    }

    /// Writes a persistent message routed to durable queues to the store, giving
    /// it an id; returns the LSN its confirm waits for.
    pub(super) fn persist(
        &self,
        targets: &[Arc<str>],
        msg: &mut Message,
        awaited: bool,
    ) -> Option<u64> {
        let store = self.store.as_ref()?;
        // A stream keeps every message on disk, whatever its delivery mode.
        let queues: Targets = targets
            .iter()
            .filter(|t| {
                self.queues
                    .get(*t)
                    .is_some_and(|q| q.is_durable() && (msg.persistent() || q.stream.is_some()))
            })
            .cloned()
            .collect();
        if queues.is_empty() {
            return None;
        }
        let id = store.next_message_id();
        msg.set_persist_id(id);
        Some(store.append_publish(
            &PublishRef {
                id,
                vhost: &self.name,
                queues: &queues,
                exchange: msg.exchange(),
                routing_key: msg.routing_key(),
                header: [&msg.header_prefix(), msg.props()],
                body: msg.body(),
                dead_lettered: msg.dead_lettered(),
            },
            awaited,
        ))
    }

    /// Replaces all state with what the store recovered (start, or restart from
    /// disk). Messages come back in publish order; those delivered before are
    /// marked redelivered, as RabbitMQ does.
    pub fn restore(&mut self, rec: &RecoveredVhost) {
        let store = self.store.take();
        let clock = self.clock.clone();
        let gauge = self.gauge.clone();
        let profile = self.profile.clone();
        *self = VhostState::new(&self.name);
        self.store = store;
        self.clock = clock;
        self.gauge = gauge;
        self.profile = profile;
        let now = self.clock.now_ms();
        for (name, (kind, auto_delete, internal, arguments)) in &rec.exchanges {
            let Some(kind) = ExchangeKind::parse(kind) else {
                tracing::warn!(exchange = %name, %kind, "recovered exchange of unknown type dropped");
                continue;
            };
            self.exchanges.insert(
                name.clone(),
                Exchange {
                    name: name.clone(),
                    kind,
                    durable: true,
                    auto_delete: *auto_delete,
                    internal: *internal,
                    arguments: arguments.clone(),
                    bindings: Vec::new(),
                    index: Default::default(),
                },
            );
        }
        let mut messages: BTreeMap<u64, Arc<Message>> = BTreeMap::new();
        // Recovered messages of one publisher come back in order: neighbours
        // usually share their route.
        let mut routes = RouteCache::default();
        for (name, q) in &rec.queues {
            let id = self.next_queue_id;
            self.next_queue_id += 1;
            let mut queue = Queue::new(
                id,
                QueueDeclare {
                    name: name.clone(),
                    passive: false,
                    durable: true,
                    exclusive: false,
                    auto_delete: q.auto_delete,
                    arguments: q.arguments.clone(),
                },
                None,
                now,
                self.profile.quorum_priorities(),
            );
            if queue.stream.is_some() {
                queue.stream = Some(super::stream::Log::starting_at(q.stream_first));
            }
            for (&msg_id, &delivered) in &q.messages {
                let Some(stored) = rec.messages.get(&msg_id) else {
                    continue;
                };
                let msg = messages
                    .entry(msg_id)
                    .or_insert_with(|| {
                        let properties =
                            crate::codec::header_properties(&stored.header).unwrap_or_default();
                        let mut msg = Message::new(
                            routes.get(&stored.exchange, &stored.routing_key, &self.gauge),
                            &properties,
                            stored.header.clone(),
                            stored.body.clone(),
                        );
                        msg.set_persist_id(msg_id);
                        msg.set_dead_lettered(stored.dead_lettered);
                        Arc::new(msg)
                    })
                    .clone();
                if let Some(log) = queue.stream.as_mut() {
                    // The store keeps no append times: retention and timestamp
                    // offsets count from the restart.
                    let no_limits = super::stream::Retention {
                        segment_bytes: queue.limits.retention.segment_bytes,
                        ..Default::default()
                    };
                    log.append(msg, self.clock.unix_ms(), no_limits);
                    continue;
                }
                // TTLs start again from the restart: the log keeps no deadlines.
                let ttl = match (queue.limits.message_ttl, msg.expiration_ms()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                self.timed |= ttl.is_some();
                queue.ready.push_back(Queued {
                    seq: msg_id,
                    msg,
                    redelivered: delivered,
                    persisted: true,
                    expires_at: Deadline::after(now, ttl),
                    returns: u32::from(delivered),
                    failed: 0,
                });
                queue.next_seq = msg_id + 1;
            }
            self.timed |= queue.limits.expires.is_some();
            self.refusing |= queue.limits.may_refuse();
            self.queues.insert(name.as_str().into(), queue);
        }
        for (source, to_exchange, dest, routing_key, arguments) in &rec.bindings {
            let destination = if *to_exchange {
                Destination::Exchange(dest.clone())
            } else {
                Destination::Queue(dest.clone())
            };
            let ends_exist = match &destination {
                Destination::Queue(q) => self.queues.contains_key(q.as_str()),
                Destination::Exchange(e) => self.exchanges.contains_key(e),
            };
            if let (Some(ex), true) = (self.exchanges.get_mut(source), ends_exist) {
                ex.bindings_changed();
                ex.bindings.push(Binding {
                    destination,
                    routing_key: routing_key.clone(),
                    arguments: arguments.clone(),
                });
            }
        }
    }

    /// Every durable fact of this vhost as records, preceded by a
    /// `SnapshotBegin` that counts them: what compaction writes in place of the
    /// log so far.
    pub fn snapshot(&self) -> Vec<Record> {
        let vhost = || self.name.clone();
        let mut out = vec![Record::SnapshotBegin {
            vhost: vhost(),
            records: 0,
        }];
        let builtin: Vec<&str> = super::predeclared().map(|(n, _, _)| n).collect();
        for ex in self.exchanges.values() {
            if ex.durable && !builtin.contains(&ex.name.as_str()) {
                out.push(Record::ExchangeDeclare {
                    vhost: vhost(),
                    name: ex.name.clone(),
                    kind: ex.kind.as_str().to_owned(),
                    auto_delete: ex.auto_delete,
                    internal: ex.internal,
                    arguments: ex.arguments.clone(),
                });
            }
        }
        // Messages are written once, naming every durable queue that holds them,
        // in id order so that queue order survives.
        let mut held: BTreeMap<u64, (Arc<Message>, Vec<String>)> = BTreeMap::new();
        let mut delivered = Vec::new();
        for q in self.queues.values().filter(|q| q.is_durable()) {
            out.push(Record::QueueDeclare {
                vhost: vhost(),
                name: q.name.clone(),
                auto_delete: q.auto_delete,
                arguments: q.arguments.clone(),
            });
            if let Some(log) = q.stream.as_ref().filter(|l| l.first() > 0) {
                out.push(Record::StreamStart {
                    vhost: vhost(),
                    queue: q.name.clone(),
                    first: log.first(),
                });
            }
            for (_, e) in q.stream.iter().flat_map(super::stream::Log::iter) {
                if let Some(id) = e.msg.persist_id() {
                    held.entry(id)
                        .or_insert_with(|| (e.msg.clone(), Vec::new()))
                        .1
                        .push(q.name.clone());
                }
            }
            for item in q.ready.iter().filter(|i| i.persisted) {
                let id = item.msg.persist_id().expect("persisted messages have ids");
                held.entry(id)
                    .or_insert_with(|| (item.msg.clone(), Vec::new()))
                    .1
                    .push(q.name.clone());
                if item.redelivered {
                    delivered.push((id, q.name.clone()));
                }
            }
        }
        for st in self.channels.values() {
            for u in st.unacked.values().filter(|u| u.persisted && !u.released) {
                let still_there = self
                    .queues
                    .get(&*u.queue)
                    .is_some_and(|q| q.id == u.queue_id);
                if still_there {
                    let id = u.msg.persist_id().expect("persisted messages have ids");
                    held.entry(id)
                        .or_insert_with(|| (u.msg.clone(), Vec::new()))
                        .1
                        .push(u.queue.to_string());
                    delivered.push((id, u.queue.to_string()));
                }
            }
        }
        for ex in self.exchanges.values() {
            for b in &ex.bindings {
                if self.binding_is_durable(&ex.name, &b.destination) {
                    let (to_exchange, destination) = match &b.destination {
                        Destination::Queue(q) => (false, q.clone()),
                        Destination::Exchange(e) => (true, e.clone()),
                    };
                    out.push(Record::Bind {
                        vhost: vhost(),
                        source: ex.name.clone(),
                        to_exchange,
                        destination,
                        routing_key: b.routing_key.clone(),
                        arguments: b.arguments.clone(),
                    });
                }
            }
        }
        for (id, (msg, queues)) in held {
            out.push(Record::Publish {
                id,
                vhost: vhost(),
                queues,
                exchange: msg.exchange().to_string(),
                routing_key: msg.routing_key().to_string(),
                header: msg.header(),
                body: msg.body_bytes(),
                dead_lettered: msg.dead_lettered(),
            });
        }
        for (id, queue) in delivered {
            out.push(Record::Delivered {
                id,
                vhost: vhost(),
                queue,
            });
        }
        let count = out.len() as u64 - 1;
        if let Some(Record::SnapshotBegin { records, .. }) = out.first_mut() {
            *records = count;
        }
        out
    }
}

/// Records a delivery of a persisted message: gone for good with no-ack,
/// otherwise remembered as delivered so a restart marks it redelivered.
pub(super) fn log_delivery(store: &Store, vhost: &str, queue: &str, item: &Queued, no_ack: bool) {
    let Some(id) = item.msg.persist_id() else {
        return;
    };
    if no_ack {
        store.append(&Record::Remove {
            id,
            vhost: vhost.to_owned(),
            queue: queue.to_owned(),
        });
        store.released(item.msg.size());
    } else if !item.redelivered {
        store.append(&Record::Delivered {
            id,
            vhost: vhost.to_owned(),
            queue: queue.to_owned(),
        });
    }
}
