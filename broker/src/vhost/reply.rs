//! Direct reply-to, RabbitMQ's RPC shortcut: a client consumes (no-ack) from the
//! pseudo-queue `amq.rabbitmq.reply-to`, publishes requests whose `reply_to`
//! names it, and replies sent to the rewritten address reach that consumer
//! directly, with no queue in between.

use super::{ConnId, ConsumeOptions, Message, VhostState};
use crate::codec;
use crate::error::AmqpError;
use crate::names::random_token;

/// Whether `key` has the shape of an address this broker hands out (the prefix,
/// a dot and a 22-character token), whether or not its consumer is still there:
/// RabbitMQ 4.2+ routes to any address it can decode and returns the rest.
pub fn is_reply_address(key: &str) -> bool {
    key.strip_prefix(REPLY_TO)
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|token| {
            token.len() == 22
                && token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The pseudo-queue's name, and the prefix of every reply address.
pub const REPLY_TO: &str = "amq.rabbitmq.reply-to";

impl VhostState {
    pub(super) fn consume_replies(
        &mut self,
        conn: ConnId,
        channel: u16,
        opts: ConsumeOptions,
        on_ok: impl FnOnce(&str),
    ) -> Result<(), AmqpError> {
        if !opts.no_ack {
            return Err(AmqpError::precondition("reply consumer cannot acknowledge"));
        }
        let st = self
            .channels
            .get_mut(&(conn, channel))
            .expect("channel is open");
        if st.consumers.contains_key(&opts.tag) {
            return Err(AmqpError::connection(
                crate::error::code::NOT_ALLOWED,
                format!("attempt to reuse consumer tag '{}'", opts.tag),
            ));
        }
        if st.reply_to.is_some() {
            return Err(AmqpError::precondition("reply consumer already set"));
        }
        let address = format!("{REPLY_TO}.{}", random_token());
        st.consumers.insert(opts.tag.clone(), REPLY_TO.to_owned());
        st.reply_to = Some(address.clone());
        on_ok(&opts.tag);
        self.replies.insert(address, (conn, channel, opts.tag));
        Ok(())
    }

    /// The address that replaces `amq.rabbitmq.reply-to` in a request published
    /// on this channel; an error when the channel has no reply consumer.
    pub fn reply_address(&self, conn: ConnId, channel: u16) -> Result<String, AmqpError> {
        self.channels
            .get(&(conn, channel))
            .and_then(|st| st.reply_to.clone())
            .ok_or_else(|| AmqpError::precondition("fast reply consumer does not exist"))
    }

    /// Delivers a reply published to the default exchange with a reply address as
    /// its routing key; false when no consumer has that address (unroutable).
    pub fn deliver_reply(&mut self, msg: &Message) -> bool {
        let Some((conn, channel, tag)) = self.replies.get(msg.routing_key()).cloned() else {
            return false;
        };
        let (Some(st), Some(entry)) = (
            self.channels.get_mut(&(conn, channel)),
            self.conns.get(&conn),
        ) else {
            return false;
        };
        let delivery_tag = st.take_tag();
        entry.outbox.push(|out| {
            codec::put_deliver(
                out,
                channel,
                &tag,
                delivery_tag,
                false,
                msg.exchange(),
                msg.routing_key(),
            );
            codec::put_message(out, channel, msg.props(), msg.body(), entry.frame_max);
        });
        true
    }
}
