//! Method dispatch on an open channel: one handler per class (channel, exchange,
//! queue, basic), each checking permissions, then calling the vhost.

use amq_protocol::protocol::{access, basic, channel, confirm, exchange, queue, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable};

use crate::auth::{self, Access, Resource};
use crate::error::{code, AmqpError};
use crate::faults::Action;
use crate::names::random_token;
use crate::vhost::{ConsumeOptions, QueueDeclare, REPLY_TO};

use super::*;

/// A method a client may not send (or not on this channel).
pub(super) fn server_only() -> AmqpError {
    AmqpError::connection(code::COMMAND_INVALID, "unimplemented method")
}

impl Connection {
    pub(super) fn on_method(&mut self, ch: u16, m: AMQPClass) -> Result<(), AmqpError> {
        // Replies on this channel follow the acks of publishes that came before.
        self.flush_channel_confirms(ch);
        match m {
            AMQPClass::Channel(m) => self.on_channel_method(ch, m),
            AMQPClass::Exchange(m) => self.on_exchange(ch, m),
            AMQPClass::Queue(m) => self.on_queue(ch, m),
            AMQPClass::Basic(m) => self.on_basic(ch, m),
            AMQPClass::Confirm(confirm::AMQPMethod::Select(s)) => {
                let chan = self.channel(ch);
                if chan.tx.is_some() {
                    return Err(AmqpError::precondition(
                        "cannot switch from tx to confirm mode",
                    ));
                }
                chan.confirm.get_or_insert_with(Confirms::default);
                if !s.nowait {
                    self.send(
                        ch,
                        AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
                    );
                }
                Ok(())
            }
            AMQPClass::Tx(m) => self.on_tx(ch, m),
            AMQPClass::Access(access::AMQPMethod::Request(_)) => {
                self.send(
                    ch,
                    AMQPClass::Access(access::AMQPMethod::RequestOk(access::RequestOk {})),
                );
                Ok(())
            }
            AMQPClass::Connection(_) => Err(server_only()),
            _ => Err(server_only()),
        }
    }

    pub(super) fn on_channel_method(
        &mut self,
        ch: u16,
        m: channel::AMQPMethod,
    ) -> Result<(), AmqpError> {
        use channel::AMQPMethod as M;
        match m {
            M::Open(_) => Err(AmqpError::connection(
                code::CHANNEL_ERROR,
                "second 'channel.open' seen",
            )),
            M::Flow(f) => {
                if !f.active {
                    return Err(AmqpError::connection(code::NOT_IMPLEMENTED, "active=false"));
                }
                self.send(
                    ch,
                    AMQPClass::Channel(M::FlowOk(channel::FlowOk { active: f.active })),
                );
                Ok(())
            }
            M::FlowOk(_) => Ok(()),
            M::Close(_) => {
                self.with_vhost(|v, id| v.close_channel(id, ch));
                let chan = self.channel(ch);
                chan.closing = true;
                chan.answered = true;
                chan.confirm = None;
                chan.tx = None;
                self.answered.push(ch);
                self.send(ch, AMQPClass::Channel(M::CloseOk(channel::CloseOk {})));
                Ok(())
            }
            // The broker sent no channel.close this close-ok could answer.
            M::CloseOk(_) | M::OpenOk(_) => Err(server_only()),
        }
    }

    /// A method on a closing channel (rabbit_channel.erl:1225-1247): `close` is
    /// answered, `close-ok` ends the channel, a second `open` is a connection
    /// error, and anything else is dropped, its content with it.
    pub(super) fn on_closing_method(&mut self, ch: u16, m: AMQPClass) -> Result<(), AmqpError> {
        use channel::AMQPMethod as M;
        match m {
            AMQPClass::Channel(M::Open(_)) => Err(AmqpError::connection(
                code::CHANNEL_ERROR,
                "second 'channel.open' seen",
            )),
            AMQPClass::Channel(M::Close(_)) => {
                self.send(ch, AMQPClass::Channel(M::CloseOk(channel::CloseOk {})));
                Ok(())
            }
            AMQPClass::Channel(M::CloseOk(_)) => {
                self.channels.remove(&ch);
                Ok(())
            }
            AMQPClass::Basic(
                m @ (basic::AMQPMethod::Publish(_)
                | basic::AMQPMethod::Deliver(_)
                | basic::AMQPMethod::Return(_)
                | basic::AMQPMethod::GetOk(_)),
            ) => {
                let id = AMQPClass::Basic(m).get_amqp_method_id();
                self.channel(ch).content = Content::Header(Pending::Dropped(id));
                Ok(())
            }
            _ => Ok(()),
        }
    }

    pub(super) fn on_exchange(
        &mut self,
        ch: u16,
        m: exchange::AMQPMethod,
    ) -> Result<(), AmqpError> {
        use exchange::AMQPMethod as M;
        match m {
            M::Declare(d) => {
                let name = d.exchange.as_str();
                // The default exchange's own error comes first (rabbit_channel.erl:2668-2670).
                if !d.passive && !name.is_empty() {
                    self.permit(Access::Configure, Resource::Exchange, name)?;
                    // Only a declare that creates the exchange checks its
                    // alternate exchange (rabbit_channel.erl:2714-2722).
                    if let Some(AMQPValue::LongString(ae)) =
                        d.arguments.inner().get("alternate-exchange")
                    {
                        if !self.vhost().lock().has_exchange(name) {
                            let ae = String::from_utf8_lossy(ae.as_bytes()).into_owned();
                            self.permit(Access::Read, Resource::Exchange, name)?;
                            self.permit(Access::Write, Resource::Exchange, &ae)?;
                        }
                    }
                }
                self.with_vhost(|v, _| {
                    v.declare_exchange(
                        d.exchange.as_str(),
                        d.kind.as_str(),
                        d.passive,
                        d.durable,
                        d.auto_delete,
                        d.internal,
                        &d.arguments,
                    )
                })?;
                if !d.nowait {
                    self.send(
                        ch,
                        AMQPClass::Exchange(M::DeclareOk(exchange::DeclareOk {})),
                    );
                }
                Ok(())
            }
            M::Delete(d) => {
                let name = d.exchange.as_str();
                // The default and amq.* exchanges' own errors come first
                // (rabbit_channel.erl:2738-2740).
                if !name.is_empty() && !name.starts_with("amq.") {
                    self.permit(Access::Configure, Resource::Exchange, name)?;
                }
                self.with_vhost(|v, _| v.delete_exchange(d.exchange.as_str(), d.if_unused))?;
                if !d.nowait {
                    self.send(ch, AMQPClass::Exchange(M::DeleteOk(exchange::DeleteOk {})));
                }
                Ok(())
            }
            M::Bind(b) => {
                let reply = (!b.nowait).then_some(M::BindOk(exchange::BindOk {}));
                let args = (b.destination, b.source, b.routing_key, b.arguments);
                self.exchange_binding(ch, args, true, reply)
            }
            M::Unbind(b) => {
                let reply = (!b.nowait).then_some(M::UnbindOk(exchange::UnbindOk {}));
                let args = (b.destination, b.source, b.routing_key, b.arguments);
                self.exchange_binding(ch, args, false, reply)
            }
            _ => Err(server_only()),
        }
    }

    /// `exchange.bind` (`bind`) or `exchange.unbind`, answered with `reply`.
    pub(super) fn exchange_binding(
        &mut self,
        ch: u16,
        (destination, source, routing_key, arguments): (
            amq_protocol::types::ShortString,
            amq_protocol::types::ShortString,
            amq_protocol::types::ShortString,
            FieldTable,
        ),
        bind: bool,
        reply: Option<exchange::AMQPMethod>,
    ) -> Result<(), AmqpError> {
        self.permit_binding(Resource::Exchange, destination.as_str(), source.as_str())?;
        self.with_vhost(|v, _| {
            v.bind_exchange(
                destination.as_str(),
                source.as_str(),
                routing_key.as_str(),
                &arguments,
                bind,
            )
        })?;
        if let Some(reply) = reply {
            self.send(ch, AMQPClass::Exchange(reply));
        }
        Ok(())
    }

    /// RabbitMQ's `binding_action` checks (rabbit_channel.erl:1900-1909): write on
    /// the destination, then (after the default exchange's own error) read on
    /// the source.
    pub(super) fn permit_binding(
        &mut self,
        kind: Resource,
        destination: &str,
        source: &str,
    ) -> Result<(), AmqpError> {
        self.permit(Access::Write, kind, destination)?;
        let default_involved =
            source.is_empty() || (kind == Resource::Exchange && destination.is_empty());
        if !default_involved {
            self.permit(Access::Read, Resource::Exchange, source)?;
        }
        Ok(())
    }

    pub(super) fn on_queue(&mut self, ch: u16, m: queue::AMQPMethod) -> Result<(), AmqpError> {
        use queue::AMQPMethod as M;
        match m {
            M::Declare(d) if d.queue.as_str() == REPLY_TO => {
                // RabbitMQ answers for the pseudo-queue as if it had one consumer.
                if !d.nowait {
                    self.send(
                        ch,
                        AMQPClass::Queue(M::DeclareOk(queue::DeclareOk {
                            queue: d.queue,
                            message_count: 0,
                            consumer_count: 1,
                        })),
                    );
                }
                Ok(())
            }
            M::Declare(d) => {
                let name = if d.queue.as_str().is_empty() && !d.passive {
                    format!("amq.gen-{}", random_token())
                } else {
                    let name = d.queue.as_str().to_owned();
                    if !d.passive && name.starts_with("amq.") {
                        return Err(AmqpError::access_refused(format!(
                            "queue name '{name}' contains reserved prefix 'amq.*'"
                        )));
                    }
                    name
                };
                if !d.passive {
                    self.permit(Access::Configure, Resource::Queue, &name)?;
                    // Only a declare that creates the queue checks its
                    // dead-letter exchange (rabbit_channel.erl:2563-2575).
                    if let Some(AMQPValue::LongString(dlx)) =
                        d.arguments.inner().get("x-dead-letter-exchange")
                    {
                        if !self.vhost().lock().has_queue(&name) {
                            let dlx = String::from_utf8_lossy(dlx.as_bytes()).into_owned();
                            self.permit(Access::Read, Resource::Queue, &name)?;
                            self.permit(Access::Write, Resource::Exchange, &dlx)?;
                        }
                    }
                }
                let (name, messages, consumers) = self.with_vhost(|v, id| {
                    v.declare_queue(
                        id,
                        QueueDeclare {
                            name,
                            passive: d.passive,
                            durable: d.durable,
                            exclusive: d.exclusive,
                            auto_delete: d.auto_delete,
                            arguments: d.arguments,
                        },
                    )
                })?;
                self.channel(ch).last_queue = Some(name.clone());
                if !d.nowait {
                    self.send(
                        ch,
                        AMQPClass::Queue(M::DeclareOk(queue::DeclareOk {
                            queue: name.into(),
                            message_count: messages,
                            consumer_count: consumers,
                        })),
                    );
                }
                Ok(())
            }
            M::Bind(b) => {
                let q = self.queue_name(ch, b.queue.as_str())?;
                self.permit_binding(Resource::Queue, &q, b.exchange.as_str())?;
                self.with_vhost(|v, id| {
                    v.bind_queue(
                        id,
                        &q,
                        b.exchange.as_str(),
                        b.routing_key.as_str(),
                        &b.arguments,
                    )
                })?;
                if !b.nowait {
                    self.send(ch, AMQPClass::Queue(M::BindOk(queue::BindOk {})));
                }
                Ok(())
            }
            M::Unbind(b) => {
                let q = self.queue_name(ch, b.queue.as_str())?;
                self.permit_binding(Resource::Queue, &q, b.exchange.as_str())?;
                self.with_vhost(|v, id| {
                    v.unbind_queue(
                        id,
                        &q,
                        b.exchange.as_str(),
                        b.routing_key.as_str(),
                        &b.arguments,
                    )
                })?;
                self.send(ch, AMQPClass::Queue(M::UnbindOk(queue::UnbindOk {})));
                Ok(())
            }
            M::Purge(p) => {
                let q = self.queue_name(ch, p.queue.as_str())?;
                self.permit(Access::Read, Resource::Queue, &q)?;
                let n = self.with_vhost(|v, id| v.purge_queue(id, &q))?;
                if !p.nowait {
                    self.send(
                        ch,
                        AMQPClass::Queue(M::PurgeOk(queue::PurgeOk { message_count: n })),
                    );
                }
                Ok(())
            }
            M::Delete(d) => {
                let q = self.queue_name(ch, d.queue.as_str())?;
                self.permit(Access::Configure, Resource::Queue, &q)?;
                let (n, own) = self
                    .with_vhost(|v, id| v.delete_queue_on(id, ch, &q, d.if_unused, d.if_empty))?;
                if !d.nowait {
                    self.send(
                        ch,
                        AMQPClass::Queue(M::DeleteOk(queue::DeleteOk { message_count: n })),
                    );
                }
                if self.cancel_notify {
                    for tag in own {
                        self.send(
                            ch,
                            AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                                consumer_tag: tag.to_string().into(),
                                nowait: true,
                            })),
                        );
                    }
                }
                Ok(())
            }
            _ => Err(server_only()),
        }
    }

    pub(super) fn on_basic(&mut self, ch: u16, m: basic::AMQPMethod) -> Result<(), AmqpError> {
        use basic::AMQPMethod as M;
        match m {
            M::Publish(p) => self.on_publish(
                ch,
                p.exchange.as_str().as_bytes(),
                p.routing_key.as_str().as_bytes(),
                p.mandatory,
                p.immediate,
            ),
            M::Deliver(_) | M::Return(_) | M::GetOk(_) => {
                let id = AMQPClass::Basic(m).get_amqp_method_id();
                self.channel(ch).content = Content::Header(Pending::Refused(id));
                Ok(())
            }
            M::Qos(q) => {
                // RabbitMQ answers before it delivers what a larger prefetch allows.
                self.send(ch, AMQPClass::Basic(M::QosOk(basic::QosOk {})));
                // A denied `global_qos` makes RabbitMQ (3.13+) take the qos as per
                // consumer (rabbit_channel.erl:1445-1468 at v4.3.5).
                let global = q.global && self.shared.config.profile.global_qos();
                self.with_vhost(|v, id| v.qos(id, ch, q.prefetch_count, global));
                Ok(())
            }
            M::Consume(c) => {
                let q = self.queue_name(ch, c.queue.as_str())?;
                // Direct reply-to is no queue and needs no permission
                // (rabbit_channel.erl:1398).
                if q != REPLY_TO {
                    self.permit(Access::Read, Resource::Queue, &q)?;
                }
                let tag = if c.consumer_tag.as_str().is_empty() {
                    format!("amq.ctag-{}", random_token())
                } else {
                    c.consumer_tag.as_str().to_owned()
                };
                let outbox = self.outbox.clone();
                let nowait = c.nowait;
                self.with_vhost(|v, id| {
                    let opts = ConsumeOptions {
                        tag,
                        no_ack: c.no_ack,
                        exclusive: c.exclusive,
                        arguments: c.arguments,
                    };
                    v.consume(id, ch, &q, opts, |tag| {
                        if !nowait {
                            outbox.push(method(
                                ch,
                                AMQPClass::Basic(M::ConsumeOk(basic::ConsumeOk {
                                    consumer_tag: tag.into(),
                                })),
                            ));
                        }
                    })
                })
            }
            M::Cancel(c) => {
                self.with_vhost(|v, id| v.cancel(id, ch, c.consumer_tag.as_str()));
                if !c.nowait {
                    self.send(
                        ch,
                        AMQPClass::Basic(M::CancelOk(basic::CancelOk {
                            consumer_tag: c.consumer_tag,
                        })),
                    );
                }
                Ok(())
            }
            M::Get(g) => {
                let q = self.queue_name(ch, g.queue.as_str())?;
                self.permit(Access::Read, Resource::Queue, &q)?;
                let found = self.with_vhost(|v, id| v.get(id, ch, &q, g.no_ack))?;
                if !found {
                    self.send(ch, AMQPClass::Basic(M::GetEmpty(basic::GetEmpty {})));
                }
                Ok(())
            }
            M::Ack(a) => self.settle(ch, a.delivery_tag, a.multiple, None, false),
            M::Reject(r) => self.settle(ch, r.delivery_tag, false, Some(r.requeue), true),
            M::Nack(n) => self.settle(ch, n.delivery_tag, n.multiple, Some(n.requeue), false),
            M::Recover(r) => {
                if !r.requeue {
                    return Err(AmqpError::connection(
                        code::NOT_IMPLEMENTED,
                        "requeue=false",
                    ));
                }
                let id = self.id;
                if self.vhost().lock().has_stream_deliveries(id, ch) {
                    return Err(AmqpError::internal());
                }
                // RabbitMQ answers before it redelivers.
                self.send(ch, AMQPClass::Basic(M::RecoverOk(basic::RecoverOk {})));
                self.recover(ch, r.requeue)
            }
            M::RecoverAsync(r) => self.recover(ch, r.requeue),
            _ => Err(server_only()),
        }
    }

    pub(super) fn recover(&mut self, ch: u16, requeue: bool) -> Result<(), AmqpError> {
        if !requeue {
            return Err(AmqpError::connection(
                code::NOT_IMPLEMENTED,
                "requeue=false",
            ));
        }
        self.with_vhost(|v, id| v.recover(id, ch));
        Ok(())
    }

    pub(super) fn settle(
        &mut self,
        ch: u16,
        tag: u64,
        multiple: bool,
        requeue: Option<bool>,
        failed: bool,
    ) -> Result<(), AmqpError> {
        let fault = self.shared.rules.on_settle(self.id, ch);
        if let Some(action) = &fault {
            self.info.trace.fault(action.name(), action.detail());
        }
        match fault {
            Some(Action::CloseChannel { code, text }) => {
                return Err(AmqpError::channel(code, text));
            }
            Some(Action::CloseConnection { code, text }) => {
                return Err(AmqpError::connection(code, text));
            }
            _ => {}
        }
        if self.channel(ch).tx.is_some() {
            // RabbitMQ checks the tag when the ack arrives, not at commit.
            let id = self.id;
            let settled_before = self.channel(ch).tx.as_ref().is_some_and(|ops| {
                ops.iter().any(|op| {
                    matches!(op, TxOp::Settle { tag: t, multiple: m, .. }
                        if *t == tag || (*m && (*t == 0 || *t >= tag)))
                })
            });
            let known = tag == 0 && multiple || self.vhost().lock().is_unacked(id, ch, tag);
            if !known || settled_before {
                return Err(AmqpError::precondition(format!(
                    "unknown delivery tag {tag}"
                )));
            }
        }
        if let Some(ops) = &mut self.channel(ch).tx {
            ops.push(TxOp::Settle {
                tag,
                multiple,
                requeue,
                failed,
            });
            return Ok(());
        }
        self.with_vhost(|v, id| v.settle(id, ch, tag, multiple, requeue, failed))
    }

    /// The queue a method names, where "" means the channel's last declared queue.
    pub(super) fn queue_name(&mut self, ch: u16, name: &str) -> Result<String, AmqpError> {
        if !name.is_empty() {
            return Ok(name.to_owned());
        }
        self.channel(ch)
            .last_queue
            .clone()
            .ok_or_else(|| AmqpError::not_found("no previously declared queue"))
    }

    /// RabbitMQ's `check_configure_permitted` and friends (rabbit_channel.erl:1004-1011):
    /// 403 ACCESS_REFUSED unless the user's permission in this vhost matches `name`.
    /// Permissions changed since the grant was taken apply from the next check.
    pub(super) fn permit(
        &mut self,
        access: Access,
        kind: Resource,
        name: &str,
    ) -> Result<(), AmqpError> {
        let generation = self.shared.users.generation();
        if generation != self.grant_generation {
            self.grant_generation = generation;
            self.grant = self.shared.users.grant(self.user_name(), &self.vhost_name);
        }
        let user = self.user.as_ref().map_or("", |u| u.name.as_str());
        auth::check(
            self.grant.as_deref(),
            user,
            &self.vhost_name,
            access,
            kind,
            name,
        )
    }
}
