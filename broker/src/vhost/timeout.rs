//! Consumer timeouts as the imitated release has them: the channel's rule until
//! 4.2 (`timed_out_channels`, in `channel.rs`), the quorum queue's from 4.3
//! (`release_timed_out`): deliveries returned to the queue, the consumer told
//! with `basic.cancel` or its channel closed.

use super::*;

/// A channel to close with 406 for a consumer timeout, and the `Timeout value
/// used` its reply text gives (-1 for 4.3's fallback).
pub type TimedOut = (ConnId, u16, i64);

/// A channel and the consumer (`None`: `basic.get`) a timeout concerns.
type Whose = ((ConnId, u16), Option<Arc<str>>);

impl VhostState {
    /// The consumer timeouts due now under this vhost's profile, given the
    /// broker's `consumer_timeout` (`None`: never); returns the channels to close.
    pub fn consumer_timeouts(&mut self, default: Option<std::time::Duration>) -> Vec<TimedOut> {
        if !self.profile.quorum_consumer_timeout() {
            return self.timed_out_channels(default);
        }
        self.release_timed_out(default.map(|t| t.as_millis() as u64))
    }

    /// RabbitMQ 4.3: a quorum queue returns each of a consumer's deliveries
    /// whose time is up (`now >= delivered + timeout`, `rabbit_fifo.erl:736-738`
    /// at v4.3.5) without counting a failed delivery (`return_multiple(…, false,
    /// …)`, `:751`; `incr_msg_headers/3` then bumps `acquired_count` only,
    /// `:3884-3900`, so the delivery limit does not see it), and holds the consumer
    /// until those are settled. The channel sends `basic.cancel` for a consumer
    /// it knows when the client announced `consumer_cancel_notify`, else closes
    /// with 406 and `Timeout value used: -1 ms` (`rabbit_channel.erl:2802-2813`);
    /// a `basic.get` has no consumer tag the channel knows, so it closes.
    /// Classic queues and streams never time out. The timeout is the
    /// consumer's `x-consumer-timeout`, else the queue's, else the broker's
    /// (`rabbit_queue_type.erl:544-547,944-952`).
    fn release_timed_out(&mut self, default: Option<u64>) -> Vec<TimedOut> {
        let now = self.clock.now_ms();
        let mut due: Vec<(Whose, u64)> = Vec::new();
        for (&(conn, channel), st) in &self.channels {
            if st.timed_out {
                continue;
            }
            for (&tag, u) in st.unacked.iter().filter(|(_, u)| !u.released) {
                let Some(q) = self
                    .queues
                    .get(&*u.queue)
                    .filter(|q| q.id == u.queue_id && q.limits.kind == QueueType::Quorum)
                else {
                    continue;
                };
                let consumer_timeout = u.consumer.as_ref().and_then(|t| {
                    q.consumers
                        .iter()
                        .find(|c| c.conn == conn && c.channel == channel && &c.tag == t)
                        .and_then(|c| c.timeout)
                });
                let timeout = consumer_timeout.or(q.limits.consumer_timeout).or(default);
                if timeout.is_some_and(|t| now >= u.delivered_at.saturating_add(t)) {
                    due.push((((conn, channel), u.consumer.clone()), tag));
                }
            }
        }
        let mut touched: Vec<Arc<str>> = Vec::new();
        let mut told: Vec<Whose> = Vec::new();
        for ((key, consumer), tag) in due {
            let st = self.channels.get_mut(&key).expect("found above");
            let u = st.unacked.get_mut(&tag).expect("found above");
            u.released = true;
            if consumer.is_some() {
                st.credit.release(1);
            }
            let (queue, item) = (
                u.queue.clone(),
                Queued {
                    seq: u.seq,
                    msg: u.msg.clone(),
                    redelivered: true,
                    persisted: u.persisted,
                    expires_at: u.expires_at,
                    // A return, but no failed delivery: the delivery limit
                    // of 4.3 counts only those.
                    returns: u.returns + 1,
                    failed: u.failed,
                },
            );
            let q = self.queues.get_mut(&*queue).expect("found above");
            if let Some(t) = &consumer {
                if let Some(c) = q
                    .consumers
                    .iter_mut()
                    .find(|c| (c.conn, c.channel) == key && &c.tag == t)
                {
                    c.credit.release();
                    c.released += 1;
                }
            }
            q.ready.requeue(item);
            if !touched.contains(&queue) {
                touched.push(queue);
            }
            if !told.contains(&(key, consumer.clone())) {
                told.push((key, consumer));
            }
        }
        let mut close = Vec::new();
        for ((conn, channel), consumer) in told {
            let st = self
                .channels
                .get_mut(&(conn, channel))
                .expect("found above");
            let entry = self.conns.get(&conn);
            let cancel = consumer.filter(|t| {
                entry.is_some_and(|e| e.cancel_notify) && st.consumers.contains_key(&**t)
            });
            match (cancel, entry) {
                (Some(tag), Some(entry)) => entry.outbox.push(|out| {
                    codec::put_method(
                        out,
                        channel,
                        AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                            consumer_tag: tag.to_string().into(),
                            nowait: true,
                        })),
                    )
                }),
                _ => {
                    if !st.timed_out {
                        st.timed_out = true;
                        close.push((conn, channel, -1));
                    }
                }
            }
        }
        touched.sort();
        for q in &touched {
            self.hand_over(q);
        }
        for q in touched {
            self.dispatch(&q);
        }
        close
    }

    /// A single-active-consumer queue whose active consumer timed out and has
    /// nothing checked out any more moves it among the waiting consumers and
    /// activates the next one (`rabbit_fifo.erl:756-783` at v4.3.5:
    /// `add_waiting/2`, then `activate_next_consumer/1`).
    fn hand_over(&mut self, queue: &str) {
        let Some(q) = self.queues.get(queue) else {
            return;
        };
        let Some(active) = q.consumers.first() else {
            return;
        };
        if !q.limits.single_active_consumer || q.consumers.len() < 2 || active.released == 0 {
            return;
        }
        let holds = self
            .channels
            .get(&(active.conn, active.channel))
            .is_some_and(|st| {
                st.unacked.values().any(|u| {
                    !u.released
                        && u.queue_id == q.id
                        && u.consumer.as_ref().is_some_and(|t| *t == active.tag)
                })
            });
        if holds {
            return;
        }
        let q = self.queues.get_mut(queue).expect("found above");
        let timed_out = q.consumers.remove(0);
        q.consumers.push(timed_out);
        q.next_consumer = 0;
    }

    /// The client settled a delivery a consumer timeout had already returned:
    /// nothing happens to the message (`rabbit_fifo:complete/7` and
    /// `return_multiple/8` skip ids no longer checked out), but its consumer
    /// may take deliveries again once it has settled them all
    /// (`maybe_untimeout/2`, `rabbit_fifo.erl:2231-2242` at v4.3.5).
    pub(super) fn settle_released(&mut self, conn: ConnId, channel: u16, u: &Unacked) {
        let (Some(q), Some(tag)) = (self.queues.get_mut(&*u.queue), &u.consumer) else {
            return;
        };
        if let Some(c) = q
            .consumers
            .iter_mut()
            .find(|c| c.conn == conn && c.channel == channel && &c.tag == tag)
        {
            c.released = c.released.saturating_sub(1);
        }
    }
}
