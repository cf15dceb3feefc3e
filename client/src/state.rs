//! The state a connection shares between its task (`io`) and its handles (`Connection`,
//! `Channel`, consumers, ackers): below both, so that neither imports the other.
//!
//! `ConnState` and `ChannelState` are what the connection task updates as frames
//! arrive (replies, deliveries, confirms, closes); `Handle` and `ChannelHandle` are
//! the handles' way to the socket. Locks here are std mutexes, never held across an
//! `.await`.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{atomic::AtomicBool, Arc, Mutex, MutexGuard},
    time::Duration,
};

use amq_protocol::{
    protocol::{basic, channel, AMQPClass},
    types::FieldTable,
};
use bytes::BytesMut;
use rustc_hash::FxHashMap;
use tokio::sync::{mpsc, oneshot, watch};

use crate::{
    codec::{self, short},
    confirm::{Confirmation, ReturnedMessage},
    content::Content,
    error::{Error, Result},
};

/// How many encoded messages (a method, or a whole publish) may wait for the socket.
/// A full queue makes publishers wait: back-pressure instead of unbounded memory.
pub(crate) const OUTGOING_QUEUE: usize = 256;

/// What tune settled on, plus what the broker said about itself.
#[derive(Debug)]
pub(crate) struct Tuned {
    pub(crate) channel_max: u16,
    pub(crate) frame_max: u32,
    pub(crate) heartbeat: u16,
    pub(crate) server_properties: FieldTable,
}

/// State shared by the connection task and every handle.
#[derive(Debug)]
pub(crate) struct ConnState {
    pub(crate) tuned: Tuned,
    /// Open channels by id. A std mutex: it is only held to look up, insert or remove.
    /// Looked up for every frame the broker sends: Fx, not SipHash.
    pub(crate) channels: Mutex<FxHashMap<u16, Arc<ChannelState>>>,
    /// `None` while open; the reason once closed. A watch so that any number of tasks
    /// can await the close.
    pub(crate) closed: watch::Sender<Option<Error>>,
    /// Set by `connection.blocked` / `connection.unblocked`; publishers wait while true.
    pub(crate) blocked: watch::Sender<bool>,
    /// Set once `close()` was called, so that no channel opens after it.
    pub(crate) closing: AtomicBool,
    /// How long `close()` waits for close-ok before dropping the socket anyway.
    pub(crate) close_timeout: Duration,
    /// To drop the socket when the broker never answers a close. A std mutex: set once.
    pub(crate) task: Mutex<Option<tokio::task::AbortHandle>>,
    /// Buffers the connection task has written, for publishes to encode into again.
    pub(crate) spare: BufPool,
}

/// Written buffers kept for reuse: a publish then neither allocates its buffer nor
/// has the connection task free it (together a few hundred instructions a message,
/// against two short uncontended locks). Only small buffers are kept, where the
/// allocation weighs against the copy, and at most 256 KiB of them.
#[derive(Debug, Default)]
pub(crate) struct BufPool(Mutex<Vec<BytesMut>>);

/// Buffers kept at most: as many as the outgoing queue holds, else a full queue
/// drained by the writer leaves publishers allocating again (measured: 64 saved
/// nothing).
const SPARE_BUFFERS: usize = OUTGOING_QUEUE;
/// Larger buffers are freed rather than kept.
const SPARE_CAPACITY: usize = 1024;

impl BufPool {
    fn lock(&self) -> MutexGuard<'_, Vec<BytesMut>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An empty buffer with room for at least `capacity` bytes.
    pub(crate) fn take(&self, capacity: usize) -> BytesMut {
        match self.lock().pop() {
            Some(mut buf) => {
                buf.reserve(capacity);
                buf
            }
            None => BytesMut::with_capacity(capacity),
        }
    }

    /// Hands back a buffer whose bytes were written.
    pub(crate) fn give(&self, mut buf: BytesMut) {
        if buf.capacity() > SPARE_CAPACITY {
            return;
        }
        buf.clear();
        let mut spare = self.lock();
        if spare.len() < SPARE_BUFFERS {
            spare.push(buf);
        }
    }
}

impl ConnState {
    pub(crate) fn channels(&self) -> MutexGuard<'_, FxHashMap<u16, Arc<ChannelState>>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record why the connection ended and fail every channel with it.
    pub(crate) fn finish(&self, err: Error) {
        self.closed.send_if_modified(|c| {
            if c.is_none() {
                *c = Some(err.clone());
                true
            } else {
                false
            }
        });
        let channels: Vec<_> = self.channels().drain().map(|(_, c)| c).collect();
        for channel in channels {
            channel.finish(err.clone());
        }
    }
}

/// A cheap clone held by every channel, consumer and delivery: the way to the socket.
///
/// The connection task ends (after a polite `connection.close`) when the last handle is
/// dropped, because the outgoing queue then has no sender left.
#[derive(Clone, Debug)]
pub(crate) struct Handle {
    /// Encoded frames to write, as the handles built them: a `BytesMut` goes
    /// through as it is, where freezing it would allocate (its capacity is rarely
    /// its length).
    pub(crate) out: mpsc::Sender<BytesMut>,
    pub(crate) conn: Arc<ConnState>,
}

impl Handle {
    /// Why the connection is unusable (called after a send found it closed).
    pub(crate) fn error(&self) -> Error {
        self.conn
            .closed
            .borrow()
            .clone()
            .unwrap_or(Error::ConnectionClosedByClient)
    }

    /// A slot in the outgoing queue. Taking the slot before touching channel state lets
    /// callers assign sequence numbers and queue frames under one lock, in one order.
    pub(crate) async fn reserve(&self) -> Result<mpsc::Permit<'_, BytesMut>> {
        // Tried first because there usually is room, and then `try_reserve` is much
        // cheaper than the `reserve` future (a semaphore acquire with its wait node,
        // polled once). It takes no slot a waiting sender was promised: freed slots
        // go to waiters before anyone else can take them.
        match self.out.try_reserve() {
            Ok(permit) => Ok(permit),
            Err(mpsc::error::TrySendError::Full(())) => {
                self.out.reserve().await.map_err(|_| self.error())
            }
            Err(mpsc::error::TrySendError::Closed(())) => Err(self.error()),
        }
    }

    /// Wait while the broker has blocked publishing on this connection.
    pub(crate) async fn wait_unblocked(&self) -> Result<()> {
        if !*self.conn.blocked.borrow() {
            return Ok(());
        }
        let mut blocked = self.conn.blocked.subscribe();
        let mut closed = self.conn.closed.subscribe();
        tokio::select! {
            r = blocked.wait_for(|b| !*b) => r.map(|_| ()).map_err(|_| self.error()),
            _ = closed.wait_for(|c| c.is_some()) => Err(self.error()),
        }
    }
}

/// (class id, method id) pairs a pending call accepts as its reply.
pub(crate) type Expect = &'static [(u16, u16)];
pub(crate) const OPEN_OK: Expect = &[(20, 11)];
pub(crate) const FLOW_OK: Expect = &[(20, 21)];
pub(crate) const CLOSE_OK: Expect = &[(20, 41)];
pub(crate) const EXCHANGE_DECLARE_OK: Expect = &[(40, 11)];
pub(crate) const EXCHANGE_DELETE_OK: Expect = &[(40, 21)];
pub(crate) const EXCHANGE_BIND_OK: Expect = &[(40, 31)];
pub(crate) const EXCHANGE_UNBIND_OK: Expect = &[(40, 51)];
pub(crate) const QUEUE_DECLARE_OK: Expect = &[(50, 11)];
pub(crate) const QUEUE_BIND_OK: Expect = &[(50, 21)];
pub(crate) const QUEUE_PURGE_OK: Expect = &[(50, 31)];
pub(crate) const QUEUE_DELETE_OK: Expect = &[(50, 41)];
pub(crate) const QUEUE_UNBIND_OK: Expect = &[(50, 51)];
pub(crate) const QOS_OK: Expect = &[(60, 11)];
pub(crate) const CONSUME_OK: Expect = &[(60, 21)];
pub(crate) const CANCEL_OK: Expect = &[(60, 31)];
pub(crate) const GET_OK_OR_EMPTY: Expect = &[(60, 71), (60, 72)];
pub(crate) const RECOVER_OK: Expect = &[(60, 111)];
pub(crate) const CONFIRM_SELECT_OK: Expect = &[(85, 11)];
pub(crate) const TX_SELECT_OK: Expect = &[(90, 11)];
pub(crate) const TX_COMMIT_OK: Expect = &[(90, 21)];
pub(crate) const TX_ROLLBACK_OK: Expect = &[(90, 31)];

/// What a pending call receives.
#[derive(Debug)]
pub(crate) enum Reply {
    Method(AMQPClass),
    /// `basic.get`: the message, or `None` for get-empty.
    Get(Option<Box<Content>>),
}

#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) expect: Expect,
    pub(crate) reply: oneshot::Sender<Result<Reply>>,
    /// For `basic.consume`: registered under the tag the consume-ok carries, before any
    /// delivery for it can be read.
    pub(crate) consumer: Option<ConsumerSlot>,
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
pub(crate) enum Status {
    Open,
    /// `channel.close` sent, `close-ok` awaited.
    Closing,
    Closed(Error),
}

#[derive(Debug, Default)]
pub(crate) struct Confirms {
    /// Sequence number of the next publish (the broker numbers them from 1).
    pub(crate) next: u64,
    pub(crate) waiting: BTreeMap<u64, oneshot::Sender<Result<Confirmation>>>,
    /// `wait_for_confirms` callers, told when `waiting` empties.
    pub(crate) idle: Vec<oneshot::Sender<()>>,
    /// A nack arrived since `wait_for_confirms` last reported.
    pub(crate) nacked: bool,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) status: Status,
    pub(crate) pending: VecDeque<Pending>,
    /// Looked up for every delivery: Fx, not SipHash (the keys are consumer tags).
    /// Bytes, not `String`s: a delivery's tag is looked up as it sits in its frame.
    pub(crate) consumers: FxHashMap<Box<[u8]>, ConsumerSlot>,
    pub(crate) confirms: Option<Confirms>,
    pub(crate) returns: Option<mpsc::Sender<ReturnedMessage>>,
    /// Last prefetch count set with basic.qos: sizes new consumers' buffers.
    pub(crate) prefetch: u16,
}

/// Per-channel state shared by the connection task and the channel's handles.
#[derive(Debug)]
pub(crate) struct ChannelState {
    pub(crate) id: u16,
    /// A std mutex: never held across an await.
    pub(crate) inner: Mutex<Inner>,
    /// `channel.flow` from the broker; publishers wait while it is false.
    pub(crate) flow: watch::Sender<bool>,
}

impl ChannelState {
    pub(crate) fn new(id: u16) -> Self {
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

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn check_open(inner: &Inner) -> Result<()> {
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

pub(crate) struct ChannelHandle {
    pub(crate) state: Arc<ChannelState>,
    pub(crate) handle: Handle,
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

impl ChannelHandle {
    /// Send a synchronous method and wait for its reply.
    pub(crate) async fn rpc(
        &self,
        method: AMQPClass,
        expect: Expect,
        consumer: Option<ConsumerSlot>,
    ) -> Result<Reply> {
        self.rpc_then(method, expect, consumer, |_| {}).await
    }

    /// [`rpc`](Self::rpc), running `queued` under the channel lock as the frame is
    /// queued: for state that must change in wire order, not when the reply comes.
    pub(crate) async fn rpc_then(
        &self,
        method: AMQPClass,
        expect: Expect,
        consumer: Option<ConsumerSlot>,
        queued: impl FnOnce(&mut Inner),
    ) -> Result<Reply> {
        let bytes = encode(self.state.id, method)?;
        let permit = self.handle.reserve().await?;
        let (tx, rx) = oneshot::channel();
        {
            let mut inner = self.state.lock();
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

    pub(crate) async fn await_reply(&self, rx: oneshot::Receiver<Result<Reply>>) -> Result<Reply> {
        match rx.await {
            Ok(reply) => reply,
            Err(_) => Err(self.state.error().unwrap_or_else(|| self.handle.error())),
        }
    }

    /// Send an asynchronous method (no reply) in order with everything else.
    pub(crate) async fn send(&self, method: AMQPClass) -> Result<()> {
        // Acks come through here once a message: a spare buffer saves their allocation.
        let mut bytes = self.handle.conn.spare.take(32);
        codec::encode_method(&mut bytes, self.state.id, method)?;
        let permit = self.handle.reserve().await?;
        let inner = self.state.lock();
        ChannelState::check_open(&inner)?;
        permit.send(bytes);
        Ok(())
    }

    /// `basic.cancel`, waiting for cancel-ok.
    pub(crate) async fn cancel(&self, consumer_tag: &str) -> Result<()> {
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
        if !matches!(self.state.lock().status, Status::Open) {
            return;
        }
        let Ok(tag) = short(consumer_tag) else { return };
        let m = AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
            consumer_tag: tag,
            nowait: true,
        }));
        if let Ok(bytes) = encode(self.state.id, m) {
            send_detached(&self.handle.out, bytes);
        }
    }

    /// Requeue a delivery from a `Drop` (which cannot await).
    pub(crate) fn reject_nowait(&self, delivery_tag: u64) {
        if !matches!(self.state.lock().status, Status::Open) {
            return;
        }
        let m = AMQPClass::Basic(basic::AMQPMethod::Reject(basic::Reject {
            delivery_tag,
            requeue: true,
        }));
        if let Ok(bytes) = encode(self.state.id, m) {
            send_detached(&self.handle.out, bytes);
        }
    }
}

/// Queue bytes from a `Drop`, which cannot await: right away if there is room, else
/// from a spawned task (if a runtime is around to run it).
pub(crate) fn send_detached(out: &mpsc::Sender<BytesMut>, bytes: BytesMut) {
    if let Err(mpsc::error::TrySendError::Full(bytes)) = out.try_send(bytes) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let out = out.clone();
            rt.spawn(async move {
                let _ = out.send(bytes).await;
            });
        }
    }
}

pub(crate) fn encode(id: u16, method: AMQPClass) -> Result<BytesMut> {
    let mut buf = BytesMut::new();
    codec::encode_method(&mut buf, id, method)?;
    Ok(buf)
}

pub(crate) fn close_method(reply_code: u16, reply_text: &str) -> AMQPClass {
    AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
        reply_code,
        reply_text: reply_text.into(),
        class_id: 0,
        method_id: 0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::tx;

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

    #[test]
    fn spare_buffers_come_back_empty_and_bounded() {
        let pool = BufPool::default();
        let mut buf = pool.take(100);
        buf.extend_from_slice(b"written");
        pool.give(buf);
        let again = pool.take(10);
        assert!(again.is_empty());
        assert!(again.capacity() >= 100, "the same buffer, reused");
        pool.give(BytesMut::with_capacity(SPARE_CAPACITY + 1));
        assert!(pool.lock().is_empty(), "large buffers are freed");
        for _ in 0..SPARE_BUFFERS + 10 {
            pool.give(BytesMut::with_capacity(64));
        }
        assert_eq!(pool.lock().len(), SPARE_BUFFERS);
        assert!(pool.take(5000).capacity() >= 5000);
    }
}
