//! Connections and channels as the vhost sees them: their opening and closing,
//! a channel's delivery state (unacked deliveries, delivery tags, the prefetch
//! counters), and the vhost methods that only read or set it.

use super::*;

#[derive(Debug)]
pub(super) struct Unacked {
    pub(super) queue: Arc<str>,
    pub(super) queue_id: u64,
    pub(super) seq: u64,
    pub(super) msg: Arc<Message>,
    /// `None` for a `basic.get`, which counts against no prefetch.
    pub(super) consumer: Option<Arc<str>>,
    pub(super) persisted: bool,
    pub(super) expires_at: Deadline,
    pub(super) returns: u32,
    /// Failed deliveries (4.3's `delivery_count`).
    pub(super) failed: u16,
    /// When it was delivered, on the broker's clock, for the consumer timeout.
    pub(super) delivered_at: u64,
    /// A consumer timeout (4.3) already put the message back in its queue: the
    /// tag stays the channel's, and settling it only lets its consumer go on.
    pub(super) released: bool,
}

impl Unacked {
    /// `item`, taken from queue `key` (incarnation `queue_id`) at `now`.
    pub(super) fn of(
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
            failed: item.failed,
            delivered_at: now,
            released: false,
        }
    }
}

impl ChannelState {
    pub(super) fn take_tag(&mut self) -> u64 {
        let tag = self.next_tag;
        self.next_tag += 1;
        tag
    }

    /// Keeps a delivery to consumer `c` until it is settled; meanwhile it
    /// counts against the consumer's prefetch and the channel's.
    pub(super) fn hold_for(&mut self, c: &mut Consumer, tag: u64, delivery: Unacked) {
        self.credit.take(&mut c.credit);
        self.unacked.insert(tag, delivery);
    }
}

/// A channel's prefetch (`basic.qos`) and what counts against it. Both limits
/// live here, and both counts change only through it: the channel's own
/// (global=true, shared by all its consumers) and each consumer's
/// (`ConsumerCredit`, global=false, fixed when the consumer is created).
/// A prefetch of 0 is no limit.
#[derive(Debug, Default)]
pub(super) struct Credit {
    /// Given to consumers created from now on (global=false).
    consumer_prefetch: u16,
    /// Shared by all consumers of the channel (global=true).
    channel_prefetch: u16,
    /// Unacked deliveries to the channel's consumers, against `channel_prefetch`.
    unacked: u32,
}

/// One consumer's part of its channel's `Credit`: its prefetch and its
/// deliveries not yet settled.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct ConsumerCredit {
    prefetch: u16,
    unacked: u32,
}

impl Credit {
    /// `basic.qos`: `global` sets the channel's limit, otherwise the limit of
    /// the consumers created from now on.
    pub(super) fn qos(&mut self, prefetch: u16, global: bool) {
        if global {
            self.channel_prefetch = prefetch;
        } else {
            self.consumer_prefetch = prefetch;
        }
    }

    pub(super) fn consumer_prefetch(&self) -> u16 {
        self.consumer_prefetch
    }

    pub(super) fn channel_prefetch(&self) -> u16 {
        self.channel_prefetch
    }

    /// The credit of a consumer created now.
    pub(super) fn for_new_consumer(&self) -> ConsumerCredit {
        ConsumerCredit {
            prefetch: self.consumer_prefetch,
            unacked: 0,
        }
    }

    /// Whether a consumer with credit `c` may be sent one more delivery that
    /// waits for its ack: under its own limit and under the channel's.
    pub(super) fn has_room(&self, c: &ConsumerCredit) -> bool {
        (c.prefetch == 0 || c.unacked < u32::from(c.prefetch))
            && (self.channel_prefetch == 0 || self.unacked < u32::from(self.channel_prefetch))
    }

    /// One more delivery to the consumer with credit `c`, counted against both.
    pub(super) fn take(&mut self, c: &mut ConsumerCredit) {
        c.unacked += 1;
        self.unacked += 1;
    }

    /// `n` deliveries to the channel's consumers were settled: the channel's
    /// share is freed for all of them at once, each consumer's as `settle`
    /// handles its delivery (`ConsumerCredit::release`), which is the order in
    /// which a dead-lettered message dispatched meanwhile sees them.
    pub(super) fn release(&mut self, n: usize) {
        self.unacked = self.unacked.saturating_sub(n as u32);
    }
}

impl ConsumerCredit {
    /// One of the consumer's deliveries was settled (the channel's share goes
    /// through `Credit::release`).
    pub(super) fn release(&mut self) {
        self.unacked = self.unacked.saturating_sub(1);
    }

    /// Whether a stream consumer may be sent one more entry. A stream consumer
    /// always has a prefetch of its own, and the channel's is not applied to it
    /// (it may attach only while the channel has none).
    pub(super) fn stream_room(&self) -> bool {
        self.unacked < u32::from(self.prefetch)
    }

    pub(super) fn prefetch(&self) -> u16 {
        self.prefetch
    }

    pub(super) fn unacked(&self) -> u32 {
        self.unacked
    }
}

/// A channel's delivery state: what it was sent and has not acknowledged.
#[derive(Debug, Default)]
pub(super) struct ChannelState {
    pub(super) next_tag: u64,
    pub(super) unacked: BTreeMap<u64, Unacked>,
    /// Prefetch limits and counts, the channel's and its consumers'.
    pub(super) credit: Credit,
    /// Consumer tag → queue name.
    pub(super) consumers: HashMap<String, String>,
    /// The channel's direct reply-to address, while it consumes from
    /// `amq.rabbitmq.reply-to`.
    pub(super) reply_to: Option<String>,
    /// Its consumer timeout fired: the close is on its way, so it is not
    /// reported again.
    pub(super) timed_out: bool,
}

impl VhostState {
    /// Channels whose oldest unacked delivery (from a consumer or a `basic.get`)
    /// has waited longer than the timeout, each reported once with the timeout
    /// used: RabbitMQ's consumer timeout until 4.2, which looks only at the
    /// oldest delivery of a channel (`evaluate_consumer_timeout`,
    /// `rabbit_channel.erl:2827-2833` at v3.10.8). From 3.12 the timeout is that
    /// delivery's queue's `x-consumer-timeout` when it has one, and none when
    /// that is not an integer (`rabbit_channel.erl:2776-2807` at v3.12.14).
    pub fn timed_out_channels(&mut self, default: Option<std::time::Duration>) -> Vec<TimedOut> {
        let now = self.clock.now_ms();
        let default = default.map(|t| t.as_millis() as i64);
        let per_queue = self.profile.queue_consumer_timeout_arg();
        let mut out = Vec::new();
        for (&(conn, channel), st) in &mut self.channels {
            let Some((_, oldest)) = st.unacked.first_key_value() else {
                continue;
            };
            let timeout = match self
                .queues
                .get(&*oldest.queue)
                .and_then(|q| q.arguments.inner().get("x-consumer-timeout"))
            {
                Some(arg) if per_queue => as_integer(arg).map(|n| n as i64),
                _ => default,
            };
            let overdue =
                timeout.is_some_and(|t| (now.saturating_sub(oldest.delivered_at) as i64) > t);
            if overdue && !st.timed_out {
                st.timed_out = true;
                out.push((conn, channel, timeout.expect("overdue")));
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

    pub fn qos(&mut self, conn: ConnId, channel: u16, prefetch: u16, global: bool) {
        let Some(st) = self.channels.get_mut(&(conn, channel)) else {
            return;
        };
        st.credit.qos(prefetch, global);
        let queues: Vec<String> = st.consumers.values().cloned().collect();
        for q in queues {
            self.dispatch(&q);
        }
    }

    /// Whether a delivery tag is unacked on a channel (0 means "all" with multiple).
    pub fn is_unacked(&self, conn: ConnId, channel: u16, tag: u64) -> bool {
        self.channels
            .get(&(conn, channel))
            .is_some_and(|st| st.unacked.contains_key(&tag))
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
        // `basic.recover` is `requeue`, an explicit return (`rabbit_channel.erl:1471-1485`
        // at v4.3.5).
        let _ = self.settle(conn, channel, 0, true, Some(true), false);
    }
}

impl VhostState {
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
        for (_, u) in state.unacked.into_iter().filter(|(_, u)| !u.released) {
            let queue = u.queue.to_string();
            // A channel gone is `{down, Pid, _}`, a failed delivery
            // (`rabbit_fifo.erl:1954-1966` at v4.3.5).
            if self.return_to_queue(u, true, false) {
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
}
