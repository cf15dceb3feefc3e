//! Channels: the AMQP methods a client calls, and the per-channel state the connection
//! task updates.
//!
//! Every synchronous method (declare, bind, qos, consume…) queues its frame and a reply
//! slot under one lock, in the same order, so replies (which the broker sends in
//! request order) are matched first-in first-out, even when several tasks share a
//! channel.

use std::{
    collections::{BTreeMap, VecDeque},
    fmt,
    sync::{Arc, Mutex, MutexGuard},
};

use amq_protocol::{
    protocol::{basic, channel, confirm, exchange, queue, tx, AMQPClass},
    types::FieldTable,
};
use bytes::BytesMut;
use rustc_hash::FxHashMap;
use tokio::sync::{mpsc, oneshot, watch};

use crate::{
    codec,
    confirm::PublisherConfirm,
    connection::{check_short, short, Handle},
    consumer::{Consumer, Returns},
    content::{Content, ContentMethod},
    error::{Error, Result},
    message::{Confirmation, Delivery, GetMessage, ReturnedMessage},
    options::*,
    BasicProperties,
};

/// Deliveries buffered per consumer when no prefetch bounds them (or with no_ack).
const DEFAULT_CONSUMER_BUFFER: usize = 1024;
/// Returned messages buffered before the connection task waits for the caller.
const RETURNS_BUFFER: usize = 1024;

/// (class id, method id) pairs a pending call accepts as its reply.
type Expect = &'static [(u16, u16)];
const OPEN_OK: Expect = &[(20, 11)];
const FLOW_OK: Expect = &[(20, 21)];
const CLOSE_OK: Expect = &[(20, 41)];
const EXCHANGE_DECLARE_OK: Expect = &[(40, 11)];
const EXCHANGE_DELETE_OK: Expect = &[(40, 21)];
const EXCHANGE_BIND_OK: Expect = &[(40, 31)];
const EXCHANGE_UNBIND_OK: Expect = &[(40, 51)];
const QUEUE_DECLARE_OK: Expect = &[(50, 11)];
const QUEUE_BIND_OK: Expect = &[(50, 21)];
const QUEUE_PURGE_OK: Expect = &[(50, 31)];
const QUEUE_DELETE_OK: Expect = &[(50, 41)];
const QUEUE_UNBIND_OK: Expect = &[(50, 51)];
const QOS_OK: Expect = &[(60, 11)];
const CONSUME_OK: Expect = &[(60, 21)];
const CANCEL_OK: Expect = &[(60, 31)];
const GET_OK_OR_EMPTY: Expect = &[(60, 71), (60, 72)];
const RECOVER_OK: Expect = &[(60, 111)];
const CONFIRM_SELECT_OK: Expect = &[(85, 11)];
const TX_SELECT_OK: Expect = &[(90, 11)];
const TX_COMMIT_OK: Expect = &[(90, 21)];
const TX_ROLLBACK_OK: Expect = &[(90, 31)];

/// What a pending call receives.
#[derive(Debug)]
pub(crate) enum Reply {
    Method(AMQPClass),
    /// `basic.get`: the message, or `None` for get-empty.
    Get(Option<Box<Content>>),
}

#[derive(Debug)]
pub(crate) struct Pending {
    expect: Expect,
    reply: oneshot::Sender<Result<Reply>>,
    /// For `basic.consume`: registered under the tag the consume-ok carries, before any
    /// delivery for it can be read.
    consumer: Option<ConsumerSlot>,
}

/// The connection task's side of a consumer.
#[derive(Clone, Debug)]
pub(crate) struct ConsumerSlot {
    pub(crate) tx: mpsc::Sender<Content>,
    pub(crate) no_ack: bool,
    /// Why the consumer ended, when it was not a cancel by this client.
    pub(crate) end: Arc<Mutex<Option<Error>>>,
}

/// What became of a delivery offered to a consumer.
#[derive(Debug)]
pub(crate) enum Offer {
    Delivered,
    /// No such consumer on the channel (any more); the delivery is handed back.
    Unknown(Content),
    /// The consumer was dropped.
    Closed {
        no_ack: bool,
    },
    /// Its queue is full: wait on this slot (with no lock held).
    Full(ConsumerSlot, Content),
}

#[derive(Debug)]
enum Status {
    Open,
    /// `channel.close` sent, `close-ok` awaited.
    Closing,
    Closed(Error),
}

#[derive(Debug, Default)]
struct Confirms {
    /// Sequence number of the next publish (the broker numbers them from 1).
    next: u64,
    waiting: BTreeMap<u64, oneshot::Sender<Result<Confirmation>>>,
    /// `wait_for_confirms` callers, told when `waiting` empties.
    idle: Vec<oneshot::Sender<()>>,
    /// A nack arrived since `wait_for_confirms` last reported.
    nacked: bool,
}

#[derive(Debug)]
struct Inner {
    status: Status,
    pending: VecDeque<Pending>,
    /// Looked up for every delivery: Fx, not SipHash (the keys are consumer tags).
    /// Bytes, not `String`s: a delivery's tag is looked up as it sits in its frame.
    consumers: FxHashMap<Box<[u8]>, ConsumerSlot>,
    confirms: Option<Confirms>,
    returns: Option<mpsc::Sender<ReturnedMessage>>,
    /// Last prefetch count set with basic.qos: sizes new consumers' buffers.
    prefetch: u16,
}

/// Per-channel state shared by the connection task and the channel's handles.
#[derive(Debug)]
pub(crate) struct ChannelState {
    id: u16,
    /// A std mutex: never held across an await.
    inner: Mutex<Inner>,
    /// `channel.flow` from the broker; publishers wait while it is false.
    flow: watch::Sender<bool>,
}

impl ChannelState {
    fn new(id: u16) -> Self {
        ChannelState {
            id,
            inner: Mutex::new(Inner {
                status: Status::Open,
                pending: VecDeque::new(),
                consumers: FxHashMap::default(),
                confirms: None,
                returns: None,
                prefetch: 0,
            }),
            flow: watch::channel(true).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_open(inner: &Inner) -> Result<()> {
        match &inner.status {
            Status::Open => Ok(()),
            Status::Closing => Err(Error::ChannelClosedByClient),
            Status::Closed(err) => Err(err.clone()),
        }
    }

    /// The error the channel ended with, if it did.
    pub(crate) fn error(&self) -> Option<Error> {
        match &self.lock().status {
            Status::Closed(err) => Some(err.clone()),
            _ => None,
        }
    }

    /// Mark closed and fail everything that waits on the channel.
    pub(crate) fn finish(&self, err: Error) {
        let mut inner = self.lock();
        if matches!(inner.status, Status::Closed(_)) {
            return;
        }
        inner.status = Status::Closed(err.clone());
        for pending in inner.pending.drain(..) {
            let _ = pending.reply.send(Err(err.clone()));
        }
        if let Some(confirms) = inner.confirms.as_mut() {
            for (_, waiter) in std::mem::take(&mut confirms.waiting) {
                let _ = waiter.send(Err(err.clone()));
            }
            // Dropped, not told: `wait_for_confirms` then reports the channel's error.
            confirms.idle.clear();
        }
        // A consumer whose channel this client closed just ends; any other end is an
        // error its stream reports.
        let consumer_err = match &err {
            Error::ChannelClosedByClient | Error::ConnectionClosedByClient => None,
            err => Some(err.clone()),
        };
        for (_, slot) in inner.consumers.drain() {
            *slot.end.lock().unwrap_or_else(|e| e.into_inner()) = consumer_err.clone();
        }
        inner.returns = None;
        drop(inner);
        self.flow.send_replace(true);
    }

    /// Route a synchronous reply to the oldest pending call.
    pub(crate) fn reply(&self, reply: Reply) -> Result<()> {
        let (class_id, method_id) = match &reply {
            Reply::Method(m) => (m.get_amqp_class_id(), m.get_amqp_method_id()),
            Reply::Get(Some(_)) => (60, 71),
            Reply::Get(None) => (60, 72),
        };
        let mut inner = self.lock();
        let Some(pending) = inner.pending.pop_front() else {
            return Err(Error::Protocol {
                code: 505,
                message: format!(
                    "unexpected method {class_id}.{method_id} on channel {}",
                    self.id
                ),
            });
        };
        if !pending.expect.contains(&(class_id, method_id)) {
            let err = Error::Protocol {
                code: 505,
                message: format!(
                    "expected {:?}, got {class_id}.{method_id} on channel {}",
                    pending.expect, self.id
                ),
            };
            let _ = pending.reply.send(Err(err.clone()));
            return Err(err);
        }
        match &reply {
            Reply::Method(AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(ok))) => {
                if let Some(slot) = pending.consumer.clone() {
                    inner
                        .consumers
                        .insert(ok.consumer_tag.as_str().as_bytes().into(), slot);
                }
            }
            Reply::Method(AMQPClass::Basic(basic::AMQPMethod::CancelOk(ok))) => {
                // Dropping the slot ends the consumer's stream once it is drained.
                inner.consumers.remove(ok.consumer_tag.as_str().as_bytes());
            }
            _ => {}
        }
        let _ = pending.reply.send(Ok(reply));
        Ok(())
    }

    /// Hands a delivery to consumer `tag` if its queue has room, without cloning
    /// its slot (the common case, once per message); else says what to do.
    pub(crate) fn offer(&self, tag: &[u8], content: Content) -> Offer {
        let inner = self.lock();
        let Some(slot) = inner.consumers.get(tag) else {
            return Offer::Unknown(content);
        };
        match slot.tx.try_send(content) {
            Ok(()) => Offer::Delivered,
            Err(mpsc::error::TrySendError::Full(content)) => Offer::Full(slot.clone(), content),
            Err(mpsc::error::TrySendError::Closed(_)) => Offer::Closed {
                no_ack: slot.no_ack,
            },
        }
    }

    pub(crate) fn cancelled_by_broker(&self, tag: &str) {
        if let Some(slot) = self.lock().consumers.remove(tag.as_bytes()) {
            *slot.end.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(Error::ConsumerCancelled(tag.to_string()));
        }
    }

    /// `basic.ack` / `basic.nack` from the broker in confirm mode.
    pub(crate) fn confirm(&self, tag: u64, multiple: bool, outcome: Confirmation) {
        let mut inner = self.lock();
        let Some(confirms) = inner.confirms.as_mut() else {
            tracing::warn!(channel = self.id, "publisher confirm outside confirm mode");
            return;
        };
        if multiple {
            // Tag 0 with multiple means "everything so far".
            let upto = if tag == 0 { u64::MAX } else { tag };
            let rest = match upto.checked_add(1) {
                Some(next) => confirms.waiting.split_off(&next),
                None => BTreeMap::new(),
            };
            for (_, waiter) in std::mem::replace(&mut confirms.waiting, rest) {
                let _ = waiter.send(Ok(outcome));
            }
        } else if let Some(waiter) = confirms.waiting.remove(&tag) {
            let _ = waiter.send(Ok(outcome));
        }
        confirms.nacked |= outcome == Confirmation::Nack;
        if confirms.waiting.is_empty() {
            for idle in confirms.idle.drain(..) {
                let _ = idle.send(());
            }
        }
    }

    pub(crate) fn returns_sender(&self) -> Option<mpsc::Sender<ReturnedMessage>> {
        self.lock().returns.clone()
    }

    pub(crate) fn set_flow(&self, active: bool) {
        self.flow.send_replace(active);
    }
}

/// A channel handle. Clones share the channel; it is closed when the last clone,
/// consumer and delivery of it are dropped, or by [`Channel::close`].
#[derive(Clone)]
pub struct Channel {
    inner: Arc<ChannelHandle>,
}

struct ChannelHandle {
    state: Arc<ChannelState>,
    handle: Handle,
}

impl Drop for ChannelHandle {
    fn drop(&mut self) {
        // Nobody can use the channel any more: close it so the broker requeues what it
        // delivered and frees what it holds. Fire and forget; the reader takes close-ok.
        {
            let mut inner = self.state.lock();
            if !matches!(inner.status, Status::Open) {
                return;
            }
            inner.status = Status::Closing;
        }
        let Ok(bytes) = encode(self.state.id, close_method(200, "OK")) else {
            return;
        };
        send_detached(&self.handle.out, bytes);
    }
}

/// Queue bytes from a `Drop`, which cannot await: right away if there is room, else
/// from a spawned task (if a runtime is around to run it).
fn send_detached(out: &mpsc::Sender<BytesMut>, bytes: BytesMut) {
    if let Err(mpsc::error::TrySendError::Full(bytes)) = out.try_send(bytes) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let out = out.clone();
            rt.spawn(async move {
                let _ = out.send(bytes).await;
            });
        }
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("id", &self.inner.state.id)
            .field("status", &self.inner.state.lock().status)
            .finish()
    }
}

fn encode(id: u16, method: AMQPClass) -> Result<BytesMut> {
    let mut buf = BytesMut::new();
    codec::encode_method(&mut buf, id, method)?;
    Ok(buf)
}

fn close_method(reply_code: u16, reply_text: &str) -> AMQPClass {
    AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
        reply_code,
        reply_text: reply_text.into(),
        class_id: 0,
        method_id: 0,
    }))
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

    /// Send a synchronous method and wait for its reply.
    async fn rpc(
        &self,
        method: AMQPClass,
        expect: Expect,
        consumer: Option<ConsumerSlot>,
    ) -> Result<Reply> {
        self.rpc_then(method, expect, consumer, |_| {}).await
    }

    /// [`rpc`](Self::rpc), running `queued` under the channel lock as the frame is
    /// queued: for state that must change in wire order, not when the reply comes.
    async fn rpc_then(
        &self,
        method: AMQPClass,
        expect: Expect,
        consumer: Option<ConsumerSlot>,
        queued: impl FnOnce(&mut Inner),
    ) -> Result<Reply> {
        let bytes = encode(self.id(), method)?;
        let permit = self.inner.handle.reserve().await?;
        let (tx, rx) = oneshot::channel();
        {
            let mut inner = self.inner.state.lock();
            ChannelState::check_open(&inner)?;
            inner.pending.push_back(Pending {
                expect,
                reply: tx,
                consumer,
            });
            queued(&mut inner);
            permit.send(bytes);
        }
        self.await_reply(rx).await
    }

    async fn await_reply(&self, rx: oneshot::Receiver<Result<Reply>>) -> Result<Reply> {
        match rx.await {
            Ok(reply) => reply,
            Err(_) => Err(self
                .inner
                .state
                .error()
                .unwrap_or_else(|| self.inner.handle.error())),
        }
    }

    /// Send an asynchronous method (no reply) in order with everything else.
    async fn send(&self, method: AMQPClass) -> Result<()> {
        // Acks come through here once a message: a spare buffer saves their allocation.
        let mut bytes = self.inner.handle.conn.spare.take(32);
        codec::encode_method(&mut bytes, self.id(), method)?;
        let permit = self.inner.handle.reserve().await?;
        let inner = self.inner.state.lock();
        ChannelState::check_open(&inner)?;
        permit.send(bytes);
        Ok(())
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
        match self.await_reply(rx).await {
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
        self.rpc(
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
        self.rpc(
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
        self.rpc(
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
        self.rpc(
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
            self.rpc(
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
        self.rpc(
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
        self.rpc(
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
            self.rpc(
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
            self.rpc(
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
        self.rpc(AMQPClass::Basic(basic::AMQPMethod::Qos(m)), QOS_OK, None)
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
            self.rpc(
                AMQPClass::Basic(basic::AMQPMethod::Consume(m)),
                CONSUME_OK,
                Some(slot),
            )
            .await?,
        )? {
            AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(ok)) => Ok(Consumer::new(
                ok.consumer_tag.to_string(),
                self.clone(),
                rx,
                end,
                options.no_ack,
            )),
            other => Err(wrong_reply(other)),
        }
    }

    /// Cancel a consumer; its stream ends after the deliveries already buffered.
    pub async fn basic_cancel(&self, consumer_tag: &str) -> Result<()> {
        let m = basic::Cancel {
            consumer_tag: short(consumer_tag)?,
            nowait: false,
        };
        self.rpc(
            AMQPClass::Basic(basic::AMQPMethod::Cancel(m)),
            CANCEL_OK,
            None,
        )
        .await
        .map(drop)
    }

    /// Cancel without waiting, for `Drop` (no reply is sent, none is awaited).
    pub(crate) fn cancel_nowait(&self, consumer_tag: &str) {
        if !self.is_open() {
            return;
        }
        let Ok(tag) = short(consumer_tag) else { return };
        let m = AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
            consumer_tag: tag,
            nowait: true,
        }));
        if let Ok(bytes) = encode(self.id(), m) {
            send_detached(&self.inner.handle.out, bytes);
        }
    }

    /// Requeue a delivery from a `Drop` (which cannot await).
    pub(crate) fn reject_nowait(&self, delivery_tag: u64) {
        if !self.is_open() {
            return;
        }
        let m = AMQPClass::Basic(basic::AMQPMethod::Reject(basic::Reject {
            delivery_tag,
            requeue: true,
        }));
        if let Ok(bytes) = encode(self.id(), m) {
            send_detached(&self.inner.handle.out, bytes);
        }
    }

    /// Fetch one message from `queue`, or `None` if it is empty.
    pub async fn basic_get(&self, queue: &str, no_ack: bool) -> Result<Option<GetMessage>> {
        let m = basic::Get {
            queue: short(queue)?,
            no_ack,
        };
        match self
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
                        channel: self.clone(),
                        no_ack,
                    },
                }))
            }
            Reply::Method(other) => Err(wrong_reply(other)),
        }
    }

    /// Acknowledge `delivery_tag` (and all before it with `multiple`).
    pub async fn basic_ack(&self, delivery_tag: u64, multiple: bool) -> Result<()> {
        self.send(AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
            delivery_tag,
            multiple,
        })))
        .await
    }

    /// Negatively acknowledge `delivery_tag` (and all before it with `multiple`).
    pub async fn basic_nack(&self, delivery_tag: u64, multiple: bool, requeue: bool) -> Result<()> {
        self.send(AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
            delivery_tag,
            multiple,
            requeue,
        })))
        .await
    }

    /// Reject one delivery.
    pub async fn basic_reject(&self, delivery_tag: u64, requeue: bool) -> Result<()> {
        self.send(AMQPClass::Basic(basic::AMQPMethod::Reject(basic::Reject {
            delivery_tag,
            requeue,
        })))
        .await
    }

    /// Redeliver every unacknowledged message of the channel (`requeue`: to any
    /// consumer, as RabbitMQ requires).
    pub async fn basic_recover(&self, requeue: bool) -> Result<()> {
        self.rpc(
            AMQPClass::Basic(basic::AMQPMethod::Recover(basic::Recover { requeue })),
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
            self.rpc(
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
        self.rpc_then(
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
        self.rpc(
            AMQPClass::Tx(tx::AMQPMethod::Select(tx::Select {})),
            TX_SELECT_OK,
            None,
        )
        .await
        .map(drop)
    }

    /// Commit the current transaction.
    pub async fn tx_commit(&self) -> Result<()> {
        self.rpc(
            AMQPClass::Tx(tx::AMQPMethod::Commit(tx::Commit {})),
            TX_COMMIT_OK,
            None,
        )
        .await
        .map(drop)
    }

    /// Roll the current transaction back.
    pub async fn tx_rollback(&self) -> Result<()> {
        self.rpc(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(state: &ChannelState, n: u64) -> Vec<oneshot::Receiver<Result<Confirmation>>> {
        let mut inner = state.lock();
        let confirms = inner.confirms.get_or_insert(Confirms {
            next: 1,
            ..Default::default()
        });
        (0..n)
            .map(|_| {
                let (tx, rx) = oneshot::channel();
                confirms.waiting.insert(confirms.next, tx);
                confirms.next += 1;
                rx
            })
            .collect()
    }

    #[test]
    fn confirms_single_multiple_and_everything() {
        let state = ChannelState::new(1);
        let mut rx = waiting(&state, 6);
        state.confirm(2, false, Confirmation::Nack);
        state.confirm(3, true, Confirmation::Ack);
        assert_eq!(rx[0].try_recv().unwrap().unwrap(), Confirmation::Ack);
        assert_eq!(rx[1].try_recv().unwrap().unwrap(), Confirmation::Nack);
        assert_eq!(rx[2].try_recv().unwrap().unwrap(), Confirmation::Ack);
        assert!(rx[3].try_recv().is_err(), "4 is not confirmed yet");
        // multiple with tag 0: everything outstanding.
        state.confirm(0, true, Confirmation::Ack);
        for r in &mut rx[3..] {
            assert_eq!(r.try_recv().unwrap().unwrap(), Confirmation::Ack);
        }
    }

    #[test]
    fn finish_fails_outstanding_confirms_and_calls() {
        let state = ChannelState::new(1);
        let mut rx = waiting(&state, 2);
        let (tx, mut call) = oneshot::channel();
        state.lock().pending.push_back(Pending {
            expect: QOS_OK,
            reply: tx,
            consumer: None,
        });
        let reason = crate::CloseReason {
            reply_code: 406,
            reply_text: "PRECONDITION_FAILED - test".into(),
            class_id: 60,
            method_id: 40,
        };
        state.finish(Error::ChannelClosed(reason.clone()));
        for r in &mut rx {
            assert_eq!(
                r.try_recv().unwrap().unwrap_err().close_reason(),
                Some(&reason)
            );
        }
        assert!(call.try_recv().unwrap().is_err());
        // Later use reports the same error.
        assert_eq!(state.error().unwrap().close_reason(), Some(&reason));
    }

    #[test]
    fn a_reply_that_does_not_match_the_oldest_call_is_a_protocol_error() {
        let state = ChannelState::new(1);
        let (tx, mut call) = oneshot::channel();
        state.lock().pending.push_back(Pending {
            expect: QOS_OK,
            reply: tx,
            consumer: None,
        });
        let wrong = AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {}));
        assert_eq!(
            state.reply(Reply::Method(wrong)).unwrap_err().reply_code(),
            Some(505)
        );
        assert!(call.try_recv().unwrap().is_err());
        let unsolicited = AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {}));
        assert!(state.reply(Reply::Method(unsolicited)).is_err());
    }
}
