//! Channels: the AMQP methods a client calls (the per-channel state the connection
//! task updates is in `state`).
//!
//! Every synchronous method (declare, bind, qos, consume…) queues its frame and a reply
//! slot under one lock, in the same order, so replies (which the broker sends in
//! request order) are matched first-in first-out, even when several tasks share a
//! channel.

use std::{
    fmt,
    sync::{Arc, Mutex},
};

use amq_protocol::{
    protocol::{basic, channel, confirm, exchange, queue, tx, AMQPClass},
    types::FieldTable,
};
use tokio::sync::{mpsc, oneshot};

use crate::{
    acker::Acker,
    codec::{self, check_short, short},
    confirm::PublisherConfirm,
    consumer::{Consumer, Returns},
    content::{Content, ContentMethod},
    error::{Error, Result},
    message::{Delivery, GetMessage},
    options::*,
    state::*,
    BasicProperties,
};

/// Deliveries buffered per consumer when no prefetch bounds them (or with no_ack).
const DEFAULT_CONSUMER_BUFFER: usize = 1024;
/// Returned messages buffered before the connection task waits for the caller.
const RETURNS_BUFFER: usize = 1024;

/// A channel handle. Clones share the channel; it is closed when the last clone,
/// consumer and delivery of it are dropped, or by [`Channel::close`].
#[derive(Clone)]
pub struct Channel {
    inner: Arc<ChannelHandle>,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("id", &self.inner.state.id)
            .field("status", &self.inner.state.lock().status)
            .finish()
    }
}

fn method(reply: Reply) -> Result<AMQPClass> {
    match reply {
        Reply::Method(m) => Ok(m),
        Reply::Get(_) => Err(Error::Protocol {
            code: 505,
            message: "get-ok where a method was expected".into(),
        }),
    }
}

/// The result of `queue.declare`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Queue {
    /// The queue's name (the broker picks one when declared with an empty name).
    pub name: String,
    /// Messages ready in the queue.
    pub message_count: u32,
    /// Consumers on the queue.
    pub consumer_count: u32,
}

impl Channel {
    pub(crate) async fn open(handle: Handle) -> Result<Channel> {
        let state = {
            let mut channels = handle.conn.channels();
            // Checked under the channels lock: `ConnState::finish` records the close
            // before it drains this map, so a channel is either refused here or drained
            // (and failed) there, never left waiting for a reply that cannot come.
            if let Some(err) = handle.conn.closed.borrow().clone() {
                return Err(err);
            }
            let max = handle.conn.tuned.channel_max;
            let id = (1..=max)
                .find(|id| !channels.contains_key(id))
                .ok_or(Error::ChannelsExhausted)?;
            let state = Arc::new(ChannelState::new(id));
            channels.insert(id, state.clone());
            state
        };
        let channel = Channel {
            inner: Arc::new(ChannelHandle { state, handle }),
        };
        if let Err(err) = channel
            .inner
            .rpc(
                AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
                OPEN_OK,
                None,
            )
            .await
        {
            let id = channel.id();
            channel.inner.handle.conn.channels().remove(&id);
            channel.inner.state.finish(err.clone());
            return Err(err);
        }
        Ok(channel)
    }

    /// The channel's number on its connection.
    pub fn id(&self) -> u16 {
        self.inner.state.id
    }

    /// True until the channel is closed, by either side.
    pub fn is_open(&self) -> bool {
        matches!(self.inner.state.lock().status, Status::Open)
    }

    /// Why the channel closed, once it has.
    pub fn close_error(&self) -> Option<Error> {
        self.inner.state.error()
    }

    /// Close the channel (`200 OK`) and wait for the broker's `close-ok`.
    /// Returns the broker's error if it had already closed the channel.
    pub async fn close(&self) -> Result<()> {
        let bytes = encode(self.id(), close_method(200, "OK"))?;
        let permit = self.inner.handle.reserve().await?;
        let (tx, rx) = oneshot::channel();
        {
            let mut inner = self.inner.state.lock();
            match &inner.status {
                Status::Open => {}
                Status::Closing => return Ok(()),
                Status::Closed(Error::ChannelClosedByClient) => return Ok(()),
                Status::Closed(err) => return Err(err.clone()),
            }
            inner.status = Status::Closing;
            inner.pending.push_back(Pending {
                expect: CLOSE_OK,
                reply: tx,
                consumer: None,
            });
            permit.send(bytes);
        }
        match self.inner.await_reply(rx).await {
            Ok(_) | Err(Error::ChannelClosedByClient) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Declare an exchange of `kind` (`direct`, `fanout`, `topic`, `headers`, or a
    /// plugin's type).
    pub async fn exchange_declare(
        &self,
        name: &str,
        kind: &str,
        options: ExchangeDeclareOptions,
        arguments: FieldTable,
    ) -> Result<()> {
        let m = exchange::Declare {
            exchange: short(name)?,
            kind: short(kind)?,
            passive: options.passive,
            durable: options.durable,
            auto_delete: options.auto_delete,
            internal: options.internal,
            nowait: false,
            arguments,
        };
        self.inner
            .rpc(
                AMQPClass::Exchange(exchange::AMQPMethod::Declare(m)),
                EXCHANGE_DECLARE_OK,
                None,
            )
            .await
            .map(drop)
    }

    /// Delete an exchange.
    pub async fn exchange_delete(&self, name: &str, options: ExchangeDeleteOptions) -> Result<()> {
        let m = exchange::Delete {
            exchange: short(name)?,
            if_unused: options.if_unused,
            nowait: false,
        };
        self.inner
            .rpc(
                AMQPClass::Exchange(exchange::AMQPMethod::Delete(m)),
                EXCHANGE_DELETE_OK,
                None,
            )
            .await
            .map(drop)
    }

    /// Bind exchange `destination` to exchange `source` (a RabbitMQ extension).
    pub async fn exchange_bind(
        &self,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<()> {
        let m = exchange::Bind {
            destination: short(destination)?,
            source: short(source)?,
            routing_key: short(routing_key)?,
            nowait: false,
            arguments,
        };
        self.inner
            .rpc(
                AMQPClass::Exchange(exchange::AMQPMethod::Bind(m)),
                EXCHANGE_BIND_OK,
                None,
            )
            .await
            .map(drop)
    }

    /// Remove an exchange-to-exchange binding.
    pub async fn exchange_unbind(
        &self,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<()> {
        let m = exchange::Unbind {
            destination: short(destination)?,
            source: short(source)?,
            routing_key: short(routing_key)?,
            nowait: false,
            arguments,
        };
        self.inner
            .rpc(
                AMQPClass::Exchange(exchange::AMQPMethod::Unbind(m)),
                EXCHANGE_UNBIND_OK,
                None,
            )
            .await
            .map(drop)
    }

    /// Declare a queue; an empty `name` asks the broker to pick one.
    pub async fn queue_declare(
        &self,
        name: &str,
        options: QueueDeclareOptions,
        arguments: FieldTable,
    ) -> Result<Queue> {
        let m = queue::Declare {
            queue: short(name)?,
            passive: options.passive,
            durable: options.durable,
            exclusive: options.exclusive,
            auto_delete: options.auto_delete,
            nowait: false,
            arguments,
        };
        match method(
            self.inner
                .rpc(
                    AMQPClass::Queue(queue::AMQPMethod::Declare(m)),
                    QUEUE_DECLARE_OK,
                    None,
                )
                .await?,
        )? {
            AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok)) => Ok(Queue {
                name: ok.queue.to_string(),
                message_count: ok.message_count,
                consumer_count: ok.consumer_count,
            }),
            other => Err(wrong_reply(other)),
        }
    }

    /// Bind a queue to an exchange.
    pub async fn queue_bind(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<()> {
        let m = queue::Bind {
            queue: short(queue)?,
            exchange: short(exchange)?,
            routing_key: short(routing_key)?,
            nowait: false,
            arguments,
        };
        self.inner
            .rpc(
                AMQPClass::Queue(queue::AMQPMethod::Bind(m)),
                QUEUE_BIND_OK,
                None,
            )
            .await
            .map(drop)
    }

    /// Remove a queue binding.
    pub async fn queue_unbind(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<()> {
        let m = queue::Unbind {
            queue: short(queue)?,
            exchange: short(exchange)?,
            routing_key: short(routing_key)?,
            arguments,
        };
        self.inner
            .rpc(
                AMQPClass::Queue(queue::AMQPMethod::Unbind(m)),
                QUEUE_UNBIND_OK,
                None,
            )
            .await
            .map(drop)
    }

    /// Remove every ready message from a queue; returns how many there were.
    pub async fn queue_purge(&self, queue: &str) -> Result<u32> {
        let m = queue::Purge {
            queue: short(queue)?,
            nowait: false,
        };
        match method(
            self.inner
                .rpc(
                    AMQPClass::Queue(queue::AMQPMethod::Purge(m)),
                    QUEUE_PURGE_OK,
                    None,
                )
                .await?,
        )? {
            AMQPClass::Queue(queue::AMQPMethod::PurgeOk(ok)) => Ok(ok.message_count),
            other => Err(wrong_reply(other)),
        }
    }

    /// Delete a queue; returns how many messages it held.
    pub async fn queue_delete(&self, queue: &str, options: QueueDeleteOptions) -> Result<u32> {
        let m = queue::Delete {
            queue: short(queue)?,
            if_unused: options.if_unused,
            if_empty: options.if_empty,
            nowait: false,
        };
        match method(
            self.inner
                .rpc(
                    AMQPClass::Queue(queue::AMQPMethod::Delete(m)),
                    QUEUE_DELETE_OK,
                    None,
                )
                .await?,
        )? {
            AMQPClass::Queue(queue::AMQPMethod::DeleteOk(ok)) => Ok(ok.message_count),
            other => Err(wrong_reply(other)),
        }
    }

    /// Limit unacknowledged deliveries (`prefetch_count`, 0 for no limit).
    ///
    /// Consumers started after this call buffer at most `prefetch_count` deliveries.
    pub async fn basic_qos(&self, prefetch_count: u16, options: BasicQosOptions) -> Result<()> {
        let m = basic::Qos {
            prefetch_count,
            global: options.global,
        };
        self.inner
            .rpc(AMQPClass::Basic(basic::AMQPMethod::Qos(m)), QOS_OK, None)
            .await?;
        self.inner.state.lock().prefetch = prefetch_count;
        Ok(())
    }

    /// Publish a message.
    ///
    /// The returned future (awaited here) only waits for room in the outgoing queue.
    /// The [`PublisherConfirm`] it yields resolves when the broker confirms the message
    /// (after [`confirm_select`](Self::confirm_select)), so thousands of publishes can be
    /// in flight and awaited together. Waits while the broker blocks the connection.
    pub async fn basic_publish(
        &self,
        exchange: &str,
        routing_key: &str,
        options: BasicPublishOptions,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<PublisherConfirm> {
        let id = self.id();
        check_short(exchange)?;
        check_short(routing_key)?;
        let mut buf = self
            .inner
            .handle
            .conn
            .spare
            .take(body.len() + exchange.len() + routing_key.len() + 64);
        codec::encode_publish(
            &mut buf,
            id,
            exchange,
            routing_key,
            options.mandatory,
            options.immediate,
        );
        codec::encode_content(
            &mut buf,
            id,
            &properties,
            body,
            self.inner.handle.conn.tuned.frame_max,
        )?;
        self.inner.handle.wait_unblocked().await?;
        if !*self.inner.state.flow.borrow() {
            let mut flow = self.inner.state.flow.subscribe();
            let _ = flow.wait_for(|active| *active).await;
        }
        let permit = self.inner.handle.reserve().await?;
        let mut inner = self.inner.state.lock();
        ChannelState::check_open(&inner)?;
        let confirm = match inner.confirms.as_mut() {
            Some(confirms) => {
                let (tx, rx) = oneshot::channel();
                confirms.waiting.insert(confirms.next, tx);
                confirms.next += 1;
                PublisherConfirm::waiting(rx)
            }
            None => PublisherConfirm::not_requested(),
        };
        permit.send(buf);
        Ok(confirm)
    }

    /// Start consuming from `queue`. An empty `consumer_tag` lets the broker pick one.
    pub async fn basic_consume(
        &self,
        queue: &str,
        consumer_tag: &str,
        options: BasicConsumeOptions,
        arguments: FieldTable,
    ) -> Result<Consumer> {
        let prefetch = self.inner.state.lock().prefetch;
        // The broker sends at most `prefetch` unacked deliveries, so a buffer of that
        // size never fills and never stalls the connection; no_ack ignores prefetch.
        let capacity = if prefetch == 0 || options.no_ack {
            DEFAULT_CONSUMER_BUFFER
        } else {
            usize::from(prefetch)
        };
        let (tx, rx) = mpsc::channel(capacity);
        let end = Arc::new(Mutex::new(None));
        let slot = ConsumerSlot {
            tx,
            no_ack: options.no_ack,
            end: end.clone(),
        };
        let m = basic::Consume {
            queue: short(queue)?,
            consumer_tag: short(consumer_tag)?,
            no_local: options.no_local,
            no_ack: options.no_ack,
            exclusive: options.exclusive,
            nowait: false,
            arguments,
        };
        match method(
            self.inner
                .rpc(
                    AMQPClass::Basic(basic::AMQPMethod::Consume(m)),
                    CONSUME_OK,
                    Some(slot),
                )
                .await?,
        )? {
            AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(ok)) => Ok(Consumer::new(
                ok.consumer_tag.to_string(),
                self.inner.clone(),
                rx,
                end,
                options.no_ack,
            )),
            other => Err(wrong_reply(other)),
        }
    }

    /// Cancel a consumer; its stream ends after the deliveries already buffered.
    pub async fn basic_cancel(&self, consumer_tag: &str) -> Result<()> {
        self.inner.cancel(consumer_tag).await
    }

    /// Fetch one message from `queue`, or `None` if it is empty.
    pub async fn basic_get(
        &self,
        queue: &str,
        options: BasicGetOptions,
    ) -> Result<Option<GetMessage>> {
        let no_ack = options.no_ack;
        let m = basic::Get {
            queue: short(queue)?,
            no_ack,
        };
        match self
            .inner
            .rpc(
                AMQPClass::Basic(basic::AMQPMethod::Get(m)),
                GET_OK_OR_EMPTY,
                None,
            )
            .await?
        {
            Reply::Get(None) => Ok(None),
            Reply::Get(Some(content)) => {
                let Content {
                    method: ContentMethod::GetOk(ok),
                    properties,
                    body,
                } = *content
                else {
                    return Err(Error::Protocol {
                        code: 505,
                        message: "get reply without get-ok".into(),
                    });
                };
                Ok(Some(GetMessage {
                    message_count: ok.message_count,
                    delivery: Delivery {
                        delivery_tag: ok.delivery_tag,
                        redelivered: ok.redelivered,
                        exchange: ok.exchange.to_string(),
                        routing_key: ok.routing_key.to_string(),
                        properties: Content::take_properties(properties),
                        body,
                        acker: Acker::new(self.inner.clone(), ok.delivery_tag, no_ack),
                    },
                }))
            }
            Reply::Method(other) => Err(wrong_reply(other)),
        }
    }

    /// Acknowledge `delivery_tag` (and all before it with `multiple`). A delivery
    /// can ack itself: [`Delivery::ack`].
    pub async fn basic_ack(&self, delivery_tag: u64, options: BasicAckOptions) -> Result<()> {
        self.inner
            .send(AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag,
                multiple: options.multiple,
            })))
            .await
    }

    /// Negatively acknowledge `delivery_tag` (and all before it with `multiple`).
    pub async fn basic_nack(&self, delivery_tag: u64, options: BasicNackOptions) -> Result<()> {
        self.inner
            .send(AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
                delivery_tag,
                multiple: options.multiple,
                requeue: options.requeue,
            })))
            .await
    }

    /// Reject one delivery.
    pub async fn basic_reject(&self, delivery_tag: u64, options: BasicRejectOptions) -> Result<()> {
        self.inner
            .send(AMQPClass::Basic(basic::AMQPMethod::Reject(basic::Reject {
                delivery_tag,
                requeue: options.requeue,
            })))
            .await
    }

    /// Redeliver every unacknowledged message of the channel (`requeue`: to any
    /// consumer, as RabbitMQ requires).
    pub async fn basic_recover(&self, options: BasicRecoverOptions) -> Result<()> {
        self.inner
            .rpc(
                AMQPClass::Basic(basic::AMQPMethod::Recover(basic::Recover {
                    requeue: options.requeue,
                })),
                RECOVER_OK,
                None,
            )
            .await
            .map(drop)
    }

    /// Ask the broker to pause (`false`) or resume (`true`) deliveries on this channel;
    /// returns the state the broker reports. (RabbitMQ refuses `false` with 540.)
    pub async fn channel_flow(&self, active: bool) -> Result<bool> {
        match method(
            self.inner
                .rpc(
                    AMQPClass::Channel(channel::AMQPMethod::Flow(channel::Flow { active })),
                    FLOW_OK,
                    None,
                )
                .await?,
        )? {
            AMQPClass::Channel(channel::AMQPMethod::FlowOk(ok)) => Ok(ok.active),
            other => Err(wrong_reply(other)),
        }
    }

    /// Put the channel in confirm mode: from now on every publish is acked or nacked.
    pub async fn confirm_select(&self) -> Result<()> {
        self.inner
            .rpc_then(
                AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
                    nowait: false,
                })),
                CONFIRM_SELECT_OK,
                None,
                // The broker numbers every publish it reads after confirm.select, so
                // numbering starts when the select is queued, not when select-ok arrives:
                // a publish from another task in between must be counted too.
                |inner| {
                    inner.confirms.get_or_insert(Confirms {
                        next: 1,
                        ..Default::default()
                    });
                },
            )
            .await
            .map(drop)
    }

    /// Wait until every publish made so far on this channel is confirmed. Returns
    /// `true` if all were acked, `false` if the broker nacked any since the last call.
    /// Fails with the channel's error if it closes first.
    pub async fn wait_for_confirms(&self) -> Result<bool> {
        let idle = {
            let mut inner = self.inner.state.lock();
            ChannelState::check_open(&inner)?;
            let Some(confirms) = inner.confirms.as_mut() else {
                return Err(Error::InvalidArgument(
                    "wait_for_confirms needs confirm_select first".into(),
                ));
            };
            if confirms.waiting.is_empty() {
                return Ok(!std::mem::take(&mut confirms.nacked));
            }
            let (tx, rx) = oneshot::channel();
            confirms.idle.push(tx);
            rx
        };
        if idle.await.is_err() {
            return Err(self
                .inner
                .state
                .error()
                .unwrap_or_else(|| self.inner.handle.error()));
        }
        let mut inner = self.inner.state.lock();
        Ok(!inner
            .confirms
            .as_mut()
            .is_some_and(|c| std::mem::take(&mut c.nacked)))
    }

    /// Put the channel in transaction mode.
    pub async fn tx_select(&self) -> Result<()> {
        self.inner
            .rpc(
                AMQPClass::Tx(tx::AMQPMethod::Select(tx::Select {})),
                TX_SELECT_OK,
                None,
            )
            .await
            .map(drop)
    }

    /// Commit the current transaction.
    pub async fn tx_commit(&self) -> Result<()> {
        self.inner
            .rpc(
                AMQPClass::Tx(tx::AMQPMethod::Commit(tx::Commit {})),
                TX_COMMIT_OK,
                None,
            )
            .await
            .map(drop)
    }

    /// Roll the current transaction back.
    pub async fn tx_rollback(&self) -> Result<()> {
        self.inner
            .rpc(
                AMQPClass::Tx(tx::AMQPMethod::Rollback(tx::Rollback {})),
                TX_ROLLBACK_OK,
                None,
            )
            .await
            .map(drop)
    }

    /// A stream of the `mandatory` messages the broker returns on this channel.
    ///
    /// Call it before publishing: returns that arrive while nobody listens are dropped
    /// (and logged). A later call replaces the earlier stream. In confirm mode RabbitMQ
    /// sends a return before the confirm of the same message, so once a
    /// [`PublisherConfirm`] resolves, its return (if any) is already in this stream.
    pub fn returns(&self) -> Returns {
        let (tx, rx) = mpsc::channel(RETURNS_BUFFER);
        self.inner.state.lock().returns = Some(tx);
        Returns::new(rx)
    }
}

fn wrong_reply(other: AMQPClass) -> Error {
    Error::Protocol {
        code: 505,
        message: format!("unexpected reply {other:?}"),
    }
}
