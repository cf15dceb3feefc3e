//! Consumers and gets: `basic.consume` with its checks, `basic.cancel`, the
//! consumer that goes, and `basic.get`; deliveries from a stream by offset.

use super::*;

impl VhostState {
    /// Gives each consumer of a stream the entries after its position, up to its
    /// prefetch: every consumer reads the whole log, none takes from another.
    pub(super) fn deliver_stream(&mut self, queue: &str) {
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
            while c.credit.stream_room() && !conn.outbox.is_backed_up() {
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
                        failed: 0,
                        delivered_at: now,
                        released: false,
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
    pub(super) fn check_stream_consume(
        &self,
        conn: ConnId,
        channel: u16,
        q: &Queue,
        opts: &ConsumeOptions,
    ) -> Result<u64, AmqpError> {
        let (queue, vhost) = (&q.name, &self.name);
        for arg in ["x-priority", "x-cancel-on-ha-failover"] {
            if opts.arguments.contains_key(arg) {
                return Err(wrong_type_arg(
                    arg,
                    queue,
                    vhost,
                    QueueType::Stream.module(),
                ));
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
        if st.credit.consumer_prefetch() == 0 {
            return Err(AmqpError::precondition(format!(
                "consumer prefetch count is not set for 'queue '{queue}' in vhost '{vhost}''"
            )));
        }
        if st.credit.channel_prefetch() != 0 {
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
                let kind = q.limits.kind.module();
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
        let timeout = match opts.arguments.inner().get("x-consumer-timeout") {
            Some(v) if self.profile.quorum_consumer_timeout() => {
                let kind = q.limits.kind;
                if kind != QueueType::Quorum {
                    return Err(wrong_type_arg(
                        "x-consumer-timeout",
                        queue,
                        &vhost,
                        kind.module(),
                    ));
                }
                let ms = match as_integer(v) {
                    None => Err(format!("\"expected integer, got {}\"", type_name(v))),
                    Some(n) if n < 0 => Err(format!("{{value_negative,{n}}}")),
                    Some(n) => Ok(n as u64),
                };
                Some(ms.map_err(|e| {
                    AmqpError::precondition(format!(
                        "invalid arg 'x-consumer-timeout' for queue '{queue}' in vhost \
                         '{vhost}': {e}"
                    ))
                })?)
            }
            _ => None,
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
            .is_some_and(|st| st.credit.channel_prefetch() != 0);
        if q.limits.kind == QueueType::Quorum && global_qos {
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
        let credit = st.credit.for_new_consumer();
        // consume-ok goes out before the first delivery.
        on_ok(&tag);
        let q = self.queues.get_mut(queue).expect("checked above");
        q.consumers.push(Consumer {
            tag: tag.as_str().into(),
            conn,
            channel,
            no_ack,
            exclusive,
            credit,
            priority,
            cursor,
            timeout,
            released: 0,
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

    pub(super) fn remove_consumer(&mut self, queue: &str, conn: ConnId, channel: u16, tag: &str) {
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
        let kind = self.queues.get(queue).map(|q| q.limits.kind);
        let props = delivery_props(&self.profile, kind.unwrap_or_default(), &item, true);
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
}
