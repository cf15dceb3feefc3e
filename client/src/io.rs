//! The connection task: the one owner of the socket, reading and writing concurrently.
//!
//! The writer drains the outgoing queue (fed by every handle) and sends heartbeats when
//! idle. The reader decodes frames, reassembles content and routes each frame to its
//! channel's state: RPC replies, deliveries, confirms, returns, closes. When either
//! side ends, the connection's close reason is recorded and every channel fails with it.
//!
//! Back-pressure: a delivery is handed to its consumer through a bounded queue, and the
//! reader waits when that queue is full. The socket is then not read, so the broker
//! stops sending (TCP flow control) instead of this client buffering without bound.
//! With a prefetch set, the queue is sized to it and the wait never happens.

use std::{sync::Arc, time::Duration};

use amq_protocol::protocol::{basic, channel, connection, AMQPClass};
use bytes::BytesMut;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter},
    sync::mpsc,
    time::Instant,
};

use crate::{
    codec::{self, DeliverArgs, Frame},
    confirm::{Confirmation, ReturnedMessage},
    content::{Assembly, Content, ContentMethod},
    error::{close_reason, CloseReason, Error},
    state::{BufPool, ChannelState, ConnState, ConsumerSlot, Offer, Reply},
};

/// What the reader asks the writer to do: answer the broker, or stop.
#[derive(Debug)]
enum Internal {
    Frame(BytesMut),
    Shutdown,
}

/// Run a connection until it closes; spawned once per connection.
pub(crate) async fn run<S>(
    stream: S,
    input: BytesMut,
    conn: Arc<ConnState>,
    mut out_rx: mpsc::Receiver<BytesMut>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (rd, wr) = tokio::io::split(stream);
    // Unbounded, but only the reader feeds it and only with short replies (close-ok,
    // flow-ok, rejects of deliveries nobody wants), at most one per frame read.
    let (internal_tx, mut internal_rx) = mpsc::unbounded_channel();
    let heartbeat = conn.tuned.heartbeat;
    let reader = Reader {
        conn: conn.clone(),
        internal: internal_tx.clone(),
        assemblies: Vec::new(),
        last_delivery: None,
    }
    .run(rd, input);
    // The queues are borrowed, not moved, so they outlive the writer future: handles
    // must see the close reason recorded before their sends start failing.
    let writer = write_loop(wr, &mut out_rx, &mut internal_rx, heartbeat, &conn.spare);
    tokio::pin!(reader, writer);
    let err = tokio::select! {
        err = &mut reader => {
            // Let the writer flush what the reader queued last (a close-ok, or a close
            // explaining a protocol error) before the socket goes.
            let _ = internal_tx.send(Internal::Shutdown);
            let _ = tokio::time::timeout(Duration::from_secs(1), &mut writer).await;
            err
        }
        err = &mut writer => err,
    };
    match &err {
        Error::ConnectionClosedByClient => tracing::debug!("connection closed"),
        err => tracing::debug!(%err, "connection ended"),
    }
    conn.finish(err);
}

async fn write_loop<W: AsyncWrite + Unpin>(
    wr: W,
    out_rx: &mut mpsc::Receiver<BytesMut>,
    internal_rx: &mut mpsc::UnboundedReceiver<Internal>,
    heartbeat: u16,
    spare: &BufPool,
) -> Error {
    let mut wr = BufWriter::with_capacity(64 * 1024, wr);
    // Send a heartbeat after half the interval without writing anything.
    let idle = (heartbeat > 0).then(|| Duration::from_millis(u64::from(heartbeat) * 500));
    let mut last_write = Instant::now();
    let mut handles_alive = true;
    loop {
        let next_heartbeat = last_write + idle.unwrap_or(Duration::ZERO);
        let first = tokio::select! {
            biased;
            msg = internal_rx.recv() => match msg {
                Some(Internal::Frame(bytes)) => bytes,
                Some(Internal::Shutdown) | None => {
                    let _ = wr.flush().await;
                    return Error::ConnectionClosedByClient;
                }
            },
            msg = out_rx.recv(), if handles_alive => match msg {
                Some(bytes) => bytes,
                None => {
                    // Every handle is gone: nobody can use the connection any more.
                    handles_alive = false;
                    goodbye()
                }
            },
            _ = tokio::time::sleep_until(next_heartbeat), if idle.is_some() => {
                let mut buf = BytesMut::new();
                codec::encode_heartbeat(&mut buf);
                buf
            }
        };
        if let Err(e) = wr.write_all(&first).await {
            return e.into();
        }
        spare.give(first);
        // Write whatever else is already queued before one flush (one syscall for many
        // small publishes), but bound the batch so heartbeats are not starved.
        for _ in 0..256 {
            let next = match internal_rx.try_recv() {
                Ok(Internal::Frame(bytes)) => bytes,
                Ok(Internal::Shutdown) => {
                    let _ = wr.flush().await;
                    return Error::ConnectionClosedByClient;
                }
                Err(_) => match out_rx.try_recv() {
                    Ok(bytes) => bytes,
                    Err(_) => break,
                },
            };
            if let Err(e) = wr.write_all(&next).await {
                return e.into();
            }
            spare.give(next);
        }
        if let Err(e) = wr.flush().await {
            return e.into();
        }
        last_write = Instant::now();
    }
}

fn goodbye() -> BytesMut {
    let mut buf = BytesMut::new();
    let _ = codec::encode_method(
        &mut buf,
        0,
        AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: 200,
            reply_text: "OK".into(),
            class_id: 0,
            method_id: 0,
        })),
    );
    buf
}

fn unexpected_frame(message: String) -> Error {
    Error::Protocol { code: 505, message }
}

/// A message `handle` could not hand on because its queue is full.
enum Stall {
    Consumer {
        slot: ConsumerSlot,
        content: Content,
        channel: u16,
        delivery_tag: u64,
    },
    /// Boxed: a returned message holds its properties inline, and this is rare.
    Return(mpsc::Sender<ReturnedMessage>, Box<ReturnedMessage>),
}

struct Reader {
    conn: Arc<ConnState>,
    internal: mpsc::UnboundedSender<Internal>,
    /// Content being received, per channel. Owned by the reader alone: no lock. A
    /// short list rather than a map: rarely more than one channel is mid-message,
    /// and a message is looked up two or three times.
    assemblies: Vec<(u16, Assembly)>,
    /// The channel of the last delivery, as deliveries tend to come on one channel
    /// after another: spares a lock and a look-up in the connection's channel map
    /// per message. Only `deliver` uses it, and it checks it.
    last_delivery: Option<(u16, Arc<ChannelState>)>,
}

impl Reader {
    fn send(&self, channel: u16, method: AMQPClass) {
        let mut buf = BytesMut::new();
        if codec::encode_method(&mut buf, channel, method).is_ok() {
            let _ = self.internal.send(Internal::Frame(buf));
        }
    }

    /// Read and dispatch until the connection ends; returns why it ended.
    async fn run<R: AsyncRead + Unpin>(mut self, mut rd: R, mut buf: BytesMut) -> Error {
        let frame_max = self.conn.tuned.frame_max;
        let heartbeat = self.conn.tuned.heartbeat;
        // Two silent intervals mean the broker (or the path to it) is gone.
        let silence = Duration::from_secs(u64::from(heartbeat) * 2);
        loop {
            loop {
                let frame = match codec::decode(&mut buf, frame_max) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(err) => return self.violation(err),
                };
                match self.handle(frame) {
                    Ok(None) => {}
                    Ok(Some(stall)) => self.wait(stall).await,
                    Err(err @ Error::Protocol { .. }) => return self.violation(err),
                    Err(err) => return err,
                }
            }
            let read = if heartbeat > 0 {
                match tokio::time::timeout(silence, rd.read_buf(&mut buf)).await {
                    Ok(read) => read,
                    Err(_) => return Error::MissedHeartbeats,
                }
            } else {
                rd.read_buf(&mut buf).await
            };
            match read {
                Ok(0) => {
                    return Error::Io(Arc::new(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the broker closed the socket without connection.close",
                    )))
                }
                Ok(_) => {}
                Err(e) => return e.into(),
            }
        }
    }

    /// The broker broke the protocol: tell it why (best effort) and end.
    fn violation(&self, err: Error) -> Error {
        if let Error::Protocol { code, message } = &err {
            tracing::warn!(code, %message, "protocol violation by the broker");
            let text: String = message.chars().take(200).collect();
            self.send(
                0,
                AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                    reply_code: *code,
                    reply_text: text.as_str().into(),
                    class_id: 0,
                    method_id: 0,
                })),
            );
        }
        err
    }

    fn channel(&self, id: u16) -> Option<Arc<ChannelState>> {
        self.conn.channels().get(&id).cloned()
    }

    /// Dispatches one frame. Not async: a frame is handled without waiting except
    /// when a queue is full, and that rare wait is returned to be awaited by the
    /// caller, so the common path builds and moves no future around the frame.
    fn handle(&mut self, frame: Frame) -> Result<Option<Stall>, Error> {
        match frame {
            Frame::Heartbeat => Ok(None),
            Frame::Method(0, AMQPClass::Connection(method)) => {
                self.connection_method(method).map(|()| None)
            }
            Frame::Method(0, other) => Err(Error::Protocol {
                code: 503,
                message: format!("non-connection method on channel 0: {other:?}"),
            }),
            Frame::Method(id, method) => self.channel_method(id, method),
            Frame::Deliver(id, deliver) => {
                self.expect_method(id)?;
                // Content is tracked even for a channel that is gone, so that its header
                // and body frames are consumed in order; `complete` then drops it.
                self.assemblies.push((id, Assembly::deliver(deliver)));
                Ok(None)
            }
            Frame::Header(id, header) => {
                let at = self.assembly(id).ok_or_else(|| {
                    unexpected_frame(format!("content header without a method on channel {id}"))
                })?;
                if self.assemblies[at].1.header(header)? {
                    return self.complete(at);
                }
                Ok(None)
            }
            Frame::Body(id, body) => {
                let at = self.assembly(id).ok_or_else(|| {
                    unexpected_frame(format!("body frame without a method on channel {id}"))
                })?;
                if self.assemblies[at].1.body(body)? {
                    return self.complete(at);
                }
                Ok(None)
            }
        }
    }

    /// Waits for room in a full queue, then finishes what `handle` started.
    async fn wait(&self, stall: Stall) {
        match stall {
            Stall::Consumer {
                slot,
                content,
                channel,
                delivery_tag,
            } => {
                if !(slot.tx.send(content).await.is_ok() || slot.no_ack) {
                    self.requeue(channel, delivery_tag);
                }
            }
            Stall::Return(tx, returned) => {
                let _ = tx.send(*returned).await;
            }
        }
    }

    /// The consumer was dropped: give the message back to the queue now rather than
    /// leave it unacked until the channel closes.
    fn requeue(&self, channel: u16, delivery_tag: u64) {
        self.send(
            channel,
            AMQPClass::Basic(basic::AMQPMethod::Reject(basic::Reject {
                delivery_tag,
                requeue: true,
            })),
        );
    }

    fn connection_method(&mut self, method: connection::AMQPMethod) -> Result<(), Error> {
        match method {
            connection::AMQPMethod::Close(close) => {
                self.send(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
                );
                Err(Error::ConnectionClosed(close_reason(&close)))
            }
            connection::AMQPMethod::CloseOk(_) => Err(Error::ConnectionClosedByClient),
            connection::AMQPMethod::Blocked(blocked) => {
                tracing::info!(reason = %blocked.reason, "broker blocked publishing");
                self.conn.blocked.send_replace(true);
                Ok(())
            }
            connection::AMQPMethod::Unblocked(_) => {
                self.conn.blocked.send_replace(false);
                Ok(())
            }
            connection::AMQPMethod::UpdateSecretOk(_) => Ok(()),
            other => Err(Error::Protocol {
                code: 503,
                message: format!("unexpected connection method {other:?}"),
            }),
        }
    }

    /// A method frame may not interrupt content.
    fn expect_method(&self, id: u16) -> Result<(), Error> {
        match self.assembly(id) {
            Some(_) => Err(unexpected_frame(format!(
                "method frame on channel {id} while content was expected"
            ))),
            None => Ok(()),
        }
    }

    fn channel_method(&mut self, id: u16, method: AMQPClass) -> Result<Option<Stall>, Error> {
        self.expect_method(id)?;
        // Content is tracked even for a channel that is gone, so that its header and
        // body frames are consumed in order; `complete` then drops the message.
        let method = match method {
            AMQPClass::Basic(basic::AMQPMethod::GetOk(m)) => {
                self.assemblies
                    .push((id, Assembly::new(ContentMethod::GetOk(m))));
                return Ok(None);
            }
            AMQPClass::Basic(basic::AMQPMethod::Return(m)) => {
                self.assemblies
                    .push((id, Assembly::new(ContentMethod::Return(Box::new(m)))));
                return Ok(None);
            }
            other => other,
        };
        let Some(state) = self.channel(id) else {
            // A late frame for a channel this client already finished: nothing waits
            // for it.
            tracing::debug!(channel = id, ?method, "frame for a closed channel dropped");
            return Ok(None);
        };
        self.channel_reply(id, &state, method).map(|()| None)
    }

    /// The channel is closed: out of the map, and out of the cache.
    fn forget_channel(&mut self, id: u16) {
        self.conn.channels().remove(&id);
        if self
            .last_delivery
            .as_ref()
            .is_some_and(|(last, _)| *last == id)
        {
            self.last_delivery = None;
        }
    }

    fn channel_reply(
        &mut self,
        id: u16,
        state: &ChannelState,
        method: AMQPClass,
    ) -> Result<(), Error> {
        match method {
            AMQPClass::Channel(channel::AMQPMethod::Close(close)) => {
                self.send(
                    id,
                    AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                );
                self.forget_channel(id);
                state.finish(Error::ChannelClosed(CloseReason {
                    reply_code: close.reply_code,
                    reply_text: close.reply_text.to_string(),
                    class_id: close.class_id,
                    method_id: close.method_id,
                }));
                Ok(())
            }
            AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => {
                self.forget_channel(id);
                state.finish(Error::ChannelClosedByClient);
                Ok(())
            }
            AMQPClass::Channel(channel::AMQPMethod::Flow(flow)) => {
                state.set_flow(flow.active);
                self.send(
                    id,
                    AMQPClass::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk {
                        active: flow.active,
                    })),
                );
                Ok(())
            }
            AMQPClass::Basic(basic::AMQPMethod::Ack(ack)) => {
                state.confirm(ack.delivery_tag, ack.multiple, Confirmation::Ack);
                Ok(())
            }
            AMQPClass::Basic(basic::AMQPMethod::Nack(nack)) => {
                state.confirm(nack.delivery_tag, nack.multiple, Confirmation::Nack);
                Ok(())
            }
            AMQPClass::Basic(basic::AMQPMethod::Cancel(cancel)) => {
                state.cancelled_by_broker(cancel.consumer_tag.as_str());
                if !cancel.nowait {
                    self.send(
                        id,
                        AMQPClass::Basic(basic::AMQPMethod::CancelOk(basic::CancelOk {
                            consumer_tag: cancel.consumer_tag,
                        })),
                    );
                }
                Ok(())
            }
            AMQPClass::Basic(basic::AMQPMethod::GetEmpty(_)) => state.reply(Reply::Get(None)),
            reply => state.reply(Reply::Method(reply)),
        }
    }

    /// Where the content being received on channel `id` is, if any.
    fn assembly(&self, id: u16) -> Option<usize> {
        self.assemblies.iter().position(|(ch, _)| *ch == id)
    }

    /// Offers a delivery to its consumer, through the channel of the last delivery
    /// when it is the same.
    fn deliver(
        &mut self,
        id: u16,
        tag: &[u8],
        delivery_tag: u64,
        content: Content,
    ) -> Option<Stall> {
        let offer = match &self.last_delivery {
            Some((last, state)) if *last == id => match state.offer(tag, content) {
                // The cached channel may have closed (from another task too, when its
                // open failed) and a new channel taken its id; a closed channel has no
                // consumers, so look again before giving up.
                Offer::Unknown(content) => self.offer_fresh(id, tag, content)?,
                offer => offer,
            },
            _ => self.offer_fresh(id, tag, content)?,
        };
        match offer {
            Offer::Delivered | Offer::Closed { no_ack: true } => None,
            Offer::Unknown(_) => {
                tracing::debug!(channel = id, "delivery for an unknown consumer dropped");
                None
            }
            Offer::Closed { no_ack: false } => {
                self.requeue(id, delivery_tag);
                None
            }
            // Waits while the consumer's queue is full: see the module docs.
            Offer::Full(slot, content) => Some(Stall::Consumer {
                slot,
                content,
                channel: id,
                delivery_tag,
            }),
        }
    }

    /// `deliver` through the connection's channel map, remembering the channel.
    fn offer_fresh(&mut self, id: u16, tag: &[u8], content: Content) -> Option<Offer> {
        let state = self.channel(id)?;
        let offer = state.offer(tag, content);
        self.last_delivery = Some((id, state));
        Some(offer)
    }

    /// Hands on the message finished at `at` in `assemblies`.
    fn complete(&mut self, at: usize) -> Result<Option<Stall>, Error> {
        let (id, assembly) = self.assemblies.swap_remove(at);
        let (content, consumer_tag) = assembly.finish();
        if let ContentMethod::Deliver(DeliverArgs { delivery_tag, .. }) = content.method {
            return Ok(self.deliver(id, &consumer_tag, delivery_tag, content));
        }
        let Some(state) = self.channel(id) else {
            return Ok(None);
        };
        match content.method {
            ContentMethod::GetOk(_) => state
                .reply(Reply::Get(Some(Box::new(content))))
                .map(|()| None),
            ContentMethod::Deliver(_) => Ok(None),
            ContentMethod::Return(ret) => {
                let returned = ReturnedMessage {
                    reply_code: ret.reply_code,
                    reply_text: ret.reply_text.to_string(),
                    exchange: ret.exchange.to_string(),
                    routing_key: ret.routing_key.to_string(),
                    properties: Content::take_properties(content.properties),
                    body: content.body,
                };
                match state.returns_sender() {
                    Some(tx) => match tx.try_send(returned) {
                        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => Ok(None),
                        Err(mpsc::error::TrySendError::Full(returned)) => {
                            Ok(Some(Stall::Return(tx, Box::new(returned))))
                        }
                    },
                    None => {
                        tracing::warn!(
                            channel = id,
                            reply_code = returned.reply_code,
                            "returned message dropped: nobody called Channel::returns()"
                        );
                        Ok(None)
                    }
                }
            }
        }
    }
}
