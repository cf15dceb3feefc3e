//! A raw-frame AMQP 0-9-1 test client for Warren's integration tests.
//!
//! General-purpose clients hide exactly what error tests must see (they answer closes,
//! retry, refuse to send malformed input), so these tests speak frames themselves
//! through `warren-frames` (amq-protocol's codec, shared with the conformance driver,
//! the fuzzers and the client's tests), over a TCP socket or over
//! `Broker::connect_in_process()`.
//!
//! # Target
//! By default every test starts its own embedded Warren ([`Target::start`]). Set
//! `RAW_TARGET` to an AMQP URL to run the same tests against another broker instead,
//! e.g. the reference RabbitMQ:
//!
//! ```text
//! RAW_TARGET=amqp://guest:guest@127.0.0.1:5672/%2f cargo test -p warren-broker --test errors
//! ```
//!
//! An expectation that RabbitMQ does not meet is a wrong expectation: every test here
//! was run that way first. Tests that need something only Warren has (the in-process
//! stream, `shutdown`, `restart`) print a note and return early under `RAW_TARGET`.
//! Entity names come from [`unique`] so that parallel tests (and repeated runs) never
//! share a queue on a shared broker.
//!
//! Every wait is bounded by [`REPLY_TIMEOUT`]: a missing reply fails the test, it never
//! hangs it.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{
    basic, channel, confirm, connection, exchange, queue, tx, AMQPClass, BasicProperties,
};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use warren_broker::Broker;

/// The longest any single expected reply may take. Generous because two cores are
/// shared by several builds; a reply that never comes fails after this, no sooner.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Awaits `f` for at most [`REPLY_TIMEOUT`]; a missing event fails the test.
pub async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(REPLY_TIMEOUT, f)
        .await
        .expect("timeout waiting for the broker")
}

// Part of this module's surface; each test binary uses a different subset.
#[allow(unused_imports)]
pub use warren_frames::{encode, raw_frame, FRAME_END, PROTOCOL_HEADER};

/// The channel [`Raw::put`] publishes on; far above what tests use.
pub const PUT_CHANNEL: u16 = 999;

/// A name no other test (nor an earlier run against a shared broker) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "warren-test-{prefix}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The broker a test talks to: an embedded Warren, or whatever `RAW_TARGET` names.
pub struct Target {
    broker: Option<Broker>,
    /// The AMQP URL, for clients such as lapin.
    pub url: String,
    pub addr: String,
    pub user: String,
    pub password: String,
    pub vhost: String,
}

impl Target {
    /// An embedded Warren on `127.0.0.1:0`, or the broker at `RAW_TARGET`.
    pub async fn start() -> Target {
        match std::env::var("RAW_TARGET") {
            Ok(url) if !url.is_empty() => Target::from_url(&url, None),
            _ => {
                let broker = Broker::start().await.expect("start Warren");
                let url = broker.url();
                Target::from_url(&url, Some(broker))
            }
        }
    }

    /// An embedded Warren configured by `builder`, or `None` under `RAW_TARGET`:
    /// tests of Warren's own settings print a note and return early then.
    pub async fn start_with(builder: warren_broker::BrokerBuilder) -> Option<Target> {
        if std::env::var("RAW_TARGET").is_ok_and(|u| !u.is_empty()) {
            eprintln!("note: RAW_TARGET set; this test checks Warren's own settings");
            return None;
        }
        let broker = builder.start().await.expect("start Warren");
        let url = broker.url();
        Some(Target::from_url(&url, Some(broker)))
    }

    /// The broker at `url`, started by someone else (e.g. a `warren` process).
    pub fn at(url: &str) -> Target {
        Target::from_url(url, None)
    }

    fn from_url(url: &str, broker: Option<Broker>) -> Target {
        // Parsed by hand: amq-protocol's URI parser does not take an IPv6 host such as
        // `[::1]`, which the `warren` binary prints for `--bind [::1]:0`.
        let bad = || panic!("bad AMQP URL {url}: expected amqp://USER:PASSWORD@HOST:PORT/VHOST");
        let rest = url.strip_prefix("amqp://").unwrap_or_else(bad);
        let (authority, vhost) = rest.split_once('/').unwrap_or((rest, "%2f"));
        let (userinfo, addr) = authority
            .rsplit_once('@')
            .unwrap_or(("guest:guest", authority));
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        let addr = if addr.ends_with(']') || !addr.contains(':') {
            format!("{addr}:5672")
        } else {
            addr.to_owned()
        };
        Target {
            broker,
            url: url.to_owned(),
            addr,
            user: percent_decode(user),
            password: percent_decode(password),
            vhost: percent_decode(vhost),
        }
    }

    /// The embedded Warren, or `None` under `RAW_TARGET`.
    ///
    /// Tests for what only Warren has (shutdown, restart) print a note and return
    /// early when this is `None`.
    pub fn warren(&self) -> Option<&Broker> {
        self.broker.as_ref()
    }

    /// A TCP connection that has sent nothing yet.
    pub async fn connect(&self) -> Raw {
        let stream = tokio::time::timeout(REPLY_TIMEOUT, TcpStream::connect(&self.addr))
            .await
            .unwrap_or_else(|_| panic!("timeout connecting to {}", self.addr))
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.addr));
        stream.set_nodelay(true).ok();
        Raw::new(Box::new(stream))
    }

    /// A TCP connection through the whole handshake (PLAIN with the target's login).
    pub async fn open(&self) -> Raw {
        let mut raw = self.connect().await;
        raw.handshake(&self.user, &self.password, &self.vhost).await;
        raw
    }

    /// A connection over Warren's in-process stream that has sent nothing yet, or
    /// `None` under `RAW_TARGET` (other brokers have no such thing).
    pub fn connect_in_process(&self) -> Option<Raw> {
        self.broker
            .as_ref()
            .map(|b| Raw::new(Box::new(b.connect_in_process())))
    }

    /// Shuts the embedded Warren down gracefully (a no-op under `RAW_TARGET`).
    pub async fn stop(self) {
        if let Some(broker) = self.broker {
            tokio::time::timeout(REPLY_TIMEOUT, broker.shutdown())
                .await
                .expect("Warren's shutdown did not finish");
        }
    }
}

/// A connection to `t` with channel 1 open.
pub async fn open1(t: &Target) -> Raw {
    let mut c = t.open().await;
    c.open_channel(1).await;
    c
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Anything a connection can run over: a TCP socket or an in-process duplex stream.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Turns a method struct into the [`AMQPClass`] that goes on the wire, so that tests
/// can write `raw.call(1, queue::Declare { .. })`.
pub trait Method {
    fn class(self) -> AMQPClass;
}

impl Method for AMQPClass {
    fn class(self) -> AMQPClass {
        self
    }
}

macro_rules! methods {
    ($($module:ident :: $name:ident => $class:ident),* $(,)?) => {
        $(impl Method for $module::$name {
            fn class(self) -> AMQPClass {
                AMQPClass::$class($module::AMQPMethod::$name(self))
            }
        })*
    };
}

methods! {
    connection::StartOk => Connection, connection::TuneOk => Connection,
    connection::Open => Connection, connection::Close => Connection,
    connection::CloseOk => Connection,
    channel::Open => Channel, channel::Close => Channel, channel::CloseOk => Channel,
    channel::Flow => Channel,
    exchange::Declare => Exchange, exchange::Delete => Exchange, exchange::Bind => Exchange,
    exchange::Unbind => Exchange,
    queue::Declare => Queue, queue::Bind => Queue, queue::Unbind => Queue,
    queue::Purge => Queue, queue::Delete => Queue,
    basic::Qos => Basic, basic::Consume => Basic, basic::Cancel => Basic,
    basic::Publish => Basic, basic::Get => Basic, basic::Ack => Basic,
    basic::Nack => Basic, basic::Reject => Basic, basic::Recover => Basic,
    confirm::Select => Confirm,
    tx::Select => Tx, tx::Commit => Tx, tx::Rollback => Tx,
}

/// Encodes a method frame.
pub fn method_frame(ch: u16, m: impl Method) -> Vec<u8> {
    encode(&AMQPFrame::Method(ch, m.class()))
}

/// A message received with `basic.deliver`, `basic.get-ok` or `basic.return`.
#[derive(Debug, Clone)]
pub struct Content {
    pub method: AMQPClass,
    pub props: BasicProperties,
    pub body: Vec<u8>,
}

impl Content {
    pub fn deliver(&self) -> &basic::Deliver {
        match &self.method {
            AMQPClass::Basic(basic::AMQPMethod::Deliver(d)) => d,
            other => panic!("expected basic.deliver, got {other:?}"),
        }
    }

    pub fn get_ok(&self) -> &basic::GetOk {
        match &self.method {
            AMQPClass::Basic(basic::AMQPMethod::GetOk(g)) => g,
            other => panic!("expected basic.get-ok, got {other:?}"),
        }
    }
}

/// The values the server proposed in `connection.tune`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tune {
    pub channel_max: u16,
    pub frame_max: u32,
    pub heartbeat: u16,
}

/// One raw AMQP connection.
pub struct Raw {
    io: Box<dyn Io>,
    rbuf: Vec<u8>,
    /// Frames that arrived for other channels while [`Raw::put`] waited for its
    /// confirm; handed out first by the next read.
    stash: std::collections::VecDeque<AMQPFrame>,
    /// Publishes made on [`PUT_CHANNEL`] so far (0: the channel is not open yet).
    put_seq: u64,
    pub tune: Tune,
    pub server_properties: FieldTable,
    /// The channel [`Raw::assert_alive`] opens next; far above what tests use.
    next_probe_channel: u16,
    /// Whether `start-ok` announces the capabilities (on by default; off to act as
    /// an old client, which RabbitMQ treats differently on a refused login).
    pub announce_capabilities: bool,
    /// The locale `start-ok` asks for.
    pub locale: String,
}

impl Raw {
    pub fn new(io: Box<dyn Io>) -> Raw {
        Raw {
            io,
            rbuf: Vec::new(),
            stash: std::collections::VecDeque::new(),
            put_seq: 0,
            tune: Tune::default(),
            server_properties: FieldTable::default(),
            next_probe_channel: 1000,
            announce_capabilities: true,
            locale: "en_US".into(),
        }
    }

    // ---------------------------------------------------------------- sending

    /// Writes bytes as they are; panics if the socket is gone.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.try_send_raw(bytes)
            .await
            .unwrap_or_else(|e| panic!("write failed: {e}"));
    }

    /// Writes bytes as they are; for input the server may stop reading midway.
    pub async fn try_send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.io.write_all(bytes).await?;
        self.io.flush().await
    }

    /// Half-closes the stream: the server sees end of input.
    pub async fn shutdown_write(&mut self) {
        self.io.shutdown().await.expect("shutdown");
    }

    pub async fn send(&mut self, ch: u16, m: impl Method) {
        self.send_raw(&method_frame(ch, m)).await;
    }

    pub async fn send_header(&mut self, ch: u16, body_size: u64, props: BasicProperties) {
        self.send_raw(&warren_frames::header(ch, body_size, props))
            .await;
    }

    pub async fn send_body(&mut self, ch: u16, body: &[u8]) {
        self.send_raw(&warren_frames::body(ch, body)).await;
    }

    /// `basic.publish` with its header and one body frame (none for an empty body).
    pub async fn publish_with(
        &mut self,
        ch: u16,
        publish: basic::Publish,
        props: BasicProperties,
        body: &[u8],
    ) {
        let mut bytes = method_frame(ch, publish);
        bytes.extend(warren_frames::header(ch, body.len() as u64, props));
        if !body.is_empty() {
            bytes.extend(warren_frames::body(ch, body));
        }
        self.send_raw(&bytes).await;
    }

    pub async fn publish(&mut self, ch: u16, exchange: &str, routing_key: &str, body: &[u8]) {
        let publish = basic::Publish {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            ..Default::default()
        };
        self.publish_with(ch, publish, BasicProperties::default(), body)
            .await;
    }

    // ---------------------------------------------------------------- receiving

    /// The next frame, heartbeats skipped; `None` when the peer closed the stream.
    /// Panics when nothing comes within [`REPLY_TIMEOUT`].
    pub async fn next_frame(&mut self) -> Option<AMQPFrame> {
        self.next_frame_with(true).await
    }

    /// The next frame, heartbeats included; `None` when the peer closed the stream.
    pub async fn next_frame_or_heartbeat(&mut self) -> Option<AMQPFrame> {
        self.next_frame_with(false).await
    }

    async fn next_frame_with(&mut self, skip_heartbeats: bool) -> Option<AMQPFrame> {
        if let Some(frame) = self.stash.pop_front() {
            return Some(frame);
        }
        self.next_frame_from_wire(skip_heartbeats).await
    }

    /// The next frame read from the stream itself, past anything stashed.
    async fn next_frame_from_wire(&mut self, skip_heartbeats: bool) -> Option<AMQPFrame> {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            if let Some(frame) = self.take_frame() {
                if skip_heartbeats && matches!(frame, AMQPFrame::Heartbeat) {
                    continue;
                }
                return Some(frame);
            }
            match self.read_some(deadline).await {
                0 => {
                    assert!(
                        self.rbuf.is_empty(),
                        "stream closed in the middle of a frame: {:?}",
                        self.rbuf
                    );
                    return None;
                }
                _ => continue,
            }
        }
    }

    /// Reads more bytes; 0 means end of stream (a reset counts as one: the server went
    /// away either way).
    async fn read_some(&mut self, deadline: Instant) -> usize {
        self.rbuf.reserve(16 * 1024);
        match timeout_at(deadline, self.io.read_buf(&mut self.rbuf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) => 0,
            Err(_) => panic!(
                "timeout: nothing from the server within {REPLY_TIMEOUT:?} (buffered: {:?})",
                self.rbuf
            ),
        }
    }

    fn take_frame(&mut self) -> Option<AMQPFrame> {
        if self.rbuf.first() == Some(&b'A') {
            panic!("the server sent a protocol header: {:?}", self.rbuf);
        }
        match warren_frames::take_frame(&mut self.rbuf) {
            Ok(frame) => frame,
            Err(warren_frames::TakeError::Unparsable { bytes, error }) => {
                match warren_frames::parse_close_lossy(&bytes) {
                    Some(frame) => Some(frame),
                    None => panic!("the server sent an unparsable frame {bytes:?}: {error}"),
                }
            }
            Err(e) => panic!("{e:?}"),
        }
    }

    /// Everything the server sends until it closes the stream (bounded by the timeout).
    pub async fn read_to_end(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        while self.read_some(deadline).await != 0 {}
        std::mem::take(&mut self.rbuf)
    }

    /// The next frame, which must exist.
    pub async fn recv(&mut self) -> AMQPFrame {
        self.next_frame()
            .await
            .expect("the server closed the connection instead of replying")
    }

    /// The next frame must be a method on `ch`.
    pub async fn expect_method(&mut self, ch: u16) -> AMQPClass {
        match self.recv().await {
            AMQPFrame::Method(c, m) if c == ch => m,
            other => panic!("expected a method on channel {ch}, got {other:?}"),
        }
    }

    /// Sends a method and returns the reply on the same channel.
    pub async fn call(&mut self, ch: u16, m: impl Method) -> AMQPClass {
        self.send(ch, m).await;
        self.expect_method(ch).await
    }

    /// Expects `channel.close` on `ch` with this code, class and method, and a reply
    /// text starting with `text`; answers it with `close-ok` and returns the text.
    pub async fn expect_channel_close(
        &mut self,
        ch: u16,
        code: u16,
        class_method: (u16, u16),
        text: &str,
    ) -> String {
        let close = match self.recv().await {
            AMQPFrame::Method(c, AMQPClass::Channel(channel::AMQPMethod::Close(close)))
                if c == ch =>
            {
                close
            }
            other => panic!(
                "expected channel.close {code} on channel {ch} naming {}.{}, got {other:?}",
                class_method.0, class_method.1
            ),
        };
        check_close(
            "channel.close",
            close.reply_code,
            close.reply_text.as_str(),
            (close.class_id, close.method_id),
            code,
            class_method,
            text,
        );
        self.send(ch, channel::CloseOk {}).await;
        close.reply_text.to_string()
    }

    /// Expects `connection.close` with this code, class and method, and a reply text
    /// starting with `text`; answers `close-ok`, expects the socket to close, and
    /// returns the text.
    pub async fn expect_connection_close(
        &mut self,
        code: u16,
        class_method: (u16, u16),
        text: &str,
    ) -> String {
        let close = self.expect_connection_close_frame(code).await;
        check_close(
            "connection.close",
            close.reply_code,
            close.reply_text.as_str(),
            (close.class_id, close.method_id),
            code,
            class_method,
            text,
        );
        // After sending a close the server reads only close-ok; it may already have
        // gone, so a failed write is fine.
        let _ = self
            .try_send_raw(&method_frame(0, connection::CloseOk {}))
            .await;
        self.expect_closed().await;
        close.reply_text.to_string()
    }

    /// Skips frames on channels other than 0 (replies that crossed the error) until
    /// a `connection.close` comes; panics on anything else.
    async fn expect_connection_close_frame(&mut self, code: u16) -> connection::Close {
        loop {
            match self.next_frame().await {
                Some(AMQPFrame::Method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::Close(close)),
                )) => return close,
                Some(frame) if frame.channel_id() != 0 => continue,
                other => panic!("expected connection.close {code}, got {other:?}"),
            }
        }
    }

    /// The server must end the connection, by `connection.close` (any code; answered
    /// with close-ok) or by closing the socket.
    pub async fn expect_end(&mut self) {
        match self.next_frame().await {
            None => {}
            Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(_)))) => {
                let _ = self
                    .try_send_raw(&method_frame(0, connection::CloseOk {}))
                    .await;
                self.expect_closed().await;
            }
            Some(frame) => panic!("expected the connection to end, got {frame:?}"),
        }
    }

    /// The server must close the stream without sending anything more.
    pub async fn expect_closed(&mut self) {
        if let Some(frame) = self.next_frame().await {
            panic!("expected the server to close the socket, got {frame:?}");
        }
    }

    /// Receives a content-bearing method (deliver, get-ok, return) with its header
    /// and body frames on `ch`.
    pub async fn expect_content(&mut self, ch: u16) -> Content {
        let method = self.expect_method(ch).await;
        self.content_after(ch, method).await
    }

    /// The header and body frames that follow `method` on `ch`.
    pub async fn content_after(&mut self, ch: u16, method: AMQPClass) -> Content {
        let header = match self.recv().await {
            AMQPFrame::Header(c, h) if c == ch => h,
            other => panic!("expected a content header on channel {ch}, got {other:?}"),
        };
        let mut body = Vec::new();
        while (body.len() as u64) < header.body_size {
            match self.recv().await {
                AMQPFrame::Body(c, b) if c == ch => body.extend(b),
                other => panic!("expected a body frame on channel {ch}, got {other:?}"),
            }
        }
        Content {
            method,
            props: header.properties,
            body,
        }
    }

    // ---------------------------------------------------------------- handshake

    /// Sends the protocol header and returns `connection.start`.
    pub async fn start(&mut self) -> connection::Start {
        self.send_raw(PROTOCOL_HEADER).await;
        match self.expect_method(0).await {
            AMQPClass::Connection(connection::AMQPMethod::Start(s)) => {
                self.server_properties = s.server_properties.clone();
                s
            }
            other => panic!("expected connection.start, got {other:?}"),
        }
    }

    /// `connection.start-ok` with PLAIN credentials, announcing the capabilities a
    /// modern client announces (authentication_failure_close among them).
    pub async fn start_ok(&mut self, user: &str, password: &str) {
        let response = format!("\0{user}\0{password}");
        self.start_ok_with("PLAIN", response.as_bytes()).await;
    }

    /// `connection.start-ok` with any mechanism and response.
    pub async fn start_ok_with(&mut self, mechanism: &str, response: &[u8]) {
        let mut caps = FieldTable::default();
        for cap in [
            "publisher_confirms",
            "consumer_cancel_notify",
            "basic.nack",
            "exchange_exchange_bindings",
            "authentication_failure_close",
            "per_consumer_qos",
            "connection.blocked",
        ] {
            caps.insert(cap.into(), AMQPValue::Boolean(true));
        }
        let mut props = FieldTable::default();
        props.insert(
            "product".into(),
            AMQPValue::LongString("warren-broker tests".into()),
        );
        if self.announce_capabilities {
            props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
        }
        self.send(
            0,
            connection::StartOk {
                client_properties: props,
                mechanism: mechanism.into(),
                response: LongString::from(response.to_vec()),
                locale: self.locale.as_str().into(),
            },
        )
        .await;
    }

    /// Expects `connection.tune` and answers `tune-ok` with the server's own values.
    pub async fn tune(&mut self) -> Tune {
        self.tune_with(|t| connection::TuneOk {
            channel_max: t.channel_max,
            frame_max: t.frame_max,
            heartbeat: t.heartbeat,
        })
        .await
    }

    /// Expects `connection.tune` and answers with the `tune-ok` that `answer` makes
    /// of the server's proposal; returns the proposal.
    pub async fn tune_with(&mut self, answer: impl FnOnce(Tune) -> connection::TuneOk) -> Tune {
        let t = match self.expect_method(0).await {
            AMQPClass::Connection(connection::AMQPMethod::Tune(t)) => t,
            other => panic!("expected connection.tune, got {other:?}"),
        };
        self.tune = Tune {
            channel_max: t.channel_max,
            frame_max: t.frame_max,
            heartbeat: t.heartbeat,
        };
        let ok = answer(self.tune);
        self.send(0, ok).await;
        self.tune
    }

    /// `connection.open`, expecting `open-ok`.
    pub async fn open_vhost(&mut self, vhost: &str) {
        let open = connection::Open {
            virtual_host: vhost.into(),
        };
        match self.call(0, open).await {
            AMQPClass::Connection(connection::AMQPMethod::OpenOk(_)) => {}
            other => panic!("expected connection.open-ok, got {other:?}"),
        }
    }

    /// The whole handshake, ending with `connection.open-ok`.
    pub async fn handshake(&mut self, user: &str, password: &str, vhost: &str) {
        self.start().await;
        self.start_ok(user, password).await;
        self.tune().await;
        self.open_vhost(vhost).await;
    }

    // ---------------------------------------------------------------- operations

    pub async fn open_channel(&mut self, ch: u16) {
        match self.call(ch, channel::Open {}).await {
            AMQPClass::Channel(channel::AMQPMethod::OpenOk(_)) => {}
            other => panic!("expected channel.open-ok on {ch}, got {other:?}"),
        }
    }

    pub async fn close_channel(&mut self, ch: u16) {
        let close = channel::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        };
        match self.call(ch, close).await {
            AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => {}
            other => panic!("expected channel.close-ok on {ch}, got {other:?}"),
        }
    }

    /// A client-initiated `connection.close`, waiting for `close-ok`.
    pub async fn close(&mut self) {
        let close = connection::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        };
        self.send(0, close).await;
        loop {
            match self.recv().await {
                AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::CloseOk(_))) => {
                    break
                }
                // Deliveries in flight may still arrive before close-ok.
                frame if frame.channel_id() != 0 => continue,
                other => panic!("expected connection.close-ok, got {other:?}"),
            }
        }
        // After close-ok the client closes the socket (RabbitMQ waits for it to).
        let _ = self.io.shutdown().await;
    }

    pub async fn queue_declare(&mut self, ch: u16, d: queue::Declare) -> queue::DeclareOk {
        let name = d.queue.to_string();
        match self.call(ch, d).await {
            AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok)) => ok,
            other => panic!("expected queue.declare-ok for '{name}', got {other:?}"),
        }
    }

    /// Declares a plain (non-durable, non-exclusive) queue named `name`.
    pub async fn declare_queue(&mut self, ch: u16, name: &str) -> queue::DeclareOk {
        self.queue_declare(ch, queue_decl(name)).await
    }

    /// Declares an exclusive queue (gone with the connection, even on a shared broker).
    pub async fn declare_exclusive(&mut self, ch: u16, name: &str) -> queue::DeclareOk {
        let d = queue::Declare {
            exclusive: true,
            ..queue_decl(name)
        };
        self.queue_declare(ch, d).await
    }

    pub async fn exchange_declare(&mut self, ch: u16, d: exchange::Declare) {
        let name = d.exchange.to_string();
        match self.call(ch, d).await {
            AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(_)) => {}
            other => panic!("expected exchange.declare-ok for '{name}', got {other:?}"),
        }
    }

    /// Declares an auto-delete exchange of `kind`.
    pub async fn declare_exchange(&mut self, ch: u16, name: &str, kind: &str) {
        self.exchange_declare(ch, exchange_decl(name, kind)).await;
    }

    pub async fn delete_exchange(&mut self, ch: u16, name: &str) {
        let d = exchange::Delete {
            exchange: name.into(),
            ..Default::default()
        };
        match self.call(ch, d).await {
            AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(_)) => {}
            other => panic!("expected exchange.delete-ok for '{name}', got {other:?}"),
        }
    }

    pub async fn delete_queue(&mut self, ch: u16, name: &str) -> u32 {
        let d = queue::Delete {
            queue: name.into(),
            ..Default::default()
        };
        match self.call(ch, d).await {
            AMQPClass::Queue(queue::AMQPMethod::DeleteOk(ok)) => ok.message_count,
            other => panic!("expected queue.delete-ok for '{name}', got {other:?}"),
        }
    }

    pub async fn bind_queue(&mut self, ch: u16, queue: &str, exchange: &str, key: &str) {
        let b = queue::Bind {
            queue: queue.into(),
            exchange: exchange.into(),
            routing_key: key.into(),
            ..Default::default()
        };
        match self.call(ch, b).await {
            AMQPClass::Queue(queue::AMQPMethod::BindOk(_)) => {}
            other => panic!("expected queue.bind-ok, got {other:?}"),
        }
    }

    /// `basic.consume` with the given tag ("" for a server-named one); returns the tag.
    pub async fn consume(&mut self, ch: u16, queue: &str, tag: &str, no_ack: bool) -> String {
        let c = basic::Consume {
            queue: queue.into(),
            consumer_tag: tag.into(),
            no_ack,
            ..Default::default()
        };
        match self.call(ch, c).await {
            AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(ok)) => ok.consumer_tag.to_string(),
            other => panic!("expected basic.consume-ok on '{queue}', got {other:?}"),
        }
    }

    pub async fn qos(&mut self, ch: u16, prefetch_count: u16, global: bool) {
        match self
            .call(
                ch,
                basic::Qos {
                    prefetch_count,
                    global,
                },
            )
            .await
        {
            AMQPClass::Basic(basic::AMQPMethod::QosOk(_)) => {}
            other => panic!("expected basic.qos-ok, got {other:?}"),
        }
    }

    pub async fn confirm_select(&mut self, ch: u16) {
        match self.call(ch, confirm::Select { nowait: false }).await {
            AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_)) => {}
            other => panic!("expected confirm.select-ok, got {other:?}"),
        }
    }

    /// `basic.get`; `None` for get-empty.
    pub async fn get(&mut self, ch: u16, queue: &str, no_ack: bool) -> Option<Content> {
        self.send(
            ch,
            basic::Get {
                queue: queue.into(),
                no_ack,
            },
        )
        .await;
        self.get_reply(ch).await
    }

    async fn get_reply(&mut self, ch: u16) -> Option<Content> {
        match self.expect_method(ch).await {
            AMQPClass::Basic(basic::AMQPMethod::GetEmpty(_)) => None,
            method @ AMQPClass::Basic(basic::AMQPMethod::GetOk(_)) => {
                Some(self.content_after(ch, method).await)
            }
            other => panic!("expected basic.get-ok or get-empty, got {other:?}"),
        }
    }

    /// Publishes `body` to the default exchange with `queue` as routing key and
    /// waits until the queue has it, so that later steps on any channel see it.
    ///
    /// RabbitMQ answers some methods (a passive declare's counts, for one) ahead of
    /// publishes still on their way to the queue, so a round trip on the publishing
    /// channel proves nothing. A publisher confirm does: the publish goes out on a
    /// channel of its own in confirm mode, and the broker acks it once enqueued.
    pub async fn put(&mut self, queue: &str, body: &[u8]) {
        if self.put_seq == 0 {
            self.open_channel(PUT_CHANNEL).await;
            self.confirm_select(PUT_CHANNEL).await;
        }
        self.publish(PUT_CHANNEL, "", queue, body).await;
        self.put_seq += 1;
        loop {
            // From the stream, not the stash: stashed frames are not the confirm.
            let frame = self
                .next_frame_from_wire(true)
                .await
                .expect("the server closed the connection during a put");
            match frame {
                AMQPFrame::Method(PUT_CHANNEL, AMQPClass::Basic(basic::AMQPMethod::Ack(ack))) => {
                    if ack.delivery_tag >= self.put_seq {
                        return;
                    }
                }
                AMQPFrame::Method(PUT_CHANNEL, other) => {
                    panic!("expected a confirm for a put, got {other:?}")
                }
                // Replies for other channels (deliveries, say) wait for their reader.
                frame => self.stash.push_back(frame),
            }
        }
    }

    /// Proves the connection still works after a channel error: a fresh channel can
    /// declare (and delete) a server-named exclusive queue and then be closed.
    pub async fn assert_alive(&mut self) {
        let ch = self.next_probe_channel;
        self.next_probe_channel += 1;
        self.open_channel(ch).await;
        let ok = self.declare_exclusive(ch, "").await;
        assert!(
            ok.queue.as_str().starts_with("amq.gen-"),
            "server-named queue: {ok:?}"
        );
        self.delete_queue(ch, ok.queue.as_str()).await;
        self.close_channel(ch).await;
    }
}

fn check_close(
    what: &str,
    got_code: u16,
    got_text: &str,
    got_cm: (u16, u16),
    code: u16,
    class_method: (u16, u16),
    text: &str,
) {
    assert!(
        got_code == code && got_cm == class_method && got_text.starts_with(text),
        "expected {what} {code} naming {}.{} with text starting {text:?}; \
         got {got_code} naming {}.{} with text {got_text:?}",
        class_method.0,
        class_method.1,
        got_cm.0,
        got_cm.1,
    );
}

/// `queue.declare` for `name` with every flag off.
pub fn queue_decl(name: &str) -> queue::Declare {
    queue::Declare {
        queue: name.into(),
        ..Default::default()
    }
}

/// `exchange.declare` for an auto-delete exchange (it goes with its last binding,
/// which keeps a shared broker tidy).
pub fn exchange_decl(name: &str, kind: &str) -> exchange::Declare {
    exchange::Declare {
        exchange: name.into(),
        kind: kind.into(),
        auto_delete: true,
        ..Default::default()
    }
}

/// A running `warren` binary (the test's own build of it), for tests of the command
/// line contract; killed if the test fails before it exits.
pub struct Warren {
    /// The first line it printed: the URL it serves.
    pub url: String,
    /// The second line, with `--management-bind`: the management API's base URL.
    pub management: Option<String>,
    child: tokio::process::Child,
    stderr: tokio::process::ChildStderr,
}

impl Warren {
    pub async fn start(args: &[&str]) -> Warren {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_warren"))
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn warren");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let url = within(lines.next_line())
            .await
            .expect("read stdout")
            .expect("warren printed no line before closing stdout");
        let mut management = None;
        if args.contains(&"--management-bind") {
            management = within(lines.next_line()).await.expect("read stdout");
        }
        Warren {
            child,
            url,
            management,
            stderr,
        }
    }

    /// The port in the printed URL.
    pub fn port(&self) -> u16 {
        let rest = self.url.rsplit_once(':').expect("a port").1;
        rest.trim_end_matches("/%2f")
            .parse()
            .expect("a numeric port")
    }

    pub fn target(&self) -> Target {
        Target::at(&self.url)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("still running")
    }

    /// Sends a signal by pid with the `kill` command.
    pub async fn signal(&self, name: &str) {
        let pid = self.child.id().expect("still running");
        let status = tokio::process::Command::new("kill")
            .args([format!("-{name}"), pid.to_string()])
            .status()
            .await
            .expect("run kill");
        assert!(status.success(), "kill -{name} {pid}: {status}");
    }

    /// Waits for the process to exit; returns its status and everything on stderr.
    pub async fn exit(mut self) -> (std::process::ExitStatus, String) {
        let status = within(self.child.wait()).await.expect("wait for warren");
        let mut log = String::new();
        within(self.stderr.read_to_string(&mut log))
            .await
            .expect("read stderr");
        (status, log)
    }
}

// ---------------------------------------------------------------- routing

/// Everything in `queue`, in order, drained with `basic.get` on channel 1. Gets on
/// the publishing channel reach the queue after that channel's publishes.
pub async fn drain(c: &mut Raw, queue: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    while let Some(got) = c.get(1, queue, true).await {
        bodies.push(String::from_utf8(got.body).unwrap());
    }
    bodies
}

/// Declares an exchange of `kind` and one exclusive queue per binding list, binds
/// each queue with its (key, arguments) pairs, publishes one message per
/// (key, headers) with its index as body, and returns what each queue got.
pub async fn route(
    kind: &str,
    bindings: &[&[(&str, FieldTable)]],
    publishes: &[(&str, Option<FieldTable>)],
) -> Vec<Vec<String>> {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let x = unique(kind);
    c.declare_exchange(1, &x, kind).await;
    let mut queues = Vec::new();
    for binds in bindings {
        let q = unique("q");
        c.declare_exclusive(1, &q).await;
        for (key, args) in binds.iter() {
            let bind = queue::Bind {
                queue: q.as_str().into(),
                exchange: x.as_str().into(),
                routing_key: (*key).into(),
                nowait: false,
                arguments: args.clone(),
            };
            match c.call(1, bind).await {
                AMQPClass::Queue(queue::AMQPMethod::BindOk(_)) => {}
                other => panic!("expected queue.bind-ok, got {other:?}"),
            }
        }
        queues.push(q);
    }
    for (i, (key, headers)) in publishes.iter().enumerate() {
        let mut props = BasicProperties::default();
        if let Some(h) = headers {
            props = props.with_headers(h.clone());
        }
        let publish = basic::Publish {
            exchange: x.as_str().into(),
            routing_key: (*key).into(),
            ..Default::default()
        };
        c.publish_with(1, publish, props, i.to_string().as_bytes())
            .await;
    }
    let mut got = Vec::new();
    for q in &queues {
        got.push(drain(&mut c, q).await);
    }
    c.close().await;
    t.stop().await;
    got
}

pub fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert((*k).into(), v.clone());
    }
    t
}

/// A long-string field value.
pub fn lstr(v: &str) -> AMQPValue {
    AMQPValue::LongString(v.into())
}
