//! One client connection's protocol state machine, free of I/O: fed the bytes a
//! client sent, it answers by appending frames to the connection's outbox, and tells
//! the I/O driver when the socket should close.
//!
//! Every protocol error passes through [`Connection::fail`], which turns it into the
//! right `channel.close` or `connection.close`.

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;
use std::time::Instant;

use amq_protocol::protocol::{channel, connection, AMQPClass};
use bytes::{Bytes, BytesMut};

use crate::auth::{self, Grant};
use crate::codec::{self, Frame};
use crate::commands::ConnInfo;
use crate::error::{code, AmqpError, Scope};
use crate::outbox::Outbox;
use crate::shared::Shared;
use crate::trace::Direction;
use crate::vhost::{ConnId, Message, Route, RouteCache, Targets, Vhost};
use content::{Content, Pending};
use timers::Timers;

mod confirms;
mod content;
mod handshake;
mod methods;
mod timers;
mod transaction;

/// What the I/O driver should do after feeding input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Continue,
    /// Flush the outbox, then close the socket.
    Close,
    /// A timer ran out: flush what the socket takes within the close timeout and
    /// close it, without waiting for the client to hang up.
    TimedOut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the 8-byte protocol header.
    Header,
    StartOk,
    TuneOk,
    Open,
    Opened,
    /// A `connection.close` went one way or the other: every further
    /// `connection.close` gets a `close-ok`, a `close-ok` ends the connection, and
    /// everything else is ignored, until the client hangs up or the close timeout
    /// passes. RabbitMQ's reader in its `closed` state (rabbit_reader.erl:1257-1268,
    /// 1307): it never ends the socket under a client that has yet to read its
    /// `close-ok`.
    Closing,
    Closed,
}

/// What the broker remembers of a publish made inside a transaction.
#[derive(Debug)]
enum TxOp {
    Publish {
        targets: Targets,
        mandatory: bool,
        msg: Box<Message>,
    },
    Settle {
        tag: u64,
        multiple: bool,
        requeue: Option<bool>,
        /// A `basic.reject` (4.3 counts it toward the delivery limit).
        failed: bool,
    },
}

/// A confirming channel's publishes that are not acknowledged yet.
#[derive(Debug, Default)]
struct Confirms {
    /// Sequence number of the last publish.
    last: u64,
    /// In publish order.
    pending: VecDeque<PendingConfirm>,
}

/// The LSN of a confirm a fault withholds: it never becomes due.
const WITHHELD: u64 = u64::MAX;

/// One publish waiting for its confirm.
#[derive(Debug, Clone, Copy)]
struct PendingConfirm {
    seq: u64,
    /// The store LSN it waits for; 0 when it waits for nothing.
    lsn: u64,
    /// A full queue refused it: the answer is a nack.
    nack: bool,
}

/// A `tx.commit` whose persistent messages are not on disk yet: commit-ok
/// waits for them, as in RabbitMQ, where it means the transaction is durable.
#[derive(Debug)]
struct Committing {
    /// The store LSN that must be durable before commit-ok.
    lsn: u64,
    /// The transaction's acks, nacks and rejects, applied after commit-ok so
    /// that the redeliveries they cause follow it.
    settles: Vec<TxOp>,
    /// Frames the client sent on the channel meanwhile, handled once commit-ok
    /// is out, so that nothing the channel answers overtakes it.
    held: VecDeque<Frame>,
}

#[derive(Debug)]
struct ChannelProto {
    /// The broker sent `channel.close`, or answered the client's: RabbitMQ's
    /// channel process in its `closing` state (rabbit_channel.erl:1237-1247)
    /// answers `close` with `close-ok`, ends on `close-ok`, refuses a second
    /// `open`, and drops every other method.
    closing: bool,
    /// The client's `channel.close` was answered: the channel is forgotten once
    /// the read that brought the close is handled. RabbitMQ's reader hands the
    /// rest of a read to the closing channel process, and frees the channel
    /// number only when it next looks at its mailbox (rabbit_reader.erl:468-471,
    /// 560-563; rabbit_channel.erl:1249-1261).
    answered: bool,
    content: Content,
    /// Publisher confirms, once `confirm.select` was seen.
    confirm: Option<Confirms>,
    /// `tx.select` was seen; publishes and acks wait for `tx.commit`.
    tx: Option<Vec<TxOp>>,
    /// A commit waiting for the disk.
    committing: Option<Committing>,
    /// The last queue declared on the channel, for methods that name queue "".
    last_queue: Option<String>,
}

impl ChannelProto {
    fn new() -> Self {
        Self {
            closing: false,
            answered: false,
            content: Content::Idle,
            confirm: None,
            tx: None,
            committing: None,
            last_queue: None,
        }
    }
}

/// The protocol state of one connection.
#[derive(Debug)]
pub struct Connection {
    id: ConnId,
    shared: Arc<Shared>,
    outbox: Arc<Outbox>,
    /// What the broker and tests see of this connection (trace, vhost, commands).
    info: Arc<ConnInfo>,
    phase: Phase,
    channel_max: u16,
    frame_max: u32,
    heartbeat: u16,
    vhost: Option<Arc<Vhost>>,
    /// Who logged in (set at `start-ok`) and the vhost's name (at `open`).
    user: Option<auth::User>,
    vhost_name: String,
    /// The user's permissions in the vhost, as of `grant_generation` of the
    /// broker's users; `None`: no access.
    grant: Option<Arc<Grant>>,
    grant_generation: u64,
    channels: HashMap<u16, ChannelProto>,
    /// Channels whose client close was answered in the read being handled.
    answered: Vec<u16>,
    /// Capabilities the client announced in `connection.start-ok`.
    cancel_notify: bool,
    auth_failure_close: bool,
    blocked_notify: bool,
    /// The client has published: it is the kind of connection a memory alarm blocks.
    published: bool,
    /// What the client was last told: `connection.blocked` (true) or `unblocked`.
    told_blocked: bool,
    /// Exchange and routing key of the last publish, shared by the messages that
    /// repeat them.
    routes: RouteCache,
    /// Frames decoded so far: how the I/O task tells a streaming peer from a
    /// request/response one (see `pacing`).
    frames_in: u64,
    /// A frame could not be delimited (announced over frame_max, or a wrong end
    /// octet): where the next one starts is unknown, so nothing more is read and
    /// the close timeout ends the socket. RabbitMQ's `fatal_frame_error` reads
    /// nothing more either ("we've lost sync with the client"): it sends its close,
    /// sleeps 3 s and ends the connection (rabbit_reader.erl:857-864 at v3.10.8).
    lost_sync: bool,
    timers: Timers,
}

fn method(ch: u16, m: AMQPClass) -> impl FnOnce(&mut BytesMut) {
    move |out| codec::put_method(out, ch, m)
}

impl Connection {
    /// A connection whose socket was accepted at `now`.
    pub fn new(shared: Arc<Shared>, info: Arc<ConnInfo>, now: Instant) -> Self {
        // Until tune-ok, RabbitMQ's initial_frame_max: FRAME_MIN_SIZE
        // (rabbit_reader.erl:311 at v3.10.8, :300 at v4.1.8).
        let frame_max = shared.config.profile.frame_min_size();
        Self {
            id: info.id,
            shared,
            outbox: info.outbox.clone(),
            info,
            phase: Phase::Header,
            channel_max: 0,
            frame_max,
            heartbeat: 0,
            vhost: None,
            user: None,
            vhost_name: String::new(),
            grant: None,
            grant_generation: 0,
            channels: HashMap::default(),
            answered: Vec::new(),
            frames_in: 0,
            lost_sync: false,
            cancel_notify: false,
            auth_failure_close: false,
            blocked_notify: false,
            published: false,
            told_blocked: false,
            routes: RouteCache::default(),
            timers: Timers::new(now),
        }
    }

    /// The negotiated heartbeat interval in seconds; 0 when disabled or not yet tuned.
    pub fn heartbeat(&self) -> u16 {
        if matches!(self.phase, Phase::Open | Phase::Opened) {
            self.heartbeat
        } else {
            0
        }
    }

    pub fn is_open(&self) -> bool {
        self.phase == Phase::Opened
    }

    pub fn is_closing(&self) -> bool {
        self.phase == Phase::Closing
    }

    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Whether `ch` is open and not already closing: a close decided outside the
    /// protocol (a fault, a consumer timeout) may arrive after the client closed it.
    pub fn channel_is_open(&self, ch: u16) -> bool {
        self.channels.get(&ch).is_some_and(|c| !c.closing)
    }

    /// The vhost found a delivery on `ch` unacked past the consumer timeout.
    /// The command may arrive after the client closed that channel and opened
    /// another of the same number: only the channel the timeout fired for (the
    /// vhost still marks it) is closed.
    pub fn consumer_timed_out(&mut self, ch: u16, text: String) {
        let fired = self.channel_is_open(ch)
            && self
                .vhost
                .as_ref()
                .is_some_and(|v| v.lock().consumer_timed_out(self.id, ch));
        if fired {
            self.fail(ch, AmqpError::channel(code::PRECONDITION_FAILED, text));
        }
    }

    /// Consumes as many whole frames from `buf` as it holds, read at `now`.
    pub fn handle_input(&mut self, buf: &mut BytesMut, now: Instant) -> Outcome {
        self.timers.read_at(now);
        if self.lost_sync {
            buf.clear();
            return self.outcome();
        }
        if self.phase == Phase::Header && !self.handle_header(buf) {
            return self.outcome();
        }
        while !matches!(self.phase, Phase::Closed | Phase::Header) {
            // Once open, with frame_max settled, the complete frames leave the
            // buffer together.
            if self.phase == Phase::Opened {
                let frames = codec::split_frames(buf, self.frame_max);
                if !frames.is_empty() {
                    self.handle_frames(&frames);
                    continue;
                }
            }
            if let Err(e) = codec::frame_len(buf, self.frame_max) {
                self.lose_sync(e, buf);
                break;
            }
            let Some(frame) = codec::decode(buf, self.frame_max).transpose() else {
                break;
            };
            self.on_decoded(frame);
        }
        for ch in self.answered.drain(..) {
            if self.channels.get(&ch).is_some_and(|c| c.answered) {
                self.channels.remove(&ch);
            }
        }
        self.flush_confirms();
        self.outcome()
    }

    /// Whole frames, as `codec::split_frames` gives them.
    fn handle_frames(&mut self, frames: &Bytes) {
        let mut at = 0;
        while at < frames.len() && !matches!(self.phase, Phase::Closed | Phase::Header) {
            let (frame, next) = codec::frame_at(frames, at);
            at = next;
            self.on_decoded(frame);
        }
    }

    /// Handles a decoded frame, or a whole frame that could not be parsed. Like
    /// RabbitMQ's reader, which knows where the next frame starts, reading goes on
    /// after it: the connection closes with the error, and a `connection.close`
    /// that follows is answered; while closing, such a frame is ignored
    /// (rabbit_reader.erl:946-972 at v3.10.8).
    fn on_decoded(&mut self, frame: Result<Frame, AmqpError>) {
        match frame {
            Ok(frame) => {
                self.frames_in += 1;
                self.handle_frame(frame);
            }
            Err(e) if self.phase != Phase::Closing => self.fail(0, e),
            Err(_) => {}
        }
    }

    /// A frame could not be delimited: the connection closes with `e`, and nothing
    /// more is read (`lost_sync`).
    fn lose_sync(&mut self, e: AmqpError, buf: &mut BytesMut) {
        if self.phase != Phase::Closing {
            self.fail(0, e);
        }
        self.lost_sync = true;
        buf.clear();
    }

    /// Frames decoded since the connection began.
    pub fn frames_received(&self) -> u64 {
        self.frames_in
    }

    /// Whether a channel has a publish whose method came and whose content has
    /// not all come yet.
    pub fn mid_content(&self) -> bool {
        self.channels
            .values()
            .any(|c| !matches!(c.content, Content::Idle))
    }

    fn outcome(&self) -> Outcome {
        if self.phase == Phase::Closed {
            Outcome::Close
        } else {
            Outcome::Continue
        }
    }

    fn handle_frame(&mut self, frame: Frame) {
        self.info.trace.record(Direction::In, &frame);
        let ch = frame.channel();
        match self.phase {
            Phase::Closing => {
                if let Frame::Method(0, AMQPClass::Connection(m)) = frame.general() {
                    match m {
                        connection::AMQPMethod::CloseOk(_) => self.phase = Phase::Closed,
                        // A close crossing ours, or a second close from a client
                        // whose threads each close: each is answered.
                        connection::AMQPMethod::Close(_) => self.send_connection(
                            connection::AMQPMethod::CloseOk(connection::CloseOk {}),
                        ),
                        _ => {}
                    }
                }
            }
            Phase::StartOk | Phase::TuneOk | Phase::Open => {
                let result = match frame.general() {
                    Frame::Heartbeat(0) => Ok(()),
                    Frame::Method(0, AMQPClass::Connection(m)) => self.handshake(m),
                    Frame::Method(ch, m) => Err(AmqpError::connection(
                        code::UNEXPECTED_FRAME,
                        format!(
                            "type 1, all octets = {}",
                            codec::erlang_binary(&codec::method_payload(ch, m))
                        ),
                    )),
                    _ => Err(AmqpError::connection(
                        code::UNEXPECTED_FRAME,
                        "expected method frame, got non method frame instead",
                    )),
                };
                match result {
                    Ok(()) => {}
                    // Like RabbitMQ, say nothing to a client that has not finished
                    // tuning: its socket is just closed. Only a refused login is
                    // explained, and only to clients that asked for that.
                    Err(e) if self.phase != Phase::Open && e.code != code::ACCESS_REFUSED => {
                        tracing::info!(conn = self.id, error = %e, "handshake failed");
                        self.phase = Phase::Closed;
                    }
                    Err(e) => self.fail(0, e),
                }
            }
            Phase::Opened => {
                if ch == 0 {
                    self.on_channel_zero(frame);
                } else {
                    self.on_channel_frame(ch, frame);
                }
            }
            Phase::Header | Phase::Closed => {}
        }
    }

    fn on_channel_zero(&mut self, frame: Frame) {
        use connection::AMQPMethod as M;
        let err = match frame {
            Frame::Heartbeat(_) => return,
            Frame::Method(_, AMQPClass::Connection(M::Close(_))) => {
                // The socket stays until the client, having read close-ok, hangs up.
                self.send_connection(M::CloseOk(connection::CloseOk {}));
                self.release();
                self.phase = Phase::Closing;
                return;
            }
            // Never checked, as RabbitMQ's internal users: it hands the new secret
            // only to backends whose credentials can expire, and theirs cannot
            // (rabbit_access_control.erl:236-257, rabbit_auth_backend_internal.erl:98).
            Frame::Method(_, AMQPClass::Connection(M::UpdateSecret(_))) => {
                self.send_connection(M::UpdateSecretOk(connection::UpdateSecretOk {}));
                return;
            }
            Frame::Method(_, AMQPClass::Connection(M::Blocked(_) | M::Unblocked(_))) => return,
            Frame::Method(_, _) | Frame::Publish(_, _) => {
                let (c, id) = frame.method_id().expect("a method");
                AmqpError::connection(
                    code::CHANNEL_ERROR,
                    "unexpected method in connection state running",
                )
                .on_method(c, id)
            }
            Frame::Header { .. } | Frame::Body(..) => AmqpError::connection(
                code::UNEXPECTED_FRAME,
                "expected method frame, got non method frame instead",
            ),
        };
        self.fail(0, err);
    }

    fn on_channel_frame(&mut self, ch: u16, frame: Frame) {
        if let Frame::Heartbeat(_) = frame {
            return self.fail(
                0,
                AmqpError::connection(code::UNEXPECTED_FRAME, "type 8, all octets = <<>>"),
            );
        }
        let Some(chan) = self.channels.get_mut(&ch) else {
            let err = match frame.general() {
                Frame::Method(_, AMQPClass::Channel(channel::AMQPMethod::Open(_))) => {
                    if self.channels.len() >= self.channel_max as usize {
                        AmqpError::connection(
                            code::NOT_ALLOWED,
                            format!(
                                "number of channels opened ({}) has reached the negotiated \
                                 channel_max ({})",
                                self.channels.len(),
                                self.channel_max
                            ),
                        )
                    } else {
                        self.channels.insert(ch, ChannelProto::new());
                        self.with_vhost(|v, id| v.open_channel(id, ch));
                        self.outbox.push(method(
                            ch,
                            AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
                        ));
                        return;
                    }
                }
                Frame::Method(_, m) => {
                    AmqpError::connection(code::CHANNEL_ERROR, "expected 'channel.open'")
                        .on_method(m.get_amqp_class_id(), m.get_amqp_method_id())
                }
                _ => AmqpError::connection(code::CHANNEL_ERROR, "expected 'channel.open'"),
            };
            return self.fail(ch, err);
        };
        let closing = chan.closing;
        if let Some(commit) = &mut chan.committing {
            // A client may give up waiting: the channel closes at once, the
            // commit unanswered, as when the channel fails. What the channel
            // held came from a client that did not wait for commit-ok either.
            if !matches!(
                frame,
                Frame::Method(_, AMQPClass::Channel(channel::AMQPMethod::Close(_)))
            ) {
                commit.held.push_back(frame);
                return;
            }
            chan.committing = None;
        }
        let content = std::mem::replace(&mut chan.content, Content::Idle);
        let result = match (content, frame) {
            (Content::Idle, Frame::Publish(_, _)) if closing => {
                self.channel(ch).content = Content::Header(Pending::Dropped(40));
                Ok(())
            }
            (Content::Idle, Frame::Publish(_, p)) => {
                let (exchange, routing_key) = p.names();
                self.on_publish(ch, exchange, routing_key, p.mandatory, p.immediate)
                    .map_err(|e| e.on_method(60, 40))
            }
            (Content::Idle, Frame::Method(_, m)) => {
                let (c, id) = (m.get_amqp_class_id(), m.get_amqp_method_id());
                if closing {
                    self.on_closing_method(ch, m)
                } else {
                    self.on_method(ch, m)
                }
                .map_err(|e| e.on_method(c, id))
            }
            (Content::Idle, _) => Err(AmqpError::connection(
                code::UNEXPECTED_FRAME,
                "expected method frame, got non method frame instead",
            )),
            (
                Content::Header(pending),
                Frame::Header {
                    class_id,
                    body_size,
                    properties,
                    raw,
                    ..
                },
            ) => self.on_content_header(ch, pending, class_id, body_size, properties, raw),
            (
                Content::Body {
                    publish,
                    header,
                    properties,
                    size,
                    mut body,
                },
                Frame::Body(_, chunk),
            ) => {
                if body.len() as u64 + chunk.len() as u64 > size {
                    self.channel(ch).content = Content::Overflow(publish.method_id());
                    Ok(())
                } else if body.is_empty() && chunk.len() as u64 == size {
                    // The common case: the whole body in one frame, kept without a copy.
                    self.publish(ch, publish, header, properties, chunk)
                } else {
                    if body.is_empty() {
                        // Grown as frames arrive: a header's claim alone does not get
                        // memory.
                        body.reserve(size.min(1 << 20) as usize);
                    }
                    body.extend_from_slice(&chunk);
                    if body.len() as u64 == size {
                        self.publish(ch, publish, header, properties, body.freeze())
                    } else {
                        self.channel(ch).content = Content::Body {
                            publish,
                            header,
                            properties,
                            size,
                            body,
                        };
                        Ok(())
                    }
                }
            }
            (Content::Header(pending), _) => Err(AmqpError::connection(
                code::UNEXPECTED_FRAME,
                "expected content header for class 60, got non content header frame instead",
            )
            .on_method(60, pending.method_id())),
            (Content::Overflow(id), Frame::Body(..)) => {
                self.channel(ch).content = Content::Overflow(id);
                Ok(())
            }
            (Content::Skip { id, left }, Frame::Body(_, chunk)) => {
                self.channel(ch).content = match left.checked_sub(chunk.len() as u64) {
                    None => Content::Overflow(id),
                    Some(0) => Content::Idle,
                    Some(left) => Content::Skip { id, left },
                };
                Ok(())
            }
            (Content::Skip { id, .. }, _) => Err(AmqpError::connection(
                code::UNEXPECTED_FRAME,
                "expected content body, got non content body frame instead",
            )
            .on_method(60, id)),
            (Content::Body { publish, .. }, _) => Err(AmqpError::connection(
                code::UNEXPECTED_FRAME,
                "expected content body, got non content body frame instead",
            )
            .on_method(60, publish.method_id())),
            (Content::Overflow(id), _) => Err(AmqpError::connection(
                code::UNEXPECTED_FRAME,
                "expected content body, got non content body frame instead",
            )
            .on_method(60, id)),
        };
        if let Err(e) = result {
            self.fail(ch, e);
        }
    }

    fn channel(&mut self, ch: u16) -> &mut ChannelProto {
        self.channels.get_mut(&ch).expect("channel is open")
    }

    /// The logged-in user's name ("" before `start-ok`).
    fn user_name(&self) -> &str {
        self.user.as_ref().map_or("", |u| u.name.as_str())
    }

    fn vhost(&self) -> &Arc<Vhost> {
        self.vhost.as_ref().expect("connection is open")
    }

    fn with_vhost<T>(&self, f: impl FnOnce(&mut crate::vhost::VhostState, ConnId) -> T) -> T {
        let mut v = self.vhost().lock();
        f(&mut v, self.id)
    }

    fn send(&mut self, ch: u16, m: AMQPClass) {
        self.outbox.push(method(ch, m));
    }

    fn send_connection(&mut self, m: connection::AMQPMethod) {
        self.send(0, AMQPClass::Connection(m));
    }

    /// Turns any protocol error into the close the wire needs: a channel error
    /// closes that channel, anything else the connection.
    pub fn fail(&mut self, ch: u16, err: AmqpError) {
        tracing::debug!(conn = self.id, channel = ch, error = %err, "protocol error");
        // Before tune-ok RabbitMQ answers only a refused login and a refused
        // tuning; anything else (a frame over initial_frame_max, say) ends the
        // socket unanswered (rabbit_reader.erl:804-855 at v3.10.8).
        let answered = match self.phase {
            Phase::StartOk => err.code == code::ACCESS_REFUSED,
            Phase::TuneOk => err.code == code::NOT_ALLOWED,
            _ => true,
        };
        if err.scope == Scope::Socket || !answered {
            self.release();
            self.phase = Phase::Closed;
            return;
        }
        let text = err.reply_text();
        if err.scope == Scope::Channel && ch != 0 && self.channels.contains_key(&ch) {
            self.flush_channel_confirms(ch);
            self.with_vhost(|v, id| v.close_channel(id, ch));
            let chan = self.channel(ch);
            chan.closing = true;
            // The frames of a message under way still arrive and are still
            // checked, as RabbitMQ's reader goes on assembling them; the message
            // is dropped.
            chan.content = match std::mem::replace(&mut chan.content, Content::Idle) {
                Content::Header(p) => Content::Header(Pending::Dropped(p.method_id())),
                Content::Body {
                    publish,
                    size,
                    body,
                    ..
                } => skip(publish.method_id(), size - body.len() as u64),
                other => other,
            };
            // A closing channel sends no confirms (rabbit_channel.erl:2320).
            chan.confirm = None;
            chan.tx = None;
            // Never answered: its publishes are enqueued, its settles dropped
            // (the channel's unacked deliveries go back to their queues).
            chan.committing = None;
            self.send(
                ch,
                AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                    reply_code: err.code,
                    reply_text: text.into(),
                    class_id: err.class_id,
                    method_id: err.method_id,
                })),
            );
            return;
        }
        self.close_connection(err.code, text, err.class_id, err.method_id);
    }

    /// Sends `connection.close` and releases everything the connection holds; the
    /// socket closes on `close-ok` or when the close timeout passes.
    pub fn close_connection(&mut self, code: u16, text: String, class_id: u16, method_id: u16) {
        if matches!(self.phase, Phase::Closing | Phase::Closed | Phase::Header) {
            self.phase = Phase::Closed;
            return;
        }
        self.send_due_confirms();
        self.send_connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: code,
            reply_text: text.into(),
            class_id,
            method_id,
        }));
        self.release();
        self.phase = Phase::Closing;
    }

    /// The broker is going away: `connection.close` with 320 CONNECTION_FORCED.
    pub fn force_close(&mut self, reason: &str) {
        self.close_connection(
            code::CONNECTION_FORCED,
            format!("CONNECTION_FORCED - broker forced connection closure with reason '{reason}'"),
            0,
            0,
        );
    }

    /// Returns unacked deliveries to their queues and drops the connection's
    /// channels, consumers and exclusive queues. Safe to call more than once.
    pub fn release(&mut self) {
        if let Some(v) = self.vhost.take() {
            v.lock().close_connection(self.id);
        }
        self.channels.clear();
    }

    /// Whether the memory alarm should stop reading from this connection: it is
    /// a publisher, as RabbitMQ blocks only those.
    pub fn is_publisher(&self) -> bool {
        self.published
    }

    /// The memory alarm went on or off: tell a client that asked for it.
    pub fn set_blocked(&mut self, blocked: bool) {
        if self.phase != Phase::Opened || !self.blocked_notify || blocked == self.told_blocked {
            return;
        }
        self.told_blocked = blocked;
        let m = if blocked {
            connection::AMQPMethod::Blocked(connection::Blocked {
                reason: self.shared.gauge.reason().into(),
            })
        } else {
            connection::AMQPMethod::Unblocked(connection::Unblocked {})
        };
        self.send_connection(m);
    }

    /// The outbox drained after a back-up: deliveries may flow again.
    pub fn resume(&mut self) {
        if self.phase == Phase::Opened {
            self.with_vhost(|v, id| v.resume_connection(id));
        }
    }
}

/// The content state that swallows the `size` bytes of a dropped message's body.
fn skip(id: u16, size: u64) -> Content {
    if size == 0 {
        Content::Idle
    } else {
        Content::Skip { id, left: size }
    }
}
