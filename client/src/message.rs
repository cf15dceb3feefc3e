//! Messages as they arrive: deliveries, from a consumer or `basic.get`.

use bytes::Bytes;

use crate::{channel::Channel, error::Error, BasicProperties};

/// A message delivered to this client, with the means to acknowledge it.
#[derive(Debug)]
#[non_exhaustive]
pub struct Delivery {
    /// Identifies the delivery on its channel; used by ack, nack and reject.
    pub delivery_tag: u64,
    /// The broker delivered this message before (to this or another consumer).
    pub redelivered: bool,
    /// Exchange the message was published to.
    pub exchange: String,
    /// Routing key it was published with.
    pub routing_key: String,
    /// Its properties (headers, correlation id, delivery mode…).
    pub properties: BasicProperties,
    /// Its body.
    pub body: Bytes,
    // The channel is kept alive by its deliveries: acks must go out on the channel the
    // delivery came from, and a channel dropped with unacked deliveries would requeue them.
    pub(crate) channel: Channel,
    pub(crate) no_ack: bool,
}

impl Delivery {
    fn check_ackable(&self) -> Result<(), Error> {
        if self.no_ack {
            Err(Error::InvalidArgument(
                "this delivery was consumed with no_ack and cannot be acknowledged".into(),
            ))
        } else {
            Ok(())
        }
    }

    /// Acknowledge this delivery.
    pub async fn ack(&self) -> Result<(), Error> {
        self.check_ackable()?;
        self.channel.basic_ack(self.delivery_tag, false).await
    }

    /// Acknowledge this delivery and every earlier unacknowledged one on its channel.
    pub async fn ack_multiple(&self) -> Result<(), Error> {
        self.check_ackable()?;
        self.channel.basic_ack(self.delivery_tag, true).await
    }

    /// Negatively acknowledge; `requeue` puts it back in its queue, else it is dropped or
    /// dead-lettered.
    pub async fn nack(&self, requeue: bool) -> Result<(), Error> {
        self.check_ackable()?;
        self.channel
            .basic_nack(self.delivery_tag, false, requeue)
            .await
    }

    /// Reject (the single-message form of nack).
    pub async fn reject(&self, requeue: bool) -> Result<(), Error> {
        self.check_ackable()?;
        self.channel.basic_reject(self.delivery_tag, requeue).await
    }

    /// The channel this delivery arrived on.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }
}

/// The answer to `basic.get` when the queue had a message.
#[derive(Debug)]
#[non_exhaustive]
pub struct GetMessage {
    /// The message.
    pub delivery: Delivery,
    /// Messages left in the queue after this one.
    pub message_count: u32,
}
