//! Content assembly: a `basic.publish`, its header and body frames made one message,
//! checked (size, expiration, permissions) and handed to the vhost to route.

use amq_protocol::protocol::basic;
use bytes::{Bytes, BytesMut};

use crate::auth::{Access, Resource};
use crate::codec;
use crate::error::{code, AmqpError};
use crate::faults::{Action, PublishEvent};
use crate::vhost::{Message, REPLY_TO};

use super::methods::server_only;
use super::skip;
use super::*;

/// A method that carries content, waiting for it.
#[derive(Debug)]
pub(super) enum Pending {
    /// A `basic.publish`: where it goes (shared with the connection's route cache,
    /// so consecutive publishes with the same names allocate nothing) and whether
    /// it must come back if unroutable.
    Publish { route: Arc<Route>, mandatory: bool },
    /// A content-carrying method only a server may send (basic.deliver, return,
    /// get-ok): RabbitMQ takes its content, then refuses it.
    Refused(u16),
    /// Any content method on a closing channel: its frames are still checked,
    /// as RabbitMQ's reader assembles them for every channel it knows, and the
    /// message is dropped, as the closing channel process drops every method.
    Dropped(u16),
}

impl Pending {
    pub(super) fn method_id(&self) -> u16 {
        match self {
            Pending::Publish { .. } => 40,
            Pending::Refused(id) | Pending::Dropped(id) => *id,
        }
    }
}

#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per channel; boxing would cost an allocation per message"
)]
pub(super) enum Content {
    Idle,
    /// A content method seen; its content header is due.
    Header(Pending),
    Body {
        publish: Pending,
        header: Bytes,
        /// Boxed, as the frame brought it (none when the header had none): the
        /// channel's content state is moved out and back for every frame.
        properties: Option<Box<basic::AMQPProperties>>,
        size: u64,
        body: BytesMut,
    },
    /// More body arrived than the header announced. Like RabbitMQ, the message is
    /// dropped and further body frames swallowed; the next other frame on the
    /// channel is the error. Holds the content method's id.
    Overflow(u16),
    /// The body of a dropped message: `left` more bytes are swallowed unkept.
    Skip {
        id: u16,
        left: u64,
    },
}

/// RabbitMQ's check of the `expiration` property: a non-negative integer of
/// milliseconds, with its reasons in Erlang's words.
pub(super) fn check_expiration(exp: &str) -> Result<u64, String> {
    let digits_end = exp
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && (c == '-' || c == '+'))))
        .map_or(exp.len(), |(i, _)| i);
    let (number, rest) = exp.split_at(digits_end);
    let value: i64 = match number.parse() {
        Ok(v) => v,
        Err(_) => return Err("no_integer".to_owned()),
    };
    if !rest.is_empty() {
        return Err(format!("{{leftover_string,\"{rest}\"}}"));
    }
    if value < 0 {
        return Err(format!("{{value_negative,{value}}}"));
    }
    Ok(value as u64)
}

impl Connection {
    pub(super) fn on_content_header(
        &mut self,
        ch: u16,
        publish: Pending,
        class_id: u16,
        size: u64,
        properties: Option<Box<basic::AMQPProperties>>,
        raw: Bytes,
    ) -> Result<(), AmqpError> {
        if class_id != 60 {
            return Err(AmqpError::connection(
                code::UNEXPECTED_FRAME,
                format!(
                    "expected content header for class 60, got one for class {class_id} instead"
                ),
            )
            .on_method(60, 40));
        }
        if let Pending::Dropped(id) = publish {
            self.channel(ch).content = skip(id, size);
            return Ok(());
        }
        let max = self.shared.config.max_message_size();
        if size > max {
            // RabbitMQ refuses the message once it has its body: the body
            // frames still to come belong to it, not to the closed channel.
            self.channel(ch).content = skip(publish.method_id(), size);
            return Err(AmqpError::precondition(format!(
                "message size {size} is larger than configured max size {max}"
            ))
            .on_method(60, 40));
        }
        if size == 0 {
            return self.publish(ch, publish, raw, properties, Bytes::new());
        }
        self.channel(ch).content = Content::Body {
            publish,
            header: raw,
            properties,
            size,
            // Nothing yet: the common body, one frame, is kept as it came.
            body: BytesMut::new(),
        };
        Ok(())
    }

    pub(super) fn on_publish(
        &mut self,
        ch: u16,
        exchange: &[u8],
        routing_key: &[u8],
        mandatory: bool,
        immediate: bool,
    ) -> Result<(), AmqpError> {
        self.published = true;
        if immediate {
            return Err(AmqpError::connection(
                code::NOT_IMPLEMENTED,
                "immediate=true",
            ));
        }
        let route = self
            .routes
            .get_raw(exchange, routing_key, &self.shared.gauge);
        self.channel(ch).content = Content::Header(Pending::Publish { route, mandatory });
        Ok(())
    }

    /// A whole message has arrived on `ch`.
    pub(super) fn publish(
        &mut self,
        ch: u16,
        publish: Pending,
        header: Bytes,
        properties: Option<Box<basic::AMQPProperties>>,
        body: Bytes,
    ) -> Result<(), AmqpError> {
        let (route, mandatory) = match publish {
            Pending::Publish { route, mandatory } => (route, mandatory),
            Pending::Refused(id) => return Err(server_only().on_method(60, id)),
            Pending::Dropped(_) => return Ok(()),
        };
        // Checked once the content is in, before anything else about the
        // message (rabbit_channel.erl:1299).
        self.permit(Access::Write, Resource::Exchange, route.exchange())
            .map_err(|e| e.on_method(60, 40))?;
        let properties = properties.as_deref().unwrap_or(codec::no_properties());
        if let Some(exp) = properties.expiration() {
            check_expiration(exp.as_str()).map_err(|why| {
                AmqpError::precondition(format!("invalid expiration '{exp}': {why}"))
                    .on_method(60, 40)
            })?;
        }
        if let Some(user_id) = properties.user_id() {
            let user = self.user_name();
            let impersonator = self
                .user
                .as_ref()
                .is_some_and(|u| u.has_tag("impersonator"));
            if user_id.as_str() != user && !impersonator {
                return Err(AmqpError::precondition(format!(
                    "user_id property set to '{user_id}' but authenticated user was '{user}'"
                ))
                .on_method(60, 40));
            }
        }
        // Direct reply-to: the request carries this channel's reply address.
        let reply_props;
        let (properties, header) = if properties
            .reply_to()
            .as_ref()
            .is_some_and(|r| r.as_str() == REPLY_TO)
        {
            let address = self
                .vhost()
                .lock()
                .reply_address(self.id, ch)
                .map_err(|e| e.on_method(60, 40))?;
            reply_props = properties.clone().with_reply_to(address.into());
            let header = codec::encode_header(body.len() as u64, &reply_props);
            (&reply_props, header)
        } else {
            (properties, header)
        };
        let msg = Message::new(route, properties, header, body);
        let exchange = msg.exchange();
        // One lock for routing and enqueueing: the rules' lock, taken in between,
        // is a leaf.
        let vhost = self.vhost().clone();
        let mut v = vhost.lock();
        let targets = v
            .route(exchange, msg.routing_key(), properties.headers().as_ref())
            .map_err(|e| e.on_method(60, 40))?;
        // After routing, so that a rule can name a queue the message reaches.
        let fault = self.shared.rules.on_publish(&PublishEvent {
            connection: self.id,
            channel: ch,
            exchange,
            queues: &targets,
        });
        if let Some(action) = &fault {
            self.info.trace.fault(action.name(), action.detail());
        }
        match &fault {
            Some(Action::CloseChannel { code, text }) => {
                return Err(AmqpError::channel(*code, text.clone()).on_method(60, 40));
            }
            Some(Action::CloseConnection { code, text }) => {
                return Err(AmqpError::connection(*code, text.clone()).on_method(60, 40));
            }
            _ => {}
        }
        let id = self.id;
        let chan = self.channel(ch);
        if let Some(ops) = &mut chan.tx {
            ops.push(TxOp::Publish {
                targets,
                mandatory,
                msg: Box::new(msg),
            });
            return Ok(());
        }
        let confirming = chan.confirm.is_some();
        let awaited = confirming && fault != Some(Action::WithholdConfirm);
        let published = v.publish(id, ch, &targets, mandatory, msg, awaited);
        drop(v);
        if confirming {
            let confirms = self.channel(ch).confirm.as_mut().expect("confirming");
            confirms.last += 1;
            let seq = confirms.last;
            if targets.is_empty() && fault.is_none() {
                // Routed to no queue (direct reply-to included): RabbitMQ's channel
                // records the confirm at once (rabbit_channel.erl:2262-2264) and
                // sends what it recorded before its next method (:916-920), so
                // each such publish gets its own ack, multiple=false
                // (:2322-2324), after what was due before it and even while
                // earlier publishes still wait for the disk.
                self.flush_channel_confirms(ch);
                self.send(
                    ch,
                    AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                        delivery_tag: seq,
                        multiple: false,
                    })),
                );
                return Ok(());
            }
            let withheld = fault == Some(Action::WithholdConfirm);
            confirms.pending.push_back(PendingConfirm {
                seq,
                // An LSN no store reaches: the confirm never comes.
                lsn: if withheld {
                    WITHHELD
                } else {
                    published.lsn.unwrap_or(0)
                },
                nack: published.refused || fault == Some(Action::NackConfirm),
            });
        }
        Ok(())
    }
}
