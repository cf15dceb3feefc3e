//! A queue and its consumers, and its ready messages — in priority, then
//! publish order — kept within the queue's `Limits` (`args.rs`).

use std::collections::VecDeque;

use super::*;

/// Ready messages: one FIFO per priority level (a single one without
/// `x-max-priority`), highest priority first.
#[derive(Debug, Default)]
pub(crate) struct Ready {
    levels: Vec<VecDeque<Queued>>,
    len: usize,
    /// Body bytes, for `x-max-length-bytes`.
    bytes: usize,
}

impl Ready {
    pub fn new(max_priority: Option<u8>) -> Self {
        let levels = max_priority.map_or(1, |p| p as usize + 1);
        Ready {
            levels: (0..levels).map(|_| VecDeque::new()).collect(),
            len: 0,
            bytes: 0,
        }
    }

    fn level(&self, item: &Queued) -> usize {
        let p = item.msg.priority() as usize;
        p.min(self.levels.len() - 1)
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

    /// Puts a message back at its place by publish order, within its priority.
    pub fn requeue(&mut self, item: Queued) {
        let level = self.level(&item);
        self.len += 1;
        self.bytes += item.msg.body().len();
        let fifo = &mut self.levels[level];
        let at = fifo.partition_point(|q| q.seq < item.seq);
        fifo.insert(at, item);
    }

    pub fn front(&self) -> Option<&Queued> {
        self.levels.iter().rev().find_map(|l| l.front())
    }

    pub fn pop_front(&mut self) -> Option<Queued> {
        let item = self.levels.iter_mut().rev().find_map(|l| l.pop_front())?;
        self.len -= 1;
        self.bytes -= item.msg.body().len();
        Some(item)
    }

    /// All messages, in delivery order.
    pub fn iter(&self) -> impl Iterator<Item = &Queued> {
        self.levels.iter().rev().flatten()
    }

    pub fn drain(&mut self) -> Vec<Queued> {
        self.len = 0;
        self.bytes = 0;
        self.levels
            .iter_mut()
            .rev()
            .flat_map(|l| l.drain(..))
            .collect()
    }

    pub fn retain(&mut self, keep: impl Fn(&Queued) -> bool) {
        for level in &mut self.levels {
            level.retain(&keep);
        }
        self.len = self.levels.iter().map(VecDeque::len).sum();
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

    pub(super) fn requeue(&mut self, u: Unacked) {
        self.ready.requeue(Queued {
            seq: u.seq,
            msg: u.msg,
            redelivered: true,
            persisted: u.persisted,
            expires_at: u.expires_at,
            returns: u.returns + 1,
        });
    }

    pub(super) fn new(id: u64, d: QueueDeclare, owner: Option<ConnId>, now: u64) -> Queue {
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
            if can_take(c) {
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
