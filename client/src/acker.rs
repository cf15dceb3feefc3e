//! Acknowledging a delivery: the [`Acker`] every [`Delivery`](crate::Delivery)
//! carries (lapin's shape), so that settling a message needs the message, not its
//! [`Channel`](crate::Channel).

use std::{fmt, sync::Arc};

use amq_protocol::protocol::{basic, AMQPClass};

use crate::{
    error::{Error, Result},
    options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions},
    state::ChannelHandle,
};

/// Acks, nacks or rejects one delivery on the channel it came from.
///
/// It keeps that channel open: acks must go out on the channel of the delivery, and
/// a channel closed with unacked deliveries would requeue them. Clones settle the
/// same delivery (the broker closes the channel with 406 on a second settle, as for
/// any unknown delivery tag).
#[derive(Clone)]
pub struct Acker {
    channel: Arc<ChannelHandle>,
    delivery_tag: u64,
    /// Consumed or fetched with no_ack: nothing to settle.
    no_ack: bool,
}

impl fmt::Debug for Acker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acker")
            .field("channel", &self.channel.state.id)
            .field("delivery_tag", &self.delivery_tag)
            .field("no_ack", &self.no_ack)
            .finish()
    }
}

impl Acker {
    pub(crate) fn new(channel: Arc<ChannelHandle>, delivery_tag: u64, no_ack: bool) -> Self {
        Acker {
            channel,
            delivery_tag,
            no_ack,
        }
    }

    fn check_ackable(&self) -> Result<()> {
        if self.no_ack {
            Err(Error::InvalidArgument(
                "this delivery was consumed with no_ack and cannot be acknowledged".into(),
            ))
        } else {
            Ok(())
        }
    }

    /// Acknowledge the delivery (with `multiple`, every earlier unacknowledged one
    /// on its channel too).
    pub async fn ack(&self, options: BasicAckOptions) -> Result<()> {
        self.check_ackable()?;
        self.channel
            .send(AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag: self.delivery_tag,
                multiple: options.multiple,
            })))
            .await
    }

    /// Negatively acknowledge; with `requeue` it goes back to its queue, else it is
    /// dropped or dead-lettered.
    pub async fn nack(&self, options: BasicNackOptions) -> Result<()> {
        self.check_ackable()?;
        self.channel
            .send(AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
                delivery_tag: self.delivery_tag,
                multiple: options.multiple,
                requeue: options.requeue,
            })))
            .await
    }

    /// Reject (the single-message form of nack).
    pub async fn reject(&self, options: BasicRejectOptions) -> Result<()> {
        self.check_ackable()?;
        self.channel
            .send(AMQPClass::Basic(basic::AMQPMethod::Reject(basic::Reject {
                delivery_tag: self.delivery_tag,
                requeue: options.requeue,
            })))
            .await
    }
}
