//! Messages as they arrive: deliveries, from a consumer or `basic.get`.

use bytes::Bytes;

use crate::{
    acker::Acker,
    error::Result,
    options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions},
    BasicProperties,
};

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
    /// Acks, nacks or rejects this delivery on its channel (which it keeps open).
    pub acker: Acker,
}

impl Delivery {
    /// Acknowledge this delivery (with `multiple`, every earlier unacknowledged one on
    /// its channel too).
    pub async fn ack(&self, options: BasicAckOptions) -> Result<()> {
        self.acker.ack(options).await
    }

    /// Negatively acknowledge; with `requeue` it goes back to its queue, else it is
    /// dropped or dead-lettered.
    pub async fn nack(&self, options: BasicNackOptions) -> Result<()> {
        self.acker.nack(options).await
    }

    /// Reject (the single-message form of nack).
    pub async fn reject(&self, options: BasicRejectOptions) -> Result<()> {
        self.acker.reject(options).await
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
