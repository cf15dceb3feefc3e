//! One client connection's protocol state machine, free of I/O: fed the bytes a
//! client sent, it answers by appending frames to the connection's outbox, and tells
//! the I/O driver when the socket should close.
//!
//! Every protocol error passes through [`Connection::fail`], which turns it into the
//! right `channel.close` or `connection.close`.

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

use amq_protocol::protocol::{
    access, basic, channel, confirm, connection, exchange, queue, tx, AMQPClass,
};
use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::{Bytes, BytesMut};

use crate::auth::{self, Access, Grant, Resource};
use crate::codec::{self, Frame, PROTOCOL_HEADER};
use crate::error::{code, AmqpError, Scope};
use crate::faults::{Action, ConnInfo, PublishEvent};
use crate::names::random_token;
use crate::outbox::Outbox;
use crate::shared::Shared;
use crate::trace::Direction;
use crate::vhost::{
    ConnId, ConsumeOptions, Message, QueueDeclare, Route, RouteCache, Targets, Vhost, REPLY_TO,
};

/// What the I/O driver should do after feeding input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Continue,
    /// Flush the outbox, then close the socket.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the 8-byte protocol header.
    Header,
    StartOk,
    TuneOk,
    Open,
    Opened,
    /// The broker sent `connection.close` and waits for `close-ok`.
    Closing,
    Closed,
}

/// A method that carries content, waiting for it.
#[derive(Debug)]
enum Pending {
    /// A `basic.publish`: where it goes (shared with the connection's route cache,
    /// so consecutive publishes with the same names allocate nothing) and whether
    /// it must come back if unroutable.
    Publish { route: Arc<Route>, mandatory: bool },
    /// A content-carrying method only a server may send (basic.deliver, return,
    /// get-ok): RabbitMQ takes its content, then refuses it.
    Refused(u16),
}

impl Pending {
    fn method_id(&self) -> u16 {
        match self {
            Pending::Publish { .. } => 40,
            Pending::Refused(id) => *id,
        }
    }
}

#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per channel; boxing would cost an allocation per message"
)]
enum Content {
    Idle,
    /// A content method seen; its content header is due.
    Header(Pending),
    Body {
        publish: Pending,
        header: Bytes,
        /// Boxed, as the frame brought it (none when the header had none): the
        /// channel's content state is moved out and back for every frame.
        properties: Option<Box<basic::AMQPProperties>>,
        size: u64,
        body: BytesMut,
    },
    /// More body arrived than the header announced. Like RabbitMQ, the message is
    /// dropped and further body frames swallowed; the next other frame on the
    /// channel is the error. Holds the content method's id.
    Overflow(u16),
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
    /// The broker sent `channel.close`: everything but close/close-ok is dropped.
    closing: bool,
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
}

fn method(ch: u16, m: AMQPClass) -> impl FnOnce(&mut BytesMut) {
    move |out| codec::put_method(out, ch, m)
}

impl Connection {
    pub fn new(shared: Arc<Shared>, info: Arc<ConnInfo>) -> Self {
        let frame_max = shared.config.frame_max;
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
            frames_in: 0,
            cancel_notify: false,
            auth_failure_close: false,
            blocked_notify: false,
            published: false,
            told_blocked: false,
            routes: RouteCache::default(),
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

    /// Consumes as many whole frames from `buf` as it holds.
    pub fn handle_input(&mut self, buf: &mut BytesMut) -> Outcome {
        if self.phase == Phase::Header && !self.handle_header(buf) {
            return self.outcome();
        }
        while !matches!(self.phase, Phase::Closed | Phase::Header) {
            // Once open, with frame_max settled, the complete frames leave the
            // buffer together.
            if self.phase == Phase::Opened {
                let frames = codec::split_frames(buf, self.frame_max);
                if !frames.is_empty() {
                    self.handle_frames(&frames, buf);
                    continue;
                }
            }
            let Some(frame) = codec::decode(buf, self.frame_max).transpose() else {
                break;
            };
            self.on_decoded(frame, buf);
        }
        self.flush_confirms();
        self.outcome()
    }

    /// Whole frames, as `codec::split_frames` gives them; `buf` is what follows.
    fn handle_frames(&mut self, frames: &Bytes, buf: &mut BytesMut) {
        let mut at = 0;
        while at < frames.len() && !matches!(self.phase, Phase::Closed | Phase::Header) {
            let (frame, next) = codec::frame_at(frames, at);
            at = next;
            if !self.on_decoded(frame, buf) {
                return;
            }
        }
    }

    /// Handles a decoded frame, or the error that ends reading: the connection
    /// closes, and nothing after the broken frame (the rest of `buf`) is read.
    /// Returns whether reading goes on.
    fn on_decoded(&mut self, frame: Result<Frame, AmqpError>, buf: &mut BytesMut) -> bool {
        match frame {
            Ok(frame) => {
                self.frames_in += 1;
                self.handle_frame(frame);
                true
            }
            Err(e) => {
                if self.phase == Phase::Closing {
                    self.phase = Phase::Closed;
                } else {
                    self.fail(0, e);
                }
                buf.clear();
                false
            }
        }
    }

    /// Frames decoded since the connection began.
    pub fn frames_received(&self) -> u64 {
        self.frames_in
    }

    fn outcome(&self) -> Outcome {
        if self.phase == Phase::Closed {
            Outcome::Close
        } else {
            Outcome::Continue
        }
    }

    /// Returns true once a valid header was consumed.
    fn handle_header(&mut self, buf: &mut BytesMut) -> bool {
        let n = buf.len().min(8);
        // RabbitMQ still accepts the 0-9 header of old clients, and speaks 0-9-1.
        const OLD_0_9: &[u8; 8] = b"AMQP\x01\x01\x00\x09";
        if buf[..n] != PROTOCOL_HEADER[..n] && buf[..n] != OLD_0_9[..n] {
            // The spec: answer with the header we support, then close.
            self.outbox
                .push(|out| out.extend_from_slice(PROTOCOL_HEADER));
            self.phase = Phase::Closed;
            return false;
        }
        if n < 8 {
            return false;
        }
        let _ = buf.split_to(8);
        self.send_start();
        self.phase = Phase::StartOk;
        true
    }

    fn send_start(&self) {
        let mut caps = FieldTable::default();
        for cap in [
            "publisher_confirms",
            "basic.nack",
            "consumer_cancel_notify",
            "authentication_failure_close",
            "per_consumer_qos",
            "exchange_exchange_bindings",
            "consumer_priorities",
            "direct_reply_to",
            "connection.blocked",
        ] {
            caps.insert(cap.into(), AMQPValue::Boolean(true));
        }
        let mut props = FieldTable::default();
        let mut text = |k: &str, v: &str| {
            props.insert(k.into(), AMQPValue::LongString(v.into()));
        };
        text("product", "Warren");
        text("version", env!("CARGO_PKG_VERSION"));
        text("platform", "Rust");
        text(
            "information",
            "An AMQP 0-9-1 broker that stands in for RabbitMQ in tests",
        );
        text("cluster_name", "warren");
        props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
        self.outbox.push(method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
                version_major: 0,
                version_minor: 9,
                server_properties: props,
                mechanisms: "PLAIN AMQPLAIN".into(),
                locales: "en_US".into(),
            })),
        ));
    }

    fn handle_frame(&mut self, frame: Frame) {
        self.info.trace.record(Direction::In, &frame);
        let ch = frame.channel();
        match self.phase {
            Phase::Closing => {
                if let Frame::Method(0, AMQPClass::Connection(m)) = frame.general() {
                    match m {
                        connection::AMQPMethod::CloseOk(_) => self.phase = Phase::Closed,
                        connection::AMQPMethod::Close(_) => {
                            self.send_connection(connection::AMQPMethod::CloseOk(
                                connection::CloseOk {},
                            ));
                            self.phase = Phase::Closed;
                        }
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

    fn handshake(&mut self, m: connection::AMQPMethod) -> Result<(), AmqpError> {
        use connection::AMQPMethod as M;
        match (self.phase, m) {
            (Phase::StartOk, M::StartOk(s)) => {
                if let Some(AMQPValue::FieldTable(caps)) =
                    s.client_properties.inner().get("capabilities")
                {
                    let on =
                        |k: &str| matches!(caps.inner().get(k), Some(AMQPValue::Boolean(true)));
                    self.cancel_notify = on("consumer_cancel_notify");
                    self.auth_failure_close = on("authentication_failure_close");
                    self.blocked_notify = on("connection.blocked");
                }
                let mechanism = s.mechanism.as_str();
                let creds = match mechanism {
                    "PLAIN" => parse_plain(s.response.as_bytes()),
                    "AMQPLAIN" => parse_amqplain(s.response.as_bytes()),
                    other => {
                        return Err(AmqpError::socket(format!(
                            "unknown authentication mechanism '{other}'"
                        )))
                    }
                };
                let Some((user, password)) = creds else {
                    return Err(AmqpError::socket("malformed authentication response"));
                };
                let peer = self.info.peer.parse::<std::net::SocketAddr>().ok();
                let login = self
                    .shared
                    .users
                    .login(&user, &password, peer.map(|p| p.ip()));
                match login {
                    Ok(user) => self.user = Some(user),
                    Err(why) => {
                        // RabbitMQ's log line (rabbit_reader.erl:1458-1464); the
                        // client is told only that the login was refused.
                        tracing::warn!(conn = self.id, "{mechanism} login refused: {why}");
                        if !self.auth_failure_close {
                            self.phase = Phase::Closed;
                            return Ok(());
                        }
                        return Err(AmqpError::connection(
                            code::ACCESS_REFUSED,
                            format!(
                                "Login was refused using authentication mechanism {mechanism}. \
                                 For details see the broker logfile."
                            ),
                        ));
                    }
                }
                let cfg = &self.shared.config;
                let _ = self.info.client.set(crate::faults::ClientInfo {
                    user: self
                        .user
                        .as_ref()
                        .map_or_else(String::new, |u| u.name.clone()),
                    properties: s.client_properties.clone(),
                    connected_at: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64),
                });
                self.send_connection(M::Tune(connection::Tune {
                    channel_max: cfg.channel_max,
                    frame_max: cfg.frame_max,
                    heartbeat: cfg.heartbeat,
                }));
                self.phase = Phase::TuneOk;
                Ok(())
            }
            (Phase::TuneOk, M::TuneOk(t)) => {
                let cfg = &self.shared.config;
                if t.channel_max == 0 || t.channel_max > cfg.channel_max {
                    return Err(AmqpError::connection(
                        code::NOT_ALLOWED,
                        format!(
                            "negotiated channel_max = {} is higher than the maximum allowed value ({})",
                            t.channel_max, cfg.channel_max
                        ),
                    ));
                }
                if t.frame_max > cfg.frame_max {
                    return Err(AmqpError::connection(
                        code::NOT_ALLOWED,
                        format!("frame_max={} > {} max size", t.frame_max, cfg.frame_max),
                    ));
                }
                if t.frame_max < 4096 {
                    return Err(AmqpError::connection(
                        code::NOT_ALLOWED,
                        format!("frame_max={} < 4096 min size", t.frame_max),
                    ));
                }
                self.channel_max = t.channel_max;
                self.frame_max = t.frame_max;
                self.heartbeat = t.heartbeat;
                self.phase = Phase::Open;
                Ok(())
            }
            (Phase::Open, M::Open(o)) => {
                let name = o.virtual_host.as_str();
                let Some(vhost) = self.shared.vhosts.get(name) else {
                    return Err(AmqpError::connection(
                        code::NOT_ALLOWED,
                        format!("vhost {name} not found"),
                    )
                    .on_method(10, 40));
                };
                // rabbit_access_control:check_vhost_access: any permission entry
                // for the vhost lets the user in (rabbit_auth_backend_internal.erl:121).
                let user = self.user_name().to_owned();
                self.grant_generation = self.shared.users.generation();
                self.grant = self.shared.users.grant(&user, name);
                if self.grant.is_none() {
                    return Err(AmqpError::connection(
                        code::NOT_ALLOWED,
                        format!("access to vhost '{name}' refused for user '{user}'"),
                    )
                    .on_method(10, 40));
                }
                self.vhost_name = name.to_owned();
                vhost.lock().register_connection(
                    self.id,
                    self.outbox.clone(),
                    self.frame_max,
                    self.cancel_notify,
                );
                *self.info.vhost.lock().unwrap_or_else(|e| e.into_inner()) = Some(name.to_owned());
                self.vhost = Some(vhost);
                self.send_connection(M::OpenOk(connection::OpenOk {}));
                self.phase = Phase::Opened;
                Ok(())
            }
            (phase, m) => {
                let m = AMQPClass::Connection(m);
                // RabbitMQ's names for its connection states.
                let state = match phase {
                    Phase::StartOk => "starting",
                    Phase::TuneOk => "tuning",
                    _ => "opening",
                };
                Err(AmqpError::connection(
                    code::CHANNEL_ERROR,
                    format!("unexpected method in connection state {state}"),
                )
                .on_method(m.get_amqp_class_id(), m.get_amqp_method_id()))
            }
        }
    }

    fn on_channel_zero(&mut self, frame: Frame) {
        use connection::AMQPMethod as M;
        let err = match frame {
            Frame::Heartbeat(_) => return,
            Frame::Method(_, AMQPClass::Connection(M::Close(_))) => {
                self.send_connection(M::CloseOk(connection::CloseOk {}));
                self.release();
                self.phase = Phase::Closed;
                return;
            }
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
        if chan.closing {
            match frame {
                Frame::Method(_, AMQPClass::Channel(channel::AMQPMethod::Open(_))) => {
                    self.fail(
                        ch,
                        AmqpError::connection(code::CHANNEL_ERROR, "second 'channel.open' seen")
                            .on_method(20, 10),
                    );
                }
                Frame::Method(_, AMQPClass::Channel(channel::AMQPMethod::CloseOk(_))) => {
                    self.channels.remove(&ch);
                }
                Frame::Method(_, AMQPClass::Channel(channel::AMQPMethod::Close(_))) => {
                    self.outbox.push(method(
                        ch,
                        AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                    ));
                    self.channels.remove(&ch);
                }
                _ => {}
            }
            return;
        }
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
            (Content::Idle, Frame::Publish(_, p)) => {
                let (exchange, routing_key) = p.names();
                self.on_publish(ch, exchange, routing_key, p.mandatory, p.immediate)
                    .map_err(|e| e.on_method(60, 40))
            }
            (Content::Idle, Frame::Method(_, m)) => {
                let (c, id) = (m.get_amqp_class_id(), m.get_amqp_method_id());
                self.on_method(ch, m).map_err(|e| e.on_method(c, id))
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

    fn on_content_header(
        &mut self,
        ch: u16,
        publish: Pending,
        class_id: u16,
        size: u64,
        properties: Option<Box<basic::AMQPProperties>>,
        raw: Bytes,
    ) -> Result<(), AmqpError> {
        if class_id != 60 {
            return Err(AmqpError::connection(
                code::UNEXPECTED_FRAME,
                format!(
                    "expected content header for class 60, got one for class {class_id} instead"
                ),
            )
            .on_method(60, 40));
        }
        let max = self.shared.config.max_message_size;
        if size > max {
            return Err(AmqpError::precondition(format!(
                "message size {size} is larger than configured max size {max}"
            ))
            .on_method(60, 40));
        }
        if size == 0 {
            return self.publish(ch, publish, raw, properties, Bytes::new());
        }
        self.channel(ch).content = Content::Body {
            publish,
            header: raw,
            properties,
            size,
            // Nothing yet: the common body, one frame, is kept as it came.
            body: BytesMut::new(),
        };
        Ok(())
    }

    fn channel(&mut self, ch: u16) -> &mut ChannelProto {
        self.channels.get_mut(&ch).expect("channel is open")
    }

    /// The logged-in user's name ("" before `start-ok`).
    fn user_name(&self) -> &str {
        self.user.as_ref().map_or("", |u| u.name.as_str())
    }

    /// RabbitMQ's `check_configure_permitted` and friends (rabbit_channel.erl:1004-1011):
    /// 403 ACCESS_REFUSED unless the user's permission in this vhost matches `name`.
    /// Permissions changed since the grant was taken apply from the next check.
    fn permit(&mut self, access: Access, kind: Resource, name: &str) -> Result<(), AmqpError> {
        let generation = self.shared.users.generation();
        if generation != self.grant_generation {
            self.grant_generation = generation;
            self.grant = self.shared.users.grant(self.user_name(), &self.vhost_name);
        }
        let user = self.user.as_ref().map_or("", |u| u.name.as_str());
        auth::check(
            self.grant.as_deref(),
            user,
            &self.vhost_name,
            access,
            kind,
            name,
        )
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

    /// A whole message has arrived on `ch`.
    fn publish(
        &mut self,
        ch: u16,
        publish: Pending,
        header: Bytes,
        properties: Option<Box<basic::AMQPProperties>>,
        body: Bytes,
    ) -> Result<(), AmqpError> {
        let (route, mandatory) = match publish {
            Pending::Publish { route, mandatory } => (route, mandatory),
            Pending::Refused(id) => return Err(server_only().on_method(60, id)),
        };
        // Checked once the content is in, before anything else about the
        // message (rabbit_channel.erl:1299).
        self.permit(Access::Write, Resource::Exchange, route.exchange())
            .map_err(|e| e.on_method(60, 40))?;
        let properties = properties.as_deref().unwrap_or(codec::no_properties());
        if let Some(exp) = properties.expiration() {
            check_expiration(exp.as_str()).map_err(|why| {
                AmqpError::precondition(format!("invalid expiration '{exp}': {why}"))
                    .on_method(60, 40)
            })?;
        }
        if let Some(user_id) = properties.user_id() {
            let user = self.user_name();
            let impersonator = self
                .user
                .as_ref()
                .is_some_and(|u| u.has_tag("impersonator"));
            if user_id.as_str() != user && !impersonator {
                return Err(AmqpError::precondition(format!(
                    "user_id property set to '{user_id}' but authenticated user was '{user}'"
                ))
                .on_method(60, 40));
            }
        }
        // Direct reply-to: the request carries this channel's reply address.
        let reply_props;
        let (properties, header) = if properties
            .reply_to()
            .as_ref()
            .is_some_and(|r| r.as_str() == REPLY_TO)
        {
            let address = self
                .vhost()
                .lock()
                .reply_address(self.id, ch)
                .map_err(|e| e.on_method(60, 40))?;
            reply_props = properties.clone().with_reply_to(address.into());
            let header = codec::encode_header(body.len() as u64, &reply_props);
            (&reply_props, header)
        } else {
            (properties, header)
        };
        let msg = Message::new(route, properties, header, body);
        let exchange = msg.exchange();
        // One lock for routing and enqueueing: the rules' lock, taken in between,
        // is a leaf.
        let vhost = self.vhost().clone();
        let mut v = vhost.lock();
        let targets = v
            .route(exchange, msg.routing_key(), properties.headers().as_ref())
            .map_err(|e| e.on_method(60, 40))?;
        // After routing, so that a rule can name a queue the message reaches.
        let fault = self.shared.rules.on_publish(&PublishEvent {
            connection: self.id,
            channel: ch,
            exchange,
            queues: &targets,
        });
        if let Some(action) = &fault {
            self.info.trace.fault(action.name(), action.detail());
        }
        match &fault {
            Some(Action::CloseChannel { code, text }) => {
                return Err(AmqpError::channel(*code, text.clone()).on_method(60, 40));
            }
            Some(Action::CloseConnection { code, text }) => {
                return Err(AmqpError::connection(*code, text.clone()).on_method(60, 40));
            }
            _ => {}
        }
        let id = self.id;
        let chan = self.channel(ch);
        if let Some(ops) = &mut chan.tx {
            ops.push(TxOp::Publish {
                targets,
                mandatory,
                msg: Box::new(msg),
            });
            return Ok(());
        }
        let confirming = chan.confirm.is_some();
        let published = v.publish(id, ch, &targets, mandatory, msg);
        drop(v);
        if confirming {
            let confirms = self.channel(ch).confirm.as_mut().expect("confirming");
            confirms.last += 1;
            let seq = confirms.last;
            let withheld = fault == Some(Action::WithholdConfirm);
            confirms.pending.push_back(PendingConfirm {
                seq,
                // An LSN no store reaches: the confirm never comes.
                lsn: if withheld {
                    WITHHELD
                } else {
                    published.lsn.unwrap_or(0)
                },
                nack: published.refused || fault == Some(Action::NackConfirm),
            });
        }
        Ok(())
    }

    /// Sends what waited for the disk and is now due: publisher confirms, and
    /// the commit-ok of transactions now durable.
    pub fn flush_confirms(&mut self) {
        self.send_due_confirms();
        self.complete_commits();
    }

    /// Acknowledges every publish that is safe — enqueued, and on disk when it
    /// had to be — with one `basic.ack` per channel (multiple when it covers
    /// several). Once the store has failed, what it did not write is nacked.
    fn send_due_confirms(&mut self) {
        let (durable, failed) = match &self.shared.store {
            Some(store) => (store.durable_lsn(), store.has_failed()),
            None => (u64::MAX, false),
        };
        for (&ch, chan) in &mut self.channels {
            let Some(confirms) = &mut chan.confirm else {
                continue;
            };
            // Consecutive acks go out as one `multiple` ack.
            let mut run: Option<(u64, bool)> = None;
            let outbox = &self.outbox;
            let flush_run = |run: &mut Option<(u64, bool)>| {
                if let Some((tag, multiple)) = run.take() {
                    outbox.push(method(
                        ch,
                        AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                            delivery_tag: tag,
                            multiple,
                        })),
                    ));
                }
            };
            while let Some(p) = confirms.pending.front().copied() {
                if p.lsn == WITHHELD {
                    break;
                }
                let lost = failed && p.lsn > durable;
                if p.lsn > durable && !lost {
                    break;
                }
                confirms.pending.pop_front();
                if p.nack || lost {
                    flush_run(&mut run);
                    outbox.push(method(
                        ch,
                        AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
                            delivery_tag: p.seq,
                            multiple: false,
                            requeue: false,
                        })),
                    ));
                } else {
                    run = Some((p.seq, run.is_some()));
                }
            }
            flush_run(&mut run);
        }
    }

    fn flush_channel_confirms(&mut self, ch: u16) {
        if self
            .channels
            .get(&ch)
            .and_then(|c| c.confirm.as_ref())
            .is_some_and(|c| !c.pending.is_empty())
        {
            self.send_due_confirms();
        }
    }

    /// Sends the commit-ok of every commit whose messages are now on disk, then
    /// applies its settles and handles the frames its channel held meanwhile.
    /// Once the store has failed, a commit it did not write closes its channel
    /// as RabbitMQ does when a queue cannot take a transaction's message.
    fn complete_commits(&mut self) {
        let Some(store) = &self.shared.store else {
            return;
        };
        let (durable, failed) = (store.durable_lsn(), store.has_failed());
        let due: Vec<u16> = self
            .channels
            .iter()
            .filter(|(_, c)| {
                c.committing
                    .as_ref()
                    .is_some_and(|c| c.lsn <= durable || failed)
            })
            .map(|(&ch, _)| ch)
            .collect();
        for ch in due {
            let Some(commit) = self.channels.get_mut(&ch).and_then(|c| c.committing.take()) else {
                continue;
            };
            if commit.lsn > durable {
                self.fail(
                    ch,
                    AmqpError::precondition("partial tx completion").on_method(90, 20),
                );
                continue;
            }
            if let Err(e) = self.commit_ok(ch, commit.settles) {
                self.fail(ch, e.on_method(90, 20));
                continue;
            }
            for frame in commit.held {
                if self.phase != Phase::Opened {
                    break;
                }
                // A later commit on the channel holds the rest again, in order.
                self.on_channel_frame(ch, frame);
            }
        }
    }

    /// Answers a commit and applies its settles: RabbitMQ enqueues the
    /// publishes, answers, then settles, so the redeliveries a nack causes
    /// come after commit-ok.
    fn commit_ok(&mut self, ch: u16, settles: Vec<TxOp>) -> Result<(), AmqpError> {
        self.send(ch, AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})));
        let vhost = self.vhost().clone();
        for op in settles {
            if let TxOp::Settle {
                tag,
                multiple,
                requeue,
            } = op
            {
                vhost.lock().settle(self.id, ch, tag, multiple, requeue)?;
            }
        }
        Ok(())
    }

    /// Where the driver learns that the store made more publishes durable.
    pub fn durability_updates(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.shared.store.as_ref().map(|s| s.subscribe())
    }

    /// The queue a method names, where "" means the channel's last declared queue.
    fn queue_name(&mut self, ch: u16, name: &str) -> Result<String, AmqpError> {
        if !name.is_empty() {
            return Ok(name.to_owned());
        }
        self.channel(ch)
            .last_queue
            .clone()
            .ok_or_else(|| AmqpError::not_found("no previously declared queue"))
    }

    fn on_method(&mut self, ch: u16, m: AMQPClass) -> Result<(), AmqpError> {
        // Replies on this channel follow the acks of publishes that came before.
        self.flush_channel_confirms(ch);
        match m {
            AMQPClass::Channel(m) => self.on_channel_method(ch, m),
            AMQPClass::Exchange(m) => self.on_exchange(ch, m),
            AMQPClass::Queue(m) => self.on_queue(ch, m),
            AMQPClass::Basic(m) => self.on_basic(ch, m),
            AMQPClass::Confirm(confirm::AMQPMethod::Select(s)) => {
                let chan = self.channel(ch);
                if chan.tx.is_some() {
                    return Err(AmqpError::precondition(
                        "cannot switch from tx to confirm mode",
                    ));
                }
                chan.confirm.get_or_insert_with(Confirms::default);
                if !s.nowait {
                    self.send(
                        ch,
                        AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
                    );
                }
                Ok(())
            }
            AMQPClass::Tx(m) => self.on_tx(ch, m),
            AMQPClass::Access(access::AMQPMethod::Request(_)) => {
                self.send(
                    ch,
                    AMQPClass::Access(access::AMQPMethod::RequestOk(access::RequestOk {})),
                );
                Ok(())
            }
            AMQPClass::Connection(_) => Err(server_only()),
            _ => Err(server_only()),
        }
    }

    fn on_channel_method(&mut self, ch: u16, m: channel::AMQPMethod) -> Result<(), AmqpError> {
        use channel::AMQPMethod as M;
        match m {
            M::Open(_) => Err(AmqpError::connection(
                code::CHANNEL_ERROR,
                "second 'channel.open' seen",
            )),
            M::Flow(f) => {
                if !f.active {
                    return Err(AmqpError::connection(code::NOT_IMPLEMENTED, "active=false"));
                }
                self.send(
                    ch,
                    AMQPClass::Channel(M::FlowOk(channel::FlowOk { active: f.active })),
                );
                Ok(())
            }
            M::FlowOk(_) => Ok(()),
            M::Close(_) => {
                self.with_vhost(|v, id| v.close_channel(id, ch));
                self.channels.remove(&ch);
                self.send(ch, AMQPClass::Channel(M::CloseOk(channel::CloseOk {})));
                Ok(())
            }
            // The broker sent no channel.close this close-ok could answer.
            M::CloseOk(_) | M::OpenOk(_) => Err(server_only()),
        }
    }

    fn on_exchange(&mut self, ch: u16, m: exchange::AMQPMethod) -> Result<(), AmqpError> {
        use exchange::AMQPMethod as M;
        match m {
            M::Declare(d) => {
                let name = d.exchange.as_str();
                // The default exchange's own error comes first (rabbit_channel.erl:2668-2670).
                if !d.passive && !name.is_empty() {
                    self.permit(Access::Configure, Resource::Exchange, name)?;
                    // Only a declare that creates the exchange checks its
                    // alternate exchange (rabbit_channel.erl:2714-2722).
                    if let Some(AMQPValue::LongString(ae)) =
                        d.arguments.inner().get("alternate-exchange")
                    {
                        if !self.vhost().lock().has_exchange(name) {
                            let ae = String::from_utf8_lossy(ae.as_bytes()).into_owned();
                            self.permit(Access::Read, Resource::Exchange, name)?;
                            self.permit(Access::Write, Resource::Exchange, &ae)?;
                        }
                    }
                }
                self.with_vhost(|v, _| {
                    v.declare_exchange(
                        d.exchange.as_str(),
                        d.kind.as_str(),
                        d.passive,
                        d.durable,
                        d.auto_delete,
                        d.internal,
                        &d.arguments,
                    )
                })?;
                if !d.nowait {
                    self.send(
                        ch,
                        AMQPClass::Exchange(M::DeclareOk(exchange::DeclareOk {})),
                    );
                }
                Ok(())
            }
            M::Delete(d) => {
                let name = d.exchange.as_str();
                // The default and amq.* exchanges' own errors come first
                // (rabbit_channel.erl:2738-2740).
                if !name.is_empty() && !name.starts_with("amq.") {
                    self.permit(Access::Configure, Resource::Exchange, name)?;
                }
                self.with_vhost(|v, _| v.delete_exchange(d.exchange.as_str(), d.if_unused))?;
                if !d.nowait {
                    self.send(ch, AMQPClass::Exchange(M::DeleteOk(exchange::DeleteOk {})));
                }
                Ok(())
            }
            M::Bind(b) => {
                let reply = (!b.nowait).then_some(M::BindOk(exchange::BindOk {}));
                let args = (b.destination, b.source, b.routing_key, b.arguments);
                self.exchange_binding(ch, args, true, reply)
            }
            M::Unbind(b) => {
                let reply = (!b.nowait).then_some(M::UnbindOk(exchange::UnbindOk {}));
                let args = (b.destination, b.source, b.routing_key, b.arguments);
                self.exchange_binding(ch, args, false, reply)
            }
            _ => Err(server_only()),
        }
    }

    /// `exchange.bind` (`bind`) or `exchange.unbind`, answered with `reply`.
    fn exchange_binding(
        &mut self,
        ch: u16,
        (destination, source, routing_key, arguments): (
            amq_protocol::types::ShortString,
            amq_protocol::types::ShortString,
            amq_protocol::types::ShortString,
            FieldTable,
        ),
        bind: bool,
        reply: Option<exchange::AMQPMethod>,
    ) -> Result<(), AmqpError> {
        self.permit_binding(Resource::Exchange, destination.as_str(), source.as_str())?;
        self.with_vhost(|v, _| {
            v.bind_exchange(
                destination.as_str(),
                source.as_str(),
                routing_key.as_str(),
                &arguments,
                bind,
            )
        })?;
        if let Some(reply) = reply {
            self.send(ch, AMQPClass::Exchange(reply));
        }
        Ok(())
    }

    /// RabbitMQ's `binding_action` checks (rabbit_channel.erl:1900-1909): write on
    /// the destination, then (after the default exchange's own error) read on
    /// the source.
    fn permit_binding(
        &mut self,
        kind: Resource,
        destination: &str,
        source: &str,
    ) -> Result<(), AmqpError> {
        self.permit(Access::Write, kind, destination)?;
        let default_involved =
            source.is_empty() || (kind == Resource::Exchange && destination.is_empty());
        if !default_involved {
            self.permit(Access::Read, Resource::Exchange, source)?;
        }
        Ok(())
    }

    fn on_queue(&mut self, ch: u16, m: queue::AMQPMethod) -> Result<(), AmqpError> {
        use queue::AMQPMethod as M;
        match m {
            M::Declare(d) if d.queue.as_str() == REPLY_TO => {
                // RabbitMQ answers for the pseudo-queue as if it had one consumer.
                if !d.nowait {
                    self.send(
                        ch,
                        AMQPClass::Queue(M::DeclareOk(queue::DeclareOk {
                            queue: d.queue,
                            message_count: 0,
                            consumer_count: 1,
                        })),
                    );
                }
                Ok(())
            }
            M::Declare(d) => {
                let name = if d.queue.as_str().is_empty() && !d.passive {
                    format!("amq.gen-{}", random_token())
                } else {
                    let name = d.queue.as_str().to_owned();
                    if !d.passive && name.starts_with("amq.") {
                        return Err(AmqpError::access_refused(format!(
                            "queue name '{name}' contains reserved prefix 'amq.*'"
                        )));
                    }
                    name
                };
                if !d.passive {
                    self.permit(Access::Configure, Resource::Queue, &name)?;
                    // Only a declare that creates the queue checks its
                    // dead-letter exchange (rabbit_channel.erl:2563-2575).
                    if let Some(AMQPValue::LongString(dlx)) =
                        d.arguments.inner().get("x-dead-letter-exchange")
                    {
                        if !self.vhost().lock().has_queue(&name) {
                            let dlx = String::from_utf8_lossy(dlx.as_bytes()).into_owned();
                            self.permit(Access::Read, Resource::Queue, &name)?;
                            self.permit(Access::Write, Resource::Exchange, &dlx)?;
                        }
                    }
                }
                let (name, messages, consumers) = self.with_vhost(|v, id| {
                    v.declare_queue(
                        id,
                        QueueDeclare {
                            name,
                            passive: d.passive,
                            durable: d.durable,
                            exclusive: d.exclusive,
                            auto_delete: d.auto_delete,
                            arguments: d.arguments,
                        },
                    )
                })?;
                self.channel(ch).last_queue = Some(name.clone());
                if !d.nowait {
                    self.send(
                        ch,
                        AMQPClass::Queue(M::DeclareOk(queue::DeclareOk {
                            queue: name.into(),
                            message_count: messages,
                            consumer_count: consumers,
                        })),
                    );
                }
                Ok(())
            }
            M::Bind(b) => {
                let q = self.queue_name(ch, b.queue.as_str())?;
                self.permit_binding(Resource::Queue, &q, b.exchange.as_str())?;
                self.with_vhost(|v, id| {
                    v.bind_queue(
                        id,
                        &q,
                        b.exchange.as_str(),
                        b.routing_key.as_str(),
                        &b.arguments,
                    )
                })?;
                if !b.nowait {
                    self.send(ch, AMQPClass::Queue(M::BindOk(queue::BindOk {})));
                }
                Ok(())
            }
            M::Unbind(b) => {
                let q = self.queue_name(ch, b.queue.as_str())?;
                self.permit_binding(Resource::Queue, &q, b.exchange.as_str())?;
                self.with_vhost(|v, id| {
                    v.unbind_queue(
                        id,
                        &q,
                        b.exchange.as_str(),
                        b.routing_key.as_str(),
                        &b.arguments,
                    )
                })?;
                self.send(ch, AMQPClass::Queue(M::UnbindOk(queue::UnbindOk {})));
                Ok(())
            }
            M::Purge(p) => {
                let q = self.queue_name(ch, p.queue.as_str())?;
                self.permit(Access::Read, Resource::Queue, &q)?;
                let n = self.with_vhost(|v, id| v.purge_queue(id, &q))?;
                if !p.nowait {
                    self.send(
                        ch,
                        AMQPClass::Queue(M::PurgeOk(queue::PurgeOk { message_count: n })),
                    );
                }
                Ok(())
            }
            M::Delete(d) => {
                let q = self.queue_name(ch, d.queue.as_str())?;
                self.permit(Access::Configure, Resource::Queue, &q)?;
                let n = self.with_vhost(|v, id| v.delete_queue(id, &q, d.if_unused, d.if_empty))?;
                if !d.nowait {
                    self.send(
                        ch,
                        AMQPClass::Queue(M::DeleteOk(queue::DeleteOk { message_count: n })),
                    );
                }
                Ok(())
            }
            _ => Err(server_only()),
        }
    }

    fn on_publish(
        &mut self,
        ch: u16,
        exchange: &[u8],
        routing_key: &[u8],
        mandatory: bool,
        immediate: bool,
    ) -> Result<(), AmqpError> {
        self.published = true;
        if immediate {
            return Err(AmqpError::connection(
                code::NOT_IMPLEMENTED,
                "immediate=true",
            ));
        }
        let route = self
            .routes
            .get_raw(exchange, routing_key, &self.shared.gauge);
        self.channel(ch).content = Content::Header(Pending::Publish { route, mandatory });
        Ok(())
    }

    fn on_basic(&mut self, ch: u16, m: basic::AMQPMethod) -> Result<(), AmqpError> {
        use basic::AMQPMethod as M;
        match m {
            M::Publish(p) => self.on_publish(
                ch,
                p.exchange.as_str().as_bytes(),
                p.routing_key.as_str().as_bytes(),
                p.mandatory,
                p.immediate,
            ),
            M::Deliver(_) | M::Return(_) | M::GetOk(_) => {
                let id = AMQPClass::Basic(m).get_amqp_method_id();
                self.channel(ch).content = Content::Header(Pending::Refused(id));
                Ok(())
            }
            M::Qos(q) => {
                // RabbitMQ answers before it delivers what a larger prefetch allows.
                self.send(ch, AMQPClass::Basic(M::QosOk(basic::QosOk {})));
                self.with_vhost(|v, id| v.qos(id, ch, q.prefetch_count, q.global));
                Ok(())
            }
            M::Consume(c) => {
                let q = self.queue_name(ch, c.queue.as_str())?;
                // Direct reply-to is no queue and needs no permission
                // (rabbit_channel.erl:1398).
                if q != REPLY_TO {
                    self.permit(Access::Read, Resource::Queue, &q)?;
                }
                let tag = if c.consumer_tag.as_str().is_empty() {
                    format!("amq.ctag-{}", random_token())
                } else {
                    c.consumer_tag.as_str().to_owned()
                };
                let outbox = self.outbox.clone();
                let nowait = c.nowait;
                self.with_vhost(|v, id| {
                    let opts = ConsumeOptions {
                        tag,
                        no_ack: c.no_ack,
                        exclusive: c.exclusive,
                        arguments: c.arguments,
                    };
                    v.consume(id, ch, &q, opts, |tag| {
                        if !nowait {
                            outbox.push(method(
                                ch,
                                AMQPClass::Basic(M::ConsumeOk(basic::ConsumeOk {
                                    consumer_tag: tag.into(),
                                })),
                            ));
                        }
                    })
                })
            }
            M::Cancel(c) => {
                self.with_vhost(|v, id| v.cancel(id, ch, c.consumer_tag.as_str()));
                if !c.nowait {
                    self.send(
                        ch,
                        AMQPClass::Basic(M::CancelOk(basic::CancelOk {
                            consumer_tag: c.consumer_tag,
                        })),
                    );
                }
                Ok(())
            }
            M::Get(g) => {
                let q = self.queue_name(ch, g.queue.as_str())?;
                self.permit(Access::Read, Resource::Queue, &q)?;
                let found = self.with_vhost(|v, id| v.get(id, ch, &q, g.no_ack))?;
                if !found {
                    self.send(ch, AMQPClass::Basic(M::GetEmpty(basic::GetEmpty {})));
                }
                Ok(())
            }
            M::Ack(a) => self.settle(ch, a.delivery_tag, a.multiple, None),
            M::Reject(r) => self.settle(ch, r.delivery_tag, false, Some(r.requeue)),
            M::Nack(n) => self.settle(ch, n.delivery_tag, n.multiple, Some(n.requeue)),
            M::Recover(r) => {
                if !r.requeue {
                    return Err(AmqpError::connection(
                        code::NOT_IMPLEMENTED,
                        "requeue=false",
                    ));
                }
                let id = self.id;
                if self.vhost().lock().has_stream_deliveries(id, ch) {
                    return Err(AmqpError::internal());
                }
                // RabbitMQ answers before it redelivers.
                self.send(ch, AMQPClass::Basic(M::RecoverOk(basic::RecoverOk {})));
                self.recover(ch, r.requeue)
            }
            M::RecoverAsync(r) => self.recover(ch, r.requeue),
            _ => Err(server_only()),
        }
    }

    fn recover(&mut self, ch: u16, requeue: bool) -> Result<(), AmqpError> {
        if !requeue {
            return Err(AmqpError::connection(
                code::NOT_IMPLEMENTED,
                "requeue=false",
            ));
        }
        self.with_vhost(|v, id| v.recover(id, ch));
        Ok(())
    }

    fn settle(
        &mut self,
        ch: u16,
        tag: u64,
        multiple: bool,
        requeue: Option<bool>,
    ) -> Result<(), AmqpError> {
        let fault = self.shared.rules.on_settle(self.id, ch);
        if let Some(action) = &fault {
            self.info.trace.fault(action.name(), action.detail());
        }
        match fault {
            Some(Action::CloseChannel { code, text }) => {
                return Err(AmqpError::channel(code, text));
            }
            Some(Action::CloseConnection { code, text }) => {
                return Err(AmqpError::connection(code, text));
            }
            _ => {}
        }
        if self.channel(ch).tx.is_some() {
            // RabbitMQ checks the tag when the ack arrives, not at commit.
            let id = self.id;
            let settled_before = self.channel(ch).tx.as_ref().is_some_and(|ops| {
                ops.iter().any(|op| {
                    matches!(op, TxOp::Settle { tag: t, multiple: m, .. }
                        if *t == tag || (*m && (*t == 0 || *t >= tag)))
                })
            });
            let known = tag == 0 && multiple || self.vhost().lock().is_unacked(id, ch, tag);
            if !known || settled_before {
                return Err(AmqpError::precondition(format!(
                    "unknown delivery tag {tag}"
                )));
            }
        }
        if let Some(ops) = &mut self.channel(ch).tx {
            ops.push(TxOp::Settle {
                tag,
                multiple,
                requeue,
            });
            return Ok(());
        }
        self.with_vhost(|v, id| v.settle(id, ch, tag, multiple, requeue))
    }

    fn on_tx(&mut self, ch: u16, m: tx::AMQPMethod) -> Result<(), AmqpError> {
        use tx::AMQPMethod as M;
        let chan = self.channel(ch);
        match m {
            M::Select(_) => {
                if chan.confirm.is_some() {
                    return Err(AmqpError::precondition(
                        "cannot switch from confirm to tx mode",
                    ));
                }
                chan.tx.get_or_insert_with(Vec::new);
                self.send(ch, AMQPClass::Tx(M::SelectOk(tx::SelectOk {})));
                Ok(())
            }
            M::Commit(_) => {
                let Some(ops) = chan.tx.as_mut().map(std::mem::take) else {
                    return Err(AmqpError::precondition("channel is not transactional"));
                };
                let vhost = self.vhost().clone();
                let mut v = vhost.lock();
                let mut settles = Vec::new();
                let mut lsn = 0;
                for op in ops {
                    match op {
                        TxOp::Publish {
                            targets,
                            mandatory,
                            msg,
                        } => {
                            let published = v.publish(self.id, ch, &targets, mandatory, *msg);
                            lsn = lsn.max(published.lsn.unwrap_or(0));
                        }
                        settle => settles.push(settle),
                    }
                }
                drop(v);
                let durable = self.shared.store.as_ref().map_or(0, |s| s.durable_lsn());
                if lsn > durable {
                    self.channel(ch).committing = Some(Committing {
                        lsn,
                        settles,
                        held: VecDeque::new(),
                    });
                    return Ok(());
                }
                self.commit_ok(ch, settles)
            }
            M::Rollback(_) => {
                let Some(ops) = chan.tx.as_mut() else {
                    return Err(AmqpError::precondition("channel is not transactional"));
                };
                ops.clear();
                self.send(ch, AMQPClass::Tx(M::RollbackOk(tx::RollbackOk {})));
                Ok(())
            }
            _ => Err(server_only()),
        }
    }

    /// Turns any protocol error into the close the wire needs: a channel error
    /// closes that channel, anything else the connection.
    pub fn fail(&mut self, ch: u16, err: AmqpError) {
        tracing::debug!(conn = self.id, channel = ch, error = %err, "protocol error");
        if err.scope == Scope::Socket {
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
            chan.content = Content::Idle;
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
    /// socket closes on `close-ok` or when the driver's close timeout passes.
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

/// RabbitMQ's check of the `expiration` property: a non-negative integer of
/// milliseconds, with its reasons in Erlang's words.
fn check_expiration(exp: &str) -> Result<u64, String> {
    let digits_end = exp
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && (c == '-' || c == '+'))))
        .map_or(exp.len(), |(i, _)| i);
    let (number, rest) = exp.split_at(digits_end);
    let value: i64 = match number.parse() {
        Ok(v) => v,
        Err(_) => return Err("no_integer".to_owned()),
    };
    if !rest.is_empty() {
        return Err(format!("{{leftover_string,\"{rest}\"}}"));
    }
    if value < 0 {
        return Err(format!("{{value_negative,{value}}}"));
    }
    Ok(value as u64)
}

/// A method a client may not send (or not on this channel).
fn server_only() -> AmqpError {
    AmqpError::connection(code::COMMAND_INVALID, "unimplemented method")
}

fn parse_plain(response: &[u8]) -> Option<(String, String)> {
    let mut parts = response.split(|b| *b == 0);
    let _authzid = parts.next()?;
    let user = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let pass = String::from_utf8(parts.next()?.to_vec()).ok()?;
    Some((user, pass))
}

fn parse_amqplain(response: &[u8]) -> Option<(String, String)> {
    // The response is a field table without its length prefix.
    let mut framed = (response.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(response);
    let (_, table) = amq_protocol::types::parsing::parse_field_table(&framed[..]).ok()?;
    let text = |k: &str| match table.inner().get(k)? {
        AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    };
    Some((text("LOGIN")?, text("PASSWORD")?))
}
