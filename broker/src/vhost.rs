//! One virtual host's entities — exchanges, queues, bindings, and every channel's
//! delivery state — and the rules that route, dispatch, acknowledge and requeue.
//!
//! Everything here is synchronous and free of I/O: methods are called with the
//! vhost lock held, and bytes for clients are appended to their outboxes.

use std::collections::BTreeMap;

// SipHash's DoS resistance buys nothing here and cost 12% of the per-message path.
use rustc_hash::FxHashMap as HashMap;
use smallvec::SmallVec;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use amq_protocol::protocol::{basic, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable};

use crate::clock::Clock;
use crate::codec;
use crate::error::AmqpError;
use crate::memory::Gauge;
use crate::outbox::Outbox;
use crate::profile::{DeprecatedFeature, Profile};
pub use crate::routing::{Binding, Destination, Exchange, ExchangeKind};
use crate::store::{Record, Store};
use crate::table::{as_integer, same_value, type_name, value_text};

mod args;
mod channel;
mod consume;
mod deadletter;
mod declare;
mod inspect;
mod message;
mod persist;
mod queue;
mod reply;
mod stream;
mod timeout;
use timeout::TimedOut;

use args::*;
use channel::*;
use deadletter::DeathReason;
use declare::*;
pub use inspect::ApiGet;
use message::Deadline;
pub use message::{Message, Route, RouteCache};
use queue::*;
pub use reply::REPLY_TO;

pub type ConnId = u64;

/// The queues a message is routed to, by the names the vhost holds them under:
/// one or two of them (most publishes) cost no allocation.
pub type Targets = SmallVec<[Arc<str>; 2]>;
type ChanKey = (ConnId, u16);

/// A channel holding this many deliveries unacknowledged is not waiting for the
/// next one: it may be written with the ones after it (`Outbox::push_delivery`).
const DEFERRABLE_BACKLOG: usize = 64;

/// What `basic.consume` asks for.
#[derive(Debug, Clone)]
pub struct ConsumeOptions {
    pub tag: String,
    pub no_ack: bool,
    pub exclusive: bool,
    /// The consume arguments (`x-priority`, `x-stream-offset`).
    pub arguments: FieldTable,
}

/// What enqueueing a message did, for its publisher's confirm.
#[derive(Debug, Clone, Copy, Default)]
pub struct Published {
    /// The store LSN that must be durable before the confirm.
    pub lsn: Option<u64>,
    /// A full queue refused it (`x-overflow` reject-publish): nack.
    pub refused: bool,
}

#[derive(Debug)]
struct ConnEntry {
    outbox: Arc<Outbox>,
    frame_max: u32,
    /// The client asked to be told (`basic.cancel`) when its consumer goes away.
    cancel_notify: bool,
}

/// Options of `queue.declare` that the vhost needs.
#[derive(Debug, Clone)]
pub struct QueueDeclare {
    pub name: String,
    pub passive: bool,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    pub arguments: FieldTable,
}

/// A virtual host: its name and its state behind one lock.
#[derive(Debug)]
pub struct Vhost {
    state: Mutex<VhostState>,
}

impl Vhost {
    pub fn new(name: &str) -> Self {
        Self {
            state: Mutex::new(VhostState::new(name)),
        }
    }

    /// Locks the state. Never held across an `.await`.
    pub fn lock(&self) -> MutexGuard<'_, VhostState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug)]
pub struct VhostState {
    name: String,
    exchanges: HashMap<String, Exchange>,
    queues: HashMap<Arc<str>, Queue>,
    channels: HashMap<ChanKey, ChannelState>,
    conns: HashMap<ConnId, ConnEntry>,
    next_queue_id: u64,
    /// Where durable changes are written, when the broker has a data directory.
    store: Option<Arc<Store>>,
    /// Direct reply-to addresses → the consumer (connection, channel, tag).
    replies: HashMap<String, (ConnId, u16, String)>,
    clock: Arc<Clock>,
    gauge: Arc<Gauge>,
    /// The RabbitMQ imitated: which deprecated features a declaration may use.
    profile: Arc<Profile>,
    /// Queues and messages with a time limit exist: the ticker has work.
    timed: bool,
    /// A queue that may refuse a publish was declared (never reset): until one
    /// is, a publish skips looking its queues up to ask.
    refusing: bool,
}

fn predeclared() -> impl Iterator<Item = (&'static str, ExchangeKind, bool)> {
    [
        ("amq.direct", ExchangeKind::Direct, false),
        ("amq.fanout", ExchangeKind::Fanout, false),
        ("amq.topic", ExchangeKind::Topic, false),
        ("amq.headers", ExchangeKind::Headers, false),
        ("amq.match", ExchangeKind::Headers, false),
        ("amq.rabbitmq.trace", ExchangeKind::Topic, true),
    ]
    .into_iter()
}

impl VhostState {
    fn new(name: &str) -> Self {
        let mut state = Self {
            name: name.to_owned(),
            exchanges: HashMap::default(),
            queues: HashMap::default(),
            channels: HashMap::default(),
            conns: HashMap::default(),
            next_queue_id: 1,
            store: None,
            replies: HashMap::default(),
            clock: Arc::new(Clock::real()),
            gauge: Gauge::new(0),
            profile: Arc::default(),
            timed: false,
            refusing: false,
        };
        for (name, kind, internal) in predeclared() {
            state.exchanges.insert(
                name.to_owned(),
                Exchange {
                    name: name.to_owned(),
                    kind,
                    durable: true,
                    auto_delete: false,
                    internal,
                    arguments: FieldTable::default(),
                    bindings: Vec::new(),
                    index: OnceLock::new(),
                },
            );
        }
        state
    }

    // ---- connections and channels -------------------------------------------------

    // ---- exchanges ----------------------------------------------------------------

    // ---- queues -------------------------------------------------------------------

    // ---- publishing and delivery ----------------------------------------------

    /// The queues a message published to `exchange` goes to, each once,
    /// following exchange-to-exchange bindings (each exchange visited once, so
    /// binding loops end).
    pub fn route(
        &self,
        exchange: &str,
        routing_key: &str,
        headers: Option<&FieldTable>,
    ) -> Result<Targets, AmqpError> {
        let mut targets = Targets::new();
        if is_default_exchange(exchange) {
            if let Some((name, _)) = self.queues.get_key_value(routing_key) {
                targets.push(name.clone());
            }
            return Ok(targets);
        }
        let ex = self.exchange(exchange)?;
        if ex.internal {
            return Err(AmqpError::access_refused(format!(
                "cannot publish to internal exchange '{exchange}' in vhost '{}'",
                self.name
            )));
        }
        let mut visited = vec![ex.name.as_str()];
        let mut pending = vec![ex];
        while let Some(ex) = pending.pop() {
            let matching = ex.matching(routing_key, headers);
            let matched = !matching.is_empty();
            for b in matching.into_iter().map(|i| &ex.bindings[i]) {
                match &b.destination {
                    Destination::Queue(q) => {
                        if !targets.iter().any(|t| **t == **q) {
                            if let Some((name, _)) = self.queues.get_key_value(q.as_str()) {
                                targets.push(name.clone());
                            }
                        }
                    }
                    Destination::Exchange(e) => {
                        if !visited.contains(&e.as_str()) {
                            visited.push(e);
                            if let Some(next) = self.exchanges.get(e) {
                                pending.push(next);
                            }
                        }
                    }
                }
            }
            // What an exchange cannot route goes to its alternate exchange.
            let alternate = match ex.arguments.inner().get("alternate-exchange") {
                Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes())),
                Some(AMQPValue::ShortString(s)) => Some(s.as_str().into()),
                _ => None,
            };
            if let (false, Some(ae)) = (matched, alternate) {
                if let Some((name, next)) = self.exchanges.get_key_value(ae.as_ref()) {
                    if !visited.contains(&name.as_str()) {
                        visited.push(name);
                        pending.push(next);
                    }
                }
            }
        }
        Ok(targets)
    }

    /// Enqueues a routed message, or returns it to a mandatory publisher when no
    /// queue took it (a reply to a direct reply-to address goes to its channel).
    /// `awaited`: a confirm or a commit-ok waits until it is on disk.
    pub fn publish(
        &mut self,
        conn: ConnId,
        ch: u16,
        targets: &[Arc<str>],
        mandatory: bool,
        msg: Message,
        awaited: bool,
    ) -> Published {
        if targets.is_empty() {
            let to_reply = msg.exchange().is_empty() && msg.routing_key().starts_with(REPLY_TO);
            if to_reply {
                self.deliver_reply(&msg);
            }
            // Up to 4.1 a reply is no routed queue, so a mandatory one is returned
            // even when delivered (rabbit_exchange.erl:417-420 at v3.10.8); 4.2+
            // routes to any address it can decode (rabbit_db_queue.erl:550 at v4.2.9).
            let routed = to_reply
                && self.profile.reply_to_is_routed()
                && reply::is_reply_address(msg.routing_key());
            if mandatory && !routed {
                self.write_return(conn, ch, msg.exchange(), &msg);
            }
            return Published::default();
        }
        self.enqueue(targets, msg, awaited)
    }

    /// Appends a message to the queues it was routed to and delivers what it can.
    /// Returns the store LSN a confirm must wait for (when the message was written
    /// to the store), and whether a full queue refused it (`x-overflow`
    /// reject-publish), which the publisher's confirm must report as a nack.
    /// `awaited`: something waits until it is on disk, so the store fsyncs it.
    pub fn enqueue(&mut self, targets: &[Arc<str>], mut msg: Message, awaited: bool) -> Published {
        // Read once, and only when a TTL needs it: most messages have none.
        let mut now = None;
        let refused: Vec<Arc<str>> = targets
            .iter()
            .filter(|name| {
                self.refusing
                    && self.queues.get(*name).is_some_and(|q| {
                        q.limits.may_refuse() && q.limits.full(&q.ready, msg.body().len())
                    })
            })
            .cloned()
            .collect();
        // The common case, nothing refused, borrows the target list as it is.
        let accepted: std::borrow::Cow<'_, [Arc<str>]> = if refused.is_empty() {
            targets.into()
        } else {
            targets
                .iter()
                .filter(|t| !refused.contains(t))
                .cloned()
                .collect::<Vec<_>>()
                .into()
        };
        let lsn = self.persist(&accepted, &mut msg, awaited);
        let msg = Arc::new(msg);
        let expiration = msg.expiration_ms();
        for name in &refused {
            let dlx = self.queues[name].limits.overflow == Overflow::RejectPublishDlx;
            if dlx {
                self.dead_letter(name, &msg, DeathReason::MaxLen);
            }
        }
        for name in accepted.iter() {
            let Some(q) = self.queues.get_mut(name) else {
                continue;
            };
            if let Some(log) = q.stream.as_mut() {
                let removed = log.append(msg.clone(), self.clock.unix_ms(), q.limits.retention);
                if !removed.is_empty() {
                    let first = log.first();
                    for e in removed {
                        self.log_removed(name, &e.msg);
                    }
                    self.log(Record::StreamStart {
                        vhost: self.name.clone(),
                        queue: name.to_string(),
                        first,
                    });
                }
                self.deliver_ready(name);
                continue;
            }
            let seq = q.next_seq;
            q.next_seq += 1;
            let ttl = match (q.limits.message_ttl, expiration) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            self.timed |= ttl.is_some();
            let expires_at = match ttl {
                Some(_) => Deadline::after(*now.get_or_insert_with(|| self.clock.now_ms()), ttl),
                None => Deadline::NEVER,
            };
            q.ready.push_back(Queued {
                seq,
                msg: msg.clone(),
                redelivered: false,
                // A transient message is in the store only for the streams it went to.
                persisted: msg.persist_id().is_some() && q.is_durable() && msg.persistent(),
                expires_at,
                returns: 0,
                failed: 0,
            });
            let mut dropped = Vec::new();
            while q.limits.over(&q.ready) {
                match q.ready.pop_front() {
                    Some(item) => dropped.push(item),
                    None => break,
                }
            }
            self.discard(name, dropped, DeathReason::MaxLen);
            self.deliver_ready(name);
            if self.timed {
                let now = *now.get_or_insert_with(|| self.clock.now_ms());
                self.expire(name, now);
            }
        }
        Published {
            lsn,
            refused: !refused.is_empty(),
        }
    }

    /// Messages that left a queue without being acked (expired, over a length
    /// limit, rejected): off the store, and to the dead-letter exchange if any.
    fn discard(&mut self, queue: &str, items: Vec<Queued>, reason: DeathReason) {
        for item in items {
            if item.persisted {
                self.log_removed(queue, &item.msg);
            }
            self.dead_letter(queue, &item.msg, reason);
        }
    }

    /// Drops the expired messages at the head of a queue, as RabbitMQ does: a
    /// message is never delivered after its TTL.
    fn expire(&mut self, queue: &str, now: u64) {
        let Some(q) = self.queues.get_mut(queue) else {
            return;
        };
        let mut expired = Vec::new();
        while q.ready.front().is_some_and(|m| m.expires_at.passed(now)) {
            expired.extend(q.ready.pop_front());
        }
        if !expired.is_empty() {
            self.discard(queue, expired, DeathReason::Expired);
        }
    }

    /// Time passed: expire messages and delete unused queues (`x-expires`).
    pub fn tick(&mut self) {
        if !self.timed {
            return;
        }
        let now = self.clock.now_ms();
        let names: Vec<Arc<str>> = self.queues.keys().cloned().collect();
        let mut still_timed = false;
        for name in names {
            self.expire(&name, now);
            let Some(q) = self.queues.get(&name) else {
                continue;
            };
            let unused = q.consumers.is_empty()
                && q.limits
                    .expires
                    .is_some_and(|e| now >= q.last_used.saturating_add(e));
            if unused {
                self.delete_queue_entity(&name, None);
                continue;
            }
            still_timed |= q.limits.expires.is_some()
                || q.limits.message_ttl.is_some()
                || q.ready.iter().any(|m| m.expires_at.is_set());
            self.dispatch(&name);
        }
        self.timed = still_timed;
    }

    /// Sends `basic.return` with the message to the publisher.
    pub fn write_return(&self, conn: ConnId, channel: u16, exchange: &str, msg: &Message) {
        let Some(conn) = self.conns.get(&conn) else {
            return;
        };
        let frame_max = conn.frame_max;
        conn.outbox.push(|out| {
            codec::put_method(
                out,
                channel,
                AMQPClass::Basic(basic::AMQPMethod::Return(basic::Return {
                    reply_code: crate::error::code::NO_ROUTE,
                    reply_text: "NO_ROUTE".into(),
                    exchange: exchange.into(),
                    routing_key: msg.routing_key().into(),
                })),
            );
            codec::put_message(out, channel, msg.props(), msg.body(), frame_max);
        });
    }

    /// Delivers ready messages of a queue to consumers that have room, round-robin.
    fn dispatch(&mut self, queue: &str) {
        if self.timed {
            self.expire(queue, self.clock.now_ms());
        }
        self.deliver_ready(queue);
    }

    /// Delivers without expiring first: a new message with TTL 0 still goes to a
    /// consumer that is waiting for it, as in RabbitMQ.
    fn deliver_ready(&mut self, queue: &str) {
        let Some(q) = self.queues.get_mut(queue) else {
            return;
        };
        if q.stream.is_some() {
            return self.deliver_stream(queue);
        }
        // Read once, and only for a delivery that waits for its ack.
        let mut now = None;
        while !q.ready.is_empty() && !q.consumers.is_empty() {
            let chosen = q.choose_consumer(|c| {
                let (Some(st), Some(conn)) = (
                    self.channels.get(&(c.conn, c.channel)),
                    self.conns.get(&c.conn),
                ) else {
                    return false;
                };
                let has_room = c.no_ack || st.credit.has_room(&c.credit);
                has_room && !conn.outbox.is_backed_up()
            });
            let Some(idx) = chosen else { break };
            let item = q.ready.pop_front().expect("not empty");
            let props = delivery_props(&self.profile, q.limits.kind, &item, false);
            let c = &mut q.consumers[idx];
            let st = self
                .channels
                .get_mut(&(c.conn, c.channel))
                .expect("checked above");
            let tag = st.take_tag();
            if !c.no_ack {
                let now = *now.get_or_insert_with(|| self.clock.now_ms());
                let delivery = Unacked::of(&q.key, q.id, &item, Some(c.tag.clone()), now);
                st.hold_for(c, tag, delivery);
            }
            if item.persisted {
                if let Some(store) = &self.store {
                    persist::log_delivery(store, &self.name, &q.name, &item, c.no_ack);
                }
            }
            let conn = &self.conns[&c.conn];
            // A consumer that already holds many deliveries unacked is not
            // waiting for this one: it may go out with the next few.
            let awaited = st.unacked.len() < DEFERRABLE_BACKLOG;
            conn.outbox.push_delivery(awaited, |out| {
                codec::put_deliver(
                    out,
                    c.channel,
                    &c.tag,
                    tag,
                    item.redelivered,
                    item.msg.exchange(),
                    item.msg.routing_key(),
                );
                codec::put_message(out, c.channel, &props, item.msg.body(), conn.frame_max);
            });
        }
    }

    /// `basic.ack` / `nack` / `reject`: settles one delivery, or with `multiple`
    /// every one up to the tag (tag 0 meaning all). Requeued messages return to
    /// their place, marked redelivered. `failed` tells a failed delivery
    /// (`basic.reject`) from an explicit return (`basic.nack`, `basic.recover`),
    /// which 4.3's quorum queues do not count toward the delivery limit.
    pub fn settle(
        &mut self,
        conn: ConnId,
        channel: u16,
        delivery_tag: u64,
        multiple: bool,
        requeue: Option<bool>,
        failed: bool,
    ) -> Result<(), AmqpError> {
        let st = self
            .channels
            .get_mut(&(conn, channel))
            .expect("channel is open");
        // One delivery (most acks) settles without an allocation.
        let settled: SmallVec<[(u64, Unacked); 1]> = if multiple {
            if delivery_tag != 0 && !st.unacked.contains_key(&delivery_tag) {
                return Err(unknown_tag(delivery_tag));
            }
            let upto = if delivery_tag == 0 {
                u64::MAX
            } else {
                delivery_tag
            };
            let keep = st.unacked.split_off(&(upto.saturating_add(1)));
            let taken = std::mem::replace(&mut st.unacked, keep);
            taken.into_iter().collect()
        } else {
            match st.unacked.remove(&delivery_tag) {
                Some(u) => smallvec::smallvec![(delivery_tag, u)],
                None => return Err(unknown_tag(delivery_tag)),
            }
        };
        if requeue.is_some() {
            let streamed = settled.iter().find(|(_, u)| {
                self.queues
                    .get(&*u.queue)
                    .is_some_and(|q| q.id == u.queue_id && q.stream.is_some())
            });
            if let Some((_, u)) = streamed {
                let err =
                    stream::not_supported("basic.nack and basic.reject", &u.queue, &self.name);
                // Nothing is settled: the connection closes and releases them all.
                let st = self
                    .channels
                    .get_mut(&(conn, channel))
                    .expect("looked up above");
                st.unacked.extend(settled);
                return Err(err);
            }
        }
        // A released delivery gave its credit back when it was released.
        let from_consumers = settled
            .iter()
            .filter(|(_, u)| u.consumer.is_some() && !u.released)
            .count();
        st.credit.release(from_consumers);
        let mut touched: SmallVec<[Arc<str>; 1]> = SmallVec::new();
        for (_, u) in settled {
            if u.released {
                self.settle_released(conn, channel, &u);
                if !touched.contains(&u.queue) {
                    touched.push(u.queue.clone());
                }
                continue;
            }
            let mut live = false;
            if let Some(q) = self.queues.get_mut(&*u.queue) {
                if let Some(tag) = &u.consumer {
                    if let Some(c) = q
                        .consumers
                        .iter_mut()
                        .find(|c| c.conn == conn && c.channel == channel && &c.tag == tag)
                    {
                        c.credit.release();
                    }
                }
                live = q.id == u.queue_id;
            }
            if !touched.contains(&u.queue) {
                touched.push(u.queue.clone());
            }
            if !live {
                continue;
            }
            if requeue == Some(true) {
                self.return_to_queue(u, failed, true);
            } else {
                if u.persisted {
                    self.log_removed(&u.queue, &u.msg);
                }
                if requeue == Some(false) {
                    self.dead_letter(&u.queue, &u.msg, DeathReason::Rejected);
                }
            }
        }
        touched.sort();
        for q in touched {
            self.dispatch(&q);
        }
        Ok(())
    }

    /// Puts an unacked delivery back at its place in its queue, unless that queue
    /// is gone (false) or it is a quorum queue's message past `x-delivery-limit`,
    /// which is dropped or dead-lettered instead, as RabbitMQ does.
    /// `explicit`: the client returned it (reject, nack, recover), rather than
    /// its channel going away.
    fn return_to_queue(&mut self, u: Unacked, failed: bool, explicit: bool) -> bool {
        let Some(q) = self
            .queues
            .get_mut(&*u.queue)
            .filter(|q| q.id == u.queue_id && q.stream.is_none())
        else {
            // A stream still holds every message it delivered.
            return false;
        };
        // 4.3 counts failed deliveries only (`delivery_count`), earlier releases
        // every return (`acquired_count` in 4.0-4.2, `delivery_count` before).
        let count = if self.profile.quorum_limit_counts_failed_only() {
            u64::from(u.failed) + u64::from(failed)
        } else {
            u64::from(u.returns) + 1
        };
        let quorum = q.limits.kind == QueueType::Quorum;
        let limit = self.profile.quorum_delivery_limit(q.limits.delivery_limit);
        let over_limit = quorum && limit.is_some_and(|limit| count > limit);
        if !over_limit {
            // With no delivery limit a `#return{}` is requeued as a new message
            // (`handle_aux` → `make_requeue`, rabbit_fifo.erl:976-1000 and
            // 255-283 at v3.10.8, :1377-1401 at v4.3.5); 4.3's basic.reject is a
            // `#modify{}` instead, which goes back in front like a channel gone.
            let returned = explicit && !(failed && self.profile.quorum_limit_counts_failed_only());
            if quorum && limit.is_none() && returned {
                q.requeue_at_back(u, failed);
            } else {
                q.requeue(u, failed);
            }
            return true;
        }
        if u.persisted {
            self.log_removed(&u.queue, &u.msg);
        }
        self.dead_letter(&u.queue, &u.msg, DeathReason::DeliveryLimit);
        true
    }

    /// The restart of a broker: what is not durable goes, as when RabbitMQ restarts.
    pub fn restart(&mut self) {
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for c in conns {
            self.close_connection(c);
        }
        self.queues.retain(|_, q| q.durable);
        // A stream's log stays whole: it keeps every message, persistent or not.
        for q in self.queues.values_mut() {
            q.ready.retain(|m| m.msg.persistent());
            q.had_consumer = false;
            q.consumers.clear();
            q.next_consumer = 0;
        }
        self.exchanges.retain(|_, e| e.durable);
        let queues = &self.queues;
        let durable_exchanges: Vec<String> = self.exchanges.keys().cloned().collect();
        for ex in self.exchanges.values_mut() {
            ex.bindings_changed();
            ex.bindings.retain(|b| match &b.destination {
                Destination::Queue(q) => queues.contains_key(q.as_str()),
                Destination::Exchange(e) => durable_exchanges.contains(e),
            });
        }
    }
}

fn unknown_tag(tag: u64) -> AmqpError {
    AmqpError::precondition(format!("unknown delivery tag {tag}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A vhost on a virtual clock with connection 1, its channel 1 and a
    /// queue "q" holding one message.
    fn vhost_with_a_message() -> (VhostState, Arc<Clock>) {
        let clock = Arc::new(Clock::virtual_clock());
        let mut v = VhostState::new("/");
        v.set_clock(clock.clone());
        v.register_connection(1, Arc::new(Outbox::default()), 131_072, false);
        v.open_channel(1, 1);
        v.declare_queue(
            1,
            QueueDeclare {
                name: "q".into(),
                passive: false,
                durable: false,
                exclusive: false,
                auto_delete: false,
                arguments: FieldTable::default(),
            },
        )
        .unwrap();
        v.seed("q", "m".into(), Default::default()).unwrap();
        (v, clock)
    }

    #[test]
    fn a_consumer_timeout_is_for_the_channel_it_fired_on_only() {
        let (mut v, clock) = vhost_with_a_message();
        assert!(v.get(1, 1, "q", false).unwrap());
        clock.advance(Duration::from_secs(6));
        assert_eq!(
            v.timed_out_channels(Some(Duration::from_secs(5))),
            [(1, 1, 5000)]
        );
        assert!(v.consumer_timed_out(1, 1));
        // Reported once.
        assert!(v
            .timed_out_channels(Some(Duration::from_secs(5)))
            .is_empty());
        // The client closed the channel and opened it again before the close
        // reached its connection: the new channel has done nothing wrong.
        v.close_channel(1, 1);
        v.open_channel(1, 1);
        assert!(!v.consumer_timed_out(1, 1));
    }
}
