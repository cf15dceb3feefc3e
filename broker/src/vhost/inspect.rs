//! Snapshots of a vhost for inspection, and seeding: messages put straight into a
//! queue by a test.

use std::sync::Arc;

use amq_protocol::protocol::BasicProperties;
use bytes::Bytes;

use super::{ConnId, Destination, Message, Route, VhostState};
use crate::codec;
use crate::error::AmqpError;
use crate::inspect::{
    BindingSnapshot, ConsumerSnapshot, ExchangeSnapshot, MessageSnapshot, QueueSnapshot,
    UnackedSnapshot,
};

fn message(m: &Message, redelivered: bool) -> MessageSnapshot {
    MessageSnapshot {
        body: m.body_bytes(),
        properties: m.properties(),
        exchange: m.exchange().to_string(),
        routing_key: m.routing_key().to_string(),
        redelivered,
    }
}

impl VhostState {
    /// Whether an exchange of this name exists (permission checks that RabbitMQ
    /// makes only when a declare creates one need it).
    pub fn has_exchange(&self, name: &str) -> bool {
        self.exchanges.contains_key(name)
    }

    pub fn has_queue(&self, name: &str) -> bool {
        self.queues.contains_key(name)
    }

    pub fn queue_snapshot(&self, name: &str) -> Option<QueueSnapshot> {
        let q = self.queues.get(name)?;
        let mut unacked = Vec::new();
        for ((conn, channel), st) in &self.channels {
            for (tag, u) in &st.unacked {
                // A released delivery is back among the queue's messages.
                if *u.queue == *q.name && u.queue_id == q.id && !u.released {
                    unacked.push(UnackedSnapshot {
                        message: message(&u.msg, true),
                        connection: *conn,
                        channel: *channel,
                        delivery_tag: *tag,
                        consumer_tag: u.consumer.as_deref().map(String::from),
                    });
                }
            }
        }
        unacked.sort_by_key(|u| (u.connection, u.channel, u.delivery_tag));
        Some(QueueSnapshot {
            vhost: self.name.clone(),
            name: q.name.clone(),
            durable: q.durable,
            exclusive_owner: q.exclusive_owner,
            auto_delete: q.auto_delete,
            arguments: q.arguments.clone(),
            // A stream holds every message of its log, delivered or not.
            messages: match &q.stream {
                Some(log) => log.iter().map(|(_, e)| message(&e.msg, false)).collect(),
                None => q
                    .ready
                    .iter()
                    .map(|i| message(&i.msg, i.redelivered))
                    .collect(),
            },
            unacked,
            consumers: q
                .consumers
                .iter()
                .map(|c| ConsumerSnapshot {
                    tag: c.tag.to_string(),
                    connection: c.conn,
                    channel: c.channel,
                    no_ack: c.no_ack,
                    exclusive: c.exclusive,
                    prefetch: c.credit.prefetch(),
                    unacked: c.credit.unacked(),
                    priority: c.priority,
                })
                .collect(),
        })
    }

    pub fn queue_snapshots(&self) -> Vec<QueueSnapshot> {
        let mut names: Vec<&Arc<str>> = self.queues.keys().collect();
        names.sort();
        names
            .into_iter()
            .filter_map(|n| self.queue_snapshot(n))
            .collect()
    }

    pub fn exchange_snapshots(&self) -> Vec<ExchangeSnapshot> {
        let mut out: Vec<ExchangeSnapshot> = self
            .exchanges
            .values()
            .map(|e| ExchangeSnapshot {
                vhost: self.name.clone(),
                name: e.name.clone(),
                kind: e.kind.as_str().to_owned(),
                durable: e.durable,
                auto_delete: e.auto_delete,
                internal: e.internal,
                arguments: e.arguments.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    pub fn binding_snapshots(&self) -> Vec<BindingSnapshot> {
        let mut out = Vec::new();
        for e in self.exchanges.values() {
            for b in &e.bindings {
                let (to_exchange, destination) = match &b.destination {
                    Destination::Queue(q) => (false, q.clone()),
                    Destination::Exchange(x) => (true, x.clone()),
                };
                out.push(BindingSnapshot {
                    vhost: self.name.clone(),
                    source: e.name.clone(),
                    destination,
                    to_exchange,
                    routing_key: b.routing_key.clone(),
                    arguments: b.arguments.clone(),
                });
            }
        }
        out.sort_by(|a, b| (&a.source, &a.destination).cmp(&(&b.source, &b.destination)));
        out
    }

    /// The channels a connection has open in this vhost.
    pub fn channels_of(&self, conn: ConnId) -> Vec<u16> {
        let mut out: Vec<u16> = self
            .channels
            .keys()
            .filter(|(c, _)| *c == conn)
            .map(|(_, ch)| *ch)
            .collect();
        out.sort_unstable();
        out
    }

    /// Puts a message straight into a queue, as if published to the default
    /// exchange with the queue's name as routing key.
    pub fn seed(
        &mut self,
        queue: &str,
        body: Bytes,
        properties: BasicProperties,
    ) -> Result<(), AmqpError> {
        if !self.queues.contains_key(queue) {
            return Err(AmqpError::not_found(format!(
                "no queue '{queue}' in vhost '{}'",
                self.name
            )));
        }
        let header = codec::encode_header(body.len() as u64, &properties);
        let msg = Message::new(
            Route::new("", queue, &self.gauge),
            &properties,
            header,
            body,
        );
        // A test's own seed survives a crash like a confirmed publish.
        self.enqueue(&[queue.into()], msg, true);
        Ok(())
    }

    /// Cancels a consumer from the broker's side, as RabbitMQ does when its queue
    /// goes: the client gets `basic.cancel` if it asked for that.
    pub fn cancel_consumer(&mut self, queue: &str, tag: &str) -> bool {
        let Some(q) = self.queues.get(queue) else {
            return false;
        };
        let Some(c) = q.consumers.iter().find(|c| &*c.tag == tag) else {
            return false;
        };
        let (conn, channel) = (c.conn, c.channel);
        if let Some(entry) = self.conns.get(&conn) {
            if entry.cancel_notify {
                let tag = tag.to_owned();
                entry.outbox.push(|out| {
                    codec::put_method(
                        out,
                        channel,
                        amq_protocol::protocol::AMQPClass::Basic(
                            amq_protocol::protocol::basic::AMQPMethod::Cancel(
                                amq_protocol::protocol::basic::Cancel {
                                    consumer_tag: tag.into(),
                                    nowait: true,
                                },
                            ),
                        ),
                    )
                });
            }
        }
        if let Some(st) = self.channels.get_mut(&(conn, channel)) {
            st.consumers.remove(tag);
        }
        self.remove_consumer(queue, conn, channel, tag);
        self.auto_delete_if_unused(queue);
        true
    }
}

/// One open channel, as the management API lists it.
#[derive(Clone, Debug)]
pub struct ChannelInfo {
    pub connection: ConnId,
    pub number: u16,
    /// basic.qos with global=false: each new consumer's prefetch.
    pub prefetch_count: u16,
    /// basic.qos with global=true: shared by the channel's consumers.
    pub global_prefetch_count: u16,
    pub messages_unacknowledged: usize,
    pub consumer_count: usize,
}

impl VhostState {
    /// Every open channel of the vhost, by connection and number.
    pub fn channel_infos(&self) -> Vec<ChannelInfo> {
        let mut out: Vec<ChannelInfo> = self
            .channels
            .iter()
            .map(|((conn, ch), st)| ChannelInfo {
                connection: *conn,
                number: *ch,
                prefetch_count: st.credit.consumer_prefetch(),
                global_prefetch_count: st.credit.channel_prefetch(),
                messages_unacknowledged: st.unacked.len(),
                consumer_count: st.consumers.len(),
            })
            .collect();
        out.sort_by_key(|c| (c.connection, c.number));
        out
    }
}

/// What the management API's `POST /api/queues/{vhost}/{name}/get` does with
/// the messages it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiGet {
    /// Back to their places, marked redelivered (`ack_requeue_true`,
    /// `reject_requeue_true`).
    Requeue,
    /// Gone (`ack_requeue_false`, `reject_requeue_false`).
    Remove,
}

impl VhostState {
    /// Up to `count` ready messages of `queue`, each with the count left
    /// behind it, as RabbitMQ's management plugin takes them (a `basic.get`
    /// on a channel of its own, settled at once).
    pub fn get_for_api(
        &mut self,
        queue: &str,
        count: usize,
        mode: ApiGet,
    ) -> Result<Vec<(MessageSnapshot, u32)>, AmqpError> {
        // No connection has id 0: exclusive queues of others are refused.
        if self.queue_for(0, queue)?.stream.is_some() {
            return Err(super::stream::not_supported("basic.get", queue, &self.name));
        }
        let now = self.clock.now_ms();
        if self.timed {
            self.expire(queue, now);
        }
        let q = self.queues.get_mut(queue).expect("checked above");
        q.last_used = now;
        let mut taken = Vec::new();
        while taken.len() < count {
            let Some(item) = q.ready.pop_front() else {
                break;
            };
            let left = q.ready.len() as u32;
            taken.push((item, left));
        }
        let shown = taken
            .iter()
            .map(|(i, left)| (message(&i.msg, i.redelivered), *left))
            .collect();
        match mode {
            ApiGet::Requeue => {
                for (mut item, _) in taken {
                    item.redelivered = true;
                    q.ready.requeue(item);
                }
                self.dispatch(queue);
            }
            ApiGet::Remove => {
                for (item, _) in &taken {
                    if item.persisted {
                        self.log_removed(queue, &item.msg);
                    }
                }
            }
        }
        Ok(shown)
    }

    /// `POST /api/exchanges/{vhost}/{name}/publish`: routes and enqueues a
    /// message as a publish on no connection; true when a queue took it.
    pub fn publish_for_api(
        &mut self,
        exchange: &str,
        routing_key: &str,
        body: Bytes,
        properties: BasicProperties,
    ) -> Result<bool, AmqpError> {
        let targets = self.route(exchange, routing_key, properties.headers().as_ref())?;
        if targets.is_empty() {
            return Ok(false);
        }
        let header = codec::encode_header(body.len() as u64, &properties);
        let msg = Message::new(
            Route::new(exchange, routing_key, &self.gauge),
            &properties,
            header,
            body,
        );
        // The management API answers once routed; like a seed, it is synced.
        self.enqueue(&targets, msg, true);
        Ok(true)
    }
}
