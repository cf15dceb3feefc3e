//! Option structs for channel methods: the flags of each AMQP method, all off by default.
//!
//! `nowait` is deliberately absent: every method waits for its reply, so a failure is
//! reported to the call that caused it and not to whatever runs next on the channel.

/// Flags of `exchange.declare`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExchangeDeclareOptions {
    /// Only check that the exchange exists (404 if not).
    pub passive: bool,
    /// Survive a broker restart.
    pub durable: bool,
    /// Delete when the last binding is removed.
    pub auto_delete: bool,
    /// Cannot be published to directly, only via exchange-to-exchange bindings.
    pub internal: bool,
}

/// Flags of `exchange.delete`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExchangeDeleteOptions {
    /// Only delete if the exchange has no bindings.
    pub if_unused: bool,
}

/// Flags of `queue.declare`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueDeclareOptions {
    /// Only check that the queue exists (404 if not).
    pub passive: bool,
    /// Survive a broker restart.
    pub durable: bool,
    /// Used by this connection only, deleted when it closes.
    pub exclusive: bool,
    /// Deleted when its last consumer is cancelled.
    pub auto_delete: bool,
}

/// Flags of `queue.delete`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueDeleteOptions {
    /// Only delete if the queue has no consumers.
    pub if_unused: bool,
    /// Only delete if the queue has no messages.
    pub if_empty: bool,
}

/// Flags of `basic.publish`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BasicPublishOptions {
    /// Return the message (see [`Channel::returns`](crate::Channel::returns)) if no queue
    /// gets it.
    pub mandatory: bool,
    /// Not supported by RabbitMQ (it closes the connection with 540); kept for brokers
    /// that do.
    pub immediate: bool,
}

/// Flags of `basic.consume`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BasicConsumeOptions {
    /// Do not deliver messages published on this connection (RabbitMQ ignores it).
    pub no_local: bool,
    /// The broker considers a message acknowledged as soon as it is sent ("auto ack").
    pub no_ack: bool,
    /// Be the only consumer of the queue.
    pub exclusive: bool,
}

/// Flags of `basic.qos`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BasicQosOptions {
    /// RabbitMQ: the limit is shared by all consumers of the channel instead of applying
    /// to each new consumer.
    pub global: bool,
}

/// Flags of `basic.ack`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BasicAckOptions {
    /// Also acknowledge every earlier unacknowledged delivery of the channel.
    pub multiple: bool,
}

/// Flags of `basic.nack`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BasicNackOptions {
    /// Also nack every earlier unacknowledged delivery of the channel.
    pub multiple: bool,
    /// Put the messages back in their queues; else they are dropped or dead-lettered.
    pub requeue: bool,
}

/// Flags of `basic.reject`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BasicRejectOptions {
    /// Put the message back in its queue; else it is dropped or dead-lettered.
    pub requeue: bool,
}

/// Flags of `basic.get`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BasicGetOptions {
    /// The broker considers the message acknowledged as soon as it is sent.
    pub no_ack: bool,
}

/// Flags of `basic.recover`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BasicRecoverOptions {
    /// Redeliver to any consumer. RabbitMQ supports only `true`: `false` closes the
    /// connection with 540 NOT_IMPLEMENTED.
    pub requeue: bool,
}
