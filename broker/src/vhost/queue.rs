//! A queue and its consumers, and its ready messages — in the order of
//! their priorities, as its type and the release serve them — kept within
//! the queue's `Limits` (`args.rs`).

use std::collections::VecDeque;

use super::*;
use crate::profile::{QuorumPriorities, RabbitVersion};

/// Ready messages: one FIFO per priority level (a single one without
/// `x-max-priority`), served as `Order` says.
#[derive(Debug, Default)]
pub(crate) struct Ready {
    /// Indexed by level, the highest last.
    levels: Vec<VecDeque<Queued>>,
    /// A quorum queue's returned messages from 4.0, in the order they came
    /// back: served before any level, as `take_next_msg/1` takes `returns`
    /// first (`rabbit_fifo.erl:2113-2121` at v4.2.9, `:2586-2598` at v4.3.5).
    returns: VecDeque<Queued>,
    order: Order,
    /// `rabbit_fifo_q`'s `dequeue_counter`: how many messages left the levels
    /// since the last turn at which the older head wins.
    counter: u8,
    len: usize,
    /// Body bytes, for `x-max-length-bytes`.
    bytes: usize,
}

/// How the levels are served.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// The highest non-empty level first; a requeued message goes back to its
    /// place by publish order (classic queues, and quorum queues until 3.13).
    #[default]
    Levels,
    /// 4.0's two levels ("no" 0, "hi" 1): two from "hi", then the older of the
    /// two heads (`rabbit_fifo_q:out/1`, `next/1`).
    Weighted,
    /// 4.3's 32 strict levels (`rabbit_fifo_pq`).
    Strict,
}

/// `?WEIGHT` in `rabbit_fifo_q.erl:15` (v4.2.9).
const WEIGHT: u8 = 2;

impl Ready {
    pub fn new(limits: &Limits, quorum: QuorumPriorities) -> Self {
        let (order, levels) = match (limits.kind, quorum) {
            (QueueType::Quorum, QuorumPriorities::TwoWeighted) => (Order::Weighted, 2),
            (QueueType::Quorum, QuorumPriorities::Strict) => (Order::Strict, 32),
            _ => (
                Order::Levels,
                limits.max_priority.map_or(1, |p| p as usize + 1),
            ),
        };
        Ready {
            levels: (0..levels).map(|_| VecDeque::new()).collect(),
            order,
            ..Ready::default()
        }
    }

    fn level(&self, item: &Queued) -> usize {
        match self.order {
            Order::Levels => (item.msg.priority() as usize).min(self.levels.len() - 1),
            // `priority_tag/1`: an integer above 4 is "hi", anything else "no".
            Order::Weighted => usize::from(item.msg.priority_property().is_some_and(|p| p > 4)),
            // `msg_priority/1`: `max(0, min(P, 31))`, `?DEFAULT_PRIORITY` 4
            // without one (the 0-9-1 property is kept even when 0:
            // `mc_amqpl.erl:832-833`, `rabbit_misc.erl:1582-1587` at v4.3.5).
            Order::Strict => (item.msg.priority_property().unwrap_or(4) as usize).min(31),
        }
    }

    /// The level the next message leaves from, given each level's head.
    fn pick<'a>(&self, head: impl Fn(usize) -> Option<&'a Queued>, counter: u8) -> Option<usize> {
        match self.order {
            Order::Levels | Order::Strict => {
                (0..self.levels.len()).rev().find(|&l| head(l).is_some())
            }
            Order::Weighted => match (head(1), head(0)) {
                // Every third turn "hi" goes first only if it is the older.
                (Some(hi), Some(no)) if counter == WEIGHT => {
                    Some(if hi.seq < no.seq { 1 } else { 0 })
                }
                (Some(_), _) => Some(1),
                (None, Some(_)) => Some(0),
                (None, None) => None,
            },
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn push_back(&mut self, item: Queued) {
        let level = self.level(&item);
        self.len += 1;
        self.bytes += item.msg.body().len();
        self.levels[level].push_back(item);
    }

    /// Puts a message back: at its place by publish order within its
    /// priority, or for a quorum queue from 4.0 behind the other returns.
    pub fn requeue(&mut self, item: Queued) {
        self.len += 1;
        self.bytes += item.msg.body().len();
        if self.order != Order::Levels {
            self.returns.push_back(item);
            return;
        }
        let level = self.level(&item);
        let fifo = &mut self.levels[level];
        let at = fifo.partition_point(|q| q.seq < item.seq);
        fifo.insert(at, item);
    }

    pub fn front(&self) -> Option<&Queued> {
        if let Some(r) = self.returns.front() {
            return Some(r);
        }
        let level = self.pick(|l| self.levels[l].front(), self.counter)?;
        self.levels[level].front()
    }

    pub fn pop_front(&mut self) -> Option<Queued> {
        let item = match self.returns.pop_front() {
            Some(r) => r,
            None => {
                let level = self.pick(|l| self.levels[l].front(), self.counter)?;
                // `out/1` counts every message that leaves the levels.
                self.counter = if self.counter == WEIGHT {
                    0
                } else {
                    self.counter + 1
                };
                self.levels[level].pop_front()?
            }
        };
        self.len -= 1;
        self.bytes -= item.msg.body().len();
        Some(item)
    }

    /// All messages, in delivery order.
    pub fn iter(&self) -> impl Iterator<Item = &Queued> {
        let mut at = vec![0; self.levels.len()];
        let mut counter = self.counter;
        let mut order: Vec<&Queued> = self.returns.iter().collect();
        while let Some(level) = self.pick(|l| self.levels[l].get(at[l]), counter) {
            order.push(&self.levels[level][at[level]]);
            at[level] += 1;
            counter = if counter == WEIGHT { 0 } else { counter + 1 };
        }
        order.into_iter()
    }

    pub fn drain(&mut self) -> Vec<Queued> {
        let mut all = Vec::with_capacity(self.len);
        while let Some(item) = self.pop_front() {
            all.push(item);
        }
        // A purge starts `rabbit_fifo_q` afresh (`rabbit_fifo_q:new/0`).
        self.counter = 0;
        all
    }

    pub fn retain(&mut self, keep: impl Fn(&Queued) -> bool) {
        self.returns.retain(&keep);
        for level in &mut self.levels {
            level.retain(&keep);
        }
        self.len = self.returns.len() + self.levels.iter().map(VecDeque::len).sum::<usize>();
        self.bytes = self.iter().map(|q| q.msg.body().len()).sum();
    }
}

#[derive(Debug)]
pub(super) struct Queued {
    /// Position in the queue's publish order; a requeued message goes back to it.
    pub(super) seq: u64,
    pub(super) msg: Arc<Message>,
    pub(super) redelivered: bool,
    /// The store holds this message for this queue.
    pub(super) persisted: bool,
    /// When it expires, in the broker clock's milliseconds (TTL).
    pub(super) expires_at: Deadline,
    /// How often it came back to the queue (a quorum queue's `x-delivery-count`).
    pub(super) returns: u32,
    /// How many of those were failed deliveries: `basic.reject`, or its
    /// channel gone (4.3's `delivery_count`).
    pub(super) failed: u16,
}

#[derive(Debug)]
pub(super) struct Consumer {
    /// Shared with every unacked delivery it got, without a copy per delivery.
    pub(super) tag: Arc<str>,
    pub(super) conn: ConnId,
    pub(super) channel: u16,
    pub(super) no_ack: bool,
    pub(super) exclusive: bool,
    /// Its prefetch (basic.qos global=false before basic.consume) and unacked
    /// deliveries, changed only through its channel's `Credit`.
    pub(super) credit: ConsumerCredit,
    /// `x-priority`: higher-priority consumers are served first.
    pub(super) priority: i64,
    /// A stream consumer's next offset to read.
    pub(super) cursor: u64,
    /// Its `x-consumer-timeout` in milliseconds (4.3, quorum queues).
    pub(super) timeout: Option<u64>,
    /// Its deliveries a consumer timeout returned to the queue that the client
    /// has not settled yet: until it has, the consumer gets nothing more, as
    /// a quorum queue's consumer stays in `{timeout, up}` until then
    /// (`rabbit_fifo:maybe_untimeout/2`, `rabbit_fifo.erl:2231` and
    /// `checkout_one/4`, `:2845` at v4.3.5).
    pub(super) released: u32,
}

#[derive(Debug)]
pub struct Queue {
    /// Distinguishes a queue from a later one of the same name, so that a requeue
    /// never lands in a queue that was deleted and declared again.
    pub(super) id: u64,
    pub name: String,
    /// The name again, shared with every unacked delivery from this queue.
    pub(super) key: Arc<str>,
    pub durable: bool,
    pub exclusive_owner: Option<ConnId>,
    pub auto_delete: bool,
    pub arguments: FieldTable,
    pub(super) limits: Limits,
    pub(super) ready: Ready,
    /// A stream's log; streams keep nothing in `ready`.
    pub(super) stream: Option<stream::Log>,
    pub(super) next_seq: u64,
    /// When it was last used (declared, consumed from, got from), for `x-expires`.
    pub(super) last_used: u64,
    pub(super) consumers: Vec<Consumer>,
    /// Index into `consumers` of the next one to try: round-robin dispatch.
    pub(super) next_consumer: usize,
    /// Auto-delete applies only to a queue that has had a consumer.
    pub(super) had_consumer: bool,
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

    pub(super) fn requeue(&mut self, u: Unacked, failed: bool) {
        self.put_back(u, failed, false);
    }

    /// A quorum queue's explicit return with no delivery limit: RabbitMQ appends
    /// it to the log as a new message (`make_requeue`), behind every message
    /// waiting. Only in memory: after a restart it is back at its first place,
    /// as the store orders a queue's messages by when they were published.
    pub(super) fn requeue_at_back(&mut self, u: Unacked, failed: bool) {
        self.put_back(u, failed, true);
    }

    fn put_back(&mut self, u: Unacked, failed: bool, at_back: bool) {
        let seq = if at_back {
            self.next_seq += 1;
            self.next_seq - 1
        } else {
            u.seq
        };
        let item = Queued {
            seq,
            msg: u.msg,
            redelivered: true,
            persisted: u.persisted,
            expires_at: u.expires_at,
            returns: u.returns + 1,
            failed: u.failed.saturating_add(u16::from(failed)),
        };
        if at_back {
            self.ready.push_back(item);
        } else {
            self.ready.requeue(item);
        }
    }

    pub(super) fn new(
        id: u64,
        d: QueueDeclare,
        owner: Option<ConnId>,
        now: u64,
        quorum: QuorumPriorities,
    ) -> Queue {
        let limits = Limits::from_args(&d.arguments);
        Queue {
            id,
            key: d.name.as_str().into(),
            name: d.name,
            durable: d.durable,
            exclusive_owner: owner,
            auto_delete: d.auto_delete,
            arguments: d.arguments,
            ready: Ready::new(&limits, quorum),
            stream: (limits.kind == QueueType::Stream).then(stream::Log::default),
            limits,
            next_seq: 0,
            last_used: now,
            consumers: Vec::new(),
            next_consumer: 0,
            had_consumer: false,
        }
    }

    /// The consumer the next ready message goes to, among those `can_take`
    /// accepts: round-robin from where the last choice left off, a higher
    /// `x-priority` first, and with a single active consumer only the first.
    /// The round-robin moves past the one chosen.
    pub(super) fn choose_consumer(
        &mut self,
        can_take: impl Fn(&Consumer) -> bool,
    ) -> Option<usize> {
        let n = if self.limits.single_active_consumer {
            1
        } else {
            self.consumers.len()
        };
        let mut chosen: Option<usize> = None;
        for i in 0..n {
            let idx = (self.next_consumer + i) % n;
            let c = &self.consumers[idx];
            if chosen.is_some_and(|best| self.consumers[best].priority >= c.priority) {
                continue;
            }
            if c.released == 0 && can_take(c) {
                chosen = Some(idx);
            }
        }
        let idx = chosen?;
        self.next_consumer = (idx + 1) % n;
        Some(idx)
    }

    /// Durable in the store's sense: survives a restart.
    pub(super) fn is_durable(&self) -> bool {
        self.durable && self.exclusive_owner.is_none()
    }
}

/// The properties a delivery carries: the publisher's, or for a quorum queue
/// the same with its counts added.
/// - Until 3.13 `x-delivery-count` is how often it came back: a `basic.get`
///   (`got`) always has it, a consumer's delivery only once the message came
///   back, as `transform_msgs/3` adds it only when the header has a count
///   (`rabbit_fifo_client.erl:249-256`, `:791-800` at v3.10.8, `:211-217`,
///   `:775-785` at v3.13.7). Live 3.10.8: a first delivery to a consumer has no
///   headers.
/// - From 4.0 both ways go through `add_delivery_count_header/2`, which adds
///   nothing until the message came back (no `acquired_count` yet); then 4.0-4.2
///   write `acquired_count` as `x-delivery-count` (`:221-237` at v4.0.9), and 4.3
///   writes it as `x-acquired-count`, with `x-delivery-count` the failed
///   deliveries once there was one (`:246-267` at v4.3.5; `incr_msg_headers/3`,
///   `rabbit_fifo.erl:3884-3899`).
pub(super) fn delivery_props<'a>(
    profile: &Profile,
    kind: QueueType,
    item: &'a Queued,
    got: bool,
) -> std::borrow::Cow<'a, [u8]> {
    let count = |n: u64| AMQPValue::LongLongInt(n as i64);
    let returns = u64::from(item.returns);
    if kind != QueueType::Quorum {
        return item.msg.props().into();
    }
    if profile.version() < RabbitVersion::V4_0 {
        if !got && returns == 0 {
            return item.msg.props().into();
        }
        return item
            .msg
            .props_with_header("x-delivery-count", count(returns))
            .into();
    }
    if returns == 0 {
        return item.msg.props().into();
    }
    if !profile.quorum_limit_counts_failed_only() {
        return item
            .msg
            .props_with_header("x-delivery-count", count(returns))
            .into();
    }
    let failed = u64::from(item.failed);
    let mut added = vec![("x-acquired-count", count(returns))];
    if failed > 0 {
        added.push(("x-delivery-count", count(failed)));
    }
    item.msg.props_with_headers(added).into()
}
