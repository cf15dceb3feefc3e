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

mod deadletter;
use deadletter::DeathReason;
mod inspect;
mod message;
mod persist;
mod queue;
mod reply;
mod stream;

pub use inspect::ApiGet;
use message::Deadline;
pub use message::{Message, Route, RouteCache};
pub use reply::REPLY_TO;

use queue::{Limits, Overflow, Ready};

pub type ConnId = u64;

/// The queues a message is routed to, by the names the vhost holds them under:
/// one or two of them (most publishes) cost no allocation.
pub type Targets = SmallVec<[Arc<str>; 2]>;
type ChanKey = (ConnId, u16);

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
struct Queued {
    /// Position in the queue's publish order; a requeued message goes back to it.
    seq: u64,
    msg: Arc<Message>,
    redelivered: bool,
    /// The store holds this message for this queue.
    persisted: bool,
    /// When it expires, in the broker clock's milliseconds (TTL).
    expires_at: Deadline,
    /// How often it came back to the queue (a quorum queue's `x-delivery-count`).
    returns: u32,
}

#[derive(Debug)]
struct Consumer {
    /// Shared with every unacked delivery it got, without a copy per delivery.
    tag: Arc<str>,
    conn: ConnId,
    channel: u16,
    no_ack: bool,
    exclusive: bool,
    /// Per-consumer prefetch (basic.qos global=false before basic.consume); 0 is none.
    prefetch: u16,
    unacked: u32,
    /// `x-priority`: higher-priority consumers are served first.
    priority: i64,
    /// A stream consumer's next offset to read.
    cursor: u64,
}

#[derive(Debug)]
pub struct Queue {
    /// Distinguishes a queue from a later one of the same name, so that a requeue
    /// never lands in a queue that was deleted and declared again.
    id: u64,
    pub name: String,
    /// The name again, shared with every unacked delivery from this queue.
    key: Arc<str>,
    pub durable: bool,
    pub exclusive_owner: Option<ConnId>,
    pub auto_delete: bool,
    pub arguments: FieldTable,
    limits: Limits,
    ready: Ready,
    /// A stream's log; streams keep nothing in `ready`.
    stream: Option<stream::Log>,
    next_seq: u64,
    /// When it was last used (declared, consumed from, got from), for `x-expires`.
    last_used: u64,
    consumers: Vec<Consumer>,
    /// Index into `consumers` of the next one to try: round-robin dispatch.
    next_consumer: usize,
    /// Auto-delete applies only to a queue that has had a consumer.
    had_consumer: bool,
}

impl Queue {
    /// RabbitMQ 3.10 reports a stream's counts from metrics refreshed every few
    /// seconds: right after a publish they read 0, and the consumer count always
    /// does. 0 is the only figure a client can rely on.
    pub fn message_count(&self) -> u32 {
        if self.stream.is_some() {
            return 0;
        }
        self.ready.len() as u32
    }

    pub fn consumer_count(&self) -> u32 {
        if self.stream.is_some() {
            return 0;
        }
        self.consumers.len() as u32
    }

    fn requeue(&mut self, u: Unacked) {
        self.ready.requeue(Queued {
            seq: u.seq,
            msg: u.msg,
            redelivered: true,
            persisted: u.persisted,
            expires_at: u.expires_at,
            returns: u.returns + 1,
        });
    }

    fn new(id: u64, d: QueueDeclare, owner: Option<ConnId>, now: u64) -> Queue {
        let limits = Limits::from_args(&d.arguments);
        Queue {
            id,
            key: d.name.as_str().into(),
            name: d.name,
            durable: d.durable,
            exclusive_owner: owner,
            auto_delete: d.auto_delete,
            arguments: d.arguments,
            ready: Ready::new(limits.max_priority),
            stream: limits.stream.then(stream::Log::default),
            limits,
            next_seq: 0,
            last_used: now,
            consumers: Vec::new(),
            next_consumer: 0,
            had_consumer: false,
        }
    }

    /// Durable in the store's sense: survives a restart.
    fn is_durable(&self) -> bool {
        self.durable && self.exclusive_owner.is_none()
    }
}

#[derive(Debug)]
struct Unacked {
    queue: Arc<str>,
    queue_id: u64,
    seq: u64,
    msg: Arc<Message>,
    /// `None` for a `basic.get`, which counts against no prefetch.
    consumer: Option<Arc<str>>,
    persisted: bool,
    expires_at: Deadline,
    returns: u32,
    /// When it was delivered, on the broker's clock, for the consumer timeout.
    delivered_at: u64,
}

impl Unacked {
    /// `item`, taken from queue `key` (incarnation `queue_id`) at `now`.
    fn of(
        key: &Arc<str>,
        queue_id: u64,
        item: &Queued,
        consumer: Option<Arc<str>>,
        now: u64,
    ) -> Self {
        Unacked {
            queue: key.clone(),
            queue_id,
            seq: item.seq,
            msg: item.msg.clone(),
            consumer,
            persisted: item.persisted,
            expires_at: item.expires_at,
            returns: item.returns,
            delivered_at: now,
        }
    }
}

impl ChannelState {
    fn take_tag(&mut self) -> u64 {
        let tag = self.next_tag;
        self.next_tag += 1;
        tag
    }

    /// Keeps a delivery to consumer `c` until it is settled; meanwhile it
    /// counts against the consumer's prefetch and the channel's.
    fn hold_for(&mut self, c: &mut Consumer, tag: u64, delivery: Unacked) {
        c.unacked += 1;
        self.consumer_unacked += 1;
        self.unacked.insert(tag, delivery);
    }
}

/// A channel's delivery state: what it was sent and has not acknowledged.
#[derive(Debug, Default)]
struct ChannelState {
    next_tag: u64,
    unacked: BTreeMap<u64, Unacked>,
    /// Prefetch given to consumers created from now on (basic.qos global=false).
    consumer_prefetch: u16,
    /// Prefetch shared by all consumers of the channel (basic.qos global=true).
    channel_prefetch: u16,
    /// Unacked deliveries to this channel's consumers, for `channel_prefetch`.
    consumer_unacked: u32,
    /// Consumer tag → queue name.
    consumers: HashMap<String, String>,
    /// The channel's direct reply-to address, while it consumes from
    /// `amq.rabbitmq.reply-to`.
    reply_to: Option<String>,
    /// Its consumer timeout fired: the close is on its way, so it is not
    /// reported again.
    timed_out: bool,
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

    pub fn register_connection(
        &mut self,
        conn: ConnId,
        outbox: Arc<Outbox>,
        frame_max: u32,
        cancel_notify: bool,
    ) {
        self.conns.insert(
            conn,
            ConnEntry {
                outbox,
                frame_max,
                cancel_notify,
            },
        );
    }

    pub fn open_channel(&mut self, conn: ConnId, channel: u16) {
        self.channels.insert(
            (conn, channel),
            ChannelState {
                next_tag: 1,
                ..Default::default()
            },
        );
    }

    /// A channel went away (closed by either side, or with its connection): its
    /// consumers are cancelled and its unacked deliveries go back to their queues.
    pub fn close_channel(&mut self, conn: ConnId, channel: u16) {
        let Some(state) = self.channels.remove(&(conn, channel)) else {
            return;
        };
        if let Some(address) = &state.reply_to {
            self.replies.remove(address);
        }
        let mut touched = Vec::new();
        for (tag, queue) in state.consumers {
            self.remove_consumer(&queue, conn, channel, &tag);
            touched.push(queue);
        }
        for (_, u) in state.unacked {
            let queue = u.queue.to_string();
            if self.return_to_queue(u) {
                touched.push(queue);
            }
        }
        touched.sort();
        touched.dedup();
        for queue in touched {
            self.auto_delete_if_unused(&queue);
            self.dispatch(&queue);
        }
    }

    /// The connection is gone: close its channels, delete its exclusive queues.
    pub fn close_connection(&mut self, conn: ConnId) {
        let channels: Vec<u16> = self
            .channels
            .keys()
            .filter(|(c, _)| *c == conn)
            .map(|(_, ch)| *ch)
            .collect();
        // Every consumer of the connection goes before any message is requeued, so
        // that nothing is handed to a channel of the connection that is closing.
        for &ch in &channels {
            let consumers = self
                .channels
                .get_mut(&(conn, ch))
                .map(|st| std::mem::take(&mut st.consumers))
                .unwrap_or_default();
            for (tag, queue) in consumers {
                if queue == REPLY_TO {
                    continue;
                }
                self.remove_consumer(&queue, conn, ch, &tag);
                self.auto_delete_if_unused(&queue);
            }
        }
        for ch in channels {
            self.close_channel(conn, ch);
        }
        let exclusive: Vec<String> = self
            .queues
            .values()
            .filter(|q| q.exclusive_owner == Some(conn))
            .map(|q| q.name.clone())
            .collect();
        for name in exclusive {
            self.delete_queue_entity(&name, None);
        }
        self.conns.remove(&conn);
    }

    /// The connection's outbox drained: give its consumers what waited for it.
    pub fn resume_connection(&mut self, conn: ConnId) {
        let queues: Vec<String> = self
            .channels
            .iter()
            .filter(|((c, _), _)| *c == conn)
            .flat_map(|(_, st)| st.consumers.values().cloned())
            .collect();
        for q in queues {
            self.dispatch(&q);
        }
    }

    // ---- exchanges ----------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    pub fn declare_exchange(
        &mut self,
        name: &str,
        kind: &str,
        passive: bool,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: &FieldTable,
    ) -> Result<(), AmqpError> {
        if is_default_exchange(name) {
            return Err(default_exchange_refused());
        }
        if passive {
            return self.exchange(name).map(|_| ());
        }
        // x-local-random is a type from RabbitMQ 4.0 on; before, the name is as
        // unknown as any other (live 3.10.8).
        // x-modulus-hash from 4.3 (a plugin's, off by default, before).
        let known = ExchangeKind::parse(kind).filter(|k| match k {
            ExchangeKind::LocalRandom => self.profile.local_random_exchange(),
            ExchangeKind::ModulusHash => self.profile.modulus_hash_exchange(),
            _ => true,
        });
        let Some(kind) = known else {
            return Err(AmqpError::connection(
                crate::error::code::COMMAND_INVALID,
                // RabbitMQ says "invalid" for type names its Erlang VM already
                // knows as atoms and "unknown" for the rest; these are the names
                // seen to be known.
                if matches!(kind, "" | "foo") {
                    format!("invalid exchange type '{kind}'")
                } else {
                    format!("unknown exchange type '{kind}'")
                },
            ));
        };
        let vhost = &self.name;
        if let Some(ex) = self.exchanges.get(name) {
            let mismatch = |arg: &str, got: &str, current: &str| {
                AmqpError::precondition(format!(
                    "inequivalent arg '{arg}' for exchange '{name}' in vhost '{vhost}': \
                     received '{got}' but current is '{current}'"
                ))
            };
            if ex.kind != kind {
                return Err(mismatch("type", kind.as_str(), ex.kind.as_str()));
            }
            if ex.durable != durable {
                return Err(mismatch("durable", bool_str(durable), bool_str(ex.durable)));
            }
            if ex.auto_delete != auto_delete {
                return Err(mismatch(
                    "auto_delete",
                    bool_str(auto_delete),
                    bool_str(ex.auto_delete),
                ));
            }
            if ex.internal != internal {
                return Err(mismatch(
                    "internal",
                    bool_str(internal),
                    bool_str(ex.internal),
                ));
            }
            return check_equivalent_args(
                &format!("exchange '{name}' in vhost '{vhost}'"),
                EXCHANGE_EQUIVALENCE_ARGS,
                &ex.arguments,
                arguments,
            );
        }
        if name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "exchange name '{name}' contains reserved prefix 'amq.*'"
            )));
        }
        self.exchanges.insert(
            name.to_owned(),
            Exchange {
                name: name.to_owned(),
                kind,
                durable,
                auto_delete,
                internal,
                arguments: arguments.clone(),
                bindings: Vec::new(),
                index: OnceLock::new(),
            },
        );
        if durable {
            self.log(Record::ExchangeDeclare {
                vhost: self.name.clone(),
                name: name.to_owned(),
                kind: kind.as_str().to_owned(),
                auto_delete,
                internal,
                arguments: arguments.clone(),
            });
        }
        Ok(())
    }

    pub fn delete_exchange(&mut self, name: &str, if_unused: bool) -> Result<(), AmqpError> {
        if is_default_exchange(name) {
            return Err(default_exchange_refused());
        }
        if name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "deletion of system exchange '{name}' in vhost '{}' not allowed",
                self.name
            )));
        }
        let Some(ex) = self.exchanges.get(name) else {
            // RabbitMQ answers delete-ok for an exchange that is not there.
            return Ok(());
        };
        if if_unused && !ex.bindings.is_empty() {
            return Err(AmqpError::precondition(format!(
                "exchange '{name}' in vhost '{}' in use",
                self.name
            )));
        }
        self.remove_exchange(name);
        Ok(())
    }

    fn remove_exchange(&mut self, name: &str) {
        if let Some(ex) = self.exchanges.remove(name) {
            if ex.durable {
                self.log(Record::ExchangeDelete {
                    vhost: self.name.clone(),
                    name: name.to_owned(),
                });
            }
        }
        self.remove_bindings_to(&Destination::Exchange(name.to_owned()));
    }

    /// Removes every binding leading to `dest`, then the auto-delete exchanges
    /// that this left without bindings.
    fn remove_bindings_to(&mut self, dest: &Destination) {
        let mut emptied = Vec::new();
        for ex in self.exchanges.values_mut() {
            let before = ex.bindings.len();
            ex.bindings.retain(|b| &b.destination != dest);
            ex.bindings_changed();
            if ex.bindings.len() != before && ex.bindings.is_empty() && ex.auto_delete {
                emptied.push(ex.name.clone());
            }
        }
        for ex in emptied {
            self.auto_delete_exchange(&ex);
        }
    }

    /// `exchange.bind` (`unbind` with `bind` false): routes from `source` to
    /// `destination`.
    pub fn bind_exchange(
        &mut self,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: &FieldTable,
        bind: bool,
    ) -> Result<(), AmqpError> {
        if is_default_exchange(source) || is_default_exchange(destination) {
            return Err(default_exchange_refused());
        }
        let both_exist =
            self.exchanges.contains_key(source) && self.exchanges.contains_key(destination);
        if !bind && !both_exist {
            return Ok(());
        }
        self.exchange(source)?;
        self.exchange(destination)?;
        if bind {
            check_x_match(self.exchanges[source].kind, arguments)?;
            if self.exchanges[source].kind == ExchangeKind::LocalRandom {
                // validate_binding/2 looks the destination up as a queue.
                local_random_binding(routing_key, None)?;
            }
        }
        self.change_binding(
            source,
            Binding {
                destination: Destination::Exchange(destination.to_owned()),
                routing_key: routing_key.to_owned(),
                arguments: arguments.clone(),
            },
            bind,
        );
        Ok(())
    }

    fn change_binding(&mut self, source: &str, binding: Binding, bind: bool) {
        let durable = self.binding_is_durable(source, &binding.destination);
        let ex = self
            .exchanges
            .get_mut(source)
            .expect("checked by the caller");
        let changed = if bind {
            let new = !ex.bindings.contains(&binding);
            if new {
                ex.bindings.push(binding.clone());
                ex.bindings_changed();
            }
            new
        } else {
            let before = ex.bindings.len();
            ex.bindings.retain(|b| b != &binding);
            ex.bindings_changed();
            before != ex.bindings.len()
        };
        if changed && durable {
            self.log_binding(source, &binding, bind);
        }
        if !bind {
            self.auto_delete_exchange(source);
        }
    }

    fn exchange(&self, name: &str) -> Result<&Exchange, AmqpError> {
        self.exchanges.get(name).ok_or_else(|| {
            AmqpError::not_found(format!("no exchange '{name}' in vhost '{}'", self.name))
        })
    }

    // ---- queues -------------------------------------------------------------------

    /// Declares (or checks) a queue; returns its name, message and consumer counts.
    /// The deprecated features a new queue's declaration may use, checked where
    /// RabbitMQ checks them: after the arguments' values, before the queue type's
    /// own checks (`rabbit_amqqueue:declare/7`, then `rabbit_classic_queue:declare/2`).
    fn check_deprecated_declare(&self, d: &QueueDeclare, limits: &Limits) -> Result<(), AmqpError> {
        let refusal = |f| match self.profile.deprecated_feature_refusal(f) {
            Some(e) => Err(e),
            None => Ok(()),
        };
        if !d.durable && !d.exclusive {
            refusal(DeprecatedFeature::TransientNonexclQueues)?;
        }
        let classic = !limits.quorum && !limits.stream;
        if classic && d.arguments.contains_key("x-queue-master-locator") {
            refusal(DeprecatedFeature::QueueMasterLocator)?;
        }
        Ok(())
    }

    pub fn declare_queue(
        &mut self,
        conn: ConnId,
        d: QueueDeclare,
    ) -> Result<(String, u32, u32), AmqpError> {
        if d.passive {
            self.queue_for(conn, &d.name)?;
            // A passive declare counts as use for `x-expires`, as in RabbitMQ.
            let now = self.clock.now_ms();
            let q = self.queues.get_mut(d.name.as_str()).expect("checked above");
            q.last_used = now;
            return Ok((q.name.clone(), q.message_count(), q.consumer_count()));
        }
        let vhost = self.name.clone();
        let new = !self.queues.contains_key(d.name.as_str());
        // A redeclaration is compared with the queue as it is; only a new queue
        // is checked against what its type takes.
        if new {
            check_type_args(&d.name, &vhost, &d.arguments)?;
        }
        validate_queue_args(&d.name, &vhost, &d.arguments, &self.profile)?;
        let limits = Limits::from_args(&d.arguments);
        if new {
            self.check_deprecated_declare(&d, &limits)?;
        }
        if new && limits.quorum {
            check_quorum(&d, &vhost)?;
        }
        if new && limits.stream {
            check_stream(&d, &vhost)?;
        }
        // RabbitMQ 3.10 makes exclusive queues non-durable, whatever was asked.
        let mut d = d;
        d.durable &= !d.exclusive;
        if let Some(q) = self.queues.get(d.name.as_str()) {
            check_exclusive(q, conn, &vhost)?;
            if d.exclusive != q.exclusive_owner.is_some() {
                return Err(locked_error(&q.name, &vhost));
            }
            let mismatch = |arg: &str, got: bool, current: bool| {
                AmqpError::precondition(format!(
                    "inequivalent arg '{arg}' for queue '{}' in vhost '{vhost}': \
                     received '{}' but current is '{}'",
                    d.name,
                    bool_str(got),
                    bool_str(current)
                ))
            };
            if q.durable != d.durable {
                return Err(mismatch("durable", d.durable, q.durable));
            }
            if q.auto_delete != d.auto_delete {
                return Err(mismatch("auto_delete", d.auto_delete, q.auto_delete));
            }
            check_equivalent_args(
                &format!("queue '{}' in vhost '{vhost}'", q.name),
                QUEUE_EQUIVALENCE_ARGS,
                &q.arguments,
                &d.arguments,
            )?;
            let now = self.clock.now_ms();
            let q = self.queues.get_mut(d.name.as_str()).expect("found above");
            q.last_used = now;
            return Ok((q.name.clone(), q.message_count(), q.consumer_count()));
        }
        let id = self.next_queue_id;
        self.next_queue_id += 1;
        let owner = d.exclusive.then_some(conn);
        let queue = Queue::new(id, d.clone(), owner, self.clock.now_ms());
        self.timed |= queue.limits.expires.is_some() || queue.limits.message_ttl.is_some();
        self.refusing |= queue.limits.may_refuse();
        self.queues.insert(d.name.as_str().into(), queue);
        if d.durable && !d.exclusive {
            self.log(Record::QueueDeclare {
                vhost: vhost.clone(),
                name: d.name.clone(),
                auto_delete: d.auto_delete,
                arguments: self.queues[d.name.as_str()].arguments.clone(),
            });
        }
        Ok((d.name, 0, 0))
    }

    /// Looks a queue up on behalf of `conn`, refusing another connection's
    /// exclusive queue.
    fn queue_for(&self, conn: ConnId, name: &str) -> Result<&Queue, AmqpError> {
        let q = self.queues.get(name).ok_or_else(|| {
            AmqpError::not_found(format!("no queue '{name}' in vhost '{}'", self.name))
        })?;
        check_exclusive(q, conn, &self.name)?;
        Ok(q)
    }

    pub fn bind_queue(
        &mut self,
        conn: ConnId,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> Result<(), AmqpError> {
        if is_default_exchange(exchange) {
            return Err(default_exchange_refused());
        }
        self.exchange(exchange)?;
        let q = self.queue_for(conn, queue)?;
        let queue_type = if q.limits.quorum {
            "rabbit_quorum_queue"
        } else if q.limits.stream {
            "rabbit_stream_queue"
        } else {
            "rabbit_classic_queue"
        };
        check_x_match(self.exchanges[exchange].kind, arguments)?;
        if self.exchanges[exchange].kind == ExchangeKind::LocalRandom {
            local_random_binding(routing_key, Some(queue_type))?;
        }
        self.change_binding(exchange, queue_binding(queue, routing_key, arguments), true);
        Ok(())
    }

    /// `queue.unbind`: like RabbitMQ, succeeds when there is nothing to remove.
    pub fn unbind_queue(
        &mut self,
        conn: ConnId,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> Result<(), AmqpError> {
        if is_default_exchange(exchange) {
            return Err(default_exchange_refused());
        }
        let binding = queue_binding(queue, routing_key, arguments);
        let exists = self
            .exchanges
            .get(exchange)
            .is_some_and(|e| e.bindings.contains(&binding));
        // RabbitMQ looks at the queue only when there is a binding to remove.
        if exists {
            self.queue_for(conn, queue)?;
            self.change_binding(exchange, binding, false);
        }
        Ok(())
    }

    pub fn purge_queue(&mut self, conn: ConnId, name: &str) -> Result<u32, AmqpError> {
        if self.queue_for(conn, name)?.stream.is_some() {
            return Err(stream::not_supported("queue.purge", name, &self.name));
        }
        let q = self.queues.get_mut(name).expect("checked above");
        let purged: Vec<Queued> = q.ready.drain();
        for item in &purged {
            if item.persisted {
                self.log_removed(name, &item.msg);
            }
        }
        Ok(purged.len() as u32)
    }

    /// Deletes a queue for the management API or the test double (no channel):
    /// returns how many messages it held.
    pub fn delete_queue(
        &mut self,
        conn: ConnId,
        name: &str,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<u32, AmqpError> {
        self.delete_queue_on(conn, 0, name, if_unused, if_empty)
            .map(|(n, _)| n)
    }

    /// `queue.delete` on channel `ch`: returns how many messages the queue held
    /// and the tags of `ch`'s own consumers of it, whose `basic.cancel` must
    /// follow `delete-ok`. RabbitMQ's channel process learns that the queue is
    /// gone from the queue process's exit, which it reads only after the reply
    /// to its own delete call (rabbit_channel.erl:1668-1676 replies,
    /// :815-835 and :1844-1884 cancel); every other channel hears of it at once.
    pub fn delete_queue_on(
        &mut self,
        conn: ConnId,
        ch: u16,
        name: &str,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<(u32, Vec<Arc<str>>), AmqpError> {
        let q = match self.queue_for(conn, name) {
            Ok(q) => q,
            // RabbitMQ answers delete-ok for a queue that is not there.
            Err(e) if e.code == crate::error::code::NOT_FOUND => return Ok((0, Vec::new())),
            Err(e) => return Err(e),
        };
        // For a stream both read RabbitMQ's counts, which are 0.
        if if_unused && q.consumer_count() > 0 {
            return Err(AmqpError::precondition(format!(
                "queue '{name}' in vhost '{}' in use",
                self.name
            )));
        }
        if if_empty && q.message_count() > 0 {
            return Err(AmqpError::precondition(format!(
                "queue '{name}' in vhost '{}' not empty",
                self.name
            )));
        }
        let mut own = Vec::new();
        let n = self.delete_queue_entity(name, Some((conn, ch, &mut own)));
        Ok((n, own))
    }

    /// Removes a queue with its bindings; its consumers are told (`basic.cancel`)
    /// when their client asked for that, except those of the `deleter` channel,
    /// whose tags are collected for it to cancel after its reply. Returns how
    /// many messages it held.
    fn delete_queue_entity(
        &mut self,
        name: &str,
        mut deleter: Option<(ConnId, u16, &mut Vec<Arc<str>>)>,
    ) -> u32 {
        let Some(q) = self.queues.remove(name) else {
            return 0;
        };
        if q.is_durable() {
            self.log(Record::QueueDelete {
                vhost: self.name.clone(),
                name: name.to_owned(),
            });
            if let Some(store) = &self.store {
                for item in q.ready.iter().filter(|i| i.persisted) {
                    store.released(item.msg.size());
                }
                for (_, e) in q.stream.iter().flat_map(stream::Log::iter) {
                    if e.msg.persist_id().is_some() {
                        store.released(e.msg.size());
                    }
                }
            }
        }
        for c in &q.consumers {
            if let Some(st) = self.channels.get_mut(&(c.conn, c.channel)) {
                st.consumers.remove(&*c.tag);
            }
            if let Some((conn, ch, own)) = &mut deleter {
                if (*conn, *ch) == (c.conn, c.channel) {
                    own.push(c.tag.clone());
                    continue;
                }
            }
            if let Some(conn) = self.conns.get(&c.conn) {
                if conn.cancel_notify {
                    let tag = c.tag.clone();
                    conn.outbox.push(|out| {
                        codec::put_method(
                            out,
                            c.channel,
                            AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                                consumer_tag: tag.to_string().into(),
                                nowait: true,
                            })),
                        )
                    });
                }
            }
        }
        self.remove_bindings_to(&Destination::Queue(name.to_owned()));
        q.message_count()
    }

    fn auto_delete_exchange(&mut self, name: &str) {
        if let Some(ex) = self.exchanges.get(name) {
            if ex.auto_delete && ex.bindings.is_empty() {
                self.remove_exchange(name);
            }
        }
    }

    fn auto_delete_if_unused(&mut self, name: &str) {
        if let Some(q) = self.queues.get(name) {
            if q.auto_delete && q.consumers.is_empty() && q.had_consumer {
                self.delete_queue_entity(name, None);
            }
        }
    }

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
    pub fn publish(
        &mut self,
        conn: ConnId,
        ch: u16,
        targets: &[Arc<str>],
        mandatory: bool,
        msg: Message,
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
        self.enqueue(targets, msg)
    }

    /// Appends a message to the queues it was routed to and delivers what it can.
    /// Returns the store LSN a confirm must wait for (when the message was written
    /// to the store), and whether a full queue refused it (`x-overflow`
    /// reject-publish), which the publisher's confirm must report as a nack.
    pub fn enqueue(&mut self, targets: &[Arc<str>], mut msg: Message) -> Published {
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
        let lsn = self.persist(&accepted, &mut msg);
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

    /// Channels whose oldest unacked delivery (from a consumer or a `basic.get`)
    /// has waited longer than `timeout`, each reported once: RabbitMQ's
    /// consumer timeout, which looks only at the oldest delivery of a channel.
    pub fn timed_out_channels(&mut self, timeout: std::time::Duration) -> Vec<(ConnId, u16)> {
        let now = self.clock.now_ms();
        let limit = timeout.as_millis() as u64;
        let mut out = Vec::new();
        for (&(conn, channel), st) in &mut self.channels {
            let overdue = st
                .unacked
                .first_key_value()
                .is_some_and(|(_, u)| now.saturating_sub(u.delivered_at) > limit);
            if overdue && !st.timed_out {
                st.timed_out = true;
                out.push((conn, channel));
            }
        }
        out.sort_unstable();
        out
    }

    /// Whether the channel open as `channel` is the one whose consumer timeout
    /// fired: a channel opened again under that number starts afresh.
    pub fn consumer_timed_out(&self, conn: ConnId, channel: u16) -> bool {
        self.channels
            .get(&(conn, channel))
            .is_some_and(|st| st.timed_out)
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
            // With a single active consumer only the first one is served.
            let n = if q.limits.single_active_consumer {
                1
            } else {
                q.consumers.len()
            };
            let mut chosen: Option<usize> = None;
            for i in 0..n {
                let idx = (q.next_consumer + i) % n;
                let c = &q.consumers[idx];
                if chosen.is_some_and(|best| q.consumers[best].priority >= c.priority) {
                    continue;
                }
                let (Some(st), Some(conn)) = (
                    self.channels.get(&(c.conn, c.channel)),
                    self.conns.get(&c.conn),
                ) else {
                    continue;
                };
                let has_room = c.no_ack
                    || ((c.prefetch == 0 || c.unacked < c.prefetch as u32)
                        && (st.channel_prefetch == 0
                            || st.consumer_unacked < st.channel_prefetch as u32));
                if has_room && !conn.outbox.is_backed_up() {
                    chosen = Some(idx);
                }
            }
            let Some(idx) = chosen else { break };
            q.next_consumer = (idx + 1) % n;
            let item = q.ready.pop_front().expect("not empty");
            let props = delivery_props(q.limits.quorum, &item);
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
            conn.outbox.push(|out| {
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

    /// Gives each consumer of a stream the entries after its position, up to its
    /// prefetch: every consumer reads the whole log, none takes from another.
    fn deliver_stream(&mut self, queue: &str) {
        let now = self.clock.now_ms();
        let Some(q) = self.queues.get_mut(queue) else {
            return;
        };
        let Some(log) = &q.stream else {
            return;
        };
        for c in &mut q.consumers {
            let (Some(st), Some(conn)) = (
                self.channels.get_mut(&(c.conn, c.channel)),
                self.conns.get(&c.conn),
            ) else {
                continue;
            };
            while c.unacked < u32::from(c.prefetch) && !conn.outbox.is_backed_up() {
                // Retention may have removed what a slow consumer had not read.
                c.cursor = c.cursor.max(log.first());
                let Some(entry) = log.get(c.cursor) else {
                    break;
                };
                let offset = c.cursor;
                c.cursor += 1;
                let tag = st.take_tag();
                st.hold_for(
                    c,
                    tag,
                    Unacked {
                        queue: q.key.clone(),
                        queue_id: q.id,
                        seq: offset,
                        msg: entry.msg.clone(),
                        consumer: Some(c.tag.clone()),
                        // Acks never take anything out of a stream's store.
                        persisted: false,
                        expires_at: Deadline::NEVER,
                        returns: 0,
                        delivered_at: now,
                    },
                );
                // RabbitMQ tells each delivery's offset in its headers.
                let props = entry
                    .msg
                    .props_with_header("x-stream-offset", AMQPValue::LongLongInt(offset as i64));
                conn.outbox.push(|out| {
                    codec::put_deliver(
                        out,
                        c.channel,
                        &c.tag,
                        tag,
                        false,
                        entry.msg.exchange(),
                        entry.msg.routing_key(),
                    );
                    codec::put_message(out, c.channel, &props, entry.msg.body(), conn.frame_max);
                });
            }
        }
    }

    /// What RabbitMQ 3.10 checks when a consumer attaches to a stream, in its
    /// order; returns where the consumer starts reading.
    fn check_stream_consume(
        &self,
        conn: ConnId,
        channel: u16,
        q: &Queue,
        opts: &ConsumeOptions,
    ) -> Result<u64, AmqpError> {
        let (queue, vhost) = (&q.name, &self.name);
        for arg in ["x-priority", "x-cancel-on-ha-failover"] {
            if opts.arguments.contains_key(arg) {
                return Err(wrong_type_arg(arg, queue, vhost, "rabbit_stream_queue"));
            }
        }
        let start = stream::parse_start(
            opts.arguments.inner().get("x-stream-offset"),
            self.clock.unix_ms(),
            queue,
            vhost,
        )?;
        let st = self
            .channels
            .get(&(conn, channel))
            .expect("channel is open");
        if st.consumer_prefetch == 0 {
            return Err(AmqpError::precondition(format!(
                "consumer prefetch count is not set for 'queue '{queue}' in vhost '{vhost}''"
            )));
        }
        if st.channel_prefetch != 0 {
            return Err(AmqpError::connection(
                crate::error::code::NOT_IMPLEMENTED,
                format!("queue '{queue}' in vhost '{vhost}' does not support global qos"),
            ));
        }
        if opts.no_ack {
            return Err(stream::not_supported(
                "automatic acknowledgement",
                queue,
                vhost,
            ));
        }
        let log = q.stream.as_ref().expect("a stream");
        Ok(log.start_offset(start))
    }

    pub fn consume(
        &mut self,
        conn: ConnId,
        channel: u16,
        queue: &str,
        opts: ConsumeOptions,
        on_ok: impl FnOnce(&str),
    ) -> Result<(), AmqpError> {
        if queue == REPLY_TO {
            return self.consume_replies(conn, channel, opts, on_ok);
        }
        let vhost = self.name.clone();
        let q = self.queue_for(conn, queue)?;
        let cursor = if q.stream.is_some() {
            self.check_stream_consume(conn, channel, q, &opts)?
        } else {
            if opts.arguments.contains_key("x-stream-offset") {
                let kind = if q.limits.quorum {
                    "rabbit_quorum_queue"
                } else {
                    "rabbit_classic_queue"
                };
                return Err(wrong_type_arg("x-stream-offset", queue, &vhost, kind));
            }
            0
        };
        let priority = match opts.arguments.inner().get("x-priority") {
            None => 0,
            Some(v) => as_integer(v).ok_or_else(|| {
                AmqpError::precondition(format!(
                    "invalid arg 'x-priority' for queue '{queue}' in vhost '{vhost}': \
                     \"expected integer, got {}\"",
                    type_name(v)
                ))
            })? as i64,
        };
        let ConsumeOptions {
            tag,
            no_ack,
            exclusive,
            ..
        } = opts;
        let global_qos = self
            .channels
            .get(&(conn, channel))
            .is_some_and(|st| st.channel_prefetch != 0);
        if q.limits.quorum && global_qos {
            return Err(AmqpError::connection(
                crate::error::code::NOT_IMPLEMENTED,
                format!("queue '{queue}' in vhost '{vhost}' does not support global qos"),
            ));
        }
        // RabbitMQ 3.10 does not enforce exclusive consumers on a stream.
        let exclusive_clash =
            exclusive && !q.consumers.is_empty() || q.consumers.iter().any(|c| c.exclusive);
        if exclusive_clash && q.stream.is_none() {
            return Err(AmqpError::access_refused(format!(
                "queue '{queue}' in vhost '{vhost}' in exclusive use"
            )));
        }
        let st = self
            .channels
            .get_mut(&(conn, channel))
            .expect("channel is open");
        if st.consumers.contains_key(&tag) {
            return Err(AmqpError::connection(
                crate::error::code::NOT_ALLOWED,
                format!("attempt to reuse consumer tag '{tag}'"),
            ));
        }
        st.consumers.insert(tag.clone(), queue.to_owned());
        let prefetch = st.consumer_prefetch;
        // consume-ok goes out before the first delivery.
        on_ok(&tag);
        let q = self.queues.get_mut(queue).expect("checked above");
        q.consumers.push(Consumer {
            tag: tag.as_str().into(),
            conn,
            channel,
            no_ack,
            exclusive,
            prefetch,
            unacked: 0,
            priority,
            cursor,
        });
        q.had_consumer = true;
        q.last_used = self.clock.now_ms();
        self.dispatch(queue);
        Ok(())
    }

    /// Cancels a consumer; returns whether it existed.
    pub fn cancel(&mut self, conn: ConnId, channel: u16, tag: &str) -> bool {
        let Some(st) = self.channels.get_mut(&(conn, channel)) else {
            return false;
        };
        let Some(queue) = st.consumers.remove(tag) else {
            return false;
        };
        if queue == REPLY_TO {
            if let Some(address) = st.reply_to.take() {
                self.replies.remove(&address);
            }
            return true;
        }
        self.remove_consumer(&queue, conn, channel, tag);
        self.auto_delete_if_unused(&queue);
        true
    }

    fn remove_consumer(&mut self, queue: &str, conn: ConnId, channel: u16, tag: &str) {
        if let Some(q) = self.queues.get_mut(queue) {
            if let Some(i) = q
                .consumers
                .iter()
                .position(|c| c.conn == conn && c.channel == channel && &*c.tag == tag)
            {
                q.consumers.remove(i);
                if q.next_consumer > i {
                    q.next_consumer -= 1;
                }
                if q.next_consumer >= q.consumers.len() {
                    q.next_consumer = 0;
                }
            }
        }
    }

    pub fn qos(&mut self, conn: ConnId, channel: u16, prefetch: u16, global: bool) {
        let Some(st) = self.channels.get_mut(&(conn, channel)) else {
            return;
        };
        if global {
            st.channel_prefetch = prefetch;
        } else {
            st.consumer_prefetch = prefetch;
        }
        let queues: Vec<String> = st.consumers.values().cloned().collect();
        for q in queues {
            self.dispatch(&q);
        }
    }

    /// `basic.get`: the next ready message with the count left, written to the
    /// caller's outbox; false when the queue is empty.
    pub fn get(
        &mut self,
        conn: ConnId,
        channel: u16,
        queue: &str,
        no_ack: bool,
    ) -> Result<bool, AmqpError> {
        if self.queue_for(conn, queue)?.stream.is_some() {
            return Err(stream::not_supported("basic.get", queue, &self.name));
        }
        let now = self.clock.now_ms();
        if self.timed {
            self.expire(queue, now);
        }
        let q = self.queues.get_mut(queue).expect("checked above");
        q.last_used = now;
        let Some(item) = q.ready.pop_front() else {
            return Ok(false);
        };
        // The count left excludes messages already expired behind this one.
        if self.timed {
            self.expire(queue, now);
        }
        let q = self.queues.get_mut(queue).expect("checked above");
        let remaining = q.ready.len() as u32;
        let st = self
            .channels
            .get_mut(&(conn, channel))
            .expect("channel is open");
        let tag = st.take_tag();
        if !no_ack {
            st.unacked
                .insert(tag, Unacked::of(&q.key, q.id, &item, None, now));
        }
        if item.persisted {
            if let Some(store) = &self.store {
                persist::log_delivery(store, &self.name, &q.name, &item, no_ack);
            }
        }
        let entry = &self.conns[&conn];
        let m = &item.msg;
        let quorum = self.queues.get(queue).is_some_and(|q| q.limits.quorum);
        let props = delivery_props(quorum, &item);
        entry.outbox.push(|out| {
            codec::put_method(
                out,
                channel,
                AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
                    delivery_tag: tag,
                    redelivered: item.redelivered,
                    exchange: m.exchange().into(),
                    routing_key: m.routing_key().into(),
                    message_count: remaining,
                })),
            );
            codec::put_message(out, channel, &props, m.body(), entry.frame_max);
        });
        Ok(true)
    }

    /// `basic.ack` / `nack` / `reject`: settles one delivery, or with `multiple`
    /// every one up to the tag (tag 0 meaning all). Requeued messages return to
    /// their place, marked redelivered.
    pub fn settle(
        &mut self,
        conn: ConnId,
        channel: u16,
        delivery_tag: u64,
        multiple: bool,
        requeue: Option<bool>,
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
        let from_consumers = settled.iter().filter(|(_, u)| u.consumer.is_some()).count();
        st.consumer_unacked = st.consumer_unacked.saturating_sub(from_consumers as u32);
        let mut touched: SmallVec<[Arc<str>; 1]> = SmallVec::new();
        for (_, u) in settled {
            let mut live = false;
            if let Some(q) = self.queues.get_mut(&*u.queue) {
                if let Some(tag) = &u.consumer {
                    if let Some(c) = q
                        .consumers
                        .iter_mut()
                        .find(|c| c.conn == conn && c.channel == channel && &c.tag == tag)
                    {
                        c.unacked = c.unacked.saturating_sub(1);
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
                self.return_to_queue(u);
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

    /// Whether a delivery tag is unacked on a channel (0 means "all" with multiple).
    pub fn is_unacked(&self, conn: ConnId, channel: u16, tag: u64) -> bool {
        self.channels
            .get(&(conn, channel))
            .is_some_and(|st| st.unacked.contains_key(&tag))
    }

    /// Puts an unacked delivery back at its place in its queue, unless that queue
    /// is gone (false) or it is a quorum queue's message past `x-delivery-limit`,
    /// which is dropped or dead-lettered instead, as RabbitMQ does.
    fn return_to_queue(&mut self, u: Unacked) -> bool {
        let Some(q) = self
            .queues
            .get_mut(&*u.queue)
            .filter(|q| q.id == u.queue_id && q.stream.is_none())
        else {
            // A stream still holds every message it delivered.
            return false;
        };
        let over_limit = q.limits.quorum
            && self
                .profile
                .quorum_delivery_limit(q.limits.delivery_limit)
                .is_some_and(|limit| u64::from(u.returns) + 1 > limit);
        if !over_limit {
            q.requeue(u);
            return true;
        }
        if u.persisted {
            self.log_removed(&u.queue, &u.msg);
        }
        self.dead_letter(&u.queue, &u.msg, DeathReason::DeliveryLimit);
        true
    }

    /// Whether the channel holds unacked deliveries from a stream, which
    /// `basic.recover` cannot take back: RabbitMQ 3.10 crashes on it (541).
    pub fn has_stream_deliveries(&self, conn: ConnId, channel: u16) -> bool {
        self.channels.get(&(conn, channel)).is_some_and(|st| {
            st.unacked.values().any(|u| {
                self.queues
                    .get(&*u.queue)
                    .is_some_and(|q| q.id == u.queue_id && q.stream.is_some())
            })
        })
    }

    /// `basic.recover` with requeue: every unacked delivery of the channel goes back.
    pub fn recover(&mut self, conn: ConnId, channel: u16) {
        let _ = self.settle(conn, channel, 0, true, Some(true));
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

fn bool_str(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

fn unknown_tag(tag: u64) -> AmqpError {
    AmqpError::precondition(format!("unknown delivery tag {tag}"))
}

fn locked_error(queue: &str, vhost: &str) -> AmqpError {
    AmqpError::locked(format!(
        "cannot obtain exclusive access to locked queue '{queue}' in vhost '{vhost}'. \
         It could be originally declared on another connection or the exclusive property \
         value does not match that of the original declaration."
    ))
}

fn check_exclusive(q: &Queue, conn: ConnId, vhost: &str) -> Result<(), AmqpError> {
    match q.exclusive_owner {
        Some(owner) if owner != conn => Err(locked_error(&q.name, vhost)),
        _ => Ok(()),
    }
}

/// The properties a delivery carries: the publisher's, or for a quorum queue
/// the same with `x-delivery-count` (how often it came back) added.
fn delivery_props(quorum: bool, item: &Queued) -> std::borrow::Cow<'_, [u8]> {
    if !quorum {
        return item.msg.props().into();
    }
    item.msg
        .props_with_header(
            "x-delivery-count",
            AMQPValue::LongLongInt(i64::from(item.returns)),
        )
        .into()
}

/// `invalid arg 'x-…' for queue 'q' in vhost '/' of queue type rabbit_…_queue`:
/// an argument this queue type does not take.
fn wrong_type_arg(arg: &str, queue: &str, vhost: &str, kind: &str) -> AmqpError {
    AmqpError::precondition(format!(
        "invalid arg '{arg}' for queue '{queue}' in vhost '{vhost}' of queue type {kind}"
    ))
}

/// Queue arguments that only streams take.
const STREAM_ONLY_ARGS: &[&str] = &[
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size",
];

/// Queue arguments RabbitMQ 3.10 refuses on a stream.
const NOT_FOR_STREAMS: &[&str] = &[
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-dead-letter-strategy",
    "x-max-length",
    "x-max-priority",
    "x-overflow",
    "x-expires",
    "x-single-active-consumer",
    "x-queue-mode",
    "x-queue-master-locator",
    "x-delivery-limit",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-quorum-initial-group-size",
];

/// RabbitMQ's first check of a declaration: arguments the queue type does not
/// take, named before any value is looked at.
fn check_type_args(queue: &str, vhost: &str, args: &FieldTable) -> Result<(), AmqpError> {
    let kind = match args.inner().get("x-queue-type") {
        None => "classic".to_owned(),
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(AMQPValue::ShortString(s)) => s.to_string(),
        // Left to the value check, which names the type problem.
        Some(_) => return Ok(()),
    };
    let (refused, name): (&dyn Fn(&str) -> bool, &str) = match kind.as_str() {
        "classic" => (
            &|k| STREAM_ONLY_ARGS.contains(&k) || k == "x-queue-leader-locator",
            "rabbit_classic_queue",
        ),
        "quorum" => (&|k| STREAM_ONLY_ARGS.contains(&k), "rabbit_quorum_queue"),
        "stream" => (&|k| NOT_FOR_STREAMS.contains(&k), "rabbit_stream_queue"),
        _ => return Ok(()),
    };
    match args.inner().keys().find(|k| refused(k.as_str())) {
        Some(k) => Err(wrong_type_arg(k.as_str(), queue, vhost, name)),
        None => Ok(()),
    }
}

/// The properties RabbitMQ 3.10 refuses on a stream, in the order it checks them.
fn check_stream(d: &QueueDeclare, vhost: &str) -> Result<(), AmqpError> {
    let name = &d.name;
    let property = |p: &str| {
        Err(AmqpError::precondition(format!(
            "invalid property '{p}' for queue '{name}' in vhost '{vhost}'"
        )))
    };
    if d.auto_delete {
        return property("auto-delete");
    }
    if d.exclusive {
        return property("exclusive-owner");
    }
    if !d.durable {
        return property("non-durable");
    }
    Ok(())
}

/// What RabbitMQ 3.10 refuses in a quorum queue's declaration.
fn check_quorum(d: &QueueDeclare, vhost: &str) -> Result<(), AmqpError> {
    let name = &d.name;
    let property = |p: &str| {
        Err(AmqpError::precondition(format!(
            "invalid property '{p}' for queue '{name}' in vhost '{vhost}'"
        )))
    };
    if !d.durable {
        return property("non-durable");
    }
    if d.exclusive {
        return property("exclusive-owner");
    }
    if d.auto_delete {
        return property("auto-delete");
    }
    for arg in ["x-max-priority", "x-queue-mode"] {
        if d.arguments.contains_key(arg) {
            return Err(AmqpError::precondition(format!(
                "invalid arg '{arg}' for queue '{name}' in vhost '{vhost}' of queue type \
                 rabbit_quorum_queue"
            )));
        }
    }
    Ok(())
}

/// RabbitMQ's validation of the queue arguments it knows (which ones, and how,
/// depends on the version imitated).
fn validate_queue_args(
    queue: &str,
    vhost: &str,
    args: &FieldTable,
    profile: &Profile,
) -> Result<(), AmqpError> {
    for (key, value) in args.inner() {
        let int = || {
            as_integer(value)
                .ok_or_else(|| format!("\"expected integer, got {}\"", type_name(value)))
        };
        let non_negative = || {
            int().and_then(|n| {
                if n < 0 {
                    Err(format!("{{value_negative,{n}}}"))
                } else {
                    Ok(n)
                }
            })
        };
        let text = || match value {
            AMQPValue::LongString(s) => Ok(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            AMQPValue::ShortString(s) => Ok(s.to_string()),
            other => Err(format!("\"expected string, got {}\"", type_name(other))),
        };
        let one_of = |allowed: &[&str]| {
            text().and_then(|t| {
                if allowed.contains(&t.as_str()) {
                    Ok(())
                } else {
                    Err(format!("{{unacceptable_value,<<\"{t}\">>}}"))
                }
            })
        };
        let problem = match key.as_str() {
            "x-expires" => int().and_then(|n| match n {
                0 => Err("{value_zero,0}".to_owned()),
                n if n < 0 => Err(format!("{{value_negative,{n}}}")),
                _ => Ok(()),
            }),
            "x-message-ttl"
            | "x-max-length"
            | "x-max-length-bytes"
            | "x-stream-max-segment-size-bytes" => non_negative().map(|_| ()),
            // No validator in `rabbit_amqqueue:declare_args/0` in any version:
            // RabbitMQ 3.10.8 takes -1, and 4.0+ reads a negative limit as none.
            "x-delivery-limit" => int().map(|_| ()),
            "x-queue-version" => non_negative().and_then(|n| {
                if profile.queue_versions().contains(&(n as i64)) {
                    Ok(())
                } else {
                    Err(format!("\"unsupported queue version '{n}'\""))
                }
            }),
            "x-initial-cluster-size" => int().and_then(|n| match n {
                0 => Err("{value_zero,0}".to_owned()),
                n if n < 0 => Err(format!("{{value_negative,{n}}}")),
                _ => Ok(()),
            }),
            "x-max-age" => match text() {
                Err(_) => Err(format!("{{unacceptable_type,{}}}", type_name(value))),
                Ok(t) => match stream::parse_age(&t) {
                    Ok(_) => Ok(()),
                    Err(stream::AgeError::Invalid) => Err("invalid_max_age".to_owned()),
                    Err(stream::AgeError::Crash) => return Err(stream::crash()),
                },
            },
            "x-queue-leader-locator" => match text() {
                Err(_) => Err(format!("{{unacceptable_type,{}}}", type_name(value))),
                Ok(_) => one_of(&["client-local", "balanced", "random", "least-leaders"])
                    .map_err(|_| "invalid_queue_locator_arg".to_owned()),
            },
            "x-max-priority" => non_negative().and_then(|n| {
                if n > 255 {
                    Err(format!("{{value_too_large,{n},255}}"))
                } else {
                    Ok(())
                }
            }),
            "x-dead-letter-exchange" | "x-dead-letter-routing-key" => text().map(|_| ()),
            "x-overflow" => one_of(&["drop-head", "reject-publish", "reject-publish-dlx"])
                .map_err(|_| "invalid_overflow".to_owned()),
            // rabbit_amqqueue:check_queue_mode/2, gone in 4.3.
            "x-queue-mode" if profile.checks_queue_mode() => match value {
                AMQPValue::LongString(s) => {
                    let mode = String::from_utf8_lossy(s.as_bytes());
                    if mode == "default" || mode == "lazy" {
                        Ok(())
                    } else {
                        Err(format!("\"unsupported queue mode '{mode}'\""))
                    }
                }
                other => Err(format!("{{unacceptable_type,{}}}", type_name(other))),
            },
            "x-single-active-consumer" => match value {
                AMQPValue::Boolean(_) => Ok(()),
                other => Err(format!("\"expected bool, got {}\"", type_name(other))),
            },
            "x-queue-type" => text().and_then(|t| match t.as_str() {
                "classic" => Ok(()),
                "quorum" | "stream" => Ok(()),
                _ => Err(format!("\"unsupported queue type '{t}'\"")),
            }),
            _ => Ok(()),
        };
        if let Err(why) = problem {
            return Err(AmqpError::precondition(format!(
                "invalid arg '{key}' for queue '{queue}' in vhost '{vhost}': {why}"
            )));
        }
    }
    Ok(())
}

/// The default exchange has no other name: RabbitMQ 3.10 knows no
/// "amq.default" on the wire.
/// What an `x-local-random` exchange may be bound to: classic queues, with the
/// empty key (rabbit_exchange_type_local_random.erl:85-106 at v4.3.5, answered
/// 406 by rabbit_channel.erl:1859-1860). `queue_type` is the destination queue's
/// type module, `None` for an exchange, which its queue lookup does not find.
fn local_random_binding(routing_key: &str, queue_type: Option<&str>) -> Result<(), AmqpError> {
    if !routing_key.is_empty() {
        return Err(AmqpError::precondition(format!(
            "Non empty binding '{routing_key}' key not permitted"
        )));
    }
    match queue_type {
        None => Err(AmqpError::precondition("Destination not found")),
        Some("rabbit_classic_queue") => Ok(()),
        Some(other) => Err(AmqpError::precondition(format!(
            "Queue type {other} not valid for this exchange type"
        ))),
    }
}

/// A headers binding's `x-match` must be one RabbitMQ knows.
fn check_x_match(kind: ExchangeKind, arguments: &FieldTable) -> Result<(), AmqpError> {
    if kind != ExchangeKind::Headers {
        return Ok(());
    }
    let value = match arguments.inner().get("x-match") {
        None => return Ok(()),
        Some(AMQPValue::LongString(s)) => s.as_bytes().to_vec(),
        Some(AMQPValue::ShortString(s)) => s.as_str().as_bytes().to_vec(),
        Some(_) => return Ok(()),
    };
    if [&b"all"[..], b"any", b"all-with-x", b"any-with-x"].contains(&value.as_slice()) {
        return Ok(());
    }
    Err(AmqpError::precondition(format!(
        "Invalid x-match field value {}; expected all, any, all-with-x, or any-with-x",
        codec::erlang_binary(&value)
    )))
}

fn is_default_exchange(name: &str) -> bool {
    name.is_empty()
}

fn default_exchange_refused() -> AmqpError {
    AmqpError::access_refused("operation not permitted on the default exchange")
}

fn queue_binding(queue: &str, routing_key: &str, arguments: &FieldTable) -> Binding {
    Binding {
        destination: Destination::Queue(queue.to_owned()),
        routing_key: routing_key.to_owned(),
        arguments: arguments.clone(),
    }
}

/// Queue arguments RabbitMQ compares on redeclaration; others are not checked.
const QUEUE_EQUIVALENCE_ARGS: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-type",
    "x-single-active-consumer",
    "x-queue-master-locator",
    "x-quorum-initial-group-size",
    "x-delivery-limit",
    "x-dead-letter-strategy",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size",
    "x-queue-leader-locator",
];

/// Exchange arguments RabbitMQ compares on redeclaration.
const EXCHANGE_EQUIVALENCE_ARGS: &[&str] = &["alternate-exchange"];

/// RabbitMQ's check that a redeclaration names the same arguments: `what` is
/// e.g. `queue 'q' in vhost '/'`.
fn check_equivalent_args(
    what: &str,
    keys: &[&str],
    current: &FieldTable,
    got: &FieldTable,
) -> Result<(), AmqpError> {
    for key in keys {
        let a = current.inner().get(*key);
        let b = got.inner().get(*key);
        let same = match (a, b) {
            (Some(x), Some(y)) => same_value(x, y),
            (None, None) => true,
            _ => false,
        };
        if !same {
            let (received, current) = match (b, a) {
                (Some(x), Some(y)) => (
                    format!("'{}'", value_text(x)),
                    format!("'{}'", value_text(y)),
                ),
                (x, y) => (describe_arg(x), describe_arg(y)),
            };
            return Err(AmqpError::precondition(format!(
                "inequivalent arg '{key}' for {what}: received {received} but current is {current}"
            )));
        }
    }
    Ok(())
}

/// How RabbitMQ words an argument value in an inequivalence message.
fn describe_arg(v: Option<&AMQPValue>) -> String {
    match v {
        None => "none".to_owned(),
        Some(v) => format!("the value '{}' of type '{}'", value_text(v), type_name(v)),
    }
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
        assert_eq!(v.timed_out_channels(Duration::from_secs(5)), [(1, 1)]);
        assert!(v.consumer_timed_out(1, 1));
        // Reported once.
        assert!(v.timed_out_channels(Duration::from_secs(5)).is_empty());
        // The client closed the channel and opened it again before the close
        // reached its connection: the new channel has done nothing wrong.
        v.close_channel(1, 1);
        v.open_channel(1, 1);
        assert!(!v.consumer_timed_out(1, 1));
    }
}
